"""The preview map of a latent bundle: a linear latent -> image map fitted by least squares to the real decoder,
which the page runs on x_t after every step (the decoder itself runs once, on the final latents).

Every output pixel (c, y, x) of the image is an affine function of the latents around the cell it lies in
(cell (y // f, x // f), f = image side / latent side): with k = 1 the cell's own C values, with k = 3 the 3 x 3
cells around it (zeros past the edge), plus a constant. One matrix per pixel position inside a cell, shared by all
cells: the map is a (k k C + 1, Co f f) matrix M, rows in the order (c_in, ky, kx) then the constant, columns
(c_out, dy, dx). The format and both runtimes: docs/vae.md, "Live previews".

Fitted to what the decoder makes of latents drawn from the DiT's prior (standard normal in the DiT's scaled latent
space), or of given latents (real data's, encoded); the targets are the decoder's outputs clamped to [-1, 1]."""
from __future__ import annotations

import numpy as np

PREVIEW_FILE = "preview.safetensors"     # decoder/preview.safetensors: one tensor, PREVIEW_TENSOR
PREVIEW_TENSOR = "preview.map"
RIDGE = 1e-4                             # relative to the mean diagonal of the normal equations


def features(latents: np.ndarray, k: int) -> np.ndarray:
    """(N, C, h, w) -> (N h w, k k C + 1): each cell's neighbourhood in (c, ky, kx) order, then 1."""
    z = np.asarray(latents, np.float64)
    N, C, h, w = z.shape
    p = (k - 1) // 2
    zp = np.pad(z, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = [zp[:, :, ky:ky + h, kx:kx + w] for ky in range(k) for kx in range(k)]   # each (N, C, h, w)
    f = np.stack(cols, axis=2).reshape(N, C * k * k, h * w)                          # (c, ky, kx)
    f = f.transpose(0, 2, 1).reshape(N * h * w, C * k * k)
    return np.concatenate([f, np.ones((len(f), 1))], axis=1)


def targets(images: np.ndarray, factor: int) -> np.ndarray:
    """(N, Co, H, W) -> (N h w, Co f f): each cell's f x f pixels in (c, dy, dx) order."""
    x = np.asarray(images, np.float64)
    N, Co, H, W = x.shape
    h, w = H // factor, W // factor
    x = x.reshape(N, Co, h, factor, w, factor).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(N * h * w, Co * factor * factor)


def fit_preview_map(latents: np.ndarray, images: np.ndarray, k: int = 1, ridge: float = RIDGE) -> np.ndarray:
    """Least squares (a small ridge keeps it defined for degenerate data): M minimising |features M - targets|^2.
    latents (N, C, h, w), images (N, Co, H, W) the decoder's outputs -> M (k k C + 1, Co f f) float32."""
    factor = images.shape[-1] // latents.shape[-1]
    A, Y = features(latents, k), targets(images, factor)
    G = A.T @ A
    G += np.eye(len(G)) * ridge * np.trace(G) / len(G)
    return np.linalg.solve(G, A.T @ Y).astype(np.float32)


def apply_preview_map(M: np.ndarray, latents: np.ndarray, k: int, out_channels: int) -> np.ndarray:
    """The map on latents (N, C, h, w) -> images (N, Co, H, W), not clamped (web/preview.js is the twin)."""
    N, C, h, w = latents.shape
    factor = int(round((M.shape[1] / out_channels) ** 0.5))
    y = features(latents, k) @ np.asarray(M, np.float64)
    y = y.reshape(N, h, w, out_channels, factor, factor).transpose(0, 3, 1, 4, 2, 5)
    return y.reshape(N, out_channels, h * factor, w * factor)


def decode_prior(vae, latent_shape, n: int = 512, seed: int = 0, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(latents, decoded images) for n latents of the DiT's prior (standard normal) through the torch decoder."""
    import torch
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((n, *latent_shape), generator=g, dtype=torch.float32)
    with torch.no_grad():
        out = torch.cat([vae.decode(z[i:i + batch]) for i in range(0, n, batch)])
    return z.numpy(), out.float().numpy()


PREVIEW_K = 3                  # the 3 x 3 cells around a pixel's cell: +3 dB over k = 1 (bench/results/preview-map.md)


def fit_for_decoder(vae, latent_shape, k: int = PREVIEW_K, seed: int = 0) -> tuple[np.ndarray, float]:
    """The exporter's preview map of a decoder (VAEDecoder with .decode): fitted on latents of the DiT's prior decoded
    by it (bench/preview_map.py: within 0.2 dB of a fit on noised real latents for what a preview shows, x_t), at
    most 8 x 8 cells a latent (the map is local: a larger latent adds cells, not information) and as many latents as
    ~40 G multiply-adds of decoding allow (16 to 512). -> (M, PSNR in dB against the decoder on 64 other latents)."""
    from dit_model.vae import decode_gmacs
    C, h, w = latent_shape
    s = min(h, w, 8)
    n = int(max(16, min(512, 40.0 / max(decode_gmacs(vae.cfg, s), 1e-9))))
    z, d = decode_prior(vae, (C, s, s), n=n + 64, seed=seed)
    M = fit_preview_map(z[:n], d[:n], k)
    return M, psnr_u8(apply_preview_map(M, z[n:], k, d.shape[1]), d[n:])


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """Mean PSNR (dB) per image of two (N, C, H, W) images in [-1, 1], each quantised as the page shows them."""
    q = lambda v: np.floor(np.clip((np.asarray(v, np.float64) + 1) * 127.5 + 0.5, 0, 255))   # noqa: E731
    mse = ((q(a) - q(b)) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))
