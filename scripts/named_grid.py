"""The README's grid for a named model: the first 16 evaluation emoji (models/eval_emoji.json, hippo first),
one row each: the real image and 4 samples in style A, then the real image and 4 samples in style B,
on a light checkerboard so transparency shows. For a latent model, each real image is followed by its reconstruction
by the model's autoencoder (encoded to the posterior mean, decoded): the most detail a sample can have.

    .venv/bin/python scripts/named_grid.py CKPT [--styles twemoji,noto] [--cfg 4] [--out docs/samples/named.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dit_model import identity                      # noqa: E402
from dit_model.evaluate import load_eval_model      # noqa: E402
from dit_model.favicon_vae import load_favicon_vae, reconstruct  # noqa: E402
from dit_model.images import to_uint8               # noqa: E402
from dit_model.latent import vae_for_model          # noqa: E402
from dit_model.named_eval import sample_requests    # noqa: E402


def checker(img: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) over a 4-px light checkerboard."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // 4) + (xx // 4)) % 2 == 0, 225, 250).astype(np.float32)[..., None]
    a = img[..., 3:].astype(np.float32) / 255.0
    return np.rint(img[..., :3] * a + board * (1 - a)).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("--styles", default="twemoji,noto")
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--out", default="docs/samples/named.png")
    args = ap.parse_args(argv)
    model, meta = load_eval_model(args.ckpt)
    vocab, cfg = meta["vocab"], meta["config"]
    vae, vae_path = vae_for_model(args.ckpt)         # a latent model: its autoencoder decodes the samples
    data = identity.load_data()
    ids = identity.load_eval_list(data)[:args.rows]
    styles = [s.strip() for s in args.styles.split(",")]
    real = {}
    base = np.array([v == "" for v in data.variant])                 # no skin-tone variants
    for s in styles:
        si = data.styles.index(s)
        for e in ids:
            m = np.flatnonzero((data.emoji == e) & (data.style == si) & base)
            real[e, s] = data.images[m[0]] if len(m) else np.zeros_like(data.images[0])
    recon = {}
    if vae_path is not None:                         # what the autoencoder keeps of each real image
        keys = list(real)
        full = load_favicon_vae(vae_path)            # encoder and decoder (the model needs only the decoder)
        recon = dict(zip(keys, reconstruct(full, np.stack([real[k] for k in keys]))))
    labels = [vocab.label(0, e, style=s).ids for e in ids for s in styles for _ in range(args.seeds)]
    x = to_uint8(sample_requests(model, cfg, vocab, labels, args.cfg, args.steps, seed=0, vae=vae))
    x = x.reshape(len(ids), len(styles), args.seeds, *x.shape[1:])
    S, pad, gap = data.images.shape[1], 2, 8
    cols = len(styles) * (1 + bool(recon) + args.seeds)
    W = cols * (S + pad) + (len(styles) - 1) * gap + pad
    H = len(ids) * (S + pad) + pad
    canvas = np.full((H, W, 3), 255, np.uint8)
    for r, e in enumerate(ids):
        x0 = pad
        for j, s in enumerate(styles):
            tiles = [real[e, s]] + ([recon[e, s]] if recon else []) + list(x[r, j])
            for k, t in enumerate(tiles):
                y0 = pad + r * (S + pad)
                canvas[y0:y0 + S, x0:x0 + S] = checker(t)
                x0 += S + pad
            x0 += gap
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).resize((W * 3, H * 3), Image.NEAREST).save(out)
    names = [data.identities[e].name for e in ids]
    print(f"{out}: rows {', '.join(names)}; columns per style ({', '.join(styles)}): real, "
          f"{'its reconstruction by the autoencoder, ' if recon else ''}then {args.seeds} samples "
          f"(cfg {args.cfg:g}, {args.steps} DDIM steps, seed 0; step {meta.get('step')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
