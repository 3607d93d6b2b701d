"""Is a named model's favicon as fast as the category model's? In one headless Chromium run, a 25-step favicon
(one image, classifier-free guidance: batch rows 2) of the shipped category bundle (bundles/default) and of the
shipped named bundle (bundles/named: the same Favicon-T/4 body, its label embedding the sum of four rows) on
WebAssembly (one thread) and WebGPU (SwiftShader here), timed in turns so background load hits both alike; the
median ms per step over the repetitions. Not a test: the machine is shared, so the table carries the load average.

    .venv/bin/python bench/web/named_step.py [--reps 7] [--steps 25]

Writes bench/results/web-named.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dit_model.bench import format_table, save_text  # noqa: E402
from webserve.browser import WEB_DIR, chromium, local_server  # noqa: E402

RESULTS = REPO / "bench" / "results" / "web-named.md"
BUNDLES = {"category (bundles/default)": ("default", {"className": "Animals & Nature"}),
           "named (bundles/named)": ("named", {"prompt": "hippo"})}

TIME_JS = """async ([bundles, runtimes, reps, steps]) => {
    const { loadBundle } = await import('/ditweb.js');
    const loaded = {};
    for (const [label, [folder]] of Object.entries(bundles))
      for (const runtime of runtimes)
        loaded[label + '|' + runtime] = await loadBundle(`/bundles/${folder}/`, { runtime, threads: 1, useCache: false });
    const ms = {};
    for (let r = 0; r < reps + 1; r++)                     // the first turn warms up (plans, pipelines, caches)
      for (const [label, [, opts]] of Object.entries(bundles))
        for (const runtime of runtimes) {
          const key = label + '|' + runtime;
          const out = await loaded[key].sample({ ...opts, steps, cfg: 4, seed: r });
          if (r > 0) (ms[key] = ms[key] || []).push(out.msPerStep);
        }
    for (const b of Object.values(loaded)) b.dispose();
    return ms;
}"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    runtimes = ["wasm", "webgpu"]
    load0 = os.getloadavg()[0]
    with local_server({"/": WEB_DIR, "/bundles/": REPO / "bundles"}) as url, chromium() as ctx:
        page = ctx.new_page()
        page.goto(url + "favicon.svg")
        ms = page.evaluate(TIME_JS, [BUNDLES, runtimes, args.reps, args.steps])
        page.close()
    load1 = os.getloadavg()[0]
    rows, base = [], {}
    for label in BUNDLES:
        for runtime in runtimes:
            med = statistics.median(ms[f"{label}|{runtime}"])
            base.setdefault(runtime, med)
            rows.append([label, runtime, f"{med:.1f}", f"{min(ms[f'{label}|{runtime}']):.1f}",
                         f"{med / base[runtime]:.2f}x"])
    header = ["bundle", "runtime", "ms per step (median)", "best", "vs category"]
    notes = (f"{args.steps}-step favicon, one image, cfg 4 (batch rows 2), {args.reps} turns after one warm-up, "
             f"WebAssembly on one thread, WebGPU on this machine's adapter; load average {load0:.2f} -> {load1:.2f}; "
             f"{time.strftime('%Y-%m-%d %H:%M')}. Command: .venv/bin/python bench/web/named_step.py")
    print(format_table(header, rows))
    print(notes)
    save_text(Path(args.out), "# A named favicon against a category favicon in the browser\n\n"
              + format_table(header, rows) + "\n\n" + notes + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
