"""Which linear preview map for latent favicons: PSNR of the map's image against the real decoder's, held out.

    OMP_NUM_THREADS=1 .venv/bin/python bench/preview_map.py [--vae models/favicon-vae.safetensors] [--n 3000]

Latents: the autoencoder's posterior means of Twemoji, Noto and Fluent emoji (the DiT's scaled latents), fitted on
n images of the training identities, judged on the held-out identities (dit_model/favicon_vae.py split_identities);
also fitted on latents of the DiT's prior (standard normal, decoded: no data needed, what `export --vae` does).
Maps (export/preview.py): one (C+1) x 4 matrix for every pixel (each cell one colour), a (C+1) x 4 matrix per
pixel position in the cell (k = 1), and the 3 x 3 cells around it (k = 3). PSNR over RGBA of the uint8 images
against the decoder's own uint8 images, and the map's cost in multiply-adds. Writes bench/results/preview-map.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def flat_map(latents, images):
    """One (C+1, Co) matrix for every pixel of a cell: the per-position fit with all positions tied."""
    from export.preview import RIDGE, features
    f = images.shape[-1] // latents.shape[-1]
    A = features(latents, 1)
    Co = images.shape[1]
    Y = images.reshape(len(images), Co, latents.shape[2], f, latents.shape[3], f).mean(axis=(3, 5))
    Y = Y.transpose(0, 2, 3, 1).reshape(-1, Co)
    G = A.T @ A + np.eye(A.shape[1]) * RIDGE * np.trace(A.T @ A) / A.shape[1]
    M = np.linalg.solve(G, A.T @ Y)
    return np.repeat(M[:, :, None], f * f, axis=2).reshape(A.shape[1], Co * f * f)


def noised(vae, z, seed=1, batch=256):
    """x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps at t uniform over the schedule (what a preview shows mid-run),
    and its decoded image."""
    import torch
    from ditformat.schedule import linear_betas
    rng = np.random.default_rng(seed)
    abar = np.cumprod(1.0 - linear_betas())[rng.integers(0, len(linear_betas()), len(z))]
    x = (np.sqrt(abar)[:, None, None, None] * z + np.sqrt(1 - abar)[:, None, None, None] * rng.standard_normal(z.shape))
    x = x.astype(np.float32)
    with torch.no_grad():
        d = torch.cat([vae.decode(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)])
    return x, d.numpy()


def encode(vae, images_u8, batch=256):
    import torch
    from dit_model.favicon_vae import to_model
    out = []
    with torch.no_grad():
        for i in range(0, len(images_u8), batch):
            z = vae.encode(to_model(images_u8[i:i + batch]))
            out.append((z, vae.decode(z)))
    return torch.cat([a for a, _ in out]).numpy(), torch.cat([b for _, b in out]).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", default=str(ROOT / "models" / "favicon-vae.safetensors"))
    ap.add_argument("--n", type=int, default=3000, help="training images to fit on")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "preview-map.md"))
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from dit_model.emoji import load_emoji
    from dit_model.favicon_vae import load_favicon_vae, split_identities
    from export.preview import apply_preview_map, decode_prior, fit_preview_map, psnr_u8
    vae = load_favicon_vae(args.vae)
    es = load_emoji(styles=("twemoji", "noto", "fluent"))
    held = split_identities(es.emoji)
    rng = np.random.default_rng(0)
    train_idx = rng.choice(np.flatnonzero(~held), size=min(args.n, int((~held).sum())), replace=False)
    t0 = time.time()
    z_tr, d_tr = encode(vae, es.images[train_idx])
    z_ho, d_ho = encode(vae, es.images[held])
    z_pr, d_pr = decode_prior(vae, z_tr.shape[1:], n=1024)
    z_nt, d_nt = noised(vae, z_tr)
    z_nh, d_nh = noised(vae, z_ho, seed=2)
    z_mix, d_mix = np.concatenate([z_tr, z_nt]), np.concatenate([d_tr, d_nt])
    print(f"encoded and decoded {len(z_tr)} + {len(z_ho)} + {len(z_pr)} latents in {time.time() - t0:.0f} s", file=sys.stderr)
    C, Co = z_tr.shape[1], d_tr.shape[1]
    rows = []
    sources = [("data (training identities)", (z_tr, d_tr)), ("data, noised to x_t (t uniform)", (z_nt, d_nt)),
               ("data, clean + noised", (z_mix, d_mix)), ("prior N(0, 1), decoded", (z_pr, d_pr))]
    for source, (z, d) in sources:
        for name, k, M in [("one colour per cell", 1, flat_map(z, d)), ("per pixel position, k = 1", 1, fit_preview_map(z, d, 1)),
                           ("per pixel position, 3x3 cells, k = 3", 3, fit_preview_map(z, d, 3))]:
            p_ho = psnr_u8(apply_preview_map(M, z_ho, k, Co), d_ho)
            p_pr = psnr_u8(apply_preview_map(M, z_pr[:256], k, Co), d_pr[:256])
            p_nh = psnr_u8(apply_preview_map(M, z_nh, k, Co), d_nh)
            macs = M.shape[0] * M.shape[1] * z_ho.shape[2] * z_ho.shape[3]
            rows.append([source, name, list(M.shape), f"{p_ho:.2f}", f"{p_nh:.2f}", f"{p_pr:.2f}", f"{macs / 1e3:.0f} k"])
            print(rows[-1], file=sys.stderr)
    from export.preview import fit_for_decoder
    M, _ = fit_for_decoder(vae.dec, z_tr.shape[1:])
    rows.append(["prior, as `export --vae` fits it (fit_for_decoder)", "per pixel position, 3x3 cells, k = 3", list(M.shape),
                 f"{psnr_u8(apply_preview_map(M, z_ho, 3, Co), d_ho):.2f}", f"{psnr_u8(apply_preview_map(M, z_nh, 3, Co), d_nh):.2f}",
                 f"{psnr_u8(apply_preview_map(M, z_pr[:256], 3, Co), d_pr[:256]):.2f}", "299 k"])
    lines = ["# The preview map of latent favicons (bench/preview_map.py)", "",
             f"Autoencoder `{Path(args.vae).name}` ({C} x 8 x 8 latents, {Co} x 32 x 32 images). Fitted on {len(z_tr)} "
             f"training images' latents or 1,024 latents of the prior; PSNR (RGBA, uint8, mean per image) of the map's "
             f"image against the real decoder's on the {len(z_ho)} held-out images' latents, on the same noised to x_t at a "
             f"random t (the latents a preview shows mid-run), and on 256 prior latents. "
             "The real decoder: 155 M multiply-adds per favicon.", "",
             "| fitted on | map | matrix | PSNR held-out data | PSNR held-out x_t | PSNR prior | multiply-adds |", "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
