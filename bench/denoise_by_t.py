"""How well a model denoises at each noise level: the RMSE of its x0 estimate from x_t against the real x0, beside
the RMSE of the naive estimate x_t / sqrt(abar_t) (no model at all), over real training images with their own
labels, the same images and noise for every checkpoint.

A model that never trained at some t barely beats the naive estimate there. At the smallest t that shows in every
sample: DDIM's last steps hand over x0 estimates with the noise left in them, which reads as grain. Training
timesteps drawn logit-normally (t = 1000 sigmoid(n), n ~ N(0, 1)) pick t < 50 for 0.16% of the samples and t < 20
for 0.005%; uniform t picks them 5% and 2% of the time.

    .venv/bin/python bench/denoise_by_t.py models/named.safetensors runs/named/ckpt.pt
    .venv/bin/python bench/denoise_by_t.py CKPT --n 256 --t 1,5,10,20,50,100,200,400,700

Pixel models only (a latent model's x0 is a latent). Writes bench/results/denoise-by-t.md."""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dit_model.bench import RESULTS, publish, shown_path  # noqa: E402


@functools.lru_cache(maxsize=2)
def training_data(styles: tuple[str, ...] | None):
    """The named data set of these styles, or the Twemoji categories (styles None); loaded once for every
    checkpoint that asks for it."""
    if styles is not None:
        from dit_model.named import load_named
        return load_named(list(styles), skin_tones=False)
    from dit_model.data import load_data
    return load_data()


def real_batch(meta, n: int, seed: int):
    """n real training images (uint8 NHWC) and their labels in the model's label layout."""
    vocab = meta.get("vocab")                                # a named model: labels at every level
    data = training_data(tuple(vocab.names[-1]) if vocab is not None else None)   # its last level: the styles
    pick = np.random.default_rng(seed).choice(len(data.images), min(n, len(data.images)), replace=False)
    return data.images[pick], data.labels[pick]


def denoise_errors(path: str, ts: list[int], n: int, seed: int) -> tuple[dict, list[float], list[float]]:
    """(meta, model RMSE per t, naive RMSE per t) on n images, noise drawn from `seed`."""
    import torch
    from dit_model.checkpoint import load_model
    from dit_model.data import to_model
    from dit_model.diffusion import Diffusion
    from dit_model.latent import read_reference
    if read_reference(path) is not None:
        raise SystemExit(f"{path}: a latent model; this benchmark measures pixel models only")
    model, meta = load_model(path)
    model.eval()
    images, labels = real_batch(meta, n, seed)
    x0 = to_model(torch.as_tensor(images))
    y = torch.as_tensor(labels)
    diffusion = Diffusion(prediction=model.cfg.prediction)
    g = torch.Generator().manual_seed(seed)
    ours, naive = [], []
    for t in ts:
        tt = torch.full((len(x0),), t, dtype=torch.long)
        xt = diffusion.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
        with torch.no_grad():
            out = model(xt, tt, y)
        x0_hat, _ = diffusion.x0_eps_from_output(out[:, :x0.shape[1]], xt, tt)
        rmse = lambda est: float(((est.clamp(-1, 1) - x0) ** 2).mean().sqrt())
        ours.append(rmse(x0_hat))
        naive.append(rmse(diffusion.predict_x0(xt, tt, torch.zeros_like(xt))))   # x_t / sqrt(abar_t)
    return meta, ours, naive


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpts", nargs="+", help="pixel models: .safetensors or runs/NAME/ckpt.pt (its EMA weights)")
    p.add_argument("--t", default="1,5,10,20,50,100,200,400,700", help="timesteps, comma-separated")
    p.add_argument("--n", type=int, default=192, help="real images (the same for every checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS), help="folder for denoise-by-t.md")
    args = p.parse_args(argv)
    try:
        ts = [int(v) for v in args.t.split(",")]
    except ValueError:
        p.error(f"--t: comma-separated integers, got {args.t!r}")
    if not ts or min(ts) < 0 or max(ts) > 999 or args.n < 1:
        p.error("--t must be timesteps in 0..999 and --n at least 1")
    header = ["model", "step"] + [f"t={t}" for t in ts]
    rows, naive_row = [], None
    for path in args.ckpts:
        meta, ours, naive = denoise_errors(path, ts, args.n, args.seed)
        rows.append([shown_path(path), meta.get("step", "-")] + [f"{v:.4f}" for v in ours])
        naive_row = ["naive x_t / sqrt(abar_t)", "-"] + [f"{v:.4f}" for v in naive]
    notes = (f"Command: `.venv/bin/python bench/denoise_by_t.py {' '.join(shown_path(c) for c in args.ckpts)} "
             f"--n {args.n} --t {args.t} --seed {args.seed}`. RMSE of the x0 estimate (clamped to [-1, 1]) against the "
             f"real image, RGBA in [-1, 1], {args.n} real training images with their own labels (conditional), the same "
             "images and noise for every row; the naive row divides x_t by sqrt(abar_t) (what no denoising leaves).")
    publish("denoise-by-t", "Denoising error by noise level", header, rows + [naive_row], notes, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
