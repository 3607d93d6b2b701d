"""The favicon data set: Twemoji (npm `emoji-datasource-twitter@16.0.0`, images CC-BY 4.0,
Twitter/Twemoji), your own folder of PNGs, or a packed .npz; `ditweb data` shows and packs it.

Images are stored as (N, S, S, 4) uint8 RGBA with *straight* (not premultiplied) colour and are
fed to the model as (N, 4, S, S) floats in [-1, 1]. Resizing averages premultiplied colour
(r*a, g*a, b*a, a) and divides by alpha afterwards, so a half-covered edge pixel keeps the
emoji's colour instead of being darkened by the transparent black around it (no fringes);
fully transparent pixels get the defined colour (0, 0, 0, 0), i.e. -1 in every channel.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ditformat.errors import DitwebError

ROOT = Path(__file__).resolve().parent.parent
TWEMOJI = ROOT / "data" / "npm" / "node_modules" / "emoji-datasource-twitter"
SETUP_HINT = "run `make run` (or `./scripts/setup.sh`) to install it with npm into data/npm/"
SIZES = (16, 32, 64)
SKIP_CATEGORIES = ("Component",)          # skin-tone swatches and hair styles, not emoji of their own
PACK_VERSION = 1


class DataError(DitwebError):
    """Data that cannot be used; the message names the file or folder and what to do."""


@dataclass
class FaviconData:
    images: np.ndarray                    # (N, S, S, 4) uint8, straight alpha, transparent = 0
    labels: np.ndarray                    # (N,) int64 class ids
    class_names: list[str]
    source: str = ""
    names: list[str] = field(default_factory=list)   # per-image file name (for people, not training)
    parents: dict[str, str] = field(default_factory=dict)   # class -> its coarser class (Twemoji subcategory -> category)

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[3] != 4 or self.images.dtype != np.uint8:
            raise DataError(f"{self.source}: images must be (N, S, S, 4) uint8, got {self.images.dtype} {self.images.shape}")
        if n == 0:
            raise DataError(f"{self.source}: no images")
        if self.labels.shape != (n,) or self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DataError(f"{self.source}: labels must be (N,) ids in [0, {len(self.class_names)})")

    @property
    def size(self) -> int:
        return self.images.shape[1]

    def counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def tensor(self) -> torch.Tensor:
        """(N, 4, S, S) float32 in [-1, 1]."""
        return to_model(torch.from_numpy(self.images))


def to_model(images_u8: torch.Tensor) -> torch.Tensor:
    """(N, S, S, 4) uint8 -> (N, 4, S, S) float32 in [-1, 1] (the inverse of images.to_uint8)."""
    return images_u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ---------------------------------------------------------------- one image

def to_rgba_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode (P with transparency, LA, L, RGB, ...) -> (H, W, 4) uint8 RGBA."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("PA")           # palette transparency survives as alpha
    return np.asarray(img.convert("RGBA"), dtype=np.uint8)


def resize_rgba(rgba: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 4) uint8 -> (size, size, 4) uint8, premultiplied-alpha resampling (see module doc)."""
    a = rgba.astype(np.float32) / 255.0
    if rgba.shape[:2] != (size, size):
        a[..., :3] *= a[..., 3:]                                       # premultiply
        down = rgba.shape[0] >= size and rgba.shape[1] >= size
        method = Image.BOX if down else Image.BICUBIC                  # BOX = exact area average
        a = np.stack([np.asarray(Image.fromarray(a[..., c], mode="F").resize((size, size), method))
                      for c in range(4)], axis=-1).clip(0.0, 1.0)
        alpha = a[..., 3:]
        a[..., :3] = np.where(alpha > 0, a[..., :3] / np.maximum(alpha, 1e-12), 0.0).clip(0.0, 1.0)
    out = np.rint(a * 255.0).astype(np.uint8)
    out[out[..., 3] == 0] = 0                                          # transparent -> (0, 0, 0, 0)
    return out


def load_png(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return resize_rgba(to_rgba_array(img), size)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def _check_size(size: int) -> None:
    if size not in SIZES:
        raise DataError(f"image size {size} not supported; choose one of {', '.join(map(str, SIZES))}")


# ---------------------------------------------------------------- sources

def load_twemoji(root: str | os.PathLike | None = None, size: int = 32, skin_tones: bool = False,
                 subcategories: bool = False) -> FaviconData:
    """Twemoji from the npm package's own emoji.json and img/twitter/64/*.png."""
    _check_size(size)
    root = Path(root) if root is not None else TWEMOJI
    meta = root / "emoji.json"
    if not meta.is_file():
        raise DataError(f"the Twemoji data set is missing ({meta} not found); {SETUP_HINT}")
    entries = json.loads(meta.read_text())
    entries = sorted((e for e in entries if e.get("category") not in SKIP_CATEGORIES), key=lambda e: e["sort_order"])
    key = "subcategory" if subcategories else "category"
    order_file = root / "categories.json"                              # the package's own class order
    if order_file.is_file():
        order = json.loads(order_file.read_text())
        known = [c for c in order if c not in SKIP_CATEGORIES]
        if subcategories:
            known = [s for c in known for s in order[c]]
    else:
        known = []
    present = {e[key] for e in entries}
    class_names = [c for c in known if c in present] + sorted(present - set(known))
    index = {c: i for i, c in enumerate(class_names)}
    files, labels = [], []
    for e in entries:
        variants = [e["image"]]
        if skin_tones:
            variants += [v["image"] for v in (e.get("skin_variations") or {}).values()]
        for name in variants:
            files.append(name)
            labels.append(index[e[key]])
    img_dir = root / "img" / "twitter" / "64"
    missing = [f for f in files if not (img_dir / f).is_file()]
    if missing:
        raise DataError(f"{img_dir}: {len(missing)} images listed in emoji.json are missing (e.g. {missing[0]}); {SETUP_HINT}")
    images = np.stack([load_png(img_dir / f, size) for f in files])
    parents = {e["subcategory"]: e["category"] for e in entries} if subcategories else {}
    return FaviconData(images, np.asarray(labels, np.int64), class_names, source=str(root), names=files,
                       parents=parents)


def load_folder(folder: str | os.PathLike, size: int = 32) -> FaviconData:
    """Your own images: FOLDER/<class name>/*.png, one sub-folder per class (sorted by name)."""
    _check_size(size)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such data folder (want one sub-folder of PNGs per class)")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    images, labels, names = [], [], []
    for i, cls in enumerate(classes):
        for f in sorted((folder / cls).glob("*.png")):
            images.append(load_png(f, size))
            labels.append(i)
            names.append(f"{cls}/{f.name}")
    if not images:
        raise DataError(f"{folder}: no PNG files found in its sub-folders (want FOLDER/<class>/*.png)")
    empty = [c for i, c in enumerate(classes) if i not in labels]
    if empty:
        raise DataError(f"{folder}: class folder(s) without PNGs: {', '.join(empty)}")
    return FaviconData(np.stack(images), np.asarray(labels, np.int64), classes, source=str(folder), names=names)


def save_pack(data: FaviconData, path: str | os.PathLike) -> Path:
    """One compact file (numpy .npz, uint8 images, no pickles), written atomically."""
    from .checkpoint import atomic_write
    return atomic_write(path, lambda f: np.savez_compressed(
        f, images=data.images, labels=data.labels, class_names=np.asarray(data.class_names, dtype=str),
        names=np.asarray(data.names or [""] * len(data.images), dtype=str),
        meta=np.asarray(json.dumps({"version": PACK_VERSION, "source": data.source}))), "the pack", DataError)


def read_pack(path: str | os.PathLike, what: str, parse):
    """parse(npz, meta) of the data pack at path (meta: its JSON "meta" entry); a missing or unreadable file is one
    DataError line (`what` names the kind of pack and the command that writes it)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return parse(z, json.loads(str(z["meta"])))
    except FileNotFoundError:
        raise DataError(f"{path}: no such pack file") from None
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: not {what} ({type(e).__name__}: {e})") from None


def load_pack(path: str | os.PathLike) -> FaviconData:
    def parse(z, meta):
        if meta.get("version") != PACK_VERSION:
            raise DataError(f"{path}: pack version {meta.get('version')} not supported (want {PACK_VERSION})")
        return FaviconData(z["images"], z["labels"].astype(np.int64), [str(c) for c in z["class_names"]],
                           source=str(path), names=[str(n) for n in z["names"]])
    return read_pack(path, "a data pack written by `ditweb data --pack`", parse)


def load_data(source: str | None = None, size: int = 32, skin_tones: bool = False,
              subcategories: bool = False) -> FaviconData:
    """Twemoji (source None), a folder of class sub-folders, or a .npz pack."""
    if source is None:
        return load_twemoji(size=size, skin_tones=skin_tones, subcategories=subcategories)
    p = Path(source)
    if p.is_dir():
        return load_folder(p, size)
    if p.is_file():
        data = load_pack(p)
        if data.size != size:
            raise DataError(f"{p}: packed at {data.size}x{data.size}, but size {size} was asked for; re-pack with --size {size}")
        return data
    raise DataError(f"{p}: no such data folder or pack file")


# ---------------------------------------------------------------- `ditweb data`

def add_data_options(p) -> None:
    """The data options shared by `ditweb data` and `ditweb train`."""
    p.add_argument("--data", help="a folder of PNGs with one sub-folder per class, or a pack from --pack "
                                  "(default: Twemoji from data/npm)")
    p.add_argument("--size", type=int, choices=SIZES, help="image side in pixels (default 32)")
    p.add_argument("--skin-tones", action="store_true", default=None, help="Twemoji: add the skin-tone variants")
    p.add_argument("--subcategories", action="store_true", default=None,
                   help="Twemoji: one class per subcategory (98) instead of per category (9)")


def contact_sheet(data: FaviconData, per_class: int = 16, scale: int = 2) -> Image.Image:
    """One row per class: its first `per_class` images on a checkerboard (so alpha shows)."""
    s, pad = data.size, 2
    rows = len(data.class_names)
    h, w = rows * (s + pad) + pad, per_class * (s + pad) + pad
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // 4) + (xx // 4)) % 2 == 0, 204, 255).astype(np.float32)[..., None].repeat(3, -1)
    canvas = board.copy()
    for c in range(rows):
        for j, i in enumerate(np.flatnonzero(data.labels == c)[:per_class]):
            y0, x0 = pad + c * (s + pad), pad + j * (s + pad)
            im = data.images[i].astype(np.float32)
            a = im[..., 3:] / 255.0
            canvas[y0:y0 + s, x0:x0 + s] = im[..., :3] * a + board[y0:y0 + s, x0:x0 + s] * (1 - a)
    img = Image.fromarray(np.rint(canvas).astype(np.uint8))
    return img.resize((w * scale, h * scale), Image.NEAREST) if scale > 1 else img
