"""Tiny data sets the data and training tests build themselves (no npm needed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def emoji_like(seed: int, size: int = 64) -> np.ndarray:
    """(size, size, 4) uint8: a coloured disc with soft edges on a transparent background whose
    hidden colour is garbage (as real files have), so premultiplication matters."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    r = rng.uniform(0.2, 0.4) * size
    cover = np.clip(r - np.hypot(xx - cx, yy - cy) + 0.5, 0.0, 1.0)
    img = np.empty((size, size, 4), np.uint8)
    img[..., :3] = rng.integers(0, 256, 3, dtype=np.uint8)
    img[cover == 0, :3] = rng.integers(0, 256, 3, dtype=np.uint8)   # colour under alpha 0: must not matter
    img[..., 3] = np.rint(cover * 255).astype(np.uint8)
    return img


def make_png_folder(root: Path, classes=("cats", "dogs", "fish"), per_class=(3, 2, 4), size: int = 64) -> Path:
    """root/<class>/<i>.png, RGBA."""
    seed = 0
    for cls, n in zip(classes, per_class):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(emoji_like(seed, size)).save(root / cls / f"{i}.png")
            seed += 1
    return root


def make_fake_twemoji(root: Path) -> Path:
    """A miniature emoji-datasource-twitter: emoji.json, categories.json, img/twitter/64/*.png,
    with a Component entry, skin-tone variants, one palette image and one LA image."""
    img_dir = root / "img" / "twitter" / "64"
    img_dir.mkdir(parents=True)
    spec = [  # (image, category, subcategory, skin variants)
        ("a1.png", "Smileys & Emotion", "face-smiling", []),
        ("a2.png", "Smileys & Emotion", "face-affection", []),
        ("b1.png", "People & Body", "hand-fingers-open", ["b1-t1.png", "b1-t2.png"]),
        ("c1.png", "Component", "skin-tone", []),
        ("d1.png", "Animals & Nature", "animal-mammal", []),
        ("d2.png", "Animals & Nature", "animal-mammal", []),
        ("d3.png", "Animals & Nature", "animal-bird", []),
    ]
    entries = []
    for i, (image, cat, sub, tones) in enumerate(spec):
        entry = {"image": image, "category": cat, "subcategory": sub, "sort_order": i, "name": image}
        if tones:
            entry["skin_variations"] = {f"1F3F{j}": {"image": t} for j, t in enumerate(tones)}
        entries.append(entry)
        for j, name in enumerate([image] + tones):
            Image.fromarray(emoji_like(10 * i + j)).save(img_dir / name)
    entries.reverse()                                                   # file order must not matter: sort_order does
    Image.fromarray(emoji_like(99)).convert("LA").save(img_dir / "a2.png")
    Image.fromarray(emoji_like(98)).convert("RGBA").quantize(16).save(img_dir / "d3.png", transparency=0)
    (root / "emoji.json").write_text(json.dumps(entries))
    categories = {"Smileys & Emotion": {"face-smiling": [], "face-affection": []},
                  "People & Body": {"hand-fingers-open": []}, "Component": {"skin-tone": []},
                  "Animals & Nature": {"animal-mammal": [], "animal-bird": []}, "Flags": {"flag": []}}
    (root / "categories.json").write_text(json.dumps(categories))
    return root
