"""Browser benchmark (not a test): the CPU visitor's step alone. ditweb's WebAssembly path (the int8 bundle, the
page's default dtype, and the f16 one) against onnxruntime-web's wasm EP, one thread each, on the same model, in
one headless Chromium run, timed in turns, with nothing else in the page (bench/web/run.py also runs both WebGPU
runtimes in the same turns; on a 2-core machine their software adapter's steps share the cores with these).

    .venv/bin/python bench/web/wasm_vs_ort.py [--preset Favicon-T/4] [--reps 30] [--warm 30]

--warm: untimed rounds before the timed ones. V8 runs a new module's functions unoptimised (Liftoff) and optimises each
once it has run enough, on background threads: onnxruntime-web's large module keeps compiling through its first
rounds, on the cores our worker needs (docs/wasm-runtime.md, "The page's step against node's"). On a shared machine,
pause other jobs first: the table carries the load average.

Prints the table and saves it to bench/results/web-wasm-vs-ort.md. Needs onnxruntime-web in data/npm-ort
(scripts/setup.sh installs it). Seeded random weights in every tensor: timing does not depend on the values.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CHROMIUM_VERSION, ORT_DIST, REPO, export, load_model, onnx_inputs, run_and_save  # noqa: E402

from dit_model.bench import format_table  # noqa: E402
from webserve.browser import chromium, local_server  # noqa: E402

RESULTS = REPO / "bench" / "results" / "web-wasm-vs-ort.md"


def run(args) -> str:
    import json
    work = Path(tempfile.mkdtemp(prefix="ditweb-wasm-vs-ort-"))
    model, names = load_model(args.preset, None)
    tag = args.preset.replace("/", "_")
    b32 = export(model, names, work / f"{tag}-f32", "f32", onnx=True)     # only its ONNX file is used
    b16 = export(model, names, work / f"{tag}-f16", "f16", onnx=False)
    b8 = export(model, names, work / f"{tag}-int8", "int8", onnx=False)
    onnx_path = b32 / "model.onnx"
    m32 = json.loads((b32 / "manifest.json").read_text())
    load_before = os.getloadavg()
    routes = {"/": REPO / "bench" / "web", "/web/": REPO / "web", "/bundle16/": b16, "/bundle8/": b8,
              "/ort/": ORT_DIST, "/onnx/": onnx_path.parent}
    with chromium() as ctx, local_server(routes) as url:
        page = ctx.new_page()
        page.set_default_timeout(args.timeout * 1000)
        page.goto(url)
        page.wait_for_selector('body[data-state="ready"]', state="attached")
        cfg = {"variants": [{"label": "int8", "bundle": "/bundle8/", "runtime": "wasm", "threads": 1},
                            {"label": "f16", "bundle": "/bundle16/", "runtime": "wasm", "threads": 1}],
               "N": 1, "reps": args.reps, "warm": args.warm, "onnx": "/onnx/model.onnx", "ortEps": ["wasm"],
               "ortModule": "/ort/ort.webgpu.min.mjs", "ortWasmModule": "/ort/ort.wasm.bundle.min.mjs",
               "ortBase": url + "ort/", "inputs": onnx_inputs(onnx_path, m32)}
        res = page.evaluate("cfg => window.runBench(cfg)", cfg)
        page.close()
    load_after = os.getloadavg()
    ort = res["ort"]["wasm"]
    if "stepMs" not in ort:
        raise SystemExit(f"onnxruntime-web wasm failed: {ort.get('error')}")
    rows = []
    for label, o in [("ditweb wasm, int8 bundle", res["ours"]["int8"]), ("ditweb wasm, f16 bundle", res["ours"]["f16"]),
                     ("onnxruntime-web wasm", ort)]:
        ts, ks = o["times"], o.get("kernelTimes") or []
        rows.append([label, o.get("simd") or ("-" if label.startswith("onnx") else "plain"), statistics.median(ts),
                     min(ts), statistics.median(ts[len(ts) // 2:]), f"{statistics.median(ks):.2f}" if ks else "-",
                     ort["stepMs"] / statistics.median(ts)])
    cfgm = m32["model"]
    name = f"{args.preset} ({cfgm['in_channels']}x{cfgm['input_size']}x{cfgm['input_size']}, D {cfgm['hidden_size']}, depth {cfgm['depth']})"
    return (f"# The CPU visitor's step: ditweb WebAssembly vs onnxruntime-web wasm, one thread each\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M')}, headless Chromium `{CHROMIUM_VERSION()}`, {platform.machine()}; "
            f"load average {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end (2 cores)\n"
            f"Command: `.venv/bin/python bench/web/wasm_vs_ort.py --preset {args.preset} --reps {args.reps} "
            f"--warm {args.warm}`\n\n"
            f"Model {name}, one image with guidance (2 model rows), {args.reps} rounds in turns (one step of each "
            f"runtime per round), after {args.warm} untimed rounds.\n\n"
            + format_table(["runtime", "SIMD", "median ms/step", "fastest ms", "median of the last half ms",
                            "worker's kernels median ms", "onnxruntime-web median / this median"], rows)
            + "\n\nditweb's step: step_begin + forward + step_end (guidance and the sampler update included) in the Web "
              "Worker, timed from the page (the message round trip included; the worker's kernels column: the worker's own "
              "time for the same steps); onnxruntime-web's: one session.run of the "
              "forward alone (x, t, y in, out out), so its number leaves out work ours includes. Same forward checked: "
              f"max |ditweb int8 - onnxruntime-web| = {ort.get('maxDiff', float('nan')):.2e} (max |out| "
              f"{ort.get('maxRef', float('nan')):.3g}; int8 weights against f32 ones).\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="Favicon-T/4", help="model preset (the shipped named model is Favicon-T/4)")
    ap.add_argument("--reps", type=int, default=30, help="timed rounds")
    ap.add_argument("--warm", type=int, default=30,
                    help="untimed rounds first (V8 optimises a wasm function once it has run enough)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per page call")
    ap.add_argument("--out", default=str(RESULTS))
    return run_and_save(ap.parse_args(argv), run, "ort.wasm.bundle.min.mjs")


if __name__ == "__main__":
    sys.exit(main())
