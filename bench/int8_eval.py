"""What `--dtype int8` costs on the shipped model, measured by the eval: `ditweb eval` (the judge's class accuracy,
the Frechet distance in judge features against the real-vs-real floor) of the weights an f16 bundle and an int8
bundle of the same checkpoint hold, and of the checkpoint itself for scale; then the bundles themselves run on
the WebAssembly path (node, web/wasm-runtime.js, the page's worker engine) against torch at those weights, so the
eval's numbers are the bundles' numbers.

    .venv/bin/python bench/int8_eval.py                  # the page's settings: 25 DDIM steps, cfg 4, 32 per class
    .venv/bin/python bench/int8_eval.py --n-per-class 16 --scales 2,4

`ditweb eval` samples a checkpoint with torch; a bundle's weights are a checkpoint too: int8 Linear weights
dequantised (q * scale per output channel, export's quantize_linear), every other tensor rounded to f16, as the
bundle stores them (export.bundle.bundle_tensors). The int8 kernels (op_matmul_q8, matmul_q8.wgsl.j2) compute
(a . q) * scale in f32, within ~1e-5 of the output's range of torch at these weights (tests/test_wasm.py), far
below anything the eval can see. Writes bench/results/int8-eval.md."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NODE = ROOT / "tests" / "_wasm_node.mjs"     # the engine driver the wasm tests use: {cmd: "sample", bundle, opts}


def stored_weights(model, dtype: str) -> dict:
    """The model's state dict at the values a `dtype` bundle holds, as float32 torch tensors."""
    import torch
    from export.bundle import bundle_tensors
    stored = bundle_tensors(model, dtype)
    sd = {}
    for k, v in model.state_dict().items():
        w = np.asarray(stored[k], np.float64)
        scale = stored.get(k[: -len(".weight")] + ".scale") if k.endswith(".weight") else None
        if scale is not None:
            w = w * np.asarray(scale, np.float64)[:, None]
        sd[k] = torch.from_numpy(w.reshape(tuple(v.shape)).astype(np.float32))
    return sd


def write_checkpoint(ckpt: Path, sd: dict, out: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out), metadata=meta)


def run_eval(ckpt: Path, args, work: Path) -> dict:
    js = work / (ckpt.stem + ".json")
    cmd = [sys.executable, "-m", "ditweb", "eval", str(ckpt), "--steps", str(args.steps), "--scales", args.scales,
           "--n-per-class", str(args.n_per_class), "--json", str(js), "--out", str(work / ckpt.stem)]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    return json.loads(js.read_text())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.clip((a + 1) / 2, 0, 1), np.clip((b + 1) / 2, 0, 1)
    return float(10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-30)))


def bundle_check(model, meta, args, work: Path) -> list[list]:
    """The first image of every class of the eval's first scale (seed c, class c) from each bundle on the wasm
    path, against torch sampling at the bundle's weights, and int8 against f16 on the wasm path."""
    import torch
    from ditformat.guidance import Guide
    from dit_model.sample import sample_images
    from export.bundle import export_bundle
    cfg, names = meta["config"], meta["class_names"]
    scale = float(args.scales.split(",")[0])
    wasm, ref = {}, {}
    for dtype in ("f16", "int8"):
        bundle = export_bundle(model, work / f"bundle-{dtype}", dtype, names)
        twin = type(model)(cfg).eval()
        twin.load_state_dict(stored_weights(model, dtype))
        imgs, refs = [], []
        for c in range(len(names)):
            opts = {"classIds": [c], "seed": c, "steps": args.steps, "cfg": scale, "sampler": "ddim"}
            r = subprocess.run(["node", str(NODE)], input=json.dumps({"cmd": "sample", "bundle": str(bundle), "opts": opts}),
                               capture_output=True, text=True, check=True)
            imgs.append(np.asarray(json.loads(r.stdout)["x"], np.float32))
            refs.append(sample_images(twin, in_channels=cfg.in_channels, input_size=cfg.input_size,
                                      num_classes=cfg.num_classes, class_ids=[c], guide=Guide(scale=scale),
                                      steps=args.steps, seed=c, prediction=cfg.prediction).numpy().reshape(-1))
        wasm[dtype], ref[dtype] = np.concatenate(imgs), np.concatenate(refs)
        size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
        wasm[dtype + "_bytes"] = size
    return [[f"{d} bundle, wasm path vs torch at its weights", f"{psnr(wasm[d], ref[d]):.1f} dB",
             f"{wasm[d + '_bytes'] / 1e6:.2f} MB"] for d in ("f16", "int8")] + \
           [["int8 vs f16 bundle, both on the wasm path", f"{psnr(wasm['int8'], wasm['f16']):.1f} dB", "-"]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(ROOT / "models" / "default.safetensors"))
    ap.add_argument("--n-per-class", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--scales", default="4")
    ap.add_argument("--no-f32", action="store_true", help="skip the checkpoint's own (f32) row")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from dit_model.checkpoint import load_model
    model, meta = load_model(args.ckpt)
    model = model.float().eval()
    work = Path(tempfile.mkdtemp(prefix="ditweb-int8-eval-"))
    load = os.getloadavg()
    t0 = time.time()
    results = {}
    for dtype in ("f16", "int8"):
        path = work / f"weights-{dtype}.safetensors"
        write_checkpoint(Path(args.ckpt), stored_weights(model, dtype), path)
        results[dtype] = run_eval(path, args, work)
    if not args.no_f32:
        results["f32 (checkpoint)"] = run_eval(Path(args.ckpt), args, work)
    checks = bundle_check(model, meta, args, work)
    rows = []
    for name, r in results.items():
        for w in r["rows"]:
            rows.append([name, f"{w['scale']:g}", w["n"], f"{w['balanced_accuracy']:.1f}", f"{w['of_ceiling']:.0f}%",
                         f"{w['fd']:.2f} ± {w['fd_std']:.2f}", f"{w['fd_excess']:.2f}", f"{w['near_median']:.3f}"])
    fl = results["f16"]["floor"]
    lines = ["# int8 weights on the shipped model: the eval's verdict", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}, `.venv/bin/python bench/int8_eval.py --n-per-class {args.n_per_class} "
             f"--steps {args.steps} --scales {args.scales}`; load average at start {load[0]:.2f}, {time.time() - t0:.0f} s in all", "",
             "| weights | cfg | n | balanced class accuracy % | of ceiling | FD (judge features) | FD - floor | nearest-copy RMSE median |",
             "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines += ["", f"Judge ceiling {results['f16']['ceiling']:.1f}% (held-out real images); real-vs-real floor FD "
              f"{fl['mean']:.2f} ± {fl['std']:.2f} ({fl['pairs']} pairs). Same seeds for every row (class c: seed c), "
              f"{args.steps} DDIM steps, as `ditweb eval`. The f16 and int8 rows are `ditweb eval` of the weights those "
              "bundles hold (int8: q * scale per output channel, the rest f16).", "",
              "The bundles themselves on the WebAssembly path (one image per class, seed c, the first scale):", "",
              "| comparison | PSNR | bundle bytes |", "|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in checks]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "bench" / "results" / "int8-eval.md").write_text(text)


if __name__ == "__main__":
    main()
