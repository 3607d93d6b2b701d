"""Browser benchmark (not a test): the CPU visitor's step alone. ditweb's WebAssembly path (the int8 bundle, the
page's default dtype, at 1 and N threads, and the f16 one) against onnxruntime-web's wasm EP (one thread) on the same
model, in one headless Chromium run on a cross-origin isolated page (COOP + COEP, as `ditweb serve`), timed in turns,
with nothing else in the page (bench/web/run.py also runs both WebGPU runtimes in the same turns; on a 2-core machine
their software adapter's steps share the cores with these); then, in the same page, the single-thread matmul peak of
the same kernels module (op_matmul_q8 alone at the model's matmul shapes, bench.js matmulPeak), against which each
step's GFLOP/s is put.

    .venv/bin/python bench/web/wasm_vs_ort.py [--preset Favicon-T/4] [--reps 30] [--warm 30] [--threads 1,2]
    .venv/bin/python bench/web/wasm_vs_ort.py --ckpt models/named.safetensors [--bundles bundles/named-int8,bundles/named]

--ckpt: a checkpoint's real config and weights (the page's shipped model): onnxruntime-web runs its DiT forward
exported to ONNX (a named model's y: one id per label level, (B, L)), ours the shipped bundles (default
bundles/named-int8, the page's default bundle, and bundles/named, f16) whose configuration must match it; a latent
bundle's decoder runs once per favicon, not per step, so it is not in the step. Without --ckpt: the preset with
seeded random weights in every tensor (timing does not depend on the values), exported here.
--sampling-runs, --sampling-steps: then whole sampling runs per ditweb variant (sample(), as the page runs one: the worker
kept two steps ahead, so the round trip of each step overlaps the kernels of the next), their ms per step beside the
single step's round trip.
--warm: untimed rounds before the timed ones. V8 runs a new module's functions unoptimised (Liftoff) and optimises each
once it has run enough, on background threads: onnxruntime-web's large module keeps compiling through its first
rounds, on the cores our worker needs (docs/wasm-runtime.md, "The page's step against node's"). On a shared machine,
pause other jobs first: the table carries the load average.

Prints the table and saves it to bench/results/web-wasm-vs-ort.md (--out). Needs onnxruntime-web in data/npm-ort
(scripts/setup.sh installs it).
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
from run import (CHROMIUM_VERSION, ORT_DIST, REPO, export, export_onnx_levels, load_model, onnx_inputs,  # noqa: E402
                 run_and_save)

from dit_model.bench import format_table, shown_path  # noqa: E402
from webserve.browser import chromium, local_server  # noqa: E402

RESULTS = REPO / "bench" / "results" / "web-wasm-vs-ort.md"


ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


def prepare(args, work: Path):
    """(model, [bundle folders], ONNX file, manifest for the ONNX inputs, the model's name for the table)."""
    import json
    if args.ckpt:
        model, _ = load_model(None, args.ckpt)
        bundles = [Path(b) for b in (args.bundles or f"{REPO}/bundles/named-int8,{REPO}/bundles/named").split(",") if b]
        manifests = [json.loads((b / "manifest.json").read_text()) for b in bundles]
        cfg = model.cfg
        for b, m in zip(bundles, manifests):
            mm = m["model"]
            got = (mm["input_size"], mm["patch_size"], mm["in_channels"], mm["hidden_size"], mm["depth"], mm["num_heads"],
                   list(mm.get("label_levels") or []))
            want = (cfg.input_size, cfg.patch_size, cfg.in_channels, cfg.hidden_size, cfg.depth, cfg.num_heads,
                    list(getattr(cfg, "label_levels", None) or []))
            if got != want:
                raise SystemExit(f"{b}: its model {got} is not the checkpoint's {want}")
        onnx_path = export_onnx_levels(model, work / "model.onnx")
        return model, bundles, onnx_path, manifests[0], Path(args.ckpt).name
    model, names = load_model(args.preset, None)
    tag = args.preset.replace("/", "_")
    b32 = export(model, names, work / f"{tag}-f32", "f32", onnx=True)     # only its ONNX file is used
    b16 = export(model, names, work / f"{tag}-f16", "f16", onnx=False)
    b8 = export(model, names, work / f"{tag}-int8", "int8", onnx=False)
    return model, [b8, b16], b32 / "model.onnx", json.loads((b32 / "manifest.json").read_text()), args.preset


def peak_shapes(cfg, rows: int) -> list[list[int]]:
    """The forward's token matmuls at one step: M = rows x tokens; qkv, proj, fc1, fc2."""
    M, D, hid = rows * cfg.num_patches, cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio)
    return [[M, D, 3 * D], [M, D, D], [M, D, hid], [M, hid, D]]


def run(args) -> str:
    import json
    from dit_model.model import forward_gflops
    work = Path(tempfile.mkdtemp(prefix="ditweb-wasm-vs-ort-"))
    model, bundles, onnx_path, m0, model_name = prepare(args, work)
    dtypes = [json.loads((b / "manifest.json").read_text())["dtype"] for b in bundles]
    threads = sorted({int(t) for t in args.threads.split(",")})
    variants = [{"label": f"{dtypes[0]}, {t} thread{'s' if t > 1 else ''}", "bundle": "/bundle0/", "runtime": "wasm",
                 "threads": t} for t in threads]
    variants += [{"label": f"{d}, 1 thread", "bundle": f"/bundle{i}/", "runtime": "wasm", "threads": 1}
                 for i, d in enumerate(dtypes) if i > 0]
    rows_per_step = 2 * args.n
    cfgm = model.cfg
    step_flop = 2 * forward_gflops(cfgm) * 1e9 * rows_per_step      # multiply-adds x 2, every model row of the step
    shapes = peak_shapes(cfgm, rows_per_step) + [[128, 128, 512]]
    load_before = os.getloadavg()
    routes = {"/": REPO / "bench" / "web", "/web/": REPO / "web", "/ort/": ORT_DIST, "/onnx/": onnx_path.parent,
              **{f"/bundle{i}/": b for i, b in enumerate(bundles)}}
    with chromium() as ctx, local_server(routes, headers=ISOLATED) as url:
        page = ctx.new_page()
        page.set_default_timeout(args.timeout * 1000)
        page.goto(url)
        page.wait_for_selector('body[data-state="ready"]', state="attached")
        cfg = {"variants": variants, "N": args.n, "reps": args.reps, "warm": args.warm, "onnx": "/onnx/" + onnx_path.name,
               "ortEps": ["wasm"], "ortModule": "/ort/ort.webgpu.min.mjs", "ortWasmModule": "/ort/ort.wasm.bundle.min.mjs",
               "ortBase": url + "ort/", "inputs": onnx_inputs(onnx_path, m0), "samplingRuns": args.sampling_runs,
               "samplingSteps": args.sampling_steps}
        # the peak before and after the steps, the better median per shape kept (another process's burst during one of
        # them would lower the peak and flatter the step); the module the page's one-thread worker runs
        relaxed = page.evaluate("() => import('/web/wasm-bundle.js').then((m) => m.checkRelaxedSimd())")
        module = "/web/ditweb-kernels-relaxed.wasm" if relaxed else "/web/ditweb-kernels.wasm"
        peak_cfg = {"module": module, "shapes": shapes, "reps": args.peak_reps}
        before = page.evaluate("cfg => window.matmulPeak(cfg)", peak_cfg)
        res = page.evaluate("cfg => window.runBench(cfg)", cfg)
        after = page.evaluate("cfg => window.matmulPeak(cfg)", peak_cfg)
        peak = [max(a, b, key=lambda p: p["gflops"]) for a, b in zip(before, after)]
        page.close()
    simd = res["ours"][variants[0]["label"]].get("simd") or "plain"
    if (simd == "relaxed") != bool(relaxed):
        raise SystemExit(f"the worker ran {simd} SIMD, the peak was measured on {module}")
    load_after = os.getloadavg()
    ort = res["ort"]["wasm"]
    if "stepMs" not in ort:
        raise SystemExit(f"onnxruntime-web wasm failed: {ort.get('error')}")
    top = max(p["gflops"] for p in peak[:-1])          # this model's shapes (the last: the reference shape)
    one = statistics.median(res["ours"][variants[0]["label"]]["times"])
    one_run = statistics.median(res["ours"][variants[0]["label"]]["samplingTimes"] or [float("nan")])
    ort_run = statistics.median(ort.get("samplingTimes") or [float("nan")])
    rows = []
    for v in variants + [{"label": "onnxruntime-web wasm"}]:
        o = ort if v["label"].startswith("onnx") else res["ours"][v["label"]]
        ts, ks = o["times"], o.get("kernelTimes") or []
        med = statistics.median(ts)
        kmed = statistics.median(ks) if ks else None
        runs = o.get("samplingTimes") or []
        smed = statistics.median(runs) if runs else None
        mine = not v["label"].startswith("onnx")
        first = v["label"].startswith(dtypes[0])
        rows.append([("ditweb wasm, " + v["label"].replace(",", " bundle,", 1)) if mine else v["label"] + ", 1 thread",
                     o.get("threads", 1) if mine else 1, o.get("simd") or ("-" if not mine else "plain"),
                     med, min(ts), statistics.median(ts[len(ts) // 2:]), f"{kmed:.2f}" if kmed else "-",
                     f"{smed:.2f} ({min(runs):.2f})" if smed else "-",
                     f"{ort['stepMs'] / med:.2f}x" + (f" / {ort_run / smed:.2f}x" if smed else ""),
                     (f"{one / med:.2f}x" + (f" / {one_run / smed:.2f}x" if smed else "")) if first else "-",
                     f"{step_flop / med / 1e6:.1f}" + (f" / {step_flop / kmed / 1e6:.1f}" if kmed else "")
                     + (f" / {step_flop / smed / 1e6:.1f}" if smed else ""),
                     f"{100 * step_flop / med / 1e6 / top:.0f}%" + (f" / {100 * step_flop / kmed / 1e6 / top:.0f}%" if kmed else "")
                     + (f" / {100 * step_flop / smed / 1e6 / top:.0f}%" if smed else "")])
    peak_rows = [[" x ".join(map(str, p["shape"])), f"{p['gflops']:.1f}", f"{p['best']:.1f}",
                  "reference (M 128: the pixel Favicon-T/4's step)" if i == len(peak) - 1 else "this model's step"]
                 for i, p in enumerate(peak)]
    name = (f"{model_name} ({cfgm.in_channels}x{cfgm.input_size}x{cfgm.input_size}, patch {cfgm.patch_size}: "
            f"{cfgm.num_patches} tokens, D {cfgm.hidden_size}, depth {cfgm.depth})")
    shown = ", ".join(shown_path(b) for b in bundles) if args.ckpt else "exported here (int8, f16)"
    src = f"--ckpt {shown_path(args.ckpt)}" if args.ckpt else f"--preset {args.preset}"
    return (f"# The CPU visitor's step: ditweb WebAssembly vs onnxruntime-web wasm\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M')}, headless Chromium `{CHROMIUM_VERSION()}`, {platform.machine()}, "
            f"{os.cpu_count()} cores; load average {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end\n"
            f"Command: `.venv/bin/python bench/web/wasm_vs_ort.py {src} --threads {args.threads} --reps {args.reps} "
            f"--warm {args.warm} --sampling-runs {args.sampling_runs} --sampling-steps {args.sampling_steps}`\n\n"
            f"Model {name}; ditweb's bundles: {shown}. One image with guidance ({rows_per_step} model rows = "
            f"{rows_per_step * cfgm.num_patches} token rows), {args.reps} rounds in turns (one step of each runtime per "
            f"round), after {args.warm} untimed rounds; the page is cross-origin isolated (COOP + COEP). A step is "
            f"{step_flop / 1e9:.4f} GFLOP (2 x multiply-adds of the forward, dit_model.model.forward_gflops, x "
            f"{rows_per_step} rows).\n\n"
            + format_table(["runtime", "threads", "SIMD", "median ms/step (one round trip)", "fastest ms",
                            "median of the last half ms", "worker's kernels median ms",
                            "sampling run ms/step median (fastest)",
                            "onnxruntime-web / this (round trip medians / sampling run medians)",
                            f"speed-up over {dtypes[0]} 1 thread (round trip / sampling run)",
                            "step GFLOP/s (round trip / kernels / sampling run)",
                            "of the matmul peak (round trip / kernels / sampling run)"], rows)
            + "\n\nditweb's step: step_begin + forward + step_end (guidance and the sampler update included) in the Web "
              "Worker, timed from the page (the message round trip included; the worker's kernels column: the worker's own "
              "time for the same steps); onnxruntime-web's: one session.run of the "
              "forward alone (x, t, y in, out out), so its number leaves out work ours includes. "
              f"The sampling run: {args.sampling_runs} runs of sample() of {args.sampling_steps} steps per ditweb "
              "variant, in turns with onnxruntime-web running as many forwards back to back (its wasm EP runs on the "
              "page's thread: no round trip to hide), after the single steps, with the live preview as the page's "
              "favicon.js asks for it; "
              "web/sampling.js keeps the worker two steps ahead (AHEAD), so the message round trips and the page's work "
              "on each reply (the preview, the NaN checks) overlap the kernels: the run's ms per step (first step asked "
              "to last reply, over the steps; the run's set-up and the decoder after it left out) is what a visitor "
              "waits per step. Same forward checked: "
              f"max |ditweb {dtypes[0]} - onnxruntime-web| = {ort.get('maxDiff', float('nan')):.2e} (max |out| "
              f"{ort.get('maxRef', float('nan')):.3g}; {dtypes[0]} weights against f32 ones).\n\n"
              f"## The single-thread matmul peak, same run, same module ({module.rsplit('/', 1)[-1]})\n\n"
            + format_table(["M x K x N", "GFLOP/s median", "best", "shape"], peak_rows)
            + f"\n\nop_matmul_q8 alone on the page's thread (bench.js matmulPeak: the same .wasm file as the worker's "
              f"one-thread module, its own memory), {args.peak_reps} samples of ~0.2 GFLOP per shape after two warm-up "
              f"samples, in turns, before and after the steps (per shape the better median of the two runs). The peak the step is put against: {top:.1f} GFLOP/s, the best "
              "median of this model's own shapes.\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="Favicon-T/4", help="model preset, seeded random weights (without --ckpt)")
    ap.add_argument("--ckpt", help="a checkpoint (e.g. models/named.safetensors): its config and weights; ours runs --bundles")
    ap.add_argument("--bundles", help="with --ckpt: bundle folders, the first timed at every --threads count "
                                      "(default bundles/named-int8,bundles/named)")
    ap.add_argument("--threads", default="1,2", help="thread counts of the first bundle (the others: one thread)")
    ap.add_argument("--n", type=int, default=1, help="images per step (batch rows 2N)")
    ap.add_argument("--peak-reps", type=int, default=15, help="samples per shape of the matmul peak")
    ap.add_argument("--reps", type=int, default=30, help="timed rounds")
    ap.add_argument("--warm", type=int, default=30,
                    help="untimed rounds first (V8 optimises a wasm function once it has run enough)")
    ap.add_argument("--sampling-runs", type=int, default=10,
                    help="sampling runs (sample(), the worker kept steps ahead) per ditweb variant, after the steps")
    ap.add_argument("--sampling-steps", type=int, default=25, help="steps of each sampling run")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per page call")
    ap.add_argument("--out", default=str(RESULTS))
    return run_and_save(ap.parse_args(argv), run, "ort.wasm.bundle.min.mjs")


if __name__ == "__main__":
    sys.exit(main())
