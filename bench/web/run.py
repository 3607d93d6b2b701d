"""Browser benchmark (not a test): one denoising step (the CFG batch, B = 2N) of web/ditweb.js on
WebGPU and on WebAssembly SIMD vs onnxruntime-web's WebGPU and wasm EPs (one thread each) on the ONNX
export of the same model, in one headless Chromium run; and the bytes of each path (what a visitor
downloads). The WebAssembly path runs the f16 bundle and the int8 one (the page's default dtype), each with
the SIMD the page would choose (relaxed where Chromium validates it).

    .venv/bin/python bench/web/run.py [--presets Favicon-N/2,Favicon-T/4] [--ckpt CKPT] [--reps 5]

Prints the tables and saves them to bench/results/web.md. Needs onnxruntime-web in
data/npm-ort (scripts/setup.sh installs it). Models without --ckpt get seeded random weights
(every tensor, so no branch is skipped as zero): timing does not depend on the values.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dit_model.bench import format_table, save_text
from webserve.browser import chromium, local_server

REPO = Path(__file__).resolve().parents[2]

ORT_DIST = REPO / "data" / "npm-ort" / "node_modules" / "onnxruntime-web" / "dist"
OUR_WASM = ["wasm-runtime.js", "ditweb-worker.js", "ditweb-kernels.wasm"]             # the WebAssembly path's worker side
# what a site embedding the runtime loads: every module web/package.json lists but the worker's
OUR_JS = [f for f in json.loads((REPO / "web" / "package.json").read_text())["files"] if f.endswith(".js") and f not in OUR_WASM]
RESULTS = REPO / "bench" / "results" / "web.md"


def load_model(preset: str | None, ckpt: str | None):
    """(model, class names): a checkpoint, else a preset with seeded random weights in every tensor."""
    import torch
    from dit_model.checkpoint import load_model as load_ckpt
    from dit_model.model import DiT
    if ckpt:
        model, meta = load_ckpt(ckpt)
        return model, meta["class_names"]
    torch.manual_seed(0)
    model = DiT.from_preset(preset).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    return model, [f"class {i}" for i in range(model.cfg.num_classes)]


def export(model, names, out: Path, dtype: str, onnx: bool, matmul: str = "registers") -> Path:
    from export.bundle import export_bundle
    try:
        return export_bundle(model, out, dtype, names, onnx=onnx, matmul=matmul)
    except ImportError:          # an exporter without its ONNX part: write the ONNX file here
        bundle = export_bundle(model, out, dtype, names, matmul=matmul)
        export_onnx(model, bundle / "model.onnx")
        return bundle


def export_onnx(model, path: Path) -> None:
    """Forward pass as ONNX, batch dimension dynamic; the legacy exporter at opset 17 (measured:
    the dynamo exporter at 17 writes a Split that onnxruntime rejects)."""
    import torch
    cfg = model.cfg
    x = torch.randn(2, cfg.in_channels, cfg.input_size, cfg.input_size)
    t = torch.tensor([500, 500])
    y = torch.tensor([0, cfg.num_classes])
    torch.onnx.export(model.float().eval(), (x, t, y), str(path), input_names=["x", "t", "y"], output_names=["out"],
                      dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "y": {0: "B"}, "out": {0: "B"}},
                      opset_version=17, dynamo=False)


def export_onnx_levels(model, path: Path) -> Path:
    """A named model's forward pass (cfg.label_levels: a label is one id per level) as ONNX with y of shape (B, L), one
    id per level (the level's size: its null label), as the runtimes' label rows hold it; any other model: the
    exporter's own export/onnx_export.py (y of shape (B,)). Same opset and exporter as export_onnx."""
    import torch
    cfg = model.cfg
    if not getattr(cfg, "label_levels", None):
        from export.onnx_export import export_onnx as plain
        return plain(model, path)
    levels = list(cfg.label_levels)

    class Forward(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, t, y):
            return self.m(x, t, y)

    x = torch.randn(2, cfg.in_channels, cfg.input_size, cfg.input_size)
    t = torch.tensor([10, 500], dtype=torch.long)
    y = torch.tensor([levels, [0] * len(levels)], dtype=torch.long)
    path = Path(path)
    torch.onnx.export(Forward(model.float().eval()), (x, t, y), str(path), input_names=["x", "t", "y"],
                      output_names=["out"], dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "y": {0: "B"}, "out": {0: "B"}},
                      opset_version=17, dynamo=False)
    return path


def onnx_inputs(model_path: Path, manifest: dict) -> list[dict]:
    """Input names/dtypes/shapes of the ONNX graph, with the role (x, t, y) the page fills them for. A named model's
    y (B, L): "null" is the list of the levels' null ids (each level's size) and "starts" each level's first table row
    (bench.js turns the ids into the runtimes' label rows for its agreement check)."""
    import onnx
    g = onnx.load(str(model_path), load_external_data=False).graph
    names = {"x": None, "t": None, "y": None}
    out = []
    types = {1: "float32", 6: "int32", 7: "int64"}
    for i, inp in enumerate(g.input):
        tt = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        role = ["x", "t", "y"][i] if i < 3 else "x"
        shape[0] = -1   # the batch dimension
        entry = {"name": inp.name, "dtype": types.get(tt.elem_type, "float32"), "shape": shape, "role": role,
                 "null": manifest["model"]["num_classes"]}
        levels = manifest["model"].get("label_levels")
        if role == "y" and levels and len(shape) == 2:
            entry["null"] = list(levels)
            entry["starts"] = [sum(n + 1 for n in levels[:k]) for k in range(len(levels))]
        out.append(entry)
        names[role] = inp.name
    return out


def page_weight(bundle: Path, manifest: dict, wasm: bool = False) -> dict:
    js = sum((REPO / "web" / f).stat().st_size for f in OUR_JS + (OUR_WASM if wasm else []))
    kernels = sum(e["size"] for f, e in manifest["files"].items() if f.startswith("kernels/"))
    weights = manifest["files"]["weights.safetensors"]["size"]
    return {"js": js, "kernels": kernels, "weights": weights, "manifest": (bundle / "manifest.json").stat().st_size}


def run(args) -> str:
    presets = [p for p in args.presets.split(",") if p] if not args.ckpt else [None]
    work = Path(tempfile.mkdtemp(prefix="ditweb-bench-web-"))
    step_rows, weight_rows, kernel_rows, details, summary = [], [], [], [], []
    with chromium() as ctx:
        for preset in presets:
            model, names = load_model(preset, args.ckpt)
            tag = preset or Path(args.ckpt).stem
            b32 = export(model, names, work / f"{tag.replace('/', '_')}-f32", "f32", onnx=True)
            b16 = export(model, names, work / f"{tag.replace('/', '_')}-f16", "f16", onnx=False)
            bsh = export(model, names, work / f"{tag.replace('/', '_')}-f32-shared", "f32", onnx=False, matmul="shared")
            b8 = export(model, names, work / f"{tag.replace('/', '_')}-int8", "int8", onnx=False)   # the page's dtype
            m8 = json.loads((b8 / "manifest.json").read_text())
            m32 = json.loads((b32 / "manifest.json").read_text())
            m16 = json.loads((b16 / "manifest.json").read_text())
            onnx_path = b32 / "model.onnx"
            requested: list[str] = []
            routes = {"/": REPO / "bench" / "web", "/web/": REPO / "web", "/bundle/": b32, "/bundle16/": b16, "/bundlesh/": bsh,
                      "/bundle8/": b8, "/ort/": ORT_DIST, "/onnx/": onnx_path.parent}
            with local_server(routes, requested=requested) as url:
                page = ctx.new_page()
                page.set_default_timeout(args.timeout * 1000)
                page.goto(url)
                page.wait_for_selector('body[data-state="ready"]', state="attached")
                cfg = {"variants": [{"label": "f32", "bundle": "/bundle/"}, {"label": "f16", "bundle": "/bundle16/"},
                                    {"label": "shared", "bundle": "/bundlesh/"},
                                    {"label": "wasm", "bundle": "/bundle16/", "runtime": "wasm"},
                                    {"label": "wasm8", "bundle": "/bundle8/", "runtime": "wasm"}],
                       "N": args.n, "reps": args.reps,
                       "onnx": "/onnx/model.onnx" if onnx_path.exists() else None,
                       "ortModule": "/ort/ort.webgpu.min.mjs", "ortWasmModule": "/ort/ort.wasm.bundle.min.mjs",
                       "ortBase": url + "ort/",
                       "inputs": onnx_inputs(onnx_path, m32) if onnx_path.exists() else []}
                requested.clear()
                res = page.evaluate("cfg => window.runBench(cfg)", cfg)
                ort_files = sorted({p for p in requested if p.startswith("/ort/")})
                page.close()
            cfgm = m32["model"]
            name = f"{tag} ({cfgm['in_channels']}x{cfgm['input_size']}x{cfgm['input_size']}, D {cfgm['hidden_size']}, depth {cfgm['depth']})"
            ours, ours16, oursh, ourw = res["ours"]["f32"], res["ours"]["f16"], res["ours"]["shared"], res["ours"]["wasm"]
            ourw8 = res["ours"]["wasm8"]
            ort, ortw = res["ort"].get("webgpu", {}), res["ort"].get("wasm", {})
            adapter = ours["adapter"]
            rows = 2 * args.n
            step_rows.append([name, f"ditweb f32 ({ours['dispatches']} dispatches)", rows, ours["firstMs"], ours["stepMs"], 1.0])
            step_rows.append([name, "ditweb f16 weights", rows, ours16["firstMs"], ours16["stepMs"], ours16["stepMs"] / ours["stepMs"]])
            step_rows.append([name, "ditweb f32, --matmul shared", rows, oursh["firstMs"], oursh["stepMs"], oursh["stepMs"] / ours["stepMs"]])
            step_rows.append([name, "ditweb wasm SIMD, 1 thread (f16 bundle)", rows, ourw["firstMs"], ourw["stepMs"], ourw["stepMs"] / ours["stepMs"]])
            step_rows.append([name, "ditweb wasm SIMD, 1 thread (int8 bundle)", rows, ourw8["firstMs"], ourw8["stepMs"], ourw8["stepMs"] / ours["stepMs"]])
            for label, o in [("onnxruntime-web webgpu", ort), ("onnxruntime-web wasm, 1 thread", ortw)]:
                if "stepMs" in o:
                    step_rows.append([name, label, rows, o["firstMs"], o["stepMs"], o["stepMs"] / ours["stepMs"]])
                else:
                    step_rows.append([name, label, rows, "-", f"failed: {o.get('error', 'no ONNX file')}", "-"])
            ort_ms = ortw.get('stepMs', float('nan'))
            summary.append(f"- {name}: ditweb wasm {ourw['stepMs']:.1f} ms/step (f16 bundle), {ourw8['stepMs']:.1f} ms "
                           f"(int8 bundle, {ourw8.get('simd') or 'plain'} SIMD) vs onnxruntime-web wasm {ort_ms:.1f} ms "
                           f"(x{ourw['stepMs'] / ort_ms:.2f}, x{ourw8['stepMs'] / ort_ms:.2f}: {ort_ms / ourw8['stepMs']:.2f} "
                           f"times faster with int8); vs ditweb WebGPU on {adapter} {ours['stepMs']:.1f} ms")
            if ours.get("perKernel"):
                total = sum(v["ms"] for v in ours["perKernel"].values())
                for op, v in sorted(ours["perKernel"].items(), key=lambda kv: -kv[1]["ms"]):
                    kernel_rows.append([name, op, v["count"], v["ms"], f"{100 * v['ms'] / total:.1f}%"])
            pw32, pw16, pww = page_weight(b32, m32), page_weight(b16, m16), page_weight(b16, m16, wasm=True)
            pww8 = page_weight(b8, m8, wasm=True)
            onnx_bytes = onnx_path.stat().st_size if onnx_path.exists() else 0
            for label, pw in [("ditweb webgpu, f32", pw32), ("ditweb webgpu, f16", pw16), ("ditweb wasm, f16", pww),
                              ("ditweb wasm, int8", pww8)]:
                total = sum(pw.values())
                code = f"{pw['js'] / 1e3:.1f} kB JS{' + wasm' if pw in (pww, pww8) else ''} + {pw['kernels'] / 1e3:.1f} kB WGSL + {pw['manifest'] / 1e3:.1f} kB manifest"
                weight_rows.append([name, label, code, f"{pw['weights'] / 1e6:.3f}", f"{total / 1e6:.3f}"])
            # which of onnxruntime-web's files each EP fetched: the WebGPU build's (ort.webgpu + its asyncify or
            # jsep wasm) vs the plain wasm build's (ort.wasm.bundle + ort-wasm-simd-threaded.wasm)
            webgpu_file = lambda p: any(k in p for k in ("webgpu", "jsep", "asyncify", "jspi"))
            for label, files in [("onnxruntime-web webgpu", [p for p in ort_files if webgpu_file(p)]),
                                 ("onnxruntime-web wasm", [p for p in ort_files if not webgpu_file(p)])]:
                ort_bytes = sum((ORT_DIST / p[len('/ort/'):]).stat().st_size for p in files)
                weight_rows.append([name, label, f"{ort_bytes / 1e6:.2f} MB ({', '.join(Path(p).name for p in files)})",
                                    f"{onnx_bytes / 1e6:.3f}", f"{(ort_bytes + onnx_bytes) / 1e6:.3f}"])
            fmt = lambda ts: [round(t, 1) for t in ts]
            details.append(f"- {name}: ditweb load {ours['loadMs']:.0f} ms; step times f32 {fmt(ours['times'])}, "
                           f"f16 {fmt(ours16['times'])}, shared {fmt(oursh['times'])} ms; onnxruntime-web session "
                           f"{ort.get('createMs', 0):.0f} ms, run times {fmt(ort.get('times', []))} ms; same forward, "
                           f"max |ditweb - onnxruntime-web| = {ort.get('maxDiff', float('nan')):.2e} "
                           f"(max |out| {ort.get('maxRef', float('nan')):.3g}, {ort.get('outLength')} vs {ort.get('oursLength')} values); "
                           f"ditweb wasm load {ourw['loadMs']:.0f} ms, step times {fmt(ourw['times'])} ms (int8: "
                           f"{fmt(ourw8['times'])} ms, {ourw8.get('simd') or 'plain'} SIMD); onnxruntime-web wasm session "
                           f"{ortw.get('createMs', 0):.0f} ms, run times {fmt(ortw.get('times', []))} ms, max |ditweb wasm - "
                           f"onnxruntime-web wasm| = {ortw.get('maxDiff', float('nan')):.2e}")
            print(details[-1], flush=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    text = (f"# Browser: one denoising step, ditweb.js (WebGPU, WebAssembly) vs onnxruntime-web (WebGPU, wasm)\n\n"
            f"{stamp}, headless Chromium `{CHROMIUM_VERSION()}`, adapter: {adapter}; {platform.machine()}, "
            f"load average {' '.join(load)} at the end\n"
            f"Command: `.venv/bin/python bench/web/run.py --presets {args.presets} --n {args.n} --reps {args.reps}`\n\n"
            + "\n".join(summary) + "\n\n"
            "## Time per denoising step (CFG batch: 2N model rows)\n\n"
            + format_table(["model", "runtime", "batch rows", "first step ms (compile)", "median ms/step", "x ditweb f32"], step_rows)
            + "\n\nditweb's step = step_begin + forward + step_end (guidance and the sampler update included), one command "
              "buffer; its first-step column is half of a 2-step sample() (pipelines were built at load). "
              "ditweb wasm's step is the same program in the Web Worker, timed from the page (the message round "
              "trip included). "
              "The runtimes are timed in turns (one step each per round), so background load hits them alike. "
              "onnxruntime-web's is one session.run of the forward only (x, t, y in, eps out), so guidance and the "
              "sampler update are not in its number; its first run includes shader compilation.\n\n"
            "## Where ditweb's step goes (GPU timestamps, one compute pass per dispatch, f32 registers matmul)\n\n"
            + format_table(["model", "op", "dispatches", "ms", "share"], kernel_rows)
            + "\n\nOne step profiled once; separate passes add a little overhead per dispatch.\n\n"
            "## Page weight (bytes a first visit downloads)\n\n"
            + format_table(["model", "runtime", "code", "weights MB", "total MB"], weight_rows)
            + "\n\nditweb's second visit downloads only manifest.json (the Cache API keeps the verified files).\n\n"
            "## Raw\n\n" + "\n".join(details) + "\n\n"
            "SwiftShader runs WebGPU on the CPU (2 shared cores): compare ratios within this run, not absolute times "
            "across runs or with a GPU.\n")
    return text


def CHROMIUM_VERSION() -> str:
    try:
        return subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return "chromium"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="Favicon-N/2,Favicon-T/4", help="comma-separated presets (random weights)")
    ap.add_argument("--ckpt", help="benchmark this checkpoint instead of presets")
    ap.add_argument("--n", type=int, default=1, help="images per step (batch rows = 2N with CFG)")
    ap.add_argument("--reps", type=int, default=3, help="timed rounds (each: one step of every runtime, in turns)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per page call")
    ap.add_argument("--out", default=str(RESULTS))
    return run_and_save(ap.parse_args(argv), run, "ort.webgpu.min.mjs")


def run_and_save(args, run_fn, ort_file: str) -> int:
    """A browser benchmark's end: onnxruntime-web's `ort_file` must be installed; run, print, save to args.out."""
    if not (ORT_DIST / ort_file).is_file():
        print(f"onnxruntime-web is missing ({ORT_DIST}); run scripts/setup.sh", file=sys.stderr)
        return 2
    text = run_fn(args)
    print(text)
    print(f"saved {save_text(Path(args.out), text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
