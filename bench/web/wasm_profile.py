"""Where the WebAssembly step's time goes, op by op: the engine of web/wasm-runtime.js in node (V8, as Chromium),
one thread, a bundle's step_begin + forward + step_end (one CFG step: batch rows 2N) with every dispatch timed on its
own, grouped by the layer it runs (the blocks' layers summed over the blocks), for the plain and the relaxed SIMD
kernels. The step's GFLOP/s (its matmul and attention flops over the untimed step's median) against the fastest
matmul layer of the same run (what the issue's "share of the single-thread matmul peak" means here). Not a test: the
machine is shared, so the table carries the load average.

    .venv/bin/python bench/web/wasm_profile.py [--bundle bundles/named-int8] [--reps 40] [--simd plain,relaxed]
        [--before DIR]

--before DIR: also the modules of another build (wasm/build.sh DIR at another commit, or
`git show REV:web/ditweb-kernels.wasm` and -relaxed), each run right before the current modules' run: their ms per
layer in a column beside this build's, their whole step in summary lines with the ratio.

Writes bench/results/wasm-profile.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dit_model.bench import RESULTS, publish, shown_path  # noqa: E402

DRIVER = REPO / "bench" / "web" / "wasm_profile.mjs"


def profile(bundle: Path, simd: str, reps: int, n: int, modules: str | None = None) -> dict:
    flags = ["--experimental-wasm-relaxed-simd"] if simd == "relaxed" else []
    req = json.dumps({"bundle": str(bundle), "simd": simd, "reps": reps, "n": n,
                      **({"modules": str(Path(modules).resolve())} if modules else {})})
    r = subprocess.run(["node", *flags, str(DRIVER)], input=req, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"node {DRIVER.name} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return json.loads(r.stdout)


def layer(label: str) -> str:
    """blocks.3.mlp.fc1 -> blocks.*.mlp.fc1: a block's layer summed over the blocks."""
    return re.sub(r"^blocks\.\d+\.", "blocks.*.", label)


def median(v: list[float]) -> float:
    return sorted(v)[len(v) // 2]


def rows_for(simd: str, r: dict) -> tuple[list[list], dict]:
    groups: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0, 0])
    for o in r["ops"]:
        g = groups[layer(o["label"]), o["op"]]
        g[0] += 1
        g[1] += o["ms"]
        g[2] += o["flop"]
    total = sum(g[1] for g in groups.values())
    step = median(r["stepMs"])
    flop = sum(g[2] for g in groups.values())
    peak = max((g[2] / g[1] / 1e6 for (_, op), g in groups.items() if op.startswith("matmul") and g[1] > 0), default=0.0)
    rows = [[simd, name, op, g[0], f"{g[1]:.3f}", f"{100 * g[1] / total:.1f}%", f"{g[2] / g[1] / 1e6:.1f}" if g[2] else "-"]
            for (name, op), g in sorted(groups.items(), key=lambda kv: -kv[1][1])]
    summary = {"simd": simd, "step_ms": step, "sum_ms": total, "gflop": flop / 1e9, "step_gflops": flop / step / 1e6,
               "peak": peak}
    return rows, summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(REPO / "bundles" / "named-int8"))
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--n", type=int, default=1, help="images per step (batch rows 2N)")
    ap.add_argument("--simd", default="plain,relaxed")
    ap.add_argument("--before", help="a folder with another build's ditweb-kernels.wasm and ditweb-kernels-relaxed.wasm")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{args.bundle}: not a bundle folder (no manifest.json)")
    load0 = os.getloadavg()[0]
    rows, sums, befores = [], [], []
    for simd in [s.strip() for s in args.simd.split(",") if s.strip()]:
        if simd not in ("plain", "relaxed"):
            raise SystemExit(f"unknown --simd {simd!r}; choose plain and/or relaxed")
        before_ms = {}
        if args.before:
            brs, bs = rows_for(simd, profile(bundle, simd, args.reps, args.n, args.before))
            befores.append(bs)
            before_ms = {(r[1], r[2]): r[4] for r in brs}
        rs, s = rows_for(simd, profile(bundle, simd, args.reps, args.n))
        if args.before:   # the --before modules' ms per step beside this build's
            rs = [r[:5] + [before_ms.get((r[1], r[2]), "-")] + r[5:] for r in rs]
        rows += rs
        sums.append(s)
    load1 = os.getloadavg()[0]
    summary = "\n".join(
        f"- {s['simd']}: whole step {s['step_ms']:.2f} ms (median of {args.reps}; the dispatches timed one by one sum "
        f"to {s['sum_ms']:.2f} ms), {s['gflop']:.3f} GFLOP of matmul and attention = {s['step_gflops']:.1f} GFLOP/s, "
        f"{100 * s['step_gflops'] / s['peak']:.0f}% of the fastest matmul layer's {s['peak']:.1f} GFLOP/s" for s in sums)
    for b, s in zip(befores, sums):
        summary += (f"\n- {b['simd']}, the --before modules, run just before: whole step {b['step_ms']:.2f} ms, fastest "
                    f"matmul layer {b['peak']:.1f} GFLOP/s; these modules {b['step_ms'] / s['step_ms']:.2f}x faster")
    notes = (f"Bundle {shown_path(bundle)}, batch rows {2 * args.n} (one CFG step), node "
             f"{subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}, one thread; load "
             f"average {load0:.2f} at the start, {load1:.2f} at the end.\n"
             f"Command: `.venv/bin/python bench/web/wasm_profile.py --bundle {shown_path(bundle)} --reps {args.reps} "
             f"--simd {args.simd}{' --before DIR' if args.before else ''}`\n\n{summary}\n\nms: the median per dispatch over the reps, summed over the blocks "
             "(blocks.*); GFLOP/s: 2 M K N per matmul, 4 B H T_q T_kv head_dim per attention. A matmul layer's "
             "activation (gelu, silu) runs in its epilogue, so fc1's GFLOP/s against fc2's is what the gelu costs.")
    head = ["SIMD", "layer", "op", "dispatches", "ms per step"] + (["--before ms"] if args.before else []) + ["share", "GFLOP/s"]
    publish("wasm-profile", "WebAssembly step, op by op (node, one thread)", head, rows, notes, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
