"""Time to the first favicon as a visitor meets it: the page `ditweb site` writes, served from a local server, opened
in headless Chromium with `?runtime=wasm&autorun&steps=25`, from navigation to the last step's favicon, as the page's
own line says (`window.ditwebFirstFavicon`: page, bundle = fetch + sha256 + set-up, steps). Cold: a fresh browser
profile; warm: a second page of the same profile (the Cache API holds the verified files). Served plain (one thread)
and cross-origin isolated (COOP + COEP, as `ditweb serve`: the thread pool). Not a test: the machine is shared, so
the table carries the load average; time it with nothing else running.

    .venv/bin/python bench/web/first_favicon.py [--bundle bundles/named-int8] [--reps 3] [--steps 25]

Writes bench/results/first-favicon.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dit_model.bench import RESULTS, publish, shown_path  # noqa: E402
from webserve.browser import chromium, local_server, wait_state  # noqa: E402
from webserve.site import first_visit, sizes, write_site  # noqa: E402

ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
PARTS = ("totalMs", "pageMs", "bundleMs", "waitMs", "stepsMs")


def visit(site: Path, headers: dict | None, query: str) -> list[dict]:
    """One fresh profile: the cold visit, then the warm one."""
    out = []
    with local_server({"/": site}, headers=headers) as url, chromium() as ctx:
        for cache in ("cold", "warm"):
            page = ctx.new_page()
            page.goto(url + "?" + query)
            state = wait_state(page, ("done", "error", "bundle-error", "unsupported"), 300)
            if state != "done":
                raise SystemExit(f"the page ended in state {state!r}: {page.text_content('#message')}")
            out.append({"cache": cache, **page.evaluate("window.ditwebFirstFavicon")})
            page.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(REPO / "bundles" / "named-int8"))
    ap.add_argument("--reps", type=int, default=3, help="fresh profiles per serving (each: a cold and a warm visit)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{args.bundle}: not a bundle folder (no manifest.json)")
    if args.reps < 1 or args.steps < 1:
        raise SystemExit("need --reps >= 1 and --steps >= 1")
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ditweb-first-") as tmp:
        site = Path(tmp) / "site"
        write_site(bundle, site)
        visit_files = first_visit(site)
        raw, gz = sizes(site, visit_files["wasm"])
        query = f"runtime=wasm&autorun&steps={args.steps}"
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.reps):                       # servings in turns, so background load hits both alike
            for serving, headers in (("plain", None), ("isolated", ISOLATED)):
                for r in visit(site, headers, query):
                    runs.setdefault((serving, r["cache"]), []).append(r)
    load1 = os.getloadavg()[0]
    rows = []
    for (serving, cache), rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in PARTS}
        rows.append([serving, rs[0]["threads"], cache, len(rs), round(med["totalMs"]), round(med["pageMs"]),
                     round(med["bundleMs"]), round(med["waitMs"]), round(med["stepsMs"]),
                     round(med["stepsMs"] / args.steps, 1), " ".join(str(round(r["totalMs"])) for r in rs)])
    notes = (f"Bundle {shown_path(bundle)} through `ditweb site`; a first visit on the WebAssembly path downloads "
             f"{len(visit_files['wasm'])} files, {raw / 1e6:.2f} MB ({gz / 1e6:.2f} MB gzipped). Load average "
             f"{load0:.2f} at the start, {load1:.2f} at the end.\n"
             f"Command: `.venv/bin/python bench/web/first_favicon.py --bundle {shown_path(bundle)} --reps {args.reps} "
             f"--steps {args.steps}`\n\nMedians over the fresh profiles (ms): total = navigation to the last step's "
             "favicon; page = navigation until the page starts loading the bundle (HTML, CSS, the module graph); "
             "bundle = fetch, sha256 and set-up (worker, kernels, weights) until ready; wait = ready until the run "
             "starts (the page's own work); steps = the sampling run with its live previews. plain: no COOP/COEP, one "
             "thread; isolated: COOP + COEP (`ditweb serve`, hosts that send them): the thread pool, one thread per "
             "core the browser reports. The local server adds no network latency.")
    publish("first-favicon", f"Time to the first favicon ({args.steps} steps, WebAssembly path, the `ditweb site` page)",
            ["serving", "threads", "cache", "runs", "total ms", "page ms", "bundle ms", "wait ms", "steps ms",
             "ms a step", "every total ms"], rows, notes, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
