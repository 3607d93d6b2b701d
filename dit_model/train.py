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

from .checkpoint import CheckpointError, _torch_load, atomic_save
from .data import FaviconData, add_data_options, load_data, to_model
from .diffusion import Diffusion
from .model import DEFAULT_PRESET, DiT, DiTConfig, drop_labels, preset_config
from .noise import normal, pcg4d

# Streams of dit_model.noise used by training (0-9 belong to sampling).
STREAM_ORDER = 10     # data order: one permutation of the data set per epoch
STREAM_DRAWS = 11     # per sample k: timestep, label dropout, horizontal flip
STREAM_NOISE = 12     # per element of the global (B, C, S, S) batch: eps

# The recipe; `--resume` restores these from the checkpoint, then applies options given again.
DEFAULTS = dict(preset=DEFAULT_PRESET, data=None, size=32, skin_tones=False, subcategories=False, flip=True,
                batch_size=32, lr=1e-4, weight_decay=0.0, ema=0.9999, seed=0, max_steps=None, epochs=None,
                time_limit=None, run_dir=None, log_every=50, sample_every=1000, ckpt_every=500,
                sample_per_class=4, sample_steps=50, sample_cfg=4.0, bf16=False, compile=False, device="auto",
                conditioning=None, init=None, prediction="eps", loss_weighting="none", min_snr_gamma=5.0, t_sampling="uniform", warmup=0)
T_SAMPLINGS = ("uniform", "logit-normal")


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
               t_sampling: str = "uniform"):
    """Data indices, timesteps, dropped labels and flips for global-batch samples k = lo .. hi-1 of `step`.

    Timesteps: uniform on {0 .. 999} (the paper), or logit-normal: t = floor(1000 sigmoid(n)), n ~ N(0, 1)
    (Esser et al., "Scaling rectified flow transformers"), which spends the steps on mid noise levels."""
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
        raise ValueError(f"unknown timestep sampling {t_sampling!r}; choose one of {', '.join(T_SAMPLINGS)}")
    drop = h1.astype(np.float64) < drop_prob * 2.0 ** 32
    flips = (h2 >> np.uint32(31)).astype(bool) & flip
    return idx, t, drop, flips


def make_batch(images_u8: torch.Tensor, labels: torch.Tensor, cfg: DiTConfig, seed: int, step: int,
               batch_size: int, lo: int, hi: int, flip: bool, device, t_sampling: str = "uniform"):
    """(x0, y, t, eps) for samples lo .. hi-1 of the global batch; the same values on any process."""
    idx, t, drop, flips = batch_plan(seed, step, batch_size, lo, hi, len(images_u8), cfg.class_dropout_prob, flip,
                                     t_sampling)
    x0 = to_model(images_u8[torch.from_numpy(idx)])                    # (n, C, S, S)
    f = torch.from_numpy(flips)
    x0 = torch.where(f[:, None, None, None], x0.flip(-1), x0)           # the paper's only augmentation
    y = drop_labels(labels[torch.from_numpy(idx)], torch.from_numpy(drop), cfg.num_classes)
    per = cfg.in_channels * cfg.input_size ** 2
    eps = torch.from_numpy(normal(seed, STREAM_NOISE, step, (hi - lo) * per, start=lo * per)).reshape(x0.shape)
    return x0.to(device), y.to(device), torch.from_numpy(t).to(device), eps.to(device)


# ---------------------------------------------------------------- the training state

class Trainer:
    """Model, EMA, AdamW and the step; `net` is what runs forward (DDP and/or compiled)."""

    def __init__(self, cfg: DiTConfig, *, lr: float, weight_decay: float, ema_decay: float, seed: int,
                 device, bf16: bool = False, compile: bool = False, ddp: bool = False,
                 loss_weighting: str = "none", min_snr_gamma: float = 5.0, warmup: int = 0):
        torch.manual_seed(seed)
        self.cfg, self.device, self.ema_decay, self.bf16 = cfg, torch.device(device), ema_decay, bf16
        self.lr, self.weight_decay = lr, weight_decay
        self.loss_weighting, self.min_snr_gamma, self.warmup = loss_weighting, min_snr_gamma, warmup
        self.model = DiT(cfg).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
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

    def warm_start(self, path) -> None:
        """Model and EMA from a weights file (any format `ditweb sample` loads) whose architecture matches;
        the prediction type may differ (the output head then re-learns what it predicts)."""
        from .checkpoint import load_model
        model, meta = load_model(path)
        mine, theirs = self.cfg.to_dict(), meta["config"].to_dict()
        diff = [f"{k} {theirs.get(k)} vs {mine[k]}" for k in mine if k != "prediction" and mine[k] != theirs.get(k)]
        if diff:
            raise CheckpointError(f"{path}: --init weights do not fit this model ({'; '.join(diff)})")
        self.model.load_state_dict(model.state_dict())
        self.ema.load_state_dict(model.state_dict())

    def state(self, class_names: list[str], train_args: dict) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "config": self.cfg.to_dict(), "class_names": list(class_names),
                "train_args": train_args}

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
        raise ValueError(f"bad --time-limit {text!r} (want e.g. 3600, 90m, 2h, 1h30m)")
    h, mi, s = (float(v) if v else 0.0 for v in m.groups())
    return h * 3600 + mi * 60 + s


def register(sub):
    d = DEFAULTS
    p = sub.add_parser(
        "train", help="train a DiT on favicons (AdamW, EMA, hybrid loss; torchrun for data parallel)",
        argument_default=argparse.SUPPRESS, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a DiT. Data parallel: torchrun --nproc_per_node=N -m dit_model.cli train ... "
                    "(the global --batch-size is split over the processes).",
        epilog="examples:\n"
               "  ditweb train Favicon-T/2 --run-dir runs/t2 --ema 0.999 --time-limit 3h\n"
               "  ditweb train --resume runs/t2 --max-steps 100000    # continue exactly where it stopped\n"
               "  torchrun --nproc_per_node=2 -m dit_model.cli train Favicon-S/2 --data twemoji.npz")
    p.add_argument("preset", nargs="?", help=f"model preset (default {d['preset']}); see `ditweb info`")
    add_data_options(p)
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
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the model")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
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
        opts["run_dir"] = str(run_dir)
    opts.update(given)
    preset_config(opts["preset"])                                       # an unknown preset fails before the data loads
    run_dir = Path(opts["run_dir"] or Path("runs") / opts["preset"].lower().replace("/", "_"))
    opts["run_dir"] = str(run_dir)
    if opts["batch_size"] < 1 or opts["lr"] <= 0 or not 0.0 <= opts["ema"] < 1.0:
        raise ValueError("need --batch-size >= 1, --lr > 0 and 0 <= --ema < 1")
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
        raise ValueError(f"--batch-size {B} is not divisible by the {ctx.world} processes")
    ckpt_path = run_dir / "ckpt.pt"
    if saved is None and ckpt_path.exists():
        raise ValueError(f"{ckpt_path} exists; continue it with `ditweb train --resume {run_dir}` or pick another --run-dir")

    data = load_data(opts["data"], opts["size"], opts["skin_tones"], opts["subcategories"])
    cfg = preset_config(opts["preset"], input_size=data.size, in_channels=4, num_classes=len(data.class_names),
                        prediction=opts["prediction"], conditioning=opts["conditioning"])
    if saved is not None:
        _check_compatible(saved, cfg, data, ckpt_path)
    trainer = Trainer(cfg, lr=opts["lr"], weight_decay=opts["weight_decay"], ema_decay=opts["ema"], seed=opts["seed"],
                      device=ctx.device, bf16=opts["bf16"], compile=opts["compile"], ddp=ctx.on,
                      loss_weighting=opts["loss_weighting"], min_snr_gamma=opts["min_snr_gamma"], warmup=opts["warmup"])
    if saved is not None:
        trainer.load(saved, ckpt_path)
        saved = None                                                    # free the host copy
    elif opts["init"]:
        trainer.warm_start(opts["init"])

    n = len(data.images)
    max_steps = opts["max_steps"]
    if opts["epochs"] is not None:
        by_epochs = int(np.ceil(opts["epochs"] * n / B))
        max_steps = by_epochs if max_steps is None else min(max_steps, by_epochs)
    images = torch.from_numpy(data.images)                              # (N, S, S, 4) uint8, stays on the host
    labels = torch.from_numpy(data.labels)
    lo, hi = ctx.rank * B // ctx.world, (ctx.rank + 1) * B // ctx.world
    train_args = dict(opts)
    saved_at = {"step": trainer.step}                                   # what ckpt.pt holds now

    def save():
        if ctx.main:
            atomic_save(trainer.state(data.class_names, train_args), ckpt_path)
        saved_at["step"] = trainer.step
        ctx.barrier()

    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        log = _Log(run_dir / "log.csv", trainer.step)
        print(f"training {opts['preset']} ({sum(p.numel() for p in trainer.model.parameters()):,} params) on "
              f"{n} images / {len(data.class_names)} classes from {data.source}; global batch {B} on {ctx.world} "
              f"process(es), {ctx.device}; run dir {run_dir}; from step {trainer.step}", file=sys.stderr)
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
                write_sample_grid(trainer.ema, cfg, data.class_names, run_dir / "samples" / f"step_{step:07d}.png", opts)
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
            write_sample_grid(trainer.ema, cfg, data.class_names, run_dir / "samples" / f"step_{trainer.step:07d}.png", opts)
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


def write_sample_grid(ema, cfg: DiTConfig, class_names: list[str], path: Path, opts: dict) -> Path:
    """One row per class (at most 16 classes), `sample_per_class` EMA samples each, fixed seed."""
    from .guidance import Guide
    from .images import grid, to_uint8
    from .sample import sample_images
    k = max(1, opts["sample_per_class"])
    classes = list(range(min(cfg.num_classes, 16)))
    device = next(ema.parameters()).device
    model = lambda x, t, y: ema(x.to(device), t.to(device), y.to(device)).float().cpu()
    x = sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size, num_classes=cfg.num_classes,
                      class_ids=[c for c in classes for _ in range(k)], guide=Guide(scale=opts["sample_cfg"]),
                      steps=opts["sample_steps"], seed=0, prediction=cfg.prediction)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid(to_uint8(x), cols=k, scale=2).save(path)
    return path


# ---------------------------------------------------------------- `ditweb bench train`

BENCH_CASES = [("Favicon-T/2", 32), ("Favicon-T/4", 32), ("Favicon-S/2", 32), ("Favicon-N/2", 32), ("DiT-S/2", 8)]


def _bench_case(preset: str, batch: int, warmup: int, min_steps: int, min_seconds: float, device: str, bf16: bool, queue):
    """In a fresh process (so peak memory is this case's): time full training steps on random data."""
    import resource
    torch.manual_seed(0)
    cfg = preset_config(preset)
    dev = torch.device(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tr = Trainer(cfg, lr=1e-4, weight_decay=0.0, ema_decay=0.9999, seed=0, device=dev, bf16=bf16)
    images = torch.randint(0, 256, (max(4 * batch, 256), cfg.input_size, cfg.input_size, cfg.in_channels), dtype=torch.uint8)
    labels = torch.randint(0, cfg.num_classes, (len(images),))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step = lambda s: tr.train_step(*make_batch(images, labels, cfg, 0, s, batch, 0, batch, True, dev))
    for s in range(warmup):
        step(s)
    sync()
    t0, n = time.perf_counter(), 0
    while n < min_steps or time.perf_counter() - t0 < min_seconds:
        step(warmup + n)
        n += 1
    sync()
    dt = (time.perf_counter() - t0) / n
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    queue.put({"step_ms": dt * 1000, "img_s": batch / dt, "peak_mb": peak, "steps": n})


def bench_train(args):
    """Images/s and peak memory of whole training steps (batch, loss, backward, AdamW, EMA)."""
    import multiprocessing as mp
    from .data import TWEMOJI
    device = "cuda" if torch.cuda.is_available() else "cpu"
    warmup, min_steps, min_seconds = (1, 2, 0.0) if args.quick else (3, 5, 15.0)
    cases = [c for c in BENCH_CASES if not getattr(args, "preset", None) or c[0] == args.preset] or [(args.preset, 32)]
    try:
        n_images = sum(e["category"] != "Component" for e in json.loads((TWEMOJI / "emoji.json").read_text()))
    except (OSError, ValueError):
        n_images = None
    ctx = mp.get_context("spawn")
    rows, load0 = [], os.getloadavg()[0]
    for preset, batch in cases:
        q = ctx.Queue()
        p = ctx.Process(target=_bench_case, args=(preset, batch, warmup, min_steps, min_seconds, device, False, q))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"bench train: {preset} failed (exit {p.exitcode})")
        r = q.get()
        cfg = preset_config(preset)
        favicon = preset.startswith("Favicon") and cfg.input_size == 32 and n_images
        epoch = f"{n_images / r['img_s']:.1f}" if favicon else "-"
        rows.append([preset, f"{cfg.in_channels}x{cfg.input_size}x{cfg.input_size}", batch, r["steps"],
                     f"{r['step_ms']:.0f}", f"{r['img_s']:.1f}", epoch, f"{r['peak_mb']:.0f}"])
        print(f"  {preset:<12} batch {batch:>3}: {r['img_s']:8.1f} img/s", file=sys.stderr)
    mem = "torch.cuda.max_memory_allocated" if device == "cuda" else "growth of peak RSS (ru_maxrss) over the process before the model was built"
    notes = (f"One full training step per row: make_batch (counter-based noise, flips, label dropout), hybrid loss, "
             f"backward, AdamW, EMA update; float32, random uint8 data, {device}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, warm-up {warmup} steps, then >= {min_steps} steps and >= {min_seconds:g} s "
             f"per row{' (--quick)' if args.quick else ''}; load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after "
             f"on {os.cpu_count()} cores (other work on the machine slows every row). epoch = one pass over the {n_images or '?'} base Twemoji "
             f"images at 32x32. peak MB = {mem}. Each row runs in a fresh process.")
    header = ["preset", "input", "batch", "steps", "ms/step", "img/s", "epoch (s)", "peak MB"]
    return "ditweb bench train", header, rows, notes
