"""`ditweb train`: the paper's recipe (AdamW, constant learning rate, EMA, hybrid loss, label
dropout for CFG, horizontal flips) on favicons, on one process or data-parallel with torchrun.

Every random choice is a pure function of (seed, step, k), k = the sample's index in the global
batch, drawn with the project's counter-based generator (dit_model.noise): data order, timestep,
label dropout, flip and the noise eps. So a run gives the same batches on 1 or 8 processes, and
a resumed run continues exactly where an uninterrupted one would be (bit-identical weights).
"""
from __future__ import annotations

import argparse
import copy
import csv
import functools
import json
import os
import re
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ditformat.errors import UsageError

from .checkpoint import CheckpointError, _torch_load, atomic_save
from .data import FaviconData, add_data_options, load_data, to_model
from .diffusion import Diffusion
from .model import DEFAULT_PRESET, DiT, DiTConfig, drop_labels, preset_config
from .noise import normal, normal_torch, pcg4d

# Streams of dit_model.noise used by training (0-9 belong to sampling).
STREAM_ORDER = 10     # data order: one permutation of the data set per epoch
STREAM_DRAWS = 11     # per sample k: timestep, label dropout, horizontal flip
STREAM_NOISE = 12     # per element of the global (B, C, S, S) batch: eps
STREAM_FREE = 13      # per sample k: dropout of the free label levels (style), one hash word per level

# The recipe; `--resume` restores these from the checkpoint, then applies options given again.
DEFAULTS = dict(preset=DEFAULT_PRESET, data=None, size=32, skin_tones=False, subcategories=False, flip=True,
                batch_size=32, lr=1e-4, weight_decay=0.0, ema=0.9999, seed=0, max_steps=None, epochs=None,
                time_limit=None, run_dir=None, log_every=50, sample_every=1000, ckpt_every=500,
                sample_per_class=4, sample_steps=50, sample_cfg=4.0, precision="auto", compile=False, device="auto",
                conditioning=None, init=None, prediction="eps", loss_weighting="none", min_snr_gamma=5.0, t_sampling="uniform", warmup=0,
                styles=None, repeat=None)
T_SAMPLINGS = ("uniform", "logit-normal")
PRECISIONS = ("auto", "f32", "bf16")


# ---------------------------------------------------------------- per-sample randomness

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
    x0 = to_model(images_u8[sel.to(images_u8.device)].to(device))      # (n, C, S, S)
    f = torch.from_numpy(flips).to(device)
    x0 = torch.where(f[:, None, None, None], x0.flip(-1), x0)           # the paper's only augmentation
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


# ---------------------------------------------------------------- precision

# bf16 autocast pays on a CPU only where its matrix units do bf16 natively (Intel AMX, or the
# AVX512-BF16 dot products), and only for models whose matrix products dominate the step: measured
# (bench/results/train.md) 1.3-1.8x for Favicon-T/2, Favicon-S/2 and DiT-S/2, none for Favicon-T/4
# or the 8x8 Favicon-N/2, where elementwise work and the casts cost as much as the products save.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPU_BF16_MIN_GFLOPS = 0.25            # forward Gflops per image; T/2 is 0.54, T/4 0.11


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty where unknown, e.g. not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def auto_precision(device_type: str, gflops: float, flags=frozenset(), cuda_bf16: bool = False) -> tuple[str, str]:
    """(precision, why) that --precision auto picks, from the detected capability only:
    CUDA: bf16 where the GPU supports it; CPU: bf16 when it has bf16 matrix instructions and the
    model is large enough to profit (CPU_BF16_MIN_GFLOPS), else f32."""
    if device_type == "cuda":
        return ("bf16", "the GPU supports bf16") if cuda_bf16 else ("f32", "the GPU has no bf16")
    if device_type != "cpu":
        return "f32", f"no bf16 rule for {device_type}"
    native = [f for f in CPU_BF16_FLAGS if f in flags]
    if not native:
        return "f32", "the CPU has no bf16 matrix instructions (amx_bf16 / avx512_bf16)"
    if gflops < CPU_BF16_MIN_GFLOPS:
        return "f32", f"{native[0]} present, but the model is too small to profit ({gflops:.2f} < {CPU_BF16_MIN_GFLOPS} Gflops)"
    return "bf16", f"the CPU has {native[0]}"


def resolve_precision(precision: str, device, cfg: DiTConfig) -> tuple[str, str]:
    """--precision on this device: f32 / bf16 as asked, or auto's pick with the reason."""
    from .model import forward_gflops
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision, "asked for"
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    flags = cpu_flags() if device.type == "cpu" else frozenset()
    return auto_precision(device.type, forward_gflops(cfg), flags, cuda_bf16)


# ---------------------------------------------------------------- the training state

class Trainer:
    """Model, EMA, AdamW and the step; `net` is what runs forward (DDP and/or compiled)."""

    def __init__(self, cfg: DiTConfig, *, lr: float, weight_decay: float, ema_decay: float, seed: int,
                 device, precision: str = "f32", compile: bool = False, ddp: bool = False,
                 loss_weighting: str = "none", min_snr_gamma: float = 5.0, warmup: int = 0, bf16: bool | None = None):
        torch.manual_seed(seed)
        if bf16 is not None:                                            # the old spelling
            precision = "bf16" if bf16 else "f32"
        if precision not in ("f32", "bf16"):
            raise ValueError(f"Trainer precision must be f32 or bf16 (resolve 'auto' first), not {precision!r}")
        self.cfg, self.device, self.ema_decay, self.precision = cfg, torch.device(device), ema_decay, precision
        self.bf16 = precision == "bf16"
        self.lr, self.weight_decay = lr, weight_decay
        self.loss_weighting, self.min_snr_gamma, self.warmup = loss_weighting, min_snr_gamma, warmup
        self.model = DiT(cfg).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.opt = _adamw(self.model.parameters(), lr, weight_decay, self.device)
        self.diffusion = Diffusion(prediction=cfg.prediction)
        net = self.model
        if ddp:
            from torch.nn.parallel import DistributedDataParallel
            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.net = torch.compile(net) if compile else net
        self.step = 0

    def forward(self, x, t, y):
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with ctx:
            out = self.net(x, t, y)
        return out.float()

    def train_step(self, x0, y, t, eps) -> dict:
        """One AdamW step on the mean hybrid loss (DDP averages the gradients over processes)."""
        terms = self.diffusion.training_losses(self.forward, x0, t, y, eps, self.loss_weighting, self.min_snr_gamma)
        loss = terms["loss"].mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.warmup:                                                 # linear learning-rate warm-up
            for g in self.opt.param_groups:
                g["lr"] = self.lr * min(1.0, (self.step + 1) / self.warmup)
        self.opt.step()
        self.update_ema()
        self.step += 1
        return {k: v.detach().mean() for k, v in terms.items()}

    @torch.no_grad()
    def update_ema(self):
        """ema <- decay * ema + (1 - decay) * theta."""
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1.0 - self.ema_decay)

    def warm_start(self, path, class_names: list[str] | None = None, parents: dict[str, str] | None = None,
                   vocab=None) -> str:
        """Model and EMA from a weights file (any format `ditweb sample` loads) whose architecture matches;
        the prediction type may differ (the output head then re-learns what it predicts), and so may the label
        set: each class's embedding starts from the file's class of the same name, else from its parent's
        (`parents`, e.g. a Twemoji subcategory's category), else from the mean of the file's classes; the null
        (unconditional) label keeps its own. Returns a line saying what was mapped."""
        from .checkpoint import load_model
        model, meta = load_model(path)
        mine, theirs = self.cfg.to_dict(), meta["config"].to_dict()
        diff = [f"{k} {theirs.get(k)} vs {mine[k]}" for k in mine
                if k not in ("prediction", "num_classes", "label_levels", "label_nested", "free_dropout_prob")
                and mine[k] != theirs.get(k)]
        if diff:
            raise CheckpointError(f"{path}: --init weights do not fit this model ({'; '.join(diff)})")
        sd = model.state_dict()
        old = list(meta.get("class_names") or [])
        names = list(class_names) if class_names is not None else old
        note = f"warm start from {path}"
        if vocab is not None and old[:theirs["num_classes"]] != names:
            sd["y_embedder.embedding_table.weight"], how = level_table(sd["y_embedder.embedding_table.weight"],
                                                                       old[:theirs["num_classes"]], vocab)
            note += f": label embeddings mapped onto the levels {', '.join(vocab.levels)} ({how})"
        elif names != old or mine["num_classes"] != theirs["num_classes"]:
            key = "y_embedder.embedding_table.weight"
            table, n_old = sd[key], theirs["num_classes"]
            index = {c: i for i, c in enumerate(old[:n_old])}
            rows, how = [], {"same name": 0, "parent": 0, "mean": 0}
            for c in names:
                src = c if c in index else (parents or {}).get(c)
                how["same name" if c in index else "parent" if src in index else "mean"] += 1
                rows.append(table[index[src]] if src in index else table[:n_old].mean(0))
            sd[key] = torch.stack(rows + [table[n_old]])                    # + the null label
            note += (f": {len(names)} classes from its {n_old}, label embeddings from the class of the same name "
                     f"({how['same name']}), the parent class ({how['parent']}), the mean ({how['mean']})")
        self.model.load_state_dict(sd)
        self.ema.load_state_dict(sd)
        return note

    def state(self, class_names: list[str], train_args: dict, vocab=None) -> dict:
        out = {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
               "step": self.step, "config": self.cfg.to_dict(), "class_names": list(class_names),
               "train_args": train_args}
        if vocab is not None:
            out["vocabulary"] = vocab.dumps()
        return out

    def load(self, obj: dict, path) -> None:
        try:
            self.model.load_state_dict(obj["model"])
            self.ema.load_state_dict(obj["ema"])
            self.opt.load_state_dict(obj["opt"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: incompatible training state ({first})") from None
        for g in self.opt.param_groups:                                 # lr / wd may be changed on resume
            g["lr"], g["weight_decay"] = self.lr, self.weight_decay
        self.step = int(obj["step"])


@torch.no_grad()
def level_table(table: torch.Tensor, old_names: list[str], vocab) -> tuple[torch.Tensor, str]:
    """A one-level label table (old classes + null) -> the table of `vocab`'s levels, so that each label
    starts where the old model was: the old classes are found at one nested level m (the one with
    most of their names); V_l(i), the mean old row of the level-m labels under label i of level l >= m,
    becomes e_top = V_top, e_l = V_l - V_{l+1}(parent) below it (sums telescope: any label whose
    finest kept level is l >= m embeds as V_l, a finer one as V_m), finer levels and free levels 0;
    the top nested level's null row is the old null row, the other null rows 0."""
    n_old = len(old_names)
    nested = vocab.nested
    hits = [sum(n in set(vocab.names[l]) for n in old_names) for l in range(nested)]
    m = int(np.argmax(hits))
    if hits[m] == 0:
        raise CheckpointError("--init: none of the weights' class names is a label of the new model")
    old_index = {c: i for i, c in enumerate(old_names)}
    mean_old = table[:n_old].mean(0)
    V = [None] * nested
    V[m] = torch.stack([table[old_index[c]] if c in old_index else mean_old for c in vocab.names[m]])
    found = torch.tensor([c in old_index for c in vocab.names[m]])
    up_of = list(range(len(vocab.names[m])))                            # level-m label -> its label at level l
    for l in range(m + 1, nested):
        up_of = [vocab.parents[l - 1][i] for i in up_of]
        rows = []
        for j in range(len(vocab.names[l])):
            members = [i for i, u in enumerate(up_of) if u == j and found[i]]
            rows.append(V[m][members].mean(0) if members else mean_old)
        V[l] = torch.stack(rows)
    D = table.shape[1]
    blocks = []
    for l, n in enumerate(vocab.sizes):
        e = torch.zeros(n + 1, D, dtype=table.dtype)
        if m <= l < nested:
            e[:n] = V[l] if l == nested - 1 else V[l] - V[l + 1][torch.tensor(vocab.parents[l])]
        if l == nested - 1:
            e[n] = table[n_old]
        blocks.append(e)
    how = f"{hits[m]} of the {n_old} classes found as {vocab.levels[m]} labels, coarser levels from their means"
    return torch.cat(blocks), how


def _adamw(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused where torch has a fused kernel for the device: one pass over all parameters
    instead of a dozen small ops per tensor (3.5x faster on a CPU, fewer launches on a GPU).
    The same update rule; only the rounding order inside it differs from the per-tensor loop."""
    params = list(params)
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):                  # an older torch without it
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def read_training_checkpoint(path: Path) -> dict:
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (a {type(obj).__name__})")
    missing = [k for k in ("model", "ema", "opt", "step", "config", "class_names", "train_args") if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint written by `ditweb train` (missing {', '.join(missing)})")
    return obj


# ---------------------------------------------------------------- the command

def parse_duration(text: str | None) -> float | None:
    """'3600', '90m', '2h', '1h30m', '45s' -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not m or not any(m.groups()):
        raise UsageError(f"bad --time-limit {text!r} (want e.g. 3600, 90m, 2h, 1h30m)")
    h, mi, s = (float(v) if v else 0.0 for v in m.groups())
    return h * 3600 + mi * 60 + s


def register(sub):
    d = DEFAULTS
    p = sub.add_parser(
        "train", help="train a DiT on favicons (AdamW, EMA, hybrid loss; torchrun for data parallel)",
        argument_default=argparse.SUPPRESS, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a DiT. Data parallel: torchrun --nproc_per_node=N -m ditweb train ... "
                    "(the global --batch-size is split over the processes).",
        epilog="examples:\n"
               "  ditweb train Favicon-T/2 --run-dir runs/t2 --ema 0.999 --time-limit 3h\n"
               "  ditweb train --resume runs/t2 --max-steps 100000    # continue exactly where it stopped\n"
               "  torchrun --nproc_per_node=2 -m ditweb train Favicon-S/2 --data twemoji.npz")
    p.add_argument("preset", nargs="?", help=f"model preset (default {d['preset']}); see `ditweb info`")
    add_data_options(p)
    p.add_argument("--styles", help="a named model: the emoji of these styles (comma-separated, e.g. "
                                    "twemoji,noto,fluent), labelled at every level (emoji, subcategory, category, style)")
    p.add_argument("--repeat", action="append", metavar="NAME:FACTOR",
                   help="named model: show the images under this label FACTOR times per epoch (repeatable), "
                        "e.g. 'Animals & Nature:10'")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal flips")
    p.add_argument("--batch-size", type=int, help=f"global batch size, split over processes (default {d['batch_size']})")
    p.add_argument("--lr", type=float, help=f"AdamW learning rate, constant (default {d['lr']:g}, the paper's)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    p.add_argument("--ema", type=float,
                   help=f"EMA decay (default {d['ema']}, the paper's). Short runs need less: after n steps the EMA "
                        "still holds decay^n of the initial random weights (0.9999^10000 = 37%%), so pick "
                        "decay ~ 1 - 10/steps, e.g. 0.999 for 10k-30k steps")
    p.add_argument("--seed", type=int, help="seed of the weights and of every random draw (default 0)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total (counting resumed ones)")
    p.add_argument("--epochs", type=float, help="stop after this many passes over the data")
    p.add_argument("--time-limit", help="stop (and save) after this long, e.g. 3600, 90m, 2h30m")
    p.add_argument("--run-dir", help="folder for ckpt.pt, log.csv and samples/ (default runs/<preset>)")
    p.add_argument("--resume", metavar="RUN_DIR_OR_CKPT", help="continue a run exactly (its options are reused)")
    p.add_argument("--log-every", type=int, help=f"steps between log.csv rows (default {d['log_every']})")
    p.add_argument("--sample-every", type=int, help=f"steps between EMA sample grids, 0 = never (default {d['sample_every']})")
    p.add_argument("--ckpt-every", type=int, help=f"steps between checkpoints (default {d['ckpt_every']}); also at the end")
    p.add_argument("--sample-per-class", type=int, help=f"images per class in a grid (default {d['sample_per_class']})")
    p.add_argument("--sample-steps", type=int, help=f"DDIM steps for the grids (default {d['sample_steps']})")
    p.add_argument("--sample-cfg", type=float, help=f"guidance scale for the grids (default {d['sample_cfg']})")
    p.add_argument("--conditioning", choices=["adaln-zero", "adaln", "cross-attn", "in-context"],
                   help="how t and y enter the blocks (default: the preset's, adaln-zero; the paper's Figure 5)")
    p.add_argument("--init", metavar="WEIGHTS",
                   help="warm start: begin a new run from these model weights (e.g. models/default.safetensors; "
                        "raw weights and EMA both start from them, the optimiser fresh)")
    p.add_argument("--prediction", choices=["eps", "v"],
                   help="what the network predicts: eps (default, the paper) or v = sqrt(abar) eps - sqrt(1 - abar) x0")
    p.add_argument("--loss-weighting", choices=["none", "min-snr"],
                   help="per-timestep weight of the MSE: none (default, the paper) or Min-SNR-gamma")
    p.add_argument("--min-snr-gamma", type=float, help=f"gamma of Min-SNR weighting (default {d['min_snr_gamma']:g})")
    p.add_argument("--t-sampling", choices=list(T_SAMPLINGS),
                   help="training timestep distribution: uniform (default, the paper) or logit-normal (mid noise)")
    p.add_argument("--warmup", type=int, help="linear learning-rate warm-up over this many steps (default 0: none)")
    p.add_argument("--precision", choices=list(PRECISIONS),
                   help="f32, bf16 (autocast) or auto (default): bf16 on a GPU that supports it, and on a CPU with "
                        "bf16 matrix instructions (AMX / AVX512-BF16) for models large enough to gain; else f32")
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="same as --precision bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (a minute or more to start; "
                                                          "see docs/training.md for when it pays)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available; torchrun: cuda:LOCAL_RANK)")
    p.set_defaults(func=cmd_train)


class _Dist:
    """torch.distributed when started by torchrun (gloo on CPU, NCCL on GPUs), else one process."""

    def __init__(self, device_arg: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device_arg == "auto":
            device_arg = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(f"cuda:{local}" if device_arg == "cuda" and self.world > 1 else device_arg)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.on = self.world > 1
        if self.on and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        if not self.on:
            return flag
        v = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(v, op=dist.ReduceOp.MAX)
        return bool(v.item())

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.on:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world
        return values

    def barrier(self):
        if self.on:
            dist.barrier()

    def close(self):
        if self.on and dist.is_initialized():
            dist.destroy_process_group()


def _run_dir_of(resume: str) -> tuple[Path, Path]:
    p = Path(resume)
    return (p, p / "ckpt.pt") if p.is_dir() else (p.parent, p)


def resolve_args(args) -> tuple[dict, dict | None, Path]:
    """Options = defaults <- the resumed checkpoint's train_args <- options given now."""
    given = {k: v for k, v in vars(args).items() if k not in ("func", "verb", "resume") and v is not None}
    opts, saved = dict(DEFAULTS), None
    resume = getattr(args, "resume", None)
    if resume is not None:
        run_dir, ckpt = _run_dir_of(resume)
        if not ckpt.is_file():
            raise CheckpointError(f"{ckpt}: no checkpoint to resume")
        saved = read_training_checkpoint(ckpt)
        if not isinstance(saved["train_args"], dict):
            raise CheckpointError(f"{ckpt}: train_args is not a dict")
        opts.update({k: v for k, v in saved["train_args"].items() if k in DEFAULTS})
        if "precision" not in saved["train_args"] and "bf16" in saved["train_args"]:   # before --precision
            opts["precision"] = "bf16" if saved["train_args"]["bf16"] else "f32"
        opts["run_dir"] = str(run_dir)
    opts.update(given)
    preset_config(opts["preset"])                                       # an unknown preset fails before the data loads
    run_dir = Path(opts["run_dir"] or Path("runs") / opts["preset"].lower().replace("/", "_"))
    opts["run_dir"] = str(run_dir)
    if opts["batch_size"] < 1 or opts["lr"] <= 0 or not 0.0 <= opts["ema"] < 1.0:
        raise UsageError("need --batch-size >= 1, --lr > 0 and 0 <= --ema < 1")
    return opts, saved, run_dir


def cmd_train(args):
    opts, saved, run_dir = resolve_args(args)
    time_limit = parse_duration(opts["time_limit"])
    ctx = _Dist(opts["device"])
    try:
        return _train(opts, saved, run_dir, time_limit, ctx)
    finally:
        ctx.close()


def _train(opts: dict, saved: dict | None, run_dir: Path, time_limit: float | None, ctx: _Dist) -> int:
    from tqdm import tqdm
    B = opts["batch_size"]
    if B % ctx.world:
        raise UsageError(f"--batch-size {B} is not divisible by the {ctx.world} processes")
    ckpt_path = run_dir / "ckpt.pt"
    if saved is None and ckpt_path.exists():
        raise UsageError(f"{ckpt_path} exists; continue it with `ditweb train --resume {run_dir}` or pick another --run-dir")

    if opts["styles"]:                                                  # named emoji: labels at every level
        from .named import load_named, parse_repeats
        data = load_named(opts["styles"], opts["size"], True if opts["skin_tones"] is None else opts["skin_tones"],
                          parse_repeats(opts["repeat"]), opts["data"])
        vocab = data.vocab
        levels = dict(label_levels=vocab.sizes, label_nested=vocab.nested)
    else:
        if opts["repeat"]:
            raise UsageError("--repeat needs --styles (a named model)")
        data, vocab, levels = load_data(opts["data"], opts["size"], opts["skin_tones"], opts["subcategories"]), None, {}
    cfg = preset_config(opts["preset"], input_size=data.size, in_channels=4, num_classes=len(data.class_names),
                        prediction=opts["prediction"], conditioning=opts["conditioning"], **levels)
    if saved is not None:
        _check_compatible(saved, cfg, data, ckpt_path)
    precision, why = resolve_precision(opts["precision"], ctx.device, cfg)
    trainer = Trainer(cfg, lr=opts["lr"], weight_decay=opts["weight_decay"], ema_decay=opts["ema"], seed=opts["seed"],
                      device=ctx.device, precision=precision, compile=opts["compile"], ddp=ctx.on,
                      loss_weighting=opts["loss_weighting"], min_snr_gamma=opts["min_snr_gamma"], warmup=opts["warmup"])
    if saved is not None:
        trainer.load(saved, ckpt_path)
        saved = None                                                    # free the host copy
    elif opts["init"]:
        note = trainer.warm_start(opts["init"], data.class_names, data.parents, vocab)
        if ctx.main:
            print(note, file=sys.stderr)

    n = len(data.images)
    max_steps = opts["max_steps"]
    if opts["epochs"] is not None:
        by_epochs = int(np.ceil(opts["epochs"] * n / B))
        max_steps = by_epochs if max_steps is None else min(max_steps, by_epochs)
    images = torch.from_numpy(data.images)                              # (N, S, S, 4) uint8
    labels = torch.from_numpy(data.labels)
    if ctx.device.type == "cuda":                                       # small (8 MB at 32x32): keep it on the GPU
        images, labels = images.to(ctx.device), labels.to(ctx.device)
    lo, hi = ctx.rank * B // ctx.world, (ctx.rank + 1) * B // ctx.world
    train_args = dict(opts, precision_used=precision)                   # what --precision auto chose, for the record
    saved_at = {"step": trainer.step}                                   # what ckpt.pt holds now

    def save():
        if ctx.main:
            atomic_save(trainer.state(data.class_names, train_args, vocab), ckpt_path)
        saved_at["step"] = trainer.step
        ctx.barrier()

    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        log = _Log(run_dir / "log.csv", trainer.step)
        print(f"training {opts['preset']} ({sum(p.numel() for p in trainer.model.parameters()):,} params) on "
              f"{n} images / {len(data.class_names)} classes from {data.source}; global batch {B} on {ctx.world} "
              f"process(es), {ctx.device}, {precision} ({why}){', compiled' if opts['compile'] else ''}; "
              f"run dir {run_dir}; from step {trainer.step}", file=sys.stderr)
    stop = {"signal": None}

    def on_signal(num, frame):                                          # first: finish the step and save; second: abort
        if stop["signal"] is not None:
            raise KeyboardInterrupt
        stop["signal"] = num
    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=max_steps, initial=trainer.step, unit="step", file=sys.stderr, disable=not ctx.main, dynamic_ncols=True)
    t_start = time.time()
    window, win_steps, win_t = None, 0, time.time()
    ips, last_t = 0.0, time.time()
    reason = "max steps"
    try:
        while max_steps is None or trainer.step < max_steps:
            x0, y, t, eps = make_batch(images, labels, cfg, opts["seed"], trainer.step, B, lo, hi, opts["flip"], ctx.device,
                                       opts["t_sampling"])
            terms = trainer.train_step(x0, y, t, eps)
            vals = torch.stack([terms["loss"], terms["mse"], terms.get("vlb", torch.zeros_like(terms["mse"]))]).detach()
            window = vals if window is None else window + vals
            win_steps += 1
            step = trainer.step
            if ctx.main:
                now = time.time()
                ips = B / max(now - last_t, 1e-9) if ips == 0.0 else 0.9 * ips + 0.1 * B / max(now - last_t, 1e-9)
                last_t = now
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{terms['loss'].item():.4f}", img_s=f"{ips:.0f}", refresh=False)
            if step % opts["log_every"] == 0 or step == max_steps:
                mean = ctx.mean(window / win_steps).tolist()
                if ctx.main:
                    dt = time.time() - win_t
                    log.write(step, step * B / n, *mean, win_steps * B / dt, time.time() - t_start)
                window, win_steps, win_t = None, 0, time.time()
            if opts["sample_every"] and step % opts["sample_every"] == 0 and ctx.main:
                write_sample_grid(trainer.ema, cfg, vocab or data.class_names, run_dir / "samples" / f"step_{step:07d}.png", opts)
                win_t += time.time() - now                              # images/s counts training only
                last_t = time.time()
            out_of_time = time_limit is not None and time.time() - t_start >= time_limit
            if ctx.any(stop["signal"] is not None or out_of_time):
                reason = "time limit" if out_of_time else "interrupted"
                break
            if step % opts["ckpt_every"] == 0:
                save()
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    if trainer.step != saved_at["step"]:
        save()
    if ctx.main:
        log.close()
        if opts["sample_every"] and trainer.step % opts["sample_every"]:
            write_sample_grid(trainer.ema, cfg, vocab or data.class_names, run_dir / "samples" / f"step_{trainer.step:07d}.png", opts)
        print(f"stopped ({reason}) at step {trainer.step}, epoch {trainer.step * B / n:.2f}; checkpoint {ckpt_path}; "
              f"continue with `ditweb train --resume {run_dir}`", file=sys.stderr)
    return 0


def _check_compatible(saved: dict, cfg: DiTConfig, data: FaviconData, path: Path) -> None:
    try:
        old = DiTConfig.from_dict(saved["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad config in checkpoint ({e})") from None
    diff = [f"{k} {getattr(old, k)} vs {getattr(cfg, k)}" for k in old.__dataclass_fields__ if getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise CheckpointError(f"{path}: incompatible with this run's model/data ({'; '.join(diff)})")
    if list(saved["class_names"]) != list(data.class_names):
        raise CheckpointError(f"{path}: trained on other classes ({', '.join(map(str, saved['class_names'][:4]))}, ...) "
                              f"than the data has ({', '.join(data.class_names[:4])}, ...)")


class _Log:
    """log.csv: one row per --log-every steps; on resume, rows past the checkpoint are dropped."""
    HEADER = ["step", "epoch", "loss", "mse", "vlb", "img_per_s", "elapsed_s"]

    def __init__(self, path: Path, from_step: int):
        rows = []
        if path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f)][1:]
            rows = [r for r in rows if r and r[0].isdigit() and int(r[0]) <= from_step]
        self.f = open(path, "w", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow(self.HEADER)
        self.w.writerows(rows)
        self.f.flush()

    def write(self, step, epoch, loss, mse, vlb, ips, elapsed):
        self.w.writerow([step, f"{epoch:.3f}", f"{loss:.5f}", f"{mse:.5f}", f"{vlb:.5f}", f"{ips:.1f}", f"{elapsed:.0f}"])
        self.f.flush()

    def close(self):
        self.f.close()


GRID_PROMPTS = ("hippopotamus", "cat face", "dog face", "red apple", "pizza", "rocket", "grinning face",
                "red heart", "Animals & Nature", "Flags")   # a named model's grid rows, each in every style


def write_sample_grid(ema, cfg: DiTConfig, classes, path: Path, opts: dict) -> Path:
    """One row per class (at most 16 classes), `sample_per_class` EMA samples each, fixed seed; for a
    named model (`classes` a Vocabulary) one row per GRID_PROMPTS entry and style (at most 16 rows)."""
    from ditformat.labels import Vocabulary, VocabularyError
    from ditformat.guidance import Guide
    from .images import grid, to_uint8
    from .sample import sample_images
    k = max(1, opts["sample_per_class"])
    null = None
    if isinstance(classes, Vocabulary):
        rows = []
        styles = classes.names[-1] if len(classes.levels) > classes.nested else [None]
        for prompt in GRID_PROMPTS:
            try:
                rows += [classes.resolve(prompt, style).ids for style in styles]
            except VocabularyError:
                continue
        rows, null = rows[:16], classes.sizes
    else:
        rows = list(range(min(cfg.num_classes, 16)))
    device = next(ema.parameters()).device
    model = lambda x, t, y: ema(x.to(device), t.to(device), y.to(device)).float().cpu()
    x = sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size, num_classes=cfg.num_classes,
                      class_ids=[c for c in rows for _ in range(k)], guide=Guide(scale=opts["sample_cfg"]),
                      steps=opts["sample_steps"], seed=0, prediction=cfg.prediction, null=null)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid(to_uint8(x), cols=k, scale=2).save(path)
    return path


# ---------------------------------------------------------------- `ditweb bench train`

BENCH_CASES = [("Favicon-T/2", 32), ("Favicon-T/4", 32), ("Favicon-S/2", 32), ("Favicon-N/2", 32), ("DiT-S/2", 8)]
BENCH_MODES = [("f32", "f32", False), ("bf16", "bf16", False), ("bf16 + compile", "bf16", True)]


def _bench_case(preset: str, batch: int, warmup: int, min_steps: int, min_seconds: float, device: str,
                precision: str, compile: bool, queue):
    """In a fresh process (so peak memory and compiled code are this case's): time full training steps."""
    import resource
    torch.manual_seed(0)
    cfg = preset_config(preset)
    dev = torch.device(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tr = Trainer(cfg, lr=1e-4, weight_decay=0.0, ema_decay=0.9999, seed=0, device=dev, precision=precision, compile=compile)
    images = torch.randint(0, 256, (max(4 * batch, 256), cfg.input_size, cfg.input_size, cfg.in_channels), dtype=torch.uint8)
    labels = torch.randint(0, cfg.num_classes, (len(images),))
    if dev.type == "cuda":
        images, labels = images.to(dev), labels.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step = lambda s: tr.train_step(*make_batch(images, labels, cfg, 0, s, batch, 0, batch, True, dev))
    t_first = time.perf_counter()
    for s in range(warmup):                                             # includes compiling, if any
        step(s)
    sync()
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    while n < min_steps or time.perf_counter() - t0 < min_seconds:
        step(warmup + n)
        n += 1
    sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    # On a CPU shared with other work, wall time measures the neighbours as much as the step: the
    # rate counts this process's CPU time (over its threads) instead, i.e. the speed on cores of its own.
    threads = max(1, torch.get_num_threads())
    busy = wall if dev.type == "cuda" else cpu / threads
    queue.put({"step_ms": busy / n * 1000, "img_s": batch * n / busy, "wall_img_s": batch * n / wall, "peak_mb": peak,
               "steps": n, "warmup_s": t0 - t_first, "cpu_share": cpu / wall / threads})


def bench_train(args):
    """Images/s of whole training steps (batch, loss, backward, AdamW, EMA) in f32, bf16 and bf16 + compile."""
    import multiprocessing as mp
    from .data import TWEMOJI
    from .model import forward_gflops
    device = "cuda" if torch.cuda.is_available() else "cpu"
    warmup, min_steps, min_seconds = (1, 1, 0.0) if args.quick else (3, 5, 15.0)
    cases = [c for c in BENCH_CASES if not getattr(args, "preset", None) or c[0] == args.preset] or [(args.preset, 32)]
    modes = BENCH_MODES[:2] if args.quick else BENCH_MODES                # --quick: no compiling (a smoke run)
    try:
        n_images = sum(e["category"] != "Component" for e in json.loads((TWEMOJI / "emoji.json").read_text()))
    except (OSError, ValueError):
        n_images = None
    flags = cpu_flags() if device == "cpu" else frozenset()
    ctx = mp.get_context("spawn")
    rows, load0, shares = [], os.getloadavg(), []
    for preset, batch in cases:
        cfg = preset_config(preset)
        results = {}
        for name, precision, compile in modes:
            q = ctx.Queue()
            p = ctx.Process(target=_bench_case, args=(preset, batch, warmup, min_steps, min_seconds, device, precision,
                                                      compile, q))
            p.start()
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"bench train: {preset} {name} failed (exit {p.exitcode})")
            results[name] = q.get()
            shares.append(results[name]["cpu_share"])
            print(f"  {preset:<12} batch {batch:>3} {name:<15}: {results[name]['img_s']:8.1f} img/s", file=sys.stderr)
        pick, _ = auto_precision(device, forward_gflops(cfg), flags, device == "cuda" and torch.cuda.is_bf16_supported())
        best = max(results, key=lambda k: results[k]["img_s"])
        favicon = preset.startswith("Favicon") and cfg.input_size == 32 and n_images
        epoch = f"{n_images / results[best]['img_s']:.1f}" if favicon else "-"
        compiled = results.get("bf16 + compile")
        rows.append([preset, f"{cfg.in_channels}x{cfg.input_size}x{cfg.input_size}", f"{forward_gflops(cfg):.3g}", batch,
                     *[f"{results[m]['img_s']:.1f}" if m in results else "-" for m, _, _ in BENCH_MODES],
                     f"{results[best]['img_s'] / results['f32']['img_s']:.2f}x", pick,
                     f"{compiled['warmup_s']:.0f}" if compiled else "-", epoch, f"{results[best]['wall_img_s']:.1f}",
                     f"{results['f32']['peak_mb']:.0f}"])
    load1 = os.getloadavg()
    mem = "torch.cuda.max_memory_allocated" if device == "cuda" else "growth of peak RSS (ru_maxrss) over the process before the model was built"
    rate = ("wall-clock img/s" if device == "cuda" else
            "img/s counted in the process's own CPU time (batch x steps / (CPU seconds / threads)): the speed on "
            "cores of its own, since wall-clock time on this shared machine measures the other work as much")
    notes = (f"{rate}, of one full training step per cell: make_batch (counter-based noise, flips, label dropout), "
             f"hybrid loss, backward, AdamW (fused), EMA update; random uint8 data, {device}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} thread(s), warm-up {warmup} steps (compiling happens there: 'compile s'), then "
             f">= {min_steps} steps and >= {min_seconds:g} s per cell{' (--quick: no compile column)' if args.quick else ''}; "
             f"each cell in a fresh process. bf16 = torch.autocast(bfloat16); compile = torch.compile on top of it. "
             f"best = the fastest cell / f32. auto = what `ditweb train --precision auto` picks here "
             f"(CPU flags: {', '.join(f for f in CPU_BF16_FLAGS if f in flags) or 'no bf16 matrix instructions'}). "
             f"Shared machine: load average {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} (1 / 5 / 15 min) before, "
             f"{load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f} after, on {os.cpu_count()} cores, with training runs beside it; "
             f"the benchmark got {100 * min(shares):.0f}-{100 * max(shares):.0f}% of its thread(s)' wall time "
             f"(wall img/s = the best cell's rate on the wall clock). "
             f"epoch = one pass over the {n_images or '?'} base Twemoji images at 32x32 at the best cell's rate. "
             f"peak MB (f32) = {mem}.")
    header = ["preset", "input", "Gflops", "batch", *[f"{m} img/s" for m, _, _ in BENCH_MODES], "best", "auto",
              "compile s", "epoch (s)", "wall img/s", "peak MB"]
    return "ditweb bench train", header, rows, notes


# ---------------------------------------------------------------- a run's weights as small files

def export_weights(run: str | os.PathLike, out_dir: str | os.PathLike, max_mib: float = 16.0) -> list[Path]:
    """A run's EMA (ema.safetensors) and raw weights (model.safetensors) as files of at most `max_mib`
    MiB each: float32 where it fits, else bfloat16 (what a GPU machine can hand back; both load with
    `ditweb sample`, `ditweb export` and `ditweb train --init`)."""
    from .checkpoint import CheckpointError, save_weights
    run = Path(run)
    ckpt = run / "ckpt.pt" if run.is_dir() else run
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: no checkpoint to export")
    obj = read_training_checkpoint(ckpt)
    cfg = DiTConfig.from_dict(obj["config"])
    from .checkpoint import read_vocabulary
    vocab = read_vocabulary(obj, cfg, ckpt)
    written = []
    for part in ("ema", "model"):
        for dtype in (torch.float32, torch.bfloat16):
            model = DiT(cfg)
            model.load_state_dict(obj[part])
            for name, p in model.named_parameters():
                if name != "pos_embed":                                 # the fixed sin-cos table stays exact
                    p.data = p.data.to(dtype)
            if sum(t.numel() * t.element_size() for t in model.state_dict().values()) <= max_mib * 2 ** 20 - 2 ** 16:
                break                                                   # (64 KiB left for the header)
        else:
            raise CheckpointError(f"{ckpt}: {part} weights exceed {max_mib:g} MiB even in bfloat16")
        path = Path(out_dir) / f"{part}.safetensors"
        save_weights(model, path, obj["class_names"], obj["step"], vocab)
        if path.stat().st_size > max_mib * 2 ** 20:
            raise CheckpointError(f"{path}: {path.stat().st_size} bytes, over {max_mib:g} MiB")
        written.append(path)
    return written


def main(argv=None) -> int:
    """`python -m dit_model.train ARGS` = `ditweb train ARGS`, importing only what training needs
    (no wgpu, jinja2 or web modules): the entry point for a bare GPU machine (scripts/gpu_train.sh)."""
    from ditformat.errors import DitwebError
    parser = argparse.ArgumentParser(prog="ditweb")
    sub = parser.add_subparsers(dest="verb", required=True)
    register(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (DitwebError, FileNotFoundError, PermissionError, IsADirectoryError) as e:   # bad input: one line
        print(f"ditweb train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
