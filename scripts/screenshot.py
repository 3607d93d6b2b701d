"""The README screenshot (docs/page.png): the demo page with a shipped bundle in Debian's headless
Chromium, one favicon drawn with the page's automatic runtime choice: the named model's prompt (default: the
page's own, hippo), or a category model's class.

    .venv/bin/python scripts/screenshot.py [--bundle bundles/named-int4] [--prompt hippo] [--seed 0] [--out docs/page.png]
    .venv/bin/python scripts/screenshot.py --bundle bundles/default --class "Smileys & Emotion"
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webserve.browser import WEB_DIR, chromium, local_server, wait_state

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=str(ROOT / "bundles" / "named-int4"))
    p.add_argument("--prompt", default="hippo", help="a named bundle's prompt")
    p.add_argument("--class", dest="cls", help="a category bundle's class (instead of a prompt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "docs" / "page.png"))
    a = p.parse_args()
    with local_server({"/": WEB_DIR, "/bundle/": Path(a.bundle)}) as url, chromium() as ctx:
        page = ctx.new_page()
        page.set_viewport_size({"width": 1000, "height": 720})
        page.goto(url)
        wait_state(page, ("ready",), 120)
        if a.cls is not None:
            page.select_option("#class", label=a.cls)
        else:
            page.fill("#prompt", a.prompt)
        page.fill("#seed", str(a.seed))
        page.click("#go")
        wait_state(page, ("done",), 600)
        page.screenshot(path=a.out)
        stats = {k: page.inner_text(f"#{k}") for k in ("runtime", "adapter", "ms", "first")}
    print(f"wrote {a.out}: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
