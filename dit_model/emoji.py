"""Several emoji styles of one set of identities, with full metadata (names, keywords, categories).

Sources (npm packages in the ignored folder data/npm/, installed by scripts/setup.sh; see docs/data.md
for their licences and the attribution each one requires):

| style      | package                                   | images                         | licence      |
|------------|-------------------------------------------|--------------------------------|--------------|
| `twemoji`  | emoji-datasource-twitter@16.0.0           | img/twitter/64/*.png           | CC-BY 4.0    |
| `noto`     | emoji-datasource-google@16.0.0            | img/google/64/*.png            | Apache-2.0   |
| `fluent`   | @iconify-json/fluent-emoji-flat@1.2.6     | icons.json (SVG, rasterised)   | MIT          |
| `openmoji` | openmoji@17.0.0 (opt-in, not installed)   | color/svg/*.svg (rasterised)   | CC BY-SA 4.0 |

and emojibase-data@17.0.0 (MIT) for the CLDR names and keywords. The identities are every
non-Component entry of Twemoji's emoji.json, in its sort_order; an identity that a style lacks
simply has no image of that style. Skin tones are more images of the same identity (`variant`
= the emoji.json skin_variations key, e.g. "1F3FB"; "" for the base emoji).

SVGs are rasterised with resvg (PyPI `resvg-py`) at 64x64 and downscaled with the same
premultiplied-alpha resize as the PNGs (data.resize_rgba). The prepared arrays are cached per
style in data/cache/ (keyed by the package versions and the image size), so a second load is fast.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .data import ROOT, SETUP_HINT, SIZES, SKIP_CATEGORIES, DataError, FaviconData, read_pack, resize_rgba

STYLES = ("twemoji", "noto", "fluent")            # the default styles, in this order
OPT_IN_STYLES = ("openmoji",)                     # only when asked for by name (CC BY-SA: never in shipped weights)
KNOWN_STYLES = STYLES + OPT_IN_STYLES
NODE_MODULES = ROOT / "data" / "npm" / "node_modules"
CACHE_DIR = ROOT / "data" / "cache"
PACK_VERSION = 1
CACHE_VERSION = 2                                 # bump when the preparation of the images changes
RASTER = 64                                       # SVGs are rendered at this size, then resized

PACKAGES = {                                      # style -> (npm package, pinned version)
    "twemoji": ("emoji-datasource-twitter", "16.0.0"),
    "noto": ("emoji-datasource-google", "16.0.0"),
    "fluent": ("@iconify-json/fluent-emoji-flat", "1.2.6"),
    "openmoji": ("openmoji", "17.0.0"),
}
KEYWORDS_PACKAGE = ("emojibase-data", "17.0.0")
META_PACKAGE = "twemoji"                          # its emoji.json + categories.json define the identities
SKIN_SUFFIX = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}


@dataclass
class Emoji:
    """One identity (one emoji.json entry), whatever the style."""
    unified: str                  # emoji.json `unified`, e.g. "1F99B"
    name: str                     # CLDR label from emojibase, lower case, e.g. "hippopotamus"
    short_names: list[str]        # emoji.json short_names, e.g. ["hippopotamus"]
    keywords: list[str]           # emojibase tags, e.g. ["animal", "hippo"]
    subcategory: str              # emoji.json subcategory, e.g. "animal-mammal"
    category: str                 # emoji.json category, e.g. "Animals & Nature"


@dataclass
class EmojiSet:
    images: np.ndarray            # (N, S, S, 4) uint8 straight alpha as in data.py (transparent = 0)
    emoji: np.ndarray             # (N,) int64 index into `identities`
    style: np.ndarray             # (N,) int64 index into `styles`
    variant: list[str]            # per image: "" for the base emoji, else the skin-tone key e.g. "1F3FB"
    identities: list[Emoji]       # in emoji.json sort_order
    styles: list[str]
    categories: list[str]         # category order from the package's categories.json
    subcategories: list[str]      # subcategory order from categories.json
    source: str = ""

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[3] != 4 or self.images.dtype != np.uint8:
            raise DataError(f"{self.source}: images must be (N, S, S, 4) uint8, got {self.images.dtype} {self.images.shape}")
        if self.emoji.shape != (n,) or self.style.shape != (n,) or len(self.variant) != n:
            raise DataError(f"{self.source}: emoji, style and variant must have one entry per image ({n})")
        if n and (self.emoji.min() < 0 or self.emoji.max() >= len(self.identities)
                  or self.style.min() < 0 or self.style.max() >= len(self.styles)):
            raise DataError(f"{self.source}: emoji / style ids out of range")

    @property
    def size(self) -> int:
        return self.images.shape[1]

    def labels(self, by: str = "category") -> tuple[np.ndarray, list[str]]:
        """(N,) int64 class ids and the class names, by "category", "subcategory", "style" or "emoji"."""
        if by == "style":
            return self.style.copy(), list(self.styles)
        if by == "emoji":
            return self.emoji.copy(), [e.name for e in self.identities]
        if by not in ("category", "subcategory"):
            raise DataError(f"unknown label kind {by!r}: choose category, subcategory, style or emoji")
        names = self.categories if by == "category" else self.subcategories
        index = {c: i for i, c in enumerate(names)}
        per_identity = np.asarray([index[getattr(e, by)] for e in self.identities], np.int64)
        return per_identity[self.emoji], list(names)

    def counts(self) -> dict[str, dict[str, int]]:
        """style -> category -> number of images."""
        cat, names = self.labels("category")
        out = {}
        for s, style in enumerate(self.styles):
            c = np.bincount(cat[self.style == s], minlength=len(names))
            out[style] = dict(zip(names, c.tolist()))
        return out

    def select(self, mask: np.ndarray) -> "EmojiSet":
        """The images where mask is True, with the same identities, styles and categories."""
        mask = np.asarray(mask, bool)
        return EmojiSet(self.images[mask], self.emoji[mask], self.style[mask],
                        [v for v, m in zip(self.variant, mask) if m], self.identities, self.styles,
                        self.categories, self.subcategories, self.source)

    def favicon_data(self, by: str = "category") -> FaviconData:
        """As data.FaviconData (for the contact sheet and the Twemoji-era tools), labelled `by`."""
        labels, names = self.labels(by)
        return FaviconData(self.images, labels, names, source=self.source,
                           names=[f"{self.styles[s]}/{self.identities[e].unified}" + (f"-{v}" if v else "")
                                  for e, s, v in zip(self.emoji, self.style, self.variant)])


# ---------------------------------------------------------------- sources

def _hint(style_or_pkg: str) -> str:
    if style_or_pkg in OPT_IN_STYLES:
        pkg, ver = PACKAGES[style_or_pkg]
        return f"it is opt-in: install it with `npm install --prefix data/npm {pkg}@{ver}`"
    return SETUP_HINT


def _package(root: Path, style: str) -> Path:
    return root / PACKAGES[style][0]


def _need(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} is missing ({path} not found); {hint}")
    return path


def _read_json(path: Path, what: str, hint: str):
    _need(path, what, hint)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({e}); {hint}") from None


def _version(pkg_dir: Path) -> str:
    try:
        return str(json.loads((pkg_dir / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def _norm(code: str) -> str:
    """Upper-case, dash-joined, without FE0F (emoji presentation selector): the join key."""
    return "-".join(p for p in code.upper().split("-") if p and p != "FE0F")


def _keywords(root: Path) -> dict[str, dict]:
    entries = _read_json(root / KEYWORDS_PACKAGE[0] / "en" / "data.json", "the emoji keywords (emojibase-data)", SETUP_HINT)
    exact, loose = {}, {}
    for e in entries:
        exact[e["hexcode"].upper()] = e
        loose.setdefault(_norm(e["hexcode"]), e)
    return {"exact": exact, "loose": loose}


def _meta_entries(root: Path):
    """The identity entries (Twemoji's emoji.json, no Component, by sort_order) and the class orders."""
    pkg = _package(root, META_PACKAGE)
    entries = _read_json(pkg / "emoji.json", "the emoji metadata (emoji-datasource-twitter)", SETUP_HINT)
    entries = sorted((e for e in entries if e.get("category") not in SKIP_CATEGORIES), key=lambda e: e["sort_order"])
    order_file = pkg / "categories.json"
    order = json.loads(order_file.read_text()) if order_file.is_file() else {}
    cats = [c for c in order if c not in SKIP_CATEGORIES]
    subs = [s for c in cats for s in order[c]]
    present_c = {e["category"] for e in entries}
    present_s = {e["subcategory"] for e in entries}
    categories = [c for c in cats if c in present_c] + sorted(present_c - set(cats))
    subcategories = [s for s in subs if s in present_s] + sorted(present_s - set(subs))
    return entries, categories, subcategories


def load_identities(root: str | os.PathLike | None = None) -> tuple[list[Emoji], list[dict], list[str], list[str]]:
    """(identities, their emoji.json entries, categories, subcategories) -- metadata only, no images."""
    root = Path(root) if root is not None else NODE_MODULES
    entries, categories, subcategories = _meta_entries(root)
    kw = _keywords(root)
    identities = []
    for e in entries:
        k = kw["exact"].get(e["unified"].upper()) or kw["loose"].get(_norm(e["unified"]))
        if k is None and e.get("non_qualified"):
            k = kw["loose"].get(_norm(e["non_qualified"]))
        name = (k["label"] if k else e.get("name") or e.get("short_name") or e["unified"]).lower()
        e["_name"] = name                                             # for name-based matching (Fluent aliases)
        identities.append(Emoji(unified=e["unified"], name=name, short_names=list(e.get("short_names") or []),
                                keywords=list(k.get("tags") or []) if k else [],
                                subcategory=e["subcategory"], category=e["category"]))
    return identities, entries, categories, subcategories


def _variants(entry: dict):
    """(variant key, emoji.json record) for the base emoji and each skin tone."""
    yield "", entry
    for key, v in (entry.get("skin_variations") or {}).items():
        yield key, v


class _Progress:
    def __init__(self, what: str, total: int):
        self.what, self.total, self.step = what, total, max(1, total // 8)

    def __call__(self, i: int) -> None:
        if i == self.total or i % self.step == 0:
            print(f"{self.what}: {i}/{self.total}", file=sys.stderr, flush=True)


def _load_datasource(root: Path, style: str, entries: list[dict], pick: list[int], size: int):
    """Twemoji / Noto: PNGs listed in the package's own emoji.json (has_img_<set>)."""
    pkg = _package(root, style)
    setname = {"twemoji": "twitter", "noto": "google"}[style]
    own = _read_json(pkg / "emoji.json", f"the {style} images ({PACKAGES[style][0]})", _hint(style))
    own = {e["unified"]: e for e in own}
    img_dir = _need(pkg / "img" / setname / "64", f"the {style} images", _hint(style))
    todo = []
    for i in pick:
        mine = own.get(entries[i]["unified"])
        if mine is None:
            continue
        for key, v in _variants(mine):
            if v.get(f"has_img_{setname}", True) and v.get("image"):
                todo.append((i, key, img_dir / v["image"]))
    missing = [p for _, _, p in todo if not p.is_file()]
    if missing:
        raise DataError(f"{img_dir}: {len(missing)} images listed in emoji.json are missing (e.g. {missing[0].name}); {_hint(style)}")
    progress, images = _Progress(f"loading {style}", len(todo)), []
    for n, (_, _, path) in enumerate(todo, 1):
        try:
            with Image.open(path) as img:
                images.append(resize_rgba(np.asarray(img.convert("RGBA"), np.uint8), size))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable image ({e})") from None
        progress(n)
    return [t[0] for t in todo], [t[1] for t in todo], images


def _rasterise(svg: str, what: str) -> np.ndarray:
    """SVG text -> (RASTER, RASTER, 4) uint8 straight-alpha RGBA, with resvg."""
    try:
        import resvg_py
    except ImportError:
        raise DataError("rasterising SVG emoji needs the PyPI package resvg-py; "
                        "run `./scripts/setup.sh` (pip install -e \".[torch,dev]\")") from None
    try:
        png = resvg_py.svg_to_bytes(svg_string=svg, width=RASTER, height=RASTER, skip_system_fonts=True)
        with Image.open(io.BytesIO(bytes(png))) as img:
            return np.asarray(img.convert("RGBA"), np.uint8)
    except (OSError, ValueError) as e:
        raise DataError(f"{what}: SVG could not be rasterised ({e})") from None


def _iconify_svg(data: dict, name: str) -> str:
    """One icon of an Iconify JSON set as a standalone SVG (aliases, hFlip/vFlip and the viewBox resolved)."""
    icons, aliases = data["icons"], data.get("aliases") or {}
    hflip = vflip = False
    props: dict = {}
    seen = set()
    while name not in icons:
        if name in seen or name not in aliases:
            raise KeyError(name)
        seen.add(name)
        a = aliases[name]
        hflip ^= bool(a.get("hFlip"))
        vflip ^= bool(a.get("vFlip"))
        for k in ("width", "height", "left", "top"):
            props.setdefault(k, a.get(k))
        name = a["parent"]
    icon = icons[name]
    get = lambda k, d: next(v for v in (props.get(k), icon.get(k), data.get(k), d) if v is not None)  # noqa: E731
    w, h, left, top = get("width", 16), get("height", 16), get("left", 0), get("top", 0)
    body = icon["body"]
    if hflip or vflip:
        tx, ty = (w + 2 * left if hflip else 0), (h + 2 * top if vflip else 0)
        body = f'<g transform="translate({tx} {ty}) scale({-1 if hflip else 1} {-1 if vflip else 1})">{body}</g>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{RASTER}" height="{RASTER}" viewBox="{left} {top} {w} {h}">{body}</svg>')


def _fluent_names(entries: list[dict], pick: list[int], data: dict, chars: dict[str, str]):
    """(identity index, variant key, icon name) for each emoji.json entry / skin tone Fluent has."""
    names = set(data["icons"]) | set(data.get("aliases") or {})
    by_code = {}
    for code, n in chars.items():
        by_code.setdefault(_norm(code), n)

    def find(rec: dict) -> str | None:
        for code in (rec.get("unified"), rec.get("non_qualified")):
            if code:
                n = chars.get(code.lower()) or by_code.get(_norm(code))
                if n in names:
                    return n
        return None

    out = []
    for i in pick:
        e = entries[i]
        base = find(e)
        slug = re.sub(r"[^a-z0-9]+", "-", e.get("_name", "").lower()).strip("-")
        if base is None and slug in names:                             # aliases (e.g. a flipped hand) lack code points
            base = slug
        for key, v in _variants(e):
            n = base if key == "" else find(v)
            if n is None and key and base and key in SKIN_SUFFIX:      # e.g. "person-wrestling-dark"
                guess = f"{base}-{SKIN_SUFFIX[key]}"
                n = guess if guess in names else None
            if n is not None:
                out.append((i, key, n))
    return out


def _load_fluent(root: Path, entries: list[dict], pick: list[int], size: int):
    pkg = _package(root, "fluent")
    data = _read_json(pkg / "icons.json", "the Fluent Emoji icons (@iconify-json/fluent-emoji-flat)", SETUP_HINT)
    chars = _read_json(pkg / "chars.json", "the Fluent Emoji code points (@iconify-json/fluent-emoji-flat)", SETUP_HINT)
    todo = _fluent_names(entries, pick, data, chars)
    progress, images = _Progress("rasterising fluent", len(todo)), []
    for n, (_, _, name) in enumerate(todo, 1):
        images.append(resize_rgba(_rasterise(_iconify_svg(data, name), f"{pkg / 'icons.json'}: {name}"), size))
        progress(n)
    return [t[0] for t in todo], [t[1] for t in todo], images


def _load_openmoji(root: Path, entries: list[dict], pick: list[int], size: int):
    pkg = _package(root, "openmoji")
    meta = _read_json(pkg / "data" / "openmoji.json", "OpenMoji (opt-in, CC BY-SA 4.0)", _hint("openmoji"))
    svg_dir = _need(pkg / "color" / "svg", "the OpenMoji colour SVGs", _hint("openmoji"))
    by_code = {}
    for m in meta:
        by_code.setdefault(_norm(m["hexcode"]), m["hexcode"])
    todo = []
    for i in pick:
        for key, v in _variants(entries[i]):
            hexcode = by_code.get(_norm(v.get("unified") or ""))
            if hexcode and (svg_dir / f"{hexcode}.svg").is_file():
                todo.append((i, key, svg_dir / f"{hexcode}.svg"))
    progress, images = _Progress("rasterising openmoji", len(todo)), []
    for n, (_, _, path) in enumerate(todo, 1):
        images.append(resize_rgba(_rasterise(path.read_text(encoding="utf-8"), str(path)), size))
        progress(n)
    return [t[0] for t in todo], [t[1] for t in todo], images


_LOADERS = {"twemoji": lambda r, e, p, s: _load_datasource(r, "twemoji", e, p, s),
            "noto": lambda r, e, p, s: _load_datasource(r, "noto", e, p, s),
            "fluent": _load_fluent, "openmoji": _load_openmoji}


# ---------------------------------------------------------------- cache + the set

def _check_styles(styles) -> list[str]:
    if isinstance(styles, str):
        styles = [s for s in styles.split(",") if s.strip()]
    styles = [s.strip().lower() for s in styles]
    unknown = [s for s in styles if s not in KNOWN_STYLES]
    if unknown or not styles:
        raise DataError(f"unknown emoji style {', '.join(unknown) or '(none given)'}; known styles: "
                        f"{', '.join(STYLES)} (default) and {', '.join(OPT_IN_STYLES)} (opt-in)")
    if len(set(styles)) != len(styles):
        raise DataError(f"emoji style listed twice: {', '.join(styles)}")
    return styles


def _cache_path(root: Path, style: str, size: int, only: list[str] | None) -> Path:
    key = {"cache": CACHE_VERSION, "style": style, "size": size, "root": str(root.resolve()), "only": only,
           "versions": {p: _version(root / p) for p in (PACKAGES[style][0], PACKAGES[META_PACKAGE][0])}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return CACHE_DIR / f"emoji-{style}-{size}{'-some' if only is not None else ''}-{digest}.npz"


def _style_arrays(root: Path, style: str, entries: list[dict], pick: list[int], only: list[str] | None,
                  size: int, cache: bool):
    """(images, identity ids, variants) of one style, all skin tones, via the cache."""
    path = _cache_path(root, style, size, only) if cache else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                images, ids, variants = z["images"], z["emoji"].astype(np.int64), [str(v) for v in z["variant"]]
            if images.shape[1:] == (size, size, 4) and len(ids) == len(variants) == len(images) \
                    and (len(ids) == 0 or ids.max() < len(entries)):
                return images, ids, variants
        except Exception:                                              # a damaged cache is rebuilt
            pass
    ids, variants, images = _LOADERS[style](root, entries, pick, size)
    images = np.stack(images) if images else np.zeros((0, size, size, 4), np.uint8)
    ids = np.asarray(ids, np.int64)
    if path is not None:
        from .checkpoint import atomic_write
        try:
            atomic_write(path, lambda f: np.savez(f, images=images, emoji=ids, variant=np.asarray(variants, dtype=str)),
                         "the emoji cache", DataError)
        except DataError as e:                                         # a read-only checkout still works
            print(f"warning: {e}", file=sys.stderr)
        else:
            if only is None:
                for stale in path.parent.glob(f"emoji-{style}-{size}-*.npz"):   # older versions of the same cache
                    if stale != path:
                        stale.unlink(missing_ok=True)
    return images, ids, variants


def load_emoji(styles=STYLES, size: int = 32, skin_tones: bool = True, root: str | os.PathLike | None = None,
               cache: bool = True, only=None) -> EmojiSet:
    """Every identity in each style it has an image in; `skin_tones` adds the skin-tone variants.

    `only`: images of just these identities (emoji.json `unified` codes, e.g. ["1F99B"]); `identities`
    stays the full list, so ids mean the same as in a full load (quick looks and tests)."""
    if size not in SIZES:
        raise DataError(f"image size {size} not supported; choose one of {', '.join(map(str, SIZES))}")
    styles = _check_styles(styles)
    root = Path(root) if root is not None else NODE_MODULES
    identities, entries, categories, subcategories = load_identities(root)
    pick = list(range(len(entries)))
    if only is not None:
        only = sorted({str(u).upper() for u in ([only] if isinstance(only, str) else only)})
        index = {e["unified"].upper(): i for i, e in enumerate(entries)}
        unknown = [u for u in only if u not in index]
        if unknown:
            raise DataError(f"no emoji {', '.join(unknown)} in {_package(root, META_PACKAGE) / 'emoji.json'} "
                            "(want emoji.json `unified` codes such as 1F99B)")
        pick = sorted(index[u] for u in only)
    parts = []
    for s, style in enumerate(styles):
        images, ids, variants = _style_arrays(root, style, entries, pick, only, size, cache)
        if not skin_tones:
            keep = np.asarray([v == "" for v in variants], bool)
            images, ids, variants = images[keep], ids[keep], [v for v in variants if v == ""]
        parts.append((images, ids, np.full(len(ids), s, np.int64), variants))
    return EmojiSet(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                    np.concatenate([p[2] for p in parts]), [v for p in parts for v in p[3]],
                    identities, list(styles), categories, subcategories, source=str(root))


def save_emoji_pack(es: EmojiSet, path: str | os.PathLike) -> Path:
    """One .npz (uint8 images, no pickles: the metadata is one JSON string), written atomically."""
    from .checkpoint import atomic_write
    meta = {"version": PACK_VERSION, "kind": "emoji", "source": es.source, "styles": list(es.styles),
            "categories": list(es.categories), "subcategories": list(es.subcategories),
            "identities": [asdict(e) for e in es.identities]}
    return atomic_write(path, lambda f: np.savez_compressed(
        f, images=es.images, emoji=es.emoji.astype(np.int64), style=es.style.astype(np.int64),
        variant=np.asarray(list(es.variant) or [""], dtype=str)[:len(es.variant)],
        meta=np.asarray(json.dumps(meta))), "the emoji pack", DataError)


def load_emoji_pack(path: str | os.PathLike) -> EmojiSet:
    def parse(z, meta):
        if meta.get("kind") != "emoji" or meta.get("version") != PACK_VERSION:
            raise DataError(f"{path}: not an emoji pack of version {PACK_VERSION} (written by `ditweb data --styles ... --pack`)")
        return EmojiSet(z["images"], z["emoji"].astype(np.int64), z["style"].astype(np.int64),
                        [str(v) for v in z["variant"]], [Emoji(**e) for e in meta["identities"]],
                        list(meta["styles"]), list(meta["categories"]), list(meta["subcategories"]),
                        source=meta.get("source", str(path)))
    return read_pack(path, "an emoji pack written by `ditweb data --styles ... --pack`", parse)


# ---------------------------------------------------------------- `ditweb data --styles`

def print_counts(es: EmojiSet, out=None) -> None:
    """Images per style and category (a table), identities covered, skin-tone images."""
    out = out or sys.stdout
    counts = es.counts()
    w = max(len(c) for c in es.categories + ["identities with an image"])
    cols = "".join(f"  {s:>9}" for s in es.styles)
    print(f"{es.source}: {len(es.images)} images, {es.size}x{es.size} RGBA, {len(es.identities)} identities, "
          f"{len(es.styles)} styles", file=out)
    print(f"{'category':<{w}}{cols}", file=out)
    for c in es.categories:
        print(f"{c:<{w}}" + "".join(f"  {counts[s][c]:>9}" for s in es.styles), file=out)
    skin = np.asarray([v != "" for v in es.variant], bool)
    rows = [("images", lambda m: int(m.sum())),
            ("  of which skin tones", lambda m: int((m & skin).sum())),
            ("identities with an image", lambda m: len(np.unique(es.emoji[m])))]
    for label, f in rows:
        print(f"{label:<{w}}" + "".join(f"  {f(es.style == i):>9}" for i in range(len(es.styles))), file=out)
