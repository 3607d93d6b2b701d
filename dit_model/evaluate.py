"""`ditweb eval CKPT`: sample quality without an Inception network (docs/evaluation.md).

The judge is a small CNN classifier trained once on 80% of the real images (a stratified,
seeded split) and committed as models/judge.safetensors, so every machine scores with the same
weights; `--retrain-judge` trains it again and writes the file. It gives:
  - the ceiling: its class-averaged (balanced) accuracy on the 20% held-out real images;
  - the balanced accuracy of the requested class on generated samples, per guidance scale
    (the same number of samples per class, fixed seeds, steps and sampler, all printed);
  - the Frechet distance (FD) between its penultimate features of the generated set and
    class-balanced real reference sets with the same per-class counts, and the floor: the same
    distance between two disjoint real sets drawn the same way, mean and spread over several
    draws (FD is biased by sample size and class mix, so both sides must match);
  - near copies: the share of samples whose nearest image among all the images the diffusion
    model trained on (flips included) is nearly identical, next to the same share among the real
    images themselves (each against all the others).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ditformat.errors import DitwebError

ROOT = Path(__file__).resolve().parent.parent
JUDGE = ROOT / "models" / "judge.safetensors"
JUDGE_FORMAT = "ditweb-judge/1"
NEAR_RMSE = 0.05          # RGBA RMSE in [0, 1] below which two images count as nearly identical
FLOOR_PAIRS = 20          # disjoint real-vs-real pairs behind the floor's mean and spread
JUDGE_RECIPE = "30 epochs, AdamW one-cycle 3e-3, batch 64, flips, shifts <= 2 px, class-weighted loss, smoothing 0.1, seed 0"
FLOOR_SEED = 12345        # fixed, so every model is compared with the same reference draws


class EvalError(DitwebError):
    """Bad input to the evaluation; the message is one line naming what is wrong."""


class Classifier(nn.Module):
    """Four 3x3 convs (32x32 -> 4x4, ~5M multiply-adds: trains in minutes on a CPU) and a
    64-d feature layer; RGBA input in [-1, 1]."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, feat: int = 64):
        super().__init__()
        def conv(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]
        self.body = nn.Sequential(*conv(in_channels, width), nn.MaxPool2d(2), *conv(width, 2 * width), nn.MaxPool2d(2),
                                  *conv(2 * width, 4 * width), *conv(4 * width, 4 * width), nn.MaxPool2d(2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, feat), nn.ReLU())
        self.head = nn.Linear(feat, num_classes)

    def features(self, x):
        return self.body(x)                                                   # (N, feat)

    def forward(self, x):
        return self.head(self.body(x))


def split(labels: np.ndarray, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, seeded train / held-out split of indices."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(len(idx) * held_out)))
        test.extend(idx[:k]); train.extend(idx[k:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Each image moved by (dx, dy) pixels, the uncovered border transparent (-1 in every channel)."""
    n, _, h, w = x.shape
    p = int(max(dx.abs().max(), dy.abs().max(), 0))
    if p == 0:
        return x
    big = F.pad(x, (p, p, p, p), value=-1.0)
    rows = (torch.arange(h)[None, :] + p - dy[:, None]).clamp(0, h + 2 * p - 1)          # (N, H)
    cols = (torch.arange(w)[None, :] + p - dx[:, None]).clamp(0, w + 2 * p - 1)          # (N, W)
    idx = torch.arange(n)[:, None, None]
    return big.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def train_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int = 30, seed: int = 0,
                     max_shift: int = 2, balance: bool = True, log=print) -> Classifier:
    """Flips and shifts of up to `max_shift` pixels keep the judge from memorising its training
    images, so real images it never saw get features like those it trained on (the reference
    pool holds both); the class-weighted loss (`balance`) removes its prior for big classes,
    which would otherwise leak into the balanced accuracy of the small ones."""
    torch.manual_seed(seed)
    model = Classifier(x.shape[1], num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x) + 63) // 64))
    g = torch.Generator().manual_seed(seed)
    counts = torch.bincount(y, minlength=num_classes).float()
    weight = (counts.sum() / (num_classes * counts.clamp(min=1))) if balance else None
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), 64):
            b = perm[s:s + 64]
            xb = x[b]
            flip = torch.rand(len(b), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)        # the DiT's own augmentation
            if max_shift:
                d = torch.randint(-max_shift, max_shift + 1, (2, len(b)), generator=g)
                xb = shift(xb, d[0], d[1])
            loss = F.cross_entropy(model(xb), y[b], weight=weight, label_smoothing=0.1)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if (epoch + 1) % 10 == 0:
            log(f"  judge epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def predict(model: Classifier, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, features) in batches."""
    preds, feats = [], []
    for s in range(0, len(x), 256):
        f = model.features(x[s:s + 256])
        feats.append(f.numpy()); preds.append(model.head(f).argmax(1).numpy())
    return np.concatenate(preds), np.concatenate(feats).astype(np.float64)


def balanced_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy averaged over classes (each class present counts once, whatever its size)."""
    return float(np.mean([(pred[labels == c] == c).mean() for c in np.unique(labels)]))


# ---------------------------------------------------------------- the committed judge

def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes() + labels.astype(np.int64).tobytes()).hexdigest()[:16]


def save_judge(model: Classifier, path, class_names: list[str], input_size: int, fingerprint: str, n_train: int,
               recipe: str) -> None:
    from safetensors.torch import save
    from .checkpoint import atomic_write
    meta = {"format": JUDGE_FORMAT, "class_names": json.dumps(list(class_names)), "input_size": str(input_size),
            "in_channels": str(model.body[0].in_channels), "width": str(model.body[0].out_channels),
            "feat": str(model.head.in_features), "data_fingerprint": fingerprint, "train_images": str(n_train),
            "recipe": recipe, "split": "stratified, 20% held out, seed 0"}
    data = save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, metadata=meta)
    atomic_write(path, lambda f: f.write(data), "the judge's weights", EvalError)


def read_judge(path: Path, fmt: str, error: type[Exception], what: str, parse):
    """(state dict, metadata, parse(metadata)) of a judge's safetensors file: one `error` line where the file is
    unreadable, not a `fmt` file, or its metadata does not parse."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
        if meta.get("format") != fmt:
            raise ValueError(f"not a {fmt} file")
        return sd, meta, parse(meta)
    except Exception as e:
        raise error(f"{path}: not a readable {what} ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None


def load_judge(path, class_names: list[str], input_size: int, in_channels: int) -> tuple[Classifier, dict]:
    """The committed judge; a one-line EvalError if it is missing, unreadable or made for other data."""
    path = Path(path)
    hint = f"train one for this data with --retrain-judge (writes {path})"
    if not path.is_file():
        raise EvalError(f"{path}: no judge weights; {hint}")
    sd, meta, (names, size, chans, width, feat) = read_judge(path, JUDGE_FORMAT, EvalError, "judge", lambda meta: (
        json.loads(meta["class_names"]), int(meta["input_size"]), int(meta["in_channels"]), int(meta["width"]), int(meta["feat"])))
    if names != list(class_names) or (size, chans) != (input_size, in_channels):
        raise EvalError(f"{path}: the judge was trained on {len(names)} classes ({', '.join(names)}) at "
                        f"{size}x{size}x{chans}, but the data has {len(class_names)} classes ({', '.join(class_names)}) "
                        f"at {input_size}x{input_size}x{in_channels}; pass --judge FILE --retrain-judge to train one for it")
    model = Classifier(chans, len(names), width, feat)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise EvalError(f"{path}: judge weights do not fit its own metadata ({str(e).strip().splitlines()[0]})") from None
    return model.eval(), meta


# ---------------------------------------------------------------- Frechet distance and its floor

def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), via symmetric eigendecompositions."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ sb @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def matched_pairs(labels: np.ndarray, counts, pairs: int, seed: int = FLOOR_SEED, exclude: np.ndarray | None = None,
                  short=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """`pairs` pairs (A, B) of index sets with exactly counts[c] images of every class c (classes of count 0 left
    out), A and B disjoint; pairs are drawn independently (they may share images with other pairs). Indices in
    `exclude` are never drawn; short(c, have, k) is the error raised for a class with fewer than 2k images."""
    rng = np.random.default_rng(seed)
    allowed = np.ones(len(labels), bool)
    if exclude is not None:
        allowed[exclude] = False
    pools = []
    for c, k in enumerate(counts):
        idx = np.flatnonzero((labels == c) & allowed)
        if k and len(idx) < 2 * k:
            raise short(c, len(idx), k)
        pools.append(idx)
    ks = [k for k in counts if k]
    out = []
    for _ in range(pairs):
        picks = [rng.permutation(idx)[:2 * k] for idx, k in zip(pools, counts) if k]
        out.append((np.concatenate([p[:k] for p, k in zip(picks, ks)]), np.concatenate([p[k:] for p, k in zip(picks, ks)])))
    return out


def balanced_pairs(labels: np.ndarray, n_per_class: int, pairs: int, seed: int = FLOOR_SEED,
                   class_names: list[str] | None = None, exclude: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """matched_pairs with `n_per_class` images of every class."""
    def short(c, have, k):
        name = class_names[c] if class_names else str(c)
        return EvalError(f"class {name!r} has {have} real images, but the floor needs two disjoint draws of "
                         f"{k} (2 x --n-per-class); lower --n-per-class to {have // 2} or less")
    return matched_pairs(labels, [n_per_class] * (int(labels.max()) + 1), pairs, seed, exclude, short)


class Reference:
    """Class-balanced real reference sets and the real-vs-real floor, in judge features.
    A set is scored by its mean FD to every reference set (both halves of every pair): the same
    counts per class on both sides, as for the floor, so the sample-size bias of FD cancels in the ratio."""

    def __init__(self, feats: np.ndarray, labels: np.ndarray, n_per_class: int, pairs: int = FLOOR_PAIRS,
                 class_names: list[str] | None = None, exclude: np.ndarray | None = None, seed: int = FLOOR_SEED):
        self.n_per_class, self.pairs = n_per_class, pairs
        drawn = balanced_pairs(labels, n_per_class, pairs, seed, class_names, exclude)
        self.sets = [feats[i] for pair in drawn for i in pair]
        self.floors = np.array([frechet_distance(feats[a], feats[b]) for a, b in drawn])

    @property
    def floor(self) -> float:
        return float(self.floors.mean())

    @property
    def spread(self) -> float:
        return float(self.floors.std(ddof=1)) if len(self.floors) > 1 else 0.0

    def score(self, feats: np.ndarray) -> tuple[float, float]:
        """(mean, std) of the FD between `feats` and each reference set."""
        d = np.array([frechet_distance(feats, r) for r in self.sets])
        return float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else 0.0


# ---------------------------------------------------------------- near copies

def nearest_rmse(samples: torch.Tensor, train: torch.Tensor, skip: np.ndarray | None = None) -> np.ndarray:
    """For each sample, RGBA RMSE in [0, 1] to its nearest training image (flips included).
    skip[i] >= 0 leaves training image skip[i] and its flip out for sample i (a real image
    against all the others). The nearest is found in float32 and its distance recomputed exactly."""
    s = ((samples + 1) / 2).flatten(1)
    ref = ((torch.cat([train, train.flip(3)]) + 1) / 2).flatten(1)
    rn = (ref ** 2).sum(1)
    best = np.empty(len(s), np.int64)
    for lo in range(0, len(s), 512):
        sb = s[lo:lo + 512]
        d2 = (sb ** 2).sum(1, keepdim=True) - 2 * sb @ ref.T + rn[None]
        if skip is not None:
            rows = torch.arange(len(sb))
            own = torch.from_numpy(np.asarray(skip[lo:lo + 512], dtype=np.int64))
            keep = own >= 0
            d2[rows[keep], own[keep]] = float("inf")
            d2[rows[keep], own[keep] + len(train)] = float("inf")
        best[lo:lo + len(sb)] = d2.argmin(1).numpy()
    diff = s.double() - ref[torch.from_numpy(best)].double()
    return np.sqrt((diff ** 2).mean(1).numpy())


# ---------------------------------------------------------------- the model under test

def load_eval_model(path, weights: str = "ema"):
    """(model, meta) like checkpoint.load_model, with a choice of weights: "ema" (or a file's only
    set) or "raw", the trained weights of a checkpoint that holds both ("model" and "ema", as
    `ditweb train` writes). meta["weights"] says which were loaded: "EMA", "raw" or "single"
    (a file with one set, such as the shipped .safetensors)."""
    from .checkpoint import CheckpointError, _torch_load, infer_config, load_model
    from .model import DiT, DiTConfig
    if weights not in ("ema", "raw"):
        raise EvalError(f"unknown --weights {weights!r}; choose ema or raw")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    obj = _torch_load(path)
    pair = isinstance(obj, dict) and isinstance(obj.get("model"), dict) and isinstance(obj.get("ema"), dict)
    if weights == "ema":
        model, meta = load_model(path)
        meta["weights"] = "EMA" if pair else "single"
        return model, meta
    if not pair:
        raise EvalError(f"{path}: holds one set of weights, not raw and EMA; --weights raw needs a training "
                        f"checkpoint (runs/NAME/ckpt.pt) or the raw weights file itself")
    sd = obj["model"]
    try:
        cfg = DiTConfig.from_dict(obj["config"]) if isinstance(obj.get("config"), dict) else infer_config(sd, path)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    model = DiT(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: raw weights do not fit the config ({str(e).strip().splitlines()[0]})") from None
    names = obj.get("class_names")
    if not names or len(names) != cfg.num_classes:
        names = [str(i) for i in range(cfg.num_classes)]
    return model.eval(), {"config": cfg, "class_names": list(names), "step": obj.get("step"), "weights": "raw"}


# ---------------------------------------------------------------- the evaluation

def evaluate(ckpt: str, data: str | None = None, n_per_class: int = 32, steps: int = 50, sampler: str = "ddim",
             scales=(1.0, 2.0, 4.0, 6.0), seed: int = 0, weights: str = "ema", judge: str | None = None,
             retrain_judge: bool = False, floor_pairs: int = FLOOR_PAIRS, interval: tuple[int, int] | None = None,
             log=print) -> dict:
    """Everything `ditweb eval` reports, as a dict (see table() for the printed form)."""
    from tqdm import tqdm
    from .data import load_data
    from ditformat.guidance import Guide
    from .sample import sample_images
    model, meta = load_eval_model(ckpt, weights)
    cfg, names = meta["config"], meta["class_names"]
    real = load_data(data, size=cfg.input_size, subcategories=len(names) > 9 and data is None)
    if real.class_names != names:
        raise EvalError(f"the checkpoint's classes ({', '.join(names)}) differ from the data's "
                        f"({', '.join(real.class_names)}); pass the training data with --data")
    x, y = real.tensor(), real.labels
    tr, te = split(y)
    fingerprint = data_fingerprint(real.images, y)
    judge_path = Path(judge) if judge else JUDGE
    if retrain_judge:
        log(f"training the judge on {len(tr)} real images ...")
        clf = train_classifier(x[tr], torch.from_numpy(y[tr]), len(names), log=log)
        save_judge(clf, judge_path, names, cfg.input_size, fingerprint, len(tr), JUDGE_RECIPE)
        log(f"wrote {judge_path}")
    clf, jmeta = load_judge(judge_path, names, cfg.input_size, cfg.in_channels)
    same_data = jmeta.get("data_fingerprint") == fingerprint
    if not same_data:
        log(f"warning: {judge_path} was trained on other images than these (fingerprint "
            f"{jmeta.get('data_fingerprint')} vs {fingerprint}); its ceiling may be optimistic")
    pred_real, feat_real = predict(clf, x)
    ceiling = balanced_accuracy(pred_real[te], y[te])
    ref = Reference(feat_real, y, n_per_class, floor_pairs, names)
    real_near = nearest_rmse(x, x, skip=np.arange(len(x)))            # each real image against all the others
    result = {
        "ckpt": str(ckpt), "step": meta.get("step"), "weights": meta["weights"], "prediction": getattr(cfg, "prediction", "eps"),
        "n_per_class": n_per_class, "classes": len(names), "steps": steps, "sampler": sampler, "seed": seed,
        "judge": str(judge_path), "judge_same_data": same_data, "judge_train_images": int(jmeta.get("train_images", 0)),
        "held_out": len(te), "real_images": len(x), "ceiling": 100 * ceiling,
        "floor": {"mean": ref.floor, "std": ref.spread, "pairs": floor_pairs, "n": n_per_class * len(names)},
        "real_near_copy": 100 * float((real_near < NEAR_RMSE).mean()), "real_near_median": float(np.median(real_near)),
        "interval": list(interval) if interval else None, "threads": torch.get_num_threads(), "rows": [],
    }
    class_ids = np.repeat(np.arange(len(names)), n_per_class)
    for s in scales:
        guide = Guide.within(s, interval)
        t0 = time.time()
        imgs = []
        bar = tqdm(total=len(names) * steps, desc=f"sampling cfg {s:g}", unit="step")
        for c in range(len(names)):                                           # one class per batch: fixed seeds
            imgs.append(sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size,
                                      num_classes=cfg.num_classes, class_ids=[c] * n_per_class, guide=guide,
                                      steps=steps, sampler=sampler, seed=seed + c,
                                      prediction=getattr(cfg, "prediction", "eps"), on_step=lambda *a: bar.update(1)))
        bar.close()
        gen = torch.cat(imgs)
        p, f = predict(clf, gen)
        acc = balanced_accuracy(p, class_ids)
        fd, fd_std = ref.score(f)
        near = nearest_rmse(gen, x)
        row = {"scale": s, "n": len(gen), "balanced_accuracy": 100 * acc, "of_ceiling": 100 * acc / ceiling,
               "fd": fd, "fd_std": fd_std, "fd_over_floor": fd / ref.floor, "fd_excess": fd - ref.floor,
               "near_copy": 100 * float((near < NEAR_RMSE).mean()), "near_median": float(np.median(near)),
               "seconds": round(time.time() - t0, 1)}
        result["rows"].append(row)
        log(f"cfg {s:g}: balanced accuracy {row['balanced_accuracy']:.1f}%, FD {fd:.2f} "
            f"({row['fd_over_floor']:.1f}x floor), {time.time() - t0:.0f}s")
    return result


def table(r: dict) -> tuple[str, list[str], list[list], str]:
    """(title, header, rows, notes) for bench.publish."""
    fl = r["floor"]
    header = ["images", "n", "balanced class accuracy %", "of ceiling", "Frechet distance (judge features)",
              "FD / floor", "FD - floor", f"near copies (RMSE < {NEAR_RMSE})"]
    rows = [["real held-out (the ceiling)", r["held_out"], f"{r['ceiling']:.1f}", "-", "-", "-", "-", "-"],
            [f"real vs real, balanced (the floor)", fl["n"], "-", "-",
             f"{fl['mean']:.2f} ± {fl['std']:.2f} ({fl['pairs']} pairs)", f"1.0 ± {fl['std'] / fl['mean']:.1f}", "0",
             f"{r['real_near_copy']:.1f}% of {r['real_images']} (median {r['real_near_median']:.3f})"]]
    for w in r["rows"]:
        rows.append([f"generated cfg {w['scale']:g}" + (" (no guidance)" if w["scale"] == 1 else ""), w["n"],
                     f"{w['balanced_accuracy']:.1f}", f"{w['of_ceiling']:.0f}%", f"{w['fd']:.2f} ± {w['fd_std']:.2f}",
                     f"{w['fd_over_floor']:.1f}x", f"{w['fd_excess']:.2f}", f"{w['near_copy']:.1f}% (median {w['near_median']:.3f})"])
    k = r["classes"]
    secs = ", ".join(f"{w['seconds']:.0f}" for w in r["rows"])
    weights = {"EMA": "EMA weights", "raw": "raw weights"}.get(r["weights"], "the file's one set of weights")
    notes = (f"checkpoint {r['ckpt']} (step {r['step']}, {weights}, predicts {r['prediction']}), {k} classes; "
             f"{r['n_per_class']} samples per class, seeds {r['seed']}..{r['seed'] + k - 1} (one per class), "
             f"{r['steps']} {r['sampler'].upper()} steps, eta 0, x0 clipped"
             f"{'; guidance only at t in ' + '..'.join(map(str, r['interval'])) if r.get('interval') else ''}. Judge {Path(r['judge']).name} "
             f"(trained on {r['judge_train_images']} real images{'' if r['judge_same_data'] else ', OTHER DATA than these'}); "
             f"accuracy is class-averaged (balanced); the ceiling is the judge's on {r['held_out']} held-out real images. "
             f"FD: mean (± std) over {2 * fl['pairs']} class-balanced real reference sets of {r['n_per_class']} per class "
             f"(all {r['real_images']} real images); floor: FD between the two disjoint halves of {fl['pairs']} such pairs, "
             f"mean ± std. FD / floor depends on the set size (the floor shrinks as n grows); FD - floor much less. Near copies: nearest of all {r['real_images']} training images and their flips; "
             f"the floor row is each real image against all the others. Sampling and judging took "
             f"{secs} s per scale on {r['threads']} thread(s). See docs/evaluation.md.")
    return "Sample quality (ditweb eval)", header, rows, notes
