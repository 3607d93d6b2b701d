"""The quality cost of `--dtype int8` on the shipped favicon model: the same seeds sampled through wgpu-py from the
f16 and the int8 bundle of models/default.safetensors, PSNR of the int8 images against the f16 ones.

    .venv/bin/python bench/int8_quality.py            # 8 images (one per class, seeds 0..7), 50 DDIM steps, cfg 4
    .venv/bin/python bench/int8_quality.py --n 4 --steps 20   # what docs/bundle-format.md reports (a loaded 2-core CPU)

Pixels: (x + 1) / 2 clipped to [0, 1] over the RGBA channels (peak 1), as tests/test_runtime.py's psnr. For scale:
--with-f32 prints the f16 bundle against the f32 bundle at the same seeds too."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))



def ditweb(argv: list[str]) -> int:
    """Run one `ditweb` verb as a user would (a subprocess: bench sits below the command shell)."""
    return subprocess.run([sys.executable, "-m", "ditweb", *argv]).returncode

def psnr(a, b) -> float:
    a, b = np.clip((a + 1) / 2, 0, 1), np.clip((b + 1) / 2, 0, 1)
    return float(10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-30)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(ROOT / "models" / "default.safetensors"))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--with-f32", action="store_true", help="also the f32 bundle (f16 vs f32 for scale)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from runtime_py.bundle import Bundle
    from runtime_py.gpu import get_gpu

    work = Path(tempfile.mkdtemp(prefix="ditweb-int8-"))
    gpu = get_gpu(False)
    images = {}
    for dtype in (("f32",) if args.with_f32 else ()) + ("f16", "int8"):
        assert ditweb(["export", args.ckpt, str(work / dtype), "--dtype", dtype]) == 0
        b = Bundle.load(work / dtype, gpu, verbose=False, plan="default")
        nc = b.cfg["num_classes"]
        images[dtype] = np.concatenate([b.sample(i % nc, seed=i, steps=args.steps, cfg=args.cfg) for i in range(args.n)])
        size = sum(f.stat().st_size for f in (work / dtype).rglob("*") if f.is_file())
        print(f"{dtype}: bundle {size / 1e6:.2f} MB", flush=True)
    per = [psnr(images["int8"][i], images["f16"][i]) for i in range(args.n)]
    print(f"int8 vs f16, {args.n} images (class i % classes, seed i, {args.steps} DDIM steps, cfg {args.cfg:g}): "
          f"PSNR {psnr(images['int8'], images['f16']):.1f} dB over all, per image min {min(per):.1f} / median "
          f"{np.median(per):.1f} / max {max(per):.1f} dB")
    if args.with_f32:
        print(f"f16 vs f32 (for scale): PSNR {psnr(images['f16'], images['f32']):.1f} dB")


if __name__ == "__main__":
    main()
