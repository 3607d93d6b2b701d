"""`ditweb eval CKPT`: sample quality without an Inception network (DiT.md, "Evaluation").

A small CNN classifier is trained once on the real images (train split) and cached. It gives:
  - its accuracy on held-out real images: the ceiling;
  - the accuracy of the requested class on generated samples, without guidance and at several
    guidance scales (fixed N per class, seeds, steps and sampler, all printed);
  - the Frechet distance between its penultimate features of generated and held-out real
    images, and between two disjoint real sets of the same size (the floor);
  - memorisation: the share of samples whose nearest training image is nearly identical.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CACHE = Path(__file__).resolve().parent.parent / "data" / "cache"
NEAR_RMSE = 0.05          # RGBA RMSE in [0, 1] below which two images count as nearly identical


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


def train_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int = 30, seed: int = 0,
                     log=print) -> Classifier:
    torch.manual_seed(seed)
    model = Classifier(x.shape[1], num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x) + 63) // 64))
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), 64):
            b = perm[s:s + 64]
            xb = x[b]
            flip = torch.rand(len(b), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)        # the training augmentation
            loss = F.cross_entropy(model(xb), y[b], label_smoothing=0.1)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if (epoch + 1) % 10 == 0:
            log(f"  classifier epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def predict(model: Classifier, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, features) in batches."""
    preds, feats = [], []
    for s in range(0, len(x), 256):
        f = model.features(x[s:s + 256])
        feats.append(f.numpy()); preds.append(model.head(f).argmax(1).numpy())
    return np.concatenate(preds), np.concatenate(feats).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), via symmetric eigendecompositions."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ sb @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def nearest_rmse(samples: torch.Tensor, train: torch.Tensor) -> np.ndarray:
    """For each sample, RGBA RMSE in [0, 1] to its nearest training image (flips included)."""
    s = ((samples + 1) / 2).flatten(1).double()
    ref = (torch.cat([train, train.flip(3)]) + 1) / 2
    r = ref.flatten(1).double()
    d2 = (s ** 2).sum(1, keepdim=True) - 2 * s @ r.T + (r ** 2).sum(1)[None]
    return np.sqrt(np.clip(d2.min(1).values.numpy(), 0, None) / s.shape[1])


def cached_classifier(x_train, y_train, num_classes, log=print) -> tuple[Classifier, str]:
    key = hashlib.sha256(x_train.numpy().tobytes() + y_train.numpy().tobytes()).hexdigest()[:16]
    path = CACHE / f"classifier-{key}.pt"
    if path.is_file():
        model = Classifier(x_train.shape[1], num_classes)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), f"{path} (cached)"
    log(f"training the evaluation classifier on {len(x_train)} real images (cached afterwards) ...")
    model = train_classifier(x_train, y_train, num_classes, log=log)
    from .checkpoint import atomic_save
    atomic_save(model.state_dict(), path)
    return model, str(path)


def evaluate(ckpt: str, data: str | None = None, n_per_class: int = 16, steps: int = 50, sampler: str = "ddim",
             scales=(1.0, 2.0, 4.0, 6.0), seed: int = 0, log=print):
    from tqdm import tqdm
    from .checkpoint import load_model
    from .data import load_data
    from .sample import sample_images
    from .guidance import Guide
    model, meta = load_model(ckpt)
    cfg, names = meta["config"], meta["class_names"]
    real = load_data(data, size=cfg.input_size, subcategories=len(names) > 9 and data is None)
    if real.class_names != names:
        raise ValueError(f"the checkpoint's classes ({', '.join(names)}) differ from the data's "
                         f"({', '.join(real.class_names)}); pass the training data with --data")
    x, y = real.tensor(), torch.from_numpy(real.labels)
    tr, te = split(real.labels)
    clf, clf_path = cached_classifier(x[tr], y[tr], len(names), log)
    pred, feat_test = predict(clf, x[te])
    ceiling = float((pred == y[te].numpy()).mean())
    G = n_per_class * len(names)
    rng = np.random.default_rng(1)
    floor_idx = rng.permutation(len(x))
    half = min(G, len(x) // 2)
    _, fa = predict(clf, x[floor_idx[:half]])
    _, fb = predict(clf, x[floor_idx[half:2 * half]])
    floor = frechet_distance(fa, fb)
    rows = [["real held-out", len(te), f"{100 * ceiling:.1f}", "-", f"{floor:.2f} (real vs real, n={half})", "-"]]
    class_ids = [c for c in range(len(names)) for _ in range(n_per_class)]
    for s in scales:
        t0 = time.time()
        imgs = []
        bar = tqdm(total=len(names) * steps, desc=f"sampling cfg {s:g}", unit="step")
        for c in range(len(names)):                                           # one class per batch: fixed seeds
            imgs.append(sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size,
                                      num_classes=cfg.num_classes, class_ids=[c] * n_per_class, guide=Guide(scale=s),
                                      steps=steps, sampler=sampler, seed=seed + c, on_step=lambda *a: bar.update(1)))
        bar.close()
        gen = torch.cat(imgs)
        p, f = predict(clf, gen)
        acc = float((p == np.array(class_ids)).mean())
        fd = frechet_distance(f, feat_test[:G] if len(feat_test) >= G else feat_test)
        near = nearest_rmse(gen, x[tr])
        rows.append([f"generated cfg {s:g}" + (" (no guidance)" if s == 1 else ""), G, f"{100 * acc:.1f}",
                     f"{100 * acc / ceiling:.0f}%", f"{fd:.2f} ({fd / floor:.1f}x floor)",
                     f"{100 * (near < NEAR_RMSE).mean():.1f}% (median {np.median(near):.3f})"])
        log(f"cfg {s:g}: accuracy {100 * acc:.1f}%, FD {fd:.2f}, {time.time() - t0:.0f}s")
    real_near = nearest_rmse(x[te], x[tr])
    header = ["images", "n", "class accuracy %", "of ceiling", "Frechet distance (classifier features)",
              f"nearest train RMSE < {NEAR_RMSE}"]
    rows[0][5] = f"{100 * (real_near < NEAR_RMSE).mean():.1f}% (median {np.median(real_near):.3f})"
    notes = (f"checkpoint {ckpt} (step {meta.get('step')}), {cfg.input_size}x{cfg.input_size}x{cfg.in_channels}, "
             f"{len(names)} classes; {n_per_class} samples per class, seeds {seed}..{seed + len(names) - 1} "
             f"(one per class), {steps} {sampler.upper()} steps, eta 0, x0 clipped; classifier {clf_path}, "
             f"trained on {len(tr)} real images, held-out {len(te)}. FD of generated vs {min(G, len(te))} held-out "
             f"real images; floor = two disjoint real sets of {half}. Memorisation: nearest training image "
             f"(flips included) by RGBA RMSE in [0,1]; the real held-out row is the same measure for real images.")
    return "Sample quality (ditweb eval)", header, rows, notes


def register(sub):
    p = sub.add_parser("eval", help="sample quality: classifier accuracy, Frechet distance, memorisation")
    p.add_argument("ckpt")
    p.add_argument("--data", help="the training data (default: Twemoji)")
    p.add_argument("--n-per-class", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--scales", default="1,2,4,6", help="guidance scales, comma-separated (1 = no guidance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for the table (default bench/results)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args):
    from .bench import RESULTS, publish
    try:
        scales = [float(s) for s in args.scales.split(",")]
    except ValueError:
        raise ValueError(f"bad --scales {args.scales!r} (want numbers separated by commas)") from None
    if args.n_per_class < 2:
        raise ValueError("--n-per-class must be at least 2")
    table = evaluate(args.ckpt, args.data, args.n_per_class, args.steps, args.sampler, scales, args.seed)
    publish("eval", *table, args.out or RESULTS)
