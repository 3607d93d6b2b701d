"""Named favicons: the emoji of several styles as training data with labels at every level.

Each image gets one label id per level of its vocabulary (ditformat.labels): its emoji identity,
subcategory, category and style. `NamedData` is a FaviconData whose labels are (N, L) instead of
(N,), carrying the vocabulary the model is trained (and later asked) with.

`--repeat NAME:FACTOR` shows the images under one label FACTOR times per epoch (e.g. the
animals, so that each of their identities gets more of a short run's compute); the
vocabulary stays whole, so every label remains valid.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ditformat.errors import UsageError
from ditformat.labels import NAMED_LEVELS, Vocabulary

from .data import DataError, FaviconData


@dataclass
class NamedData(FaviconData):
    vocab: Vocabulary | None = None
    repeats: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[3] != 4 or self.images.dtype != np.uint8 or n == 0:
            raise DataError(f"{self.source}: images must be (N, S, S, 4) uint8, got {self.images.dtype} {self.images.shape}")
        sizes = np.asarray(self.vocab.sizes)
        if self.labels.shape != (n, len(sizes)) or (self.labels < 0).any() or (self.labels >= sizes).any():
            raise DataError(f"{self.source}: labels must be (N, {len(sizes)}) ids within the vocabulary's levels")

    def counts(self) -> list[int]:
        return np.bincount(self.labels[:, 0], minlength=self.vocab.sizes[0]).tolist()


def emoji_vocabulary(es) -> Vocabulary:
    """The vocabulary of an EmojiSet: emoji (by CLDR name) < subcategory < category, and style."""
    names, seen = [], set()
    for e in es.identities:
        name = e.name if e.name not in seen else f"{e.name} ({e.unified})"   # names are unique labels
        seen.add(name)
        names.append(name)
    subs = list(es.subcategories)
    cats = list(es.categories)
    sub_of = {e.subcategory: e.category for e in es.identities}
    return Vocabulary(
        levels=list(NAMED_LEVELS), nested=3,
        names=[names, subs, cats, list(es.styles)],
        parents=[[subs.index(e.subcategory) for e in es.identities], [cats.index(sub_of.get(s, cats[0])) for s in subs]],
        short_names=[[s for s in e.short_names if s != e.name] for e in es.identities],
        keywords=[list(e.keywords) for e in es.identities],
        codes=[e.unified for e in es.identities])


def parse_repeats(spec) -> list[tuple[str, int]]:
    """'Animals & Nature:10' (several: repeat the option) -> [(name, 10)]."""
    out = []
    for item in spec or []:
        name, _, k = str(item).rpartition(":")
        try:
            factor = int(k)
        except ValueError:
            raise UsageError(f"bad --repeat {item!r}: want NAME:FACTOR, e.g. 'Animals & Nature:10'") from None
        if not name.strip() or not 1 <= factor <= 1000:
            raise UsageError(f"bad --repeat {item!r}: want a label name and a factor in [1, 1000]")
        out.append((name.strip(), factor))
    return out


def named_data(es, repeats: list[tuple[str, int]] = ()) -> NamedData:
    """EmojiSet -> NamedData: labels (N, 4) = (emoji, subcategory, category, style)."""
    vocab = emoji_vocabulary(es)
    sub_ids = np.asarray(vocab.parents[0], np.int64)
    cat_ids = np.asarray(vocab.parents[1], np.int64)
    emoji = es.emoji.astype(np.int64)
    labels = np.stack([emoji, sub_ids[emoji], cat_ids[sub_ids[emoji]], es.style.astype(np.int64)], axis=1)
    index = np.arange(len(emoji))
    parts = [index]
    for name, factor in repeats:
        level = next((l for l, names in enumerate(vocab.names) if name in names), None)   # the finest that has it
        if level is None:
            raise UsageError(f"unknown label {name!r}; closest: {', '.join(map(repr, vocab.closest(name)))}")
        sel = labels[:, level] == vocab.names[level].index(name)
        if not sel.any():
            raise UsageError(f"--repeat {name!r}: no image has this label")
        parts += [index[sel]] * (factor - 1)
    order = np.concatenate(parts)
    names = [f"{es.identities[e].unified}/{es.styles[s]}{'/' + v if v else ''}"
             for e, s, v in zip(es.emoji, es.style, es.variant)]
    return NamedData(es.images[order], labels[order], vocab.flat_names(), source=es.source,
                     names=[names[i] for i in order], vocab=vocab, repeats=list(repeats))


def load_named(styles: str | list[str] | None, size: int = 32, skin_tones: bool = True,
               repeats: list[tuple[str, int]] = (), data: str | None = None) -> NamedData:
    """The named data set: the emoji of `styles` (comma-separated or a list) from data/npm, or a pack."""
    from . import emoji as emoji_mod
    if data:
        es = emoji_mod.load_emoji_pack(data)
        if isinstance(styles, str):
            styles = [s.strip() for s in styles.split(",") if s.strip()]
        if styles and list(styles) != list(es.styles):
            raise UsageError(f"{data}: the pack holds styles {', '.join(es.styles)}, not {', '.join(styles)}")
    else:
        if isinstance(styles, str):
            styles = [s.strip() for s in styles.split(",") if s.strip()]
        es = emoji_mod.load_emoji(tuple(styles or emoji_mod.STYLES), size=size, skin_tones=skin_tones)
    if es.images.shape[1] != size:
        raise UsageError(f"the emoji images are {es.images.shape[1]} px, but size {size} was asked for")
    return named_data(es, repeats)
