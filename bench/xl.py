"""A DiT at paper size through the whole bundle path on this machine's adapter (slow; not in CI).

    .venv/bin/python bench/xl.py --cfg 1 --runs 1                 # DiT-XL/2, f16 and int8, no validate (~10 min a step on lavapipe)
    .venv/bin/python bench/xl.py --preset DiT-S/2 --validate      # the same path at a size a CPU adapter finishes
    .venv/bin/python bench/xl.py --dtypes f16 --vae --no-candidates --validate --batch 1 --no-step \
        --table bench/results/xl-vae.md                           # XL/2 + the SD VAE decoder validated (~1 h here)

Random weights (every tensor, export/bundle.py randomize_) in the reference `.pt` layout (a bare state dict, as
facebookresearch/DiT publishes DiT-XL-2-256x256.pt), then per dtype: `ditweb export CKPT OUT --dtype D` (weights
in shards of at most 64 MiB), optionally `ditweb validate OUT --summary` (every dispatch against float64 torch,
then the whole model), `Bundle.load` (verification, shard-by-shard upload, pipelines) and one timed denoising
step (classifier-free guidance: B = 2 model rows for one image, --cfg 1: one row; the last of --runs runs, the
first builds the batch's buffers). --vae: a random-weight VAE decoder in the SD config (sd-vae-ft-ema), written as
a diffusers folder (config.json + diffusion_pytorch_model.safetensors), goes into the bundle (`export --vae`) and
`validate` checks it too (256x256 decodes: a per-dispatch pass on one latent, the whole decoder on two).
--no-candidates exports only the default kernel of each step, so validate checks what that plan runs and not the
alternative matmul tiles too (at XL/2 size on a CPU adapter those alone take hours). Writes bench/results/xl.md
(or --table)."""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))



def ditweb(argv: list[str], keep: list[str] | None = None) -> int:
    """Run one `ditweb` verb as a user would (a subprocess: bench sits below the command shell); its output is
    printed as it comes and, with `keep`, also collected there."""
    p = subprocess.Popen([sys.executable, "-m", "ditweb", *argv], stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        print(line, end="", flush=True)
        if keep is not None:
            keep.append(line.rstrip("\n"))
    return p.wait()

def write_sd_vae(path: Path) -> Path:
    """A diffusers-style VAE folder holding the decoder half of the SD config, random weights (GroupNorm scales
    near 1 so that activations keep their size through 30 ResNets)."""
    import torch

    from dit_model.vae import SD_VAE, VAEDecoder, save_vae_folder
    from export.bundle import randomize_
    vae = randomize_(VAEDecoder(SD_VAE).eval(), seed=1, gain=0.5)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return save_vae_folder(vae, path)


def main():
    from ditformat.errors import UsageError
    from export.cli import add_benchmark_model_options, check_dtypes
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_benchmark_model_options(ap, "DiT-XL/2", "f16,int8")
    ap.add_argument("--validate", action="store_true", help="run `ditweb validate` (float64 torch per dispatch: slow)")
    ap.add_argument("--no-step", action="store_true", help="export (validate) and load only: no denoising step")
    ap.add_argument("--vae", action="store_true", help="bake a random SD-config VAE decoder into the bundle (export --vae)")
    ap.add_argument("--no-candidates", action="store_true", help="export only the default kernel of each step")
    ap.add_argument("--batch", type=int, default=2, help="validate's batch rows B (1 halves its model passes)")
    ap.add_argument("--cfg", type=float, default=4.0, help="guidance scale of the timed step (1: one model row, B = 1)")
    ap.add_argument("--runs", type=int, default=2, help="timed steps; the last is reported (the first builds buffers)")
    ap.add_argument("--work", help="folder for the checkpoint and bundles (default: a temporary one)")
    ap.add_argument("--table", default=str(ROOT / "bench" / "results" / "xl.md"))
    args = ap.parse_args()
    try:
        dtypes = check_dtypes(args.dtypes)
    except UsageError as e:
        ap.error(str(e))
    import os

    import torch
    torch.set_num_threads(1)
    from dit_model.model import DiT
    from export.bundle import randomize_
    from runtime_py.bundle import Bundle
    from runtime_py.gpu import get_gpu

    work = Path(args.work or tempfile.mkdtemp(prefix="ditweb-xl-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = randomize_(DiT.from_preset(args.preset).eval(), seed=0, gain=0.5)
    n_params = sum(p.numel() for p in model.parameters())
    ckpt = work / "model.pt"
    torch.save(model.state_dict(), ckpt)               # the reference layout: a bare state dict
    del model
    print(f"{args.preset}: {n_params / 1e6:.1f} M parameters, random weights -> {ckpt} ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    export_extra = ["--no-candidates"] if args.no_candidates else []
    if args.vae:
        export_extra += ["--vae", str(write_sd_vae(work / "vae"))]
        print(f"SD VAE decoder, random weights -> {work / 'vae'}", flush=True)
    gpu = get_gpu(False)
    rows = []
    for dtype in dtypes:
        out = work / f"bundle-{dtype}"
        row = {"dtype": dtype}
        t = time.perf_counter()
        assert ditweb(["export", str(ckpt), str(out), "--dtype", dtype, "--preset", args.preset, *export_extra]) == 0
        row["export_s"] = time.perf_counter() - t
        m = json.loads((out / "manifest.json").read_text())
        shards = {f: v["size"] for f, v in m["files"].items() if f.endswith(".safetensors")}
        row["mb"] = sum(v["size"] for v in m["files"].values()) / 1e6
        row["shards"] = len(shards)
        row["largest_mib"] = max(shards.values()) / 2 ** 20
        if args.validate:
            t = time.perf_counter()
            row["report"] = []
            code = ditweb(["validate", str(out), "--summary", "--batch", str(args.batch)], row["report"])
            row["validate"] = "pass" if code == 0 else "FAIL"
            row["validate_s"] = time.perf_counter() - t
        t = time.perf_counter()
        bundle = Bundle.load(out, gpu, verbose=False, plan="default")
        row["load_s"] = time.perf_counter() - t
        if not args.no_step:
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                bundle.sample(0, seed=0, steps=1, cfg=args.cfg)
                times.append(time.perf_counter() - t)
            row["step_s"] = times[-1]
        del bundle
        print(json.dumps({k: v for k, v in row.items() if k != "report"}), flush=True)
        rows.append(row)
    fmt = lambda v, f: (f.format(v) if isinstance(v, (int, float)) else (v or "-"))   # noqa: E731
    lines = [f"# {args.preset} bundles on {gpu.name}", "",
             f"`.venv/bin/python bench/xl.py --preset {args.preset} --dtypes {args.dtypes}{' --vae' if args.vae else ''}"
             f"{' --no-candidates' if args.no_candidates else ''}{' --validate' if args.validate else ''}"
             f"{f' --batch {args.batch}' if args.validate and args.batch != 2 else ''}"
             f"{' --no-step' if args.no_step else ''}`: random "
             f"weights ({n_params / 1e6:.1f} M parameters) in the reference .pt layout"
             + (", a random SD-config VAE decoder as a diffusers folder baked in (export --vae)" if args.vae else "")
             + (", only the default kernel of each step (export --no-candidates)" if args.no_candidates else "")
             + ", exported, "
             + ("validated, " if args.validate else "") + "loaded (verified, uploaded shard by shard, pipelines)"
             + (", no step timed. " if args.no_step else f", one denoising step timed (cfg {args.cfg:g}: "
                f"B = {1 if args.cfg == 1 else 2} model row(s); default kernels; the last of {args.runs} run(s), "
                "init included). ")
             + f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.1f} at the end (the machine is shared).", "",
             "| dtype | bundle MB | shards | largest shard MiB | export s | validate | validate s | load s | step s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dtype']} | {r['mb']:.1f} | {r['shards']} | {r['largest_mib']:.1f} | {r['export_s']:.0f} | "
                     f"{r.get('validate', '-')} | {fmt(r.get('validate_s'), '{:.0f}')} | {fmt(r.get('load_s'), '{:.1f}')} | "
                     f"{fmt(r.get('step_s'), '{:.1f}')} |")
    for r in rows:
        if r.get("report"):
            lines += ["", f"`ditweb validate --summary --batch {args.batch}` on the {r['dtype']} bundle "
                      f"({r['validate_s'] / 60:.0f} min):", "", "```", *r["report"], "```"]
    Path(args.table).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
