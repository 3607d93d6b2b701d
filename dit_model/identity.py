"""Named emoji: does a sample show the emoji that was asked for, in the style that was asked for?
(docs/evaluation.md, "Named emoji: the identity judges").

The judges, all committed under models/ so every machine scores with the same weights:
  - one identity judge per style s (models/judge_identity_<s>.safetensors): a CNN over the 1,906
    emoji identities, trained on every image of the OTHER styles (skin tones included, same
    identity) with heavy augmentation, so it has to recognise shape across drawing styles. It never
    saw style s, so on real images of style s its accuracy is the cross-style ceiling, and a
    sample requested in style s is judged by the judge that never saw s (it cannot reward copying);
  - the category judge trained on all styles (models/judge_styles.safetensors, evaluate.Classifier
    and evaluate's recipe, 9 categories, 20% of the identities held out): class-balanced accuracy
    of the requested category and its 64-d features for the Frechet distance per style, against
    real references of that style with the generated set's per-category counts, and the floor.

The metric functions are pure (no DiT inside): the caller samples the model and passes records
{"emoji": identity index, "style": style name, "seed": int, "image": (4, S, S) in [-1, 1]}.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ditformat.errors import DitwebError

from . import evaluate as ev

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
IDENTITY_FORMAT = "ditweb-identity-judge/1"
STYLES_JUDGE = MODELS / "judge_styles.safetensors"
EVAL_LIST = MODELS / "eval_emoji.json"
EVAL_SEED = 20240601              # the draw of the evaluation list
EVAL_SIZE = 100
HIPPO = "1F99B"
IDENTITY_EPOCHS = 22
IDENTITY_RECIPE = (f"{IDENTITY_EPOCHS} epochs over every image of the other styles, AdamW one-cycle 4e-3, wd 5e-4, batch 128, "
                   "label smoothing 0.1, dropout 0.2; augmentation: flips, scale 0.85-1.1, rotation +-10 deg, "
                   "shifts +-2 px, hue rotation +-20 deg (half the images), saturation / brightness / contrast jitter, "
                   "grey 10%, channel shuffle 5%, blur or sharpen (half), alpha-composite on a random colour 5%, "
                   "cutout 20%; seed 0")
STYLES_RECIPE = ev.JUDGE_RECIPE + "; base images of all styles; identities split (stratified by category, 20% held out, seed 0)"


class IdentityError(DitwebError):
    """A judge file or input that cannot be used; the message is one line."""


def style_path(style: str) -> Path:
    return MODELS / f"judge_identity_{style}.safetensors"


# ---------------------------------------------------------------- the identity judge

class IdentityNet(nn.Module):
    """Six 3x3 convs (32 -> 16 -> 8 -> 4, widths w, 2w, 2w, 4w, 4w, 8w), global average pooling,
    dropout and a linear head over the identities. RGBA input in [-1, 1]."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        def conv(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        w = width
        self.body = nn.Sequential(*conv(in_channels, w), nn.MaxPool2d(2),
                                  *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2),
                                  *conv(2 * w, 4 * w), *conv(4 * w, 4 * w), nn.MaxPool2d(2),
                                  *conv(4 * w, 8 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        return self.head(self.drop(self.body(x)))


def _rgb_mix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply per-image 3x3 colour matrices m (N, 3, 3) to the RGB of x (N, 3, H, W)."""
    return torch.einsum("nij,njhw->nihw", m, x)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Heavy, style-agnostic augmentation of a batch (N, 4, S, S) in [-1, 1] (straight alpha,
    transparent = -1): geometry in premultiplied colour, then colour jitter on the visible pixels."""
    n, _, h, w = x.shape
    r = lambda *s: torch.rand(*s, generator=g)
    x = (x + 1) / 2
    x = torch.where(r(n, 1, 1, 1) < 0.5, x.flip(3), x)
    a = x[:, 3:]
    pm = torch.cat([x[:, :3] * a, a], 1)                                   # premultiplied
    # --- geometry: scale, rotation, shift (output -> input mapping for grid_sample)
    scale = 0.85 + 0.25 * r(n)
    ang = (r(n) * 2 - 1) * math.radians(10)
    sx = scale * torch.where(r(n) < 0.1, 0.9 + 0.2 * r(n), torch.ones(n))   # mild anisotropy
    tx, ty = (r(n) * 2 - 1) * 2 * 2 / w, (r(n) * 2 - 1) * 2 * 2 / h
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos / sx, -sin / sx, tx], 1), torch.stack([sin / scale, cos / scale, ty], 1)], 1)
    grid = F.affine_grid(theta, (n, 4, h, w), align_corners=False)
    pm = F.grid_sample(pm, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # --- blur or sharpen (styles differ in how much detail survives at 32 px)
    k = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 16
    blur = F.conv2d(F.pad(pm, (1, 1, 1, 1), mode="replicate"), k.expand(4, 1, 3, 3), groups=4)
    amt = torch.where(r(n) < 0.5, r(n) * 1.0, -r(n) * 0.8)[:, None, None, None]   # >0 blur, <0 sharpen
    amt = torch.where(r(n, 1, 1, 1) < 0.5, amt, torch.zeros_like(amt))
    pm = (pm + amt * (blur - pm)).clamp(0, 1)
    a = pm[:, 3:]
    rgb = torch.where(a > 1e-3, pm[:, :3] / a.clamp(min=1e-3), torch.zeros_like(pm[:, :3])).clamp(0, 1)
    # --- colour: hue rotation about the grey axis, saturation, brightness, contrast, grey, shuffle
    hue = (r(n) * 2 - 1) * math.radians(20) * (r(n) < 0.5)
    c, s = torch.cos(hue), torch.sin(hue)
    q = 1 / 3
    rt = math.sqrt(1 / 3)
    eye = torch.eye(3).expand(n, 3, 3)
    ones = torch.full((3, 3), q)
    cross = torch.tensor([[0., -rt, rt], [rt, 0., -rt], [-rt, rt, 0.]])
    m = c[:, None, None] * eye + (1 - c)[:, None, None] * ones + s[:, None, None] * cross
    sat = (0.7 + 0.6 * r(n)) * torch.where(r(n) < 0.1, 0.0, 1.0)
    gm = ones.expand(n, 3, 3)
    m = (sat[:, None, None] * eye + (1 - sat)[:, None, None] * gm) @ m
    rgb = _rgb_mix(rgb, m)
    perm = torch.stack([torch.randperm(3, generator=g) for _ in range(n)])
    shuffle = r(n) < 0.05
    rgb = torch.where(shuffle[:, None, None, None], torch.gather(rgb, 1, perm[:, :, None, None].expand(n, 3, h, w)), rgb)
    contrast = 0.8 + 0.4 * r(n, 1, 1, 1)
    bright = (r(n, 1, 1, 1) * 2 - 1) * 0.1
    gain = 1 + (r(n, 3, 1, 1) * 2 - 1) * 0.1
    rgb = ((rgb - 0.5) * contrast + 0.5 + bright) * gain
    rgb = rgb.clamp(0, 1)
    # --- alpha-composite on a random colour (an opaque square favicon) now and then
    comp = r(n, 1, 1, 1) < 0.05
    bg = r(n, 3, 1, 1)
    rgb = torch.where(comp, rgb * a + bg * (1 - a), rgb)
    a = torch.where(comp, torch.ones_like(a), a)
    # --- cutout: a transparent box
    cut = r(n) < 0.2
    cs = (4 + r(n) * 6).long()
    cx, cy = (r(n) * w).long(), (r(n) * h).long()
    yy, xx = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    box = ((yy - cy[:, None, None]).abs() * 2 < cs[:, None, None]) & ((xx - cx[:, None, None]).abs() * 2 < cs[:, None, None])
    box = (box & cut[:, None, None])[:, None]
    a = torch.where(box, torch.zeros_like(a), a)
    rgb = torch.where(a > 0, rgb, torch.zeros_like(rgb))                    # transparent = (0, 0, 0, 0)
    return torch.cat([rgb, a], 1) * 2 - 1


def train_identity(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int = IDENTITY_EPOCHS, seed: int = 0,
                   width: int = 32, batch: int = 128, log=print, eval_fn=None) -> IdentityNet:
    """Train an identity judge on x (N, 4, S, S) in [-1, 1], labels y (N,). Prints progress."""
    torch.manual_seed(seed)
    model = IdentityNet(x.shape[1], num_classes, width)
    steps = epochs * ((len(x) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps, pct_start=0.2)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        tot, hit, seen = 0.0, 0, 0
        for s in range(0, len(x), batch):
            b = perm[s:s + batch]
            xb = augment(x[b], g)
            out = model(xb)
            loss = F.cross_entropy(out, y[b], label_smoothing=0.1)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            tot += loss.item() * len(b); hit += int((out.argmax(1) == y[b]).sum()); seen += len(b)
        msg = f"  identity epoch {epoch + 1}/{epochs}: loss {tot / seen:.3f}, augmented train top-1 {100 * hit / seen:.1f}%, {time.time() - t0:.0f}s"
        if eval_fn is not None and (epoch + 1) % 4 == 0 and epoch + 1 < epochs:
            msg += f", {eval_fn(model.eval())}"
        log(msg)
    return model.eval()


@torch.no_grad()
def identity_logits(model: IdentityNet, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Logits averaged over each image and its horizontal flip (the DiT trains with flips)."""
    model.eval()
    out = [(model(x[s:s + batch]) + model(x[s:s + batch].flip(3))) / 2 for s in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.zeros(0, model.head.out_features)


def topk_hits(logits: torch.Tensor, labels, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 hit, top-k hit) per row, as bool arrays."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    top = logits.topk(min(k, logits.shape[1]), 1).indices
    return (top[:, 0] == labels).numpy(), (top == labels[:, None]).any(1).numpy()


def save_identity_judge(model: IdentityNet, path, style: str, unified: list[str], input_size: int, fingerprint: str,
                        n_train: int, extra: dict | None = None) -> None:
    from safetensors.torch import save
    from .checkpoint import atomic_write
    meta = {"format": IDENTITY_FORMAT, "held_out_style": style, "identities": json.dumps(list(unified)),
            "input_size": str(input_size), "in_channels": str(model.body[0].in_channels),
            "width": str(model.body[0].out_channels), "recipe": IDENTITY_RECIPE, "data_fingerprint": fingerprint,
            "train_images": str(n_train), "dtype": "float16"}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    sd = {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: f.write(save(sd, metadata=meta)), "the identity judge's weights", IdentityError)


def load_identity_judge(style: str, identities: list[str] | None = None, input_size: int = 32, path=None) -> tuple[IdentityNet, dict]:
    """The committed judge that never saw `style`; a one-line IdentityError if it is missing,
    unreadable, held out another style, or was made for other identities (`identities`: the data's
    unified codes, in order) or another image size."""
    path = Path(path) if path is not None else style_path(style)
    hint = "train them with `python bench/judges.py`"
    if not path.is_file():
        raise IdentityError(f"{path}: no identity judge weights; {hint}")
    sd, meta, (names, size, chans, width, held) = ev.read_judge(path, IDENTITY_FORMAT, IdentityError, "identity judge", lambda meta: (
        json.loads(meta["identities"]), int(meta["input_size"]), int(meta["in_channels"]), int(meta["width"]),
        meta["held_out_style"]))
    if held != style:
        raise IdentityError(f"{path}: this judge held out style {held!r}, not {style!r}; {hint}")
    if size != input_size:
        raise IdentityError(f"{path}: the judge takes {size}x{size} images, not {input_size}x{input_size}; {hint}")
    if identities is not None and names != list(identities):
        diff = next((i for i, (a, b) in enumerate(zip(names, identities)) if a != b), min(len(names), len(identities)))
        raise IdentityError(f"{path}: the judge knows {len(names)} identities, the data has {len(identities)} "
                            f"(first difference at index {diff}); {hint}")
    model = IdentityNet(chans, len(names), width)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    except RuntimeError as e:
        raise IdentityError(f"{path}: weights do not fit its own metadata ({str(e).strip().splitlines()[0]})") from None
    meta = dict(meta, identities=names)
    return model.eval(), meta


# ---------------------------------------------------------------- data helpers

def load_data(root=None):
    from .emoji import load_emoji
    return load_emoji(root=root) if root is not None else load_emoji()


def unified_list(data) -> list[str]:
    return [e.unified for e in data.identities]


def fingerprint(data) -> str:
    return ev.data_fingerprint(data.images, data.emoji * 16 + data.style)


def category_labels(data) -> np.ndarray:
    """Per image: its identity's category index in data.categories."""
    cat = np.array([data.categories.index(e.category) for e in data.identities])
    return cat[data.emoji]


def is_base(data) -> np.ndarray:
    return np.array([v == "" for v in data.variant])


def pixel_nn_baseline(data, style: str, k: int = 5) -> tuple[float, float]:
    """Top-1 / top-k identity accuracy of the nearest real image (RGBA RMSE, flips included) among
    every image of the other styles, for the base images of `style`."""
    s = data.styles.index(style)
    q = np.flatnonzero((data.style == s) & is_base(data))
    r = np.flatnonzero(data.style != s)
    x = ((torch.from_numpy(data.images).float() / 255).permute(0, 3, 1, 2))
    ref = torch.cat([x[r], x[r].flip(3)]).flatten(1)
    rid = torch.from_numpy(np.concatenate([data.emoji[r], data.emoji[r]]))
    rn = (ref ** 2).sum(1)
    h1 = h5 = 0
    n_id = len(data.identities)
    for lo in range(0, len(q), 256):
        qb = x[q[lo:lo + 256]].flatten(1)
        d2 = rn[None] - 2 * qb @ ref.T
        best = torch.full((len(qb), n_id), float("inf"))
        best.scatter_reduce_(1, rid[None].expand(len(qb), -1), d2, reduce="amin")
        top = best.topk(k, 1, largest=False).indices
        lab = torch.from_numpy(data.emoji[q[lo:lo + 256]])
        h1 += int((top[:, 0] == lab).sum()); h5 += int((top == lab[:, None]).any(1).sum())
    return 100 * h1 / len(q), 100 * h5 / len(q)


# ---------------------------------------------------------------- training all judges

def train_identity_judge(data, style: str, epochs: int = IDENTITY_EPOCHS, log=print, path=None) -> dict:
    """Train and save the judge that never sees `style`; returns its ceilings and cost."""
    from .data import to_model
    s = data.styles.index(style)
    x = to_model(torch.from_numpy(data.images))
    y = torch.from_numpy(data.emoji)
    train = np.flatnonzero(data.style != s)
    base = is_base(data)
    test = np.flatnonzero((data.style == s) & base)
    test_all = np.flatnonzero(data.style == s)
    sanity = np.flatnonzero((data.style != s) & base)
    g = np.random.default_rng(0)
    peek = g.choice(test, min(400, len(test)), replace=False)

    def peek_fn(m):
        h1, h5 = topk_hits(identity_logits(m, x[peek]), data.emoji[peek])
        return f"held-out peek ({len(peek)}) top-1 {100 * h1.mean():.1f}% top-5 {100 * h5.mean():.1f}%"

    t0 = time.time()
    log(f"identity judge without {style}: {len(train)} training images, {len(data.identities)} identities")
    model = train_identity(x[train], y[train], len(data.identities), epochs=epochs, log=log, eval_fn=peek_fn)
    secs = time.time() - t0
    res = {"style": style, "train_images": len(train), "seconds": round(secs), "epochs": epochs,
           "parameters": sum(p.numel() for p in model.parameters())}
    for name, idx in (("held_out", test), ("held_out_all", test_all), ("sanity", sanity)):
        h1, h5 = topk_hits(identity_logits(model, x[idx]), data.emoji[idx])
        res[name] = {"n": len(idx), "top1": 100 * float(h1.mean()), "top5": 100 * float(h5.mean())}
    path = Path(path) if path is not None else style_path(style)
    save_identity_judge(model, path, style, unified_list(data), data.images.shape[1], fingerprint(data), len(train),
                        extra={"ceiling_top1": f"{res['held_out']['top1']:.2f}", "ceiling_top5": f"{res['held_out']['top5']:.2f}",
                               "ceiling_set": f"the {len(test)} base images of {style}"})
    res["bytes"] = path.stat().st_size
    log(f"  {style}: held-out top-1 {res['held_out']['top1']:.1f}% top-5 {res['held_out']['top5']:.1f}%, "
        f"sanity top-1 {res['sanity']['top1']:.1f}%, {secs:.0f}s, wrote {path} ({res['bytes'] / 1e6:.2f} MB)")
    return res


def styles_split(data, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) image indices among the base images of every style: 20% of the identities,
    stratified by category, are held out with all their images (a judge never sees them in any style)."""
    cat = np.array([data.categories.index(e.category) for e in data.identities])
    _, te_ids = ev.split(cat, 0.2, seed)
    held = np.zeros(len(data.identities), bool); held[te_ids] = True
    base = np.flatnonzero(is_base(data))
    return base[~held[data.emoji[base]]], base[held[data.emoji[base]]]


def train_styles_judge(data, log=print, path=STYLES_JUDGE) -> dict:
    """The 9-category judge on the base images of all styles (evaluate's Classifier and recipe)."""
    from .data import to_model
    x = to_model(torch.from_numpy(data.images))
    y = category_labels(data)
    tr, te = styles_split(data)
    t0 = time.time()
    log(f"category judge on all styles: {len(tr)} training images, {len(te)} held out")
    clf = ev.train_classifier(x[tr], torch.from_numpy(y[tr]), len(data.categories), log=log)
    secs = time.time() - t0
    ev.save_judge(clf, path, list(data.categories), data.images.shape[1], fingerprint(data), len(tr), STYLES_RECIPE)
    pred, _ = ev.predict(clf, x[te])
    res = {"seconds": round(secs), "train_images": len(tr), "held_out": len(te),
           "ceiling": 100 * ev.balanced_accuracy(pred, y[te]), "per_style": {}}
    for s, name in enumerate(data.styles):
        m = data.style[te] == s
        if m.any():
            res["per_style"][name] = 100 * ev.balanced_accuracy(pred[m], y[te][m])
    log(f"  category judge: balanced accuracy {res['ceiling']:.1f}% on {len(te)} held-out images "
        f"({', '.join(f'{k} {v:.1f}%' for k, v in res['per_style'].items())}), {secs:.0f}s")
    return res


def load_styles_judge(data, path=STYLES_JUDGE):
    return ev.load_judge(path, list(data.categories), data.images.shape[1], 4)


# ---------------------------------------------------------------- the evaluation list

def make_eval_list(data, n: int = EVAL_SIZE, seed: int = EVAL_SEED, first: str = HIPPO) -> dict:
    """`n` identities drawn with a fixed seed among those with a base image in every style,
    stratified by category (every category gets at least one; the rest in proportion to its size),
    `first` listed first, the others in draw order."""
    rng = np.random.default_rng(seed)
    ids = data.identities
    uni = [e.unified for e in ids]
    first_i = uni.index(first)
    cats = list(data.categories)
    base = is_base(data)
    everywhere = set(range(len(ids)))
    for s in range(len(data.styles)):
        everywhere &= set(data.emoji[base & (data.style == s)].tolist())
    by = {c: [i for i, e in enumerate(ids) if e.category == c and i != first_i and i in everywhere] for c in cats}
    quota = {c: 1 for c in cats if by[c]}
    quota[ids[first_i].category] = quota.get(ids[first_i].category, 1) - 1
    total = sum(len(v) for v in by.values())
    rest = n - 1 - sum(quota.values())
    exact = {c: rest * len(by[c]) / total for c in quota}
    for c in quota:
        quota[c] += int(exact[c])
    left = n - 1 - sum(quota.values())
    for c in sorted(quota, key=lambda c: -(exact[c] - int(exact[c])))[:left]:
        quota[c] += 1
    picks = []
    for c in cats:
        if c in quota:
            picks += list(rng.choice(by[c], quota[c], replace=False))
    picks = [first_i] + [int(i) for i in rng.permutation(picks)]
    entries = [{"unified": ids[i].unified, "name": ids[i].name, "category": ids[i].category,
                "subcategory": ids[i].subcategory} for i in picks]
    return {"format": "ditweb-eval-emoji/1", "seed": seed, "n": n,
            "draw": f"numpy default_rng({seed}); among the identities drawn in every style ({', '.join(data.styles)}), per category max(1, proportional) identities without replacement, "
                    f"then shuffled; {first} (the hippopotamus) forced first; the first 16 are the README grid",
            "grid": 16, "emoji": entries}


def load_eval_list(data=None, path=EVAL_LIST) -> list[int]:
    """The evaluation list's identity indices (into data.identities), in order."""
    entries = json.loads(Path(path).read_text())["emoji"]
    if data is None:
        return entries
    uni = unified_list(data)
    try:
        return [uni.index(e["unified"]) for e in entries]
    except ValueError:
        raise IdentityError(f"{path}: lists an emoji the data does not have") from None


# ---------------------------------------------------------------- metrics (pure: no DiT inside)

def _as_tensor(images) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    if t.ndim != 4 or t.shape[1] != 4:
        raise IdentityError(f"images must be (N, 4, S, S) in [-1, 1], got {tuple(t.shape)}")
    return t


def identity_scores(images, emoji_idx, styles, judges: dict | None = None, ceilings: dict | None = None) -> dict:
    """Per image: top-1 / top-5 hit of the requested identity by the judge that never saw the
    requested style (logits averaged with the horizontal flip). `judges` maps style -> IdentityNet
    (default: the committed ones); `ceilings` style -> (top1 %, top5 %) (default: the files')."""
    x = _as_tensor(images)
    emoji_idx = np.asarray(emoji_idx, np.int64)
    styles = np.asarray(list(styles))
    if not (len(x) == len(emoji_idx) == len(styles)):
        raise IdentityError(f"{len(x)} images but {len(emoji_idx)} identities and {len(styles)} styles")
    judges = dict(judges or {})
    ceilings = dict(ceilings or {})
    top1, top5 = np.zeros(len(x), bool), np.zeros(len(x), bool)
    out = {"per_style": {}}
    for s in sorted(set(styles.tolist())):
        if s not in judges:
            judges[s], meta = load_identity_judge(s, input_size=x.shape[-1])
            ceilings.setdefault(s, (float(meta["ceiling_top1"]), float(meta["ceiling_top5"])))
        m = styles == s
        h1, h5 = topk_hits(identity_logits(judges[s], x[torch.from_numpy(m)]), emoji_idx[m])
        top1[m], top5[m] = h1, h5
        row = {"n": int(m.sum()), "top1": 100 * float(h1.mean()), "top5": 100 * float(h5.mean())}
        if s in ceilings:
            c1, c5 = ceilings[s]
            row.update(ceiling_top1=c1, ceiling_top5=c5, of_ceiling_top1=100 * row["top1"] / c1, of_ceiling_top5=100 * row["top5"] / c5)
        out["per_style"][s] = row
    out.update(top1=100 * float(top1.mean()) if len(x) else float("nan"),
               top5=100 * float(top5.mean()) if len(x) else float("nan"), hit1=top1, hit5=top5, n=len(x))
    return out


class MatchedReference(ev.Reference):
    """evaluate.Reference with arbitrary per-class counts (the generated set's), not n per class:
    real reference sets drawn with exactly those counts, and the floor between two disjoint ones."""

    def __init__(self, feats: np.ndarray, labels: np.ndarray, counts, pairs: int = ev.FLOOR_PAIRS,
                 class_names: list[str] | None = None, seed: int = ev.FLOOR_SEED):
        counts = np.asarray(counts, np.int64)
        self.counts, self.pairs = counts, pairs
        def short(c, have, k):
            name = class_names[c] if class_names else str(c)
            return IdentityError(f"class {name!r} has {have} real images, but the floor needs two disjoint "
                                 f"draws of {k} (the generated count); generate fewer seeds per emoji")
        drawn = ev.matched_pairs(labels, counts, pairs, seed, short=short)
        self.sets = [feats[i] for pair in drawn for i in pair]
        self.floors = np.array([ev.frechet_distance(feats[a], feats[b]) for a, b in drawn])


def category_scores(images, emoji_idx, styles, data, judge=None, floor_pairs: int = ev.FLOOR_PAIRS, ceiling=None) -> dict:
    """Balanced accuracy of the requested category by the all-styles category judge, and per style
    the FD of the judge's features against real base images of that style drawn with the same
    per-category counts (mean over 2 x floor_pairs reference sets), with the floor (real vs real).
    Samples of a category the style has too few real images for (fewer than twice the samples) are
    left out of that style's FD (listed in "fd_left_out"), so both sides keep the same counts."""
    x = _as_tensor(images)
    emoji_idx = np.asarray(emoji_idx, np.int64)
    styles = np.asarray(list(styles))
    if judge is None:
        judge, jm = load_styles_judge(data)
    cat_of = np.array([data.categories.index(e.category) for e in data.identities])
    want = cat_of[emoji_idx]
    pred, feat = ev.predict(judge, x)
    from .data import to_model
    real_x = to_model(torch.from_numpy(data.images))
    real_y = category_labels(data)
    base = is_base(data)
    out = {"balanced_accuracy": 100 * ev.balanced_accuracy(pred, want), "accuracy": 100 * float((pred == want).mean()),
           "per_style": {}}
    if ceiling is not None:
        out["of_ceiling"] = 100 * out["balanced_accuracy"] / ceiling
    k = len(data.categories)
    for s in sorted(set(styles.tolist())):
        m = styles == s
        si = data.styles.index(s)
        idx = np.flatnonzero((data.style == si) & base)
        _, rf = ev.predict(judge, real_x[idx])
        counts = np.bincount(want[m], minlength=k)
        have = np.bincount(real_y[idx], minlength=k)
        short = np.flatnonzero(have < 2 * counts)                 # e.g. Fluent draws only 8 flags
        keep = m & ~np.isin(want, short)
        counts[short] = 0
        ref = MatchedReference(rf, real_y[idx], counts, floor_pairs, list(data.categories))
        fd, fd_std = ref.score(feat[keep])
        row = {"n": int(m.sum()), "fd_n": int(keep.sum()), "fd_left_out": [data.categories[c] for c in short], "balanced_accuracy": 100 * ev.balanced_accuracy(pred[m], want[m]),
               "fd": fd, "fd_std": fd_std, "floor": ref.floor, "floor_std": ref.spread, "fd_over_floor": fd / ref.floor,
               "fd_excess": fd - ref.floor}
        out["per_style"][s] = row
    return out


def _training_tensor(data) -> torch.Tensor:
    from .data import to_model
    return to_model(torch.from_numpy(data.images))


def near_copies(images, style: str, data, train: torch.Tensor | None = None, with_real: bool = True) -> dict:
    """Share of `images` whose nearest image among everything the DiT trained on (every image of
    every style, flips included) is nearly identical (RGBA RMSE in [0, 1] < evaluate.NEAR_RMSE), and
    the same share among the real images of `style`, each against all the others."""
    x = _as_tensor(images)
    train = _training_tensor(data) if train is None else train
    d = ev.nearest_rmse(x, train)
    out = {"n": len(x), "near_copy": 100 * float((d < ev.NEAR_RMSE).mean()), "near_median": float(np.median(d)), "rmse": d}
    if not with_real:
        return out
    si = data.styles.index(style)
    own = np.flatnonzero(data.style == si)
    real = ev.nearest_rmse(train[own], train, skip=own)
    return out | {"real_n": len(own), "real_near_copy": 100 * float((real < ev.NEAR_RMSE).mean()),
            "real_near_median": float(np.median(real))}


def _pairwise_rmse(x: torch.Tensor) -> float:
    """Mean RGBA RMSE (in [0, 1]) over the distinct pairs of a set (N, C, H, W) in [-1, 1]."""
    f = ((x.double() + 1) / 2).flatten(1)
    d2 = ((f[:, None] - f[None]) ** 2).mean(2)
    iu = torch.triu_indices(len(f), len(f), 1)
    return float(d2[iu[0], iu[1]].clamp(min=0).sqrt().mean())


def diversity(images, groups) -> dict:
    """Mean pairwise RGBA RMSE between the images of each group (the samples of one request, i.e.
    different seeds), averaged over the groups with at least two images."""
    x = _as_tensor(images)
    groups = list(groups)
    if len(groups) != len(x):
        raise IdentityError(f"{len(x)} images but {len(groups)} group labels")
    by: dict = {}
    for i, gkey in enumerate(groups):
        by.setdefault(gkey if not isinstance(gkey, list) else tuple(gkey), []).append(i)
    vals = [_pairwise_rmse(x[idx]) for idx in by.values() if len(idx) > 1]
    return {"mean": float(np.mean(vals)) if vals else float("nan"), "groups": len(vals)}


def real_diversity(data, emoji_idx) -> dict:
    """The reference for diversity: mean pairwise RGBA RMSE between the base images of one emoji in
    the different styles, averaged over the given identities."""
    base = is_base(data)
    idx, groups = [], []
    for e in sorted(set(int(i) for i in emoji_idx)):
        m = np.flatnonzero((data.emoji == e) & base)
        idx += m.tolist(); groups += [e] * len(m)
    return diversity(_training_tensor(data)[idx], groups)


# ---------------------------------------------------------------- all of it

def _records(recs) -> tuple[torch.Tensor, np.ndarray, list[str], np.ndarray]:
    if not recs:
        raise IdentityError("no generated records")
    try:
        imgs = torch.stack([torch.as_tensor(np.asarray(r["image"]) if not isinstance(r["image"], torch.Tensor) else r["image"]).float()
                            for r in recs])
        emoji = np.array([int(r["emoji"]) for r in recs], np.int64)
        styles = [str(r["style"]) for r in recs]
        seeds = np.array([int(r["seed"]) for r in recs], np.int64)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise IdentityError(f"a record must be {{emoji, style, seed, image (4, S, S)}}: {type(e).__name__} {e}") from None
    return imgs, emoji, styles, seeds


def evaluate_named(generated, data=None, floor_pairs: int = ev.FLOOR_PAIRS, meta: dict | None = None, log=print) -> dict:
    """Score generated images of named emoji. `generated` is a list of records
    {"emoji": identity index into data.identities, "style": style name, "seed": int,
    "image": (4, S, S) array or tensor in [-1, 1]}, or a dict {row label: such a list} (e.g. one
    list per guidance scale). Returns {"real": per-style ceilings, floors and references,
    "rows": [one dict per (label, style) plus an "all styles" row per label], ...}; see table()."""
    data = load_data() if data is None else data
    if isinstance(generated, list):
        generated = {"generated": generated}
    uni = unified_list(data)
    judges, ceilings, jmeta = {}, {}, {}
    parsed = {label: _records(recs) for label, recs in generated.items()}
    styles_needed = sorted({s for p in parsed.values() for s in p[2]})
    for s in styles_needed:
        if s not in data.styles:
            raise IdentityError(f"unknown style {s!r}; the data has {', '.join(data.styles)}")
        judges[s], m = load_identity_judge(s, uni, data.images.shape[1])
        ceilings[s] = (float(m["ceiling_top1"]), float(m["ceiling_top5"]))
        jmeta[s] = {k: m.get(k) for k in ("ceiling_top1", "ceiling_top5", "ceiling_set", "data_fingerprint", "train_images")}
    cjudge, cmeta = load_styles_judge(data)
    tr, te = styles_split(data)
    real_x = _training_tensor(data)
    pred, _ = ev.predict(cjudge, real_x[te])
    cy = category_labels(data)
    cat_ceiling = 100 * ev.balanced_accuracy(pred, cy[te])
    fp = fingerprint(data)
    result = {"meta": dict(meta or {}), "styles": styles_needed, "ceilings": {s: {"top1": c[0], "top5": c[1]} for s, c in ceilings.items()},
              "category_ceiling": cat_ceiling, "category_judge_same_data": cmeta.get("data_fingerprint") == fp,
              "identity_judges_same_data": all(jmeta[s]["data_fingerprint"] == fp for s in styles_needed),
              "floor_pairs": floor_pairs, "near_rmse": ev.NEAR_RMSE, "rows": [], "real": {}}
    for label, (x, emoji, styles, seeds) in parsed.items():
        t0 = time.time()
        if emoji.min() < 0 or emoji.max() >= len(uni):
            raise IdentityError(f"{label}: emoji index out of range [0, {len(uni)})")
        ids = identity_scores(x, emoji, styles, judges, ceilings)
        cats = category_scores(x, emoji, styles, data, cjudge, floor_pairs, cat_ceiling)
        st = np.array(styles)
        for s in sorted(set(styles)):
            m = st == s
            near = near_copies(x[torch.from_numpy(m)], s, data, real_x, with_real=s not in result["real"])
            div = diversity(x[torch.from_numpy(m)], emoji[m].tolist())
            if s not in result["real"]:
                rd = real_diversity(data, emoji[m])
                result["real"][s] = {"ceiling_top1": ceilings[s][0], "ceiling_top5": ceilings[s][1],
                                     "near_copy": near["real_near_copy"], "near_median": near["real_near_median"],
                                     "near_n": near["real_n"], "diversity": rd["mean"], "diversity_emoji": rd["groups"],
                                     "floor": cats["per_style"][s]["floor"], "floor_std": cats["per_style"][s]["floor_std"]}
            i, c = ids["per_style"][s], cats["per_style"][s]
            result["rows"].append({"label": label, "style": s, "n": i["n"], "emoji": len(set(emoji[m].tolist())),
                                   "seeds": sorted(set(seeds[m].tolist())),
                                   "top1": i["top1"], "top5": i["top5"], "of_ceiling_top1": i["of_ceiling_top1"],
                                   "of_ceiling_top5": i["of_ceiling_top5"], "category_balanced_accuracy": c["balanced_accuracy"],
                                   "fd": c["fd"], "fd_std": c["fd_std"], "floor": c["floor"], "fd_over_floor": c["fd_over_floor"],
                                   "fd_excess": c["fd_excess"], "near_copy": near["near_copy"], "near_median": near["near_median"],
                                   "diversity": div["mean"]})
        result["rows"].append({"label": label, "style": "all", "n": ids["n"], "emoji": len(set(emoji.tolist())),
                               "top1": ids["top1"], "top5": ids["top5"],
                               "category_balanced_accuracy": cats["balanced_accuracy"],
                               "category_of_ceiling": cats["of_ceiling"], "diversity": diversity(x, [(e, s) for e, s in zip(emoji.tolist(), styles)])["mean"],
                               "seconds": round(time.time() - t0, 1)})
        log(f"{label}: identity top-1 {ids['top1']:.1f}% top-5 {ids['top5']:.1f}%, category {cats['balanced_accuracy']:.1f}% "
            f"({time.time() - t0:.0f}s)")
    return result


def table(r: dict) -> tuple[str, list[str], list[list], str]:
    """(title, header, rows, notes) for bench.publish."""
    header = ["images", "style", "n", "identity top-1 %", "identity top-5 %", "top-1 / top-5 of ceiling",
              "category balanced %", "FD (category judge)", "FD / floor", f"near copies (RMSE < {r['near_rmse']})",
              "diversity (RMSE, same request)"]
    rows = []
    for s, v in r["real"].items():
        rows.append([f"real {s} (ceiling, floor, reference)", s, "-", f"{v['ceiling_top1']:.1f}", f"{v['ceiling_top5']:.1f}", "100% / 100%",
                     f"{r['category_ceiling']:.1f} (all styles)", f"{v['floor']:.2f} ± {v['floor_std']:.2f} (floor)", "1.0",
                     f"{v['near_copy']:.1f}% of {v['near_n']} (median {v['near_median']:.3f})",
                     f"{v['diversity']:.3f} (one emoji across styles, {v['diversity_emoji']} emoji)"])
    for w in r["rows"]:
        if w["style"] == "all":
            rows.append([w["label"], "all", w["n"], f"{w['top1']:.1f}", f"{w['top5']:.1f}", "-",
                         f"{w['category_balanced_accuracy']:.1f} ({w['category_of_ceiling']:.0f}% of ceiling)", "-", "-", "-",
                         f"{w['diversity']:.3f}"])
        else:
            rows.append([w["label"], w["style"], w["n"], f"{w['top1']:.1f}", f"{w['top5']:.1f}",
                         f"{w['of_ceiling_top1']:.0f}% / {w['of_ceiling_top5']:.0f}%", f"{w['category_balanced_accuracy']:.1f}",
                         f"{w['fd']:.2f} ± {w['fd_std']:.2f}", f"{w['fd_over_floor']:.1f}x",
                         f"{w['near_copy']:.1f}% (median {w['near_median']:.3f})", f"{w['diversity']:.3f}"])
    meta = ", ".join(f"{k} {v}" for k, v in r["meta"].items())
    notes = (f"{meta + '. ' if meta else ''}Identity: the requested emoji among all identities, top-1 / top-5, by the judge "
             f"that never saw the requested style (models/judge_identity_<style>.safetensors, logits averaged with the "
             f"mirror image); its ceiling is its accuracy on the real base images of that style. Category: class-averaged "
             f"accuracy of the requested category by models/judge_styles.safetensors (ceiling: its balanced accuracy on "
             f"the identities it never saw, all styles). FD: the category judge's features per style, mean ± std over "
             f"{2 * r['floor_pairs']} real reference sets of that style's base images with the generated per-category "
             f"counts; floor: two disjoint such sets, mean ± std over {r['floor_pairs']} pairs. Near copies: nearest of "
             f"every training image of every style and their flips; the real row is each real image of that style against "
             f"all the others. Diversity: mean pairwise RGBA RMSE between the seeds of one request; its reference is the "
             f"RMSE between one emoji's real images in different styles."
             f"{'' if r['identity_judges_same_data'] and r['category_judge_same_data'] else ' WARNING: a judge was trained on other data than these.'}"
             f" See docs/evaluation.md.")
    return "Named emoji (identity judges)", header, rows, notes
