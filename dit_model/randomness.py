"""Per-sample randomness of training: every random choice is a pure function of (seed, step, k), k = the
sample's index in the global batch, drawn with the project's counter-based generator (dit_model.noise): data
order, timestep, label dropout, flip and the noise eps. So a run gives the same batches on 1 or 8 processes,
and a resumed run continues exactly where an uninterrupted one would be (bit-identical weights)."""
from __future__ import annotations

import functools
import sys

import numpy as np
import torch

from ditformat.errors import UsageError

from .data import to_model
from .model import DiTConfig, drop_labels
from .noise import normal, normal_torch, pcg4d

# Streams of dit_model.noise used by training (0-9 belong to sampling).
STREAM_ORDER = 10     # data order: one permutation of the data set per epoch
STREAM_DRAWS = 11     # per sample k: timestep, label dropout, horizontal flip
STREAM_NOISE = 12     # per element of the global (B, C, S, S) batch: eps
STREAM_FREE = 13      # per sample k: dropout of the free label levels (style), one hash word per level
T_SAMPLINGS = ("uniform", "logit-normal")


def _u32(v) -> np.ndarray:
    return np.asarray(v, dtype=np.uint64).astype(np.uint32)


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """A permutation of range(n) for this epoch: sort by a hash of (index, epoch, seed)."""
    h0, h1, _, _ = pcg4d(_u32(np.arange(n)), _u32(np.full(n, epoch)), _u32(np.full(n, seed)), _u32(np.full(n, STREAM_ORDER)))
    order = np.lexsort((np.arange(n), h1, h0))                          # ties (never seen) broken by index
    order.setflags(write=False)                                         # cached: shared by every batch of the epoch
    return order


def batch_plan(seed: int, step: int, batch_size: int, lo: int, hi: int, n: int, drop_prob: float, flip: bool,
               t_sampling: str = "uniform", levels: tuple[int, int, float] | None = None):
    """Data indices, timesteps, dropped labels and flips for global-batch samples k = lo .. hi-1 of `step`.

    Timesteps: uniform on {0 .. 999} (the paper), or logit-normal: t = floor(1000 sigmoid(n)), n ~ N(0, 1)
    (Esser et al., "Scaling rectified flow transformers"), which spends the steps on mid noise levels.

    Dropped labels: (m,) bools for a one-level model (the label left out with probability drop_prob);
    with levels = (L, nested, free_prob), (m, L) bools: the nested levels are left out from the finest
    up, the finest j of them with probability drop_prob each for j = nested .. 1 (so all of them, i.e.
    the unconditional label, with drop_prob, as with one level), and each free level on its own with
    free_prob."""
    k = np.arange(lo, hi)
    g = step * batch_size + k                                           # position in the endless data stream
    idx = np.empty(len(k), np.int64)
    for e in np.unique(g // n):
        sel = g // n == e
        idx[sel] = epoch_order(seed, int(e), n)[g[sel] % n]
    m = len(k)
    h0, h1, h2, _ = pcg4d(_u32(k), _u32(np.full(m, step)), _u32(np.full(m, seed)), _u32(np.full(m, STREAM_DRAWS)))
    if t_sampling == "logit-normal":
        u = (h0.astype(np.float64) + 0.5) / 2.0 ** 32                               # uniform in (0, 1)
        z = torch.special.ndtri(torch.from_numpy(u)).numpy()                        # N(0, 1) by inversion
        t = np.minimum((1000.0 / (1.0 + np.exp(-z))).astype(np.int64), 999)
    elif t_sampling == "uniform":
        t = ((h0.astype(np.uint64) * np.uint64(1000)) >> np.uint64(32)).astype(np.int64)   # uniform in [0, 1000)
    else:
        raise UsageError(f"unknown timestep sampling {t_sampling!r}; choose one of {', '.join(T_SAMPLINGS)}")
    drop = h1.astype(np.float64) < drop_prob * 2.0 ** 32
    if levels is not None:
        L, nested, free_prob = levels
        u = h1.astype(np.float64) / 2.0 ** 32
        j = np.floor(u / drop_prob) if drop_prob > 0 else np.full(m, np.inf)
        cut = np.where(j < nested, nested - j, 0)                     # how many of the finest levels are left out
        drop = np.zeros((m, L), bool)
        drop[:, :nested] = np.arange(nested)[None] < cut[:, None]
        if L > nested:
            hf = np.stack(pcg4d(_u32(k), _u32(np.full(m, step)), _u32(np.full(m, seed)), _u32(np.full(m, STREAM_FREE))), 1)
            drop[:, nested:] = hf[:, :L - nested].astype(np.float64) < free_prob * 2.0 ** 32
    flips = (h2 >> np.uint32(31)).astype(bool) & flip
    return idx, t, drop, flips


def make_batch(images_u8: torch.Tensor, labels: torch.Tensor, cfg: DiTConfig, seed: int, step: int,
               batch_size: int, lo: int, hi: int, flip: bool, device, t_sampling: str = "uniform"):
    """(x0, y, t, eps) for samples lo .. hi-1 of the global batch; the same values on any process.

    The images and labels may live on the host or already on `device` (a GPU run keeps them there);
    the images cross as uint8 (4x fewer bytes than floats), and on a GPU the noise is computed
    there (noise.normal_torch, the same bits as noise.normal) instead of on the host."""
    device = torch.device(device)
    multi = labels.ndim == 2
    levels = (len(cfg.levels), cfg.label_nested, cfg.free_dropout_prob) if multi else None
    idx, t, drop, flips = batch_plan(seed, step, batch_size, lo, hi, len(images_u8), cfg.class_dropout_prob, flip,
                                     t_sampling, levels)
    sel = torch.from_numpy(idx)
    f = torch.from_numpy(flips).to(device)
    if images_u8.is_floating_point():                                   # latents (N, 2, C, h, w): dit_model/latent.py
        from .latent import latent_batch
        x0 = latent_batch(images_u8, sel, f).to(device)                 # the mirror image's own latent where flipped
    else:
        x0 = to_model(images_u8[sel.to(images_u8.device)].to(device))  # (n, C, S, S)
        x0 = torch.where(f[:, None, None, None], x0.flip(-1), x0)       # the paper's only augmentation
    y = drop_labels(labels[sel.to(labels.device)].to(device), torch.from_numpy(drop).to(device),
                    list(cfg.levels) if multi else cfg.num_classes)
    per = cfg.in_channels * cfg.input_size ** 2
    eps = batch_noise(seed, step, lo * per, (hi - lo) * per, device).reshape(x0.shape)
    return x0, y, torch.from_numpy(t).to(device), eps


def batch_noise(seed: int, step: int, start: int, count: int, device: torch.device) -> torch.Tensor:
    """normal(seed, STREAM_NOISE, step) for flat indices start .. start+count-1, as a tensor on `device`.
    On a CPU numpy is the faster of the two; elsewhere the torch twin runs on the device, once
    device_noise_ok has seen it reproduce numpy's bits there."""
    if device.type != "cpu" and device_noise_ok(str(device)):
        return normal_torch(seed, STREAM_NOISE, step, count, start=start, device=device)
    return torch.from_numpy(normal(seed, STREAM_NOISE, step, count, start=start)).to(device)


@functools.lru_cache(maxsize=8)
def device_noise_ok(device: str) -> bool:
    """Does noise.normal_torch on `device` give exactly noise.normal's float32 bits? Checked once per
    device on a few windows (incl. the u32 index wrap-around); a device that differs falls back to
    the host's numpy, since the noise values are part of the training spec."""
    windows = [(0, 0, 0, 1 << 16), (12345, 987654, 2 ** 32 - 4096, 8192), (2 ** 31 + 7, 3, 10 ** 9, 4096)]
    for seed, step, start, count in windows:
        want = normal(seed, STREAM_NOISE, step, count, start=start)
        got = normal_torch(seed, STREAM_NOISE, step, count, start=start, device=device).cpu().numpy()
        if not np.array_equal(want.view(np.uint32), got.view(np.uint32)):
            bad = int(np.count_nonzero(want.view(np.uint32) != got.view(np.uint32)))
            print(f"warning: torch noise on {device} differs from numpy in {bad} of {count} values; "
                  f"drawing the training noise on the host instead", file=sys.stderr)
            return False
    return True
