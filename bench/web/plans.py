"""Browser benchmark (not a test): a bundle's WebGPU step in headless Chromium (SwiftShader, the CPU
adapter) under the default plan (every dispatch's own kernel: the kernels before candidates existed) and
the plan web/tune.js picks by timing, in one page, interleaved rounds; with the selection time and each
slot's candidates.

    .venv/bin/python bench/web/plans.py [--bundle bundles/default] [--rounds 5] [--steps 5]

Prints the tables and saves them to bench/results/web-plans.md.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from dit_model.bench import publish
from webserve.browser import WEB_DIR, chromium, local_server

REPO = Path(__file__).resolve().parents[2]

JS = """async ([rounds, steps]) => {
  const m = await import('/ditweb.js');
  const median = (v) => { const s = [...v].sort((a, b) => a - b); return s[s.length >> 1]; };
  const t0 = performance.now();
  const tuned = await m.loadBundle('/bundle/', { runtime: 'webgpu', plan: 'auto', useCache: false });
  const loadMs = performance.now() - t0;
  const plain = await m.loadBundle('/bundle/', { runtime: 'webgpu', plan: 'default', useCache: false });
  const opts = { classId: 0, seed: 1, steps, cfg: 4 };
  await tuned.sample({ ...opts, steps: 2 });           // times the candidates (first batch of this size)
  await plain.sample({ ...opts, steps: 2 });
  const times = { default: [], tuned: [] };
  const xs = {};
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? [['tuned', tuned], ['default', plain]] : [['default', plain], ['tuned', tuned]];
    for (const [name, b] of order) {
      const res = await b.sample(opts);
      times[name].push(res.msPerStep);
      xs[name] = Array.from(res.x);
    }
  }
  const plan = tuned.plans[`2,1`];
  return { adapter: tuned.adapterDescription, loadMs, tune: tuned.lastTune, plan,
           medians: { default: median(times.default), tuned: median(times.tuned) }, times, xs };
}"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(REPO / "bundles" / "default"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    import numpy as np
    with local_server({"/": WEB_DIR, "/bundle/": Path(args.bundle)}) as url, chromium() as ctx:
        page = ctx.new_page()
        page.goto(url + "favicon.svg")
        page.set_default_timeout(1_800_000)
        r = page.evaluate(JS, [args.rounds, args.steps])
    d, t = r["medians"]["default"], r["medians"]["tuned"]
    a, b = np.asarray(r["xs"]["default"]), np.asarray(r["xs"]["tuned"])
    ua, ub = np.clip((a + 1) / 2, 0, 1), np.clip((b + 1) / 2, 0, 1)
    mse = float(np.mean((ua - ub) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(1 / mse)
    changed = {k: v for k, v in r["plan"].items() if v != k.split("|")[0]}
    rows = [["default (each dispatch's own kernel)", d, f"{d / min(d, t):.2f}x", ""],
            ["tuned (web/tune.js)", t, f"{t / min(d, t):.2f}x", f"{len(changed)} of {len(r['plan'])} slots changed"]]
    import json
    bundle = Path(args.bundle)
    man = json.loads((bundle / "manifest.json").read_text())
    kern = sum(v["size"] for k, v in man["files"].items() if k.startswith("kernels/"))
    from bench.web.run import OUR_JS
    js = sum((WEB_DIR / f).stat().st_size for f in OUR_JS)
    first = (bundle / "manifest.json").stat().st_size + man["files"]["weights.safetensors"]["size"] + kern + js
    one, five, _ = os.getloadavg()
    tune = r["tune"] or {}
    notes = (f"Bundle {args.bundle}, one image with CFG (B = 2), {args.steps} DDIM steps per sample, median over "
             f"{args.rounds} interleaved rounds of ms per step (sample()'s msPerStep: each step waits for the GPU). "
             f"Adapter: {r['adapter']}. Selection: {tune.get('timingMs', 0):.0f} ms timing + "
             f"{tune.get('firstMs', 0):.0f} ms first dispatches + "
             f"{tune.get('pipelinesMs', 0):.0f} ms creating the candidates' pipelines ({tune.get('source', '?')}"
             f"{', partial dispatches' if tune.get('partial') else ''}), "
             f"once per adapter and batch size, cached in localStorage. The two plans' images: {psnr:.1f} dB PSNR. "
             f"Speed-up of the tuned plan: {d / t:.2f}x. First visit, WebGPU path: {first:,} bytes (manifest "
             f"{(bundle / 'manifest.json').stat().st_size:,}, weights {man['files']['weights.safetensors']['size']:,}, "
             f"{len(man['kernels'])} kernels {kern:,}, runtime JS {js:,}; uncompressed). "
             f"Load average {one:.2f} (1 min), {five:.2f} (5 min).")
    publish("web-plans", "WebGPU in headless Chromium: default vs tuned kernel plan", ["plan", "ms / step", "vs best", ""],
            rows, notes, args.out)
    cand = []
    for slot, times in (tune.get("slots") or {}).items():
        for k, v in sorted(times.items(), key=lambda kv: kv[1]):
            cand.append([slot, tune["counts"][slot], k, v * 1e3, "chosen" if r["plan"].get(slot) == k else ""])
    if cand:
        from dit_model.bench import format_table
        print(format_table(["slot", "dispatches", "candidate", "ms", ""], cand))


if __name__ == "__main__":
    main()
