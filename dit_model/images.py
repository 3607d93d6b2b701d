"""Model tensors in [-1, 1] -> PNG files, a PNG grid and .ico favicons."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(x) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8; C is 1, 3 or 4 (RGBA); other C keep the first 3."""
    a = np.asarray(x.detach().cpu().float().numpy() if hasattr(x, "detach") else x, np.float32)
    if a.shape[1] not in (1, 3, 4):
        a = a[:, :3]
    a = np.clip((a + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return a.transpose(0, 2, 3, 1)


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile (N, H, W, C) uint8 images on a transparent (or black) canvas."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = im
    img = _pil(canvas)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def write_samples(images: np.ndarray, out_dir: Path, stem: str = "sample") -> list[Path]:
    """Individual PNGs, .ico favicons (for RGBA/RGB images) and grid.png. Returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        png = out_dir / f"{stem}_{i:03d}.png"
        _pil(im).save(png)
        paths.append(png)
        if im.shape[-1] in (3, 4) and max(im.shape[:2]) <= 256:     # the .ico format stops at 256 px
            ico = out_dir / f"{stem}_{i:03d}.ico"
            _pil(im).convert("RGBA").save(ico, sizes=[(im.shape[1], im.shape[0])])
            paths.append(ico)
    g = out_dir / "grid.png"
    grid(images, scale=4 if images.shape[1] <= 32 else 1).save(g)
    paths.append(g)
    return paths
