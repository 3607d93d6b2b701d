"""`ditweb train`: the command and the training loop of the paper's recipe (AdamW, constant learning rate, EMA,
hybrid loss, label dropout for CFG, horizontal flips) on favicons, on one process or data-parallel with torchrun.

The pieces it runs, one job per module: dit_model/randomness.py (every random choice a pure function of (seed,
step, index), so runs are independent of the process count and resume bit-exactly), dit_model/precision.py
(--precision auto), dit_model/trainer.py (the training state and one step); `ditweb bench train` is
dit_model/bench.py.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ditformat.cliargs import SEED_MAX, check_args, check_output_dir
from ditformat.errors import NonFiniteError, UsageError

from .checkpoint import CheckpointError, atomic_save, first_nonfinite
from .data import FaviconData, add_data_options, load_data
from .model import DEFAULT_PRESET, DiTConfig, preset_config
from .precision import PRECISIONS, resolve_precision
from .latent import training_inputs, training_latents
from .randomness import T_SAMPLINGS, make_batch
from .trainer import Trainer, read_training_checkpoint

# The recipe; `--resume` restores these from the checkpoint, then applies options given again.
DEFAULTS = dict(preset=DEFAULT_PRESET, data=None, size=32, skin_tones=False, subcategories=False, flip=True,
                batch_size=32, lr=1e-4, weight_decay=0.0, ema=0.9999, seed=0, max_steps=None, epochs=None,
                time_limit=None, run_dir=None, log_every=50, sample_every=1000, ckpt_every=500,
                sample_per_class=4, sample_steps=50, sample_cfg=4.0, precision="auto", compile=False, device="auto",
                conditioning=None, init=None, prediction="eps", loss_weighting="none", min_snr_gamma=5.0, t_sampling="uniform", warmup=0,
                styles=None, repeat=None, vae=None)


def parse_duration(text: str | None) -> float | None:
    """'3600', '90m', '2h', '1h30m', '45s' -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not m or not any(m.groups()):
        raise UsageError(f"bad --time-limit {text!r} (want e.g. 3600, 90m, 2h, 1h30m)")
    h, mi, s = (float(v) if v else 0.0 for v in m.groups())
    return h * 3600 + mi * 60 + s


def add_run_options(p, d: dict, run_dir_holds: str, resume_metavar: str) -> None:
    """The options of a resumable run that `train` and `train-vae` share: seed, time limit (per sitting), run
    folder, --resume, log and checkpoint intervals; d holds the command's defaults."""
    p.add_argument("--seed", type=int, help=f"seed of the weights and of every random draw (default {d['seed']})")
    p.add_argument("--time-limit", help="stop (and save) after this long, e.g. 3600, 90m, 2h30m")
    p.add_argument("--run-dir", help=f"folder for {run_dir_holds}")
    p.add_argument("--resume", metavar=resume_metavar, help="continue a run exactly (its options are reused)")
    p.add_argument("--log-every", type=int, help=f"steps between log.csv rows (default {d['log_every']})")
    p.add_argument("--ckpt-every", type=int, help=f"steps between checkpoints (default {d['ckpt_every']}); also at the end")


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
    p.add_argument("--vae", metavar="AUTOENCODER", help="a latent DiT: train on the latents of this favicon autoencoder "
                                                       "(ditweb train-vae; e.g. models/favicon-vae.safetensors)")
    p.add_argument("--batch-size", type=int, help=f"global batch size, split over processes (default {d['batch_size']})")
    p.add_argument("--lr", type=float, help=f"AdamW learning rate, constant (default {d['lr']:g}, the paper's)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    p.add_argument("--ema", type=float,
                   help=f"EMA decay (default {d['ema']}, the paper's). Short runs need less: after n steps the EMA "
                        "still holds decay^n of the initial random weights (0.9999^10000 = 37%%), so pick "
                        "decay ~ 1 - 10/steps, e.g. 0.999 for 10k-30k steps")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total (counting resumed ones)")
    p.add_argument("--epochs", type=float, help="stop after this many passes over the data")
    add_run_options(p, d, "ckpt.pt, log.csv and samples/ (default runs/<preset>)", "RUN_DIR_OR_CKPT")
    p.add_argument("--sample-every", type=int, help=f"steps between EMA sample grids, 0 = never (default {d['sample_every']})")
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


# Options of one sitting, not of the run: a resumed run does not inherit them (a --time-limit given once would
# otherwise stop every later sitting after that long).
PER_SITTING = ("time_limit",)


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
        opts.update({k: v for k, v in saved["train_args"].items() if k in DEFAULTS and k not in PER_SITTING})
        if "precision" not in saved["train_args"] and "bf16" in saved["train_args"]:   # before --precision
            opts["precision"] = "bf16" if saved["train_args"]["bf16"] else "f32"
        opts["run_dir"] = str(run_dir)
    opts.update(given)
    preset_config(opts["preset"])                                       # an unknown preset fails before the data loads
    run_dir = Path(opts["run_dir"] or Path("runs") / opts["preset"].lower().replace("/", "_"))
    opts["run_dir"] = str(run_dir)
    check_options(opts)
    check_output_dir("--run-dir", run_dir)
    return opts, saved, run_dir


def check_options(opts: dict) -> None:
    """The merged options (given now or restored from a checkpoint's train_args) before anything runs:
    one UsageError line naming the option."""
    def number(name, v, ok, want):
        if v is None:
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
            raise UsageError(f"--{name.replace('_', '-')} must be {want}, got {str(v)[:40]}")
    ints = lambda lo: (lambda v: isinstance(v, int) and v >= lo)
    number("batch_size", opts["batch_size"], ints(1), "an integer >= 1")
    number("lr", opts["lr"], lambda v: v > 0, "a finite number > 0")
    number("weight_decay", opts["weight_decay"], lambda v: v >= 0, "a finite number >= 0")
    number("ema", opts["ema"], lambda v: 0.0 <= v < 1.0, "a finite number in [0, 1)")
    number("seed", opts["seed"], lambda v: isinstance(v, int) and 0 <= v <= SEED_MAX, f"an integer in 0..{SEED_MAX}")
    number("max_steps", opts["max_steps"], ints(0), "an integer >= 0")
    number("epochs", opts["epochs"], lambda v: v > 0, "a finite number > 0")
    for name in ("log_every", "ckpt_every", "sample_per_class"):
        number(name, opts[name], ints(1), "an integer >= 1")
    number("sample_every", opts["sample_every"], ints(0), "an integer >= 0 (0 = never)")
    number("sample_steps", opts["sample_steps"], lambda v: isinstance(v, int) and 1 <= v <= 1000, "an integer in [1, 1000]")
    number("sample_cfg", opts["sample_cfg"], lambda v: True, "a finite number")
    number("min_snr_gamma", opts["min_snr_gamma"], lambda v: v > 0, "a finite number > 0")
    number("warmup", opts["warmup"], ints(0), "an integer >= 0")


def cmd_train(args):
    opts, saved, run_dir = resolve_args(args)
    time_limit = parse_duration(opts["time_limit"])
    ctx = _Dist(opts["device"])
    try:
        return _train(opts, saved, run_dir, time_limit, ctx)
    finally:
        ctx.close()


def _train(opts: dict, saved: dict | None, run_dir: Path, time_limit: float | None, ctx: _Dist) -> int:
    B = opts["batch_size"]
    if B % ctx.world:
        raise UsageError(f"--batch-size {B} is not divisible by the {ctx.world} processes")
    ckpt_path = run_dir / "ckpt.pt"
    if saved is None and ckpt_path.exists():
        raise UsageError(f"{ckpt_path} exists; continue it with `ditweb train --resume {run_dir}` or pick another --run-dir")
    data, vocab, levels = _training_data(opts)
    vae_ref, shape = training_latents(opts, data, saved)               # --vae: encoded once (dit_model/latent.py)
    cfg = preset_config(opts["preset"], **shape, num_classes=len(data.class_names),
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
    loop = _Loop(opts, trainer, data, vocab, cfg, run_dir, ctx, dict(opts, precision_used=precision, **vae_ref))   # what auto chose
    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        loop.log = _Log(run_dir / "log.csv", trainer.step)
        print(f"training {opts['preset']} ({sum(p.numel() for p in trainer.model.parameters()):,} params) on "
              f"{loop.n} images / {len(data.class_names)} classes from {data.source}; global batch {B} on {ctx.world} "
              f"process(es), {ctx.device}, {precision} ({why}){', compiled' if opts['compile'] else ''}; "
              f"run dir {run_dir}; from step {trainer.step}", file=sys.stderr)
    reason = loop.run(time_limit)
    if trainer.step != loop.saved_at:
        loop.save()
    if ctx.main:
        loop.log.close()
        if opts["sample_every"] and trainer.step % opts["sample_every"]:
            loop.sample_grid()
        print(f"stopped ({reason}) at step {trainer.step}, epoch {trainer.step * B / loop.n:.2f}; checkpoint {ckpt_path}; "
              f"continue with `ditweb train --resume {run_dir}`", file=sys.stderr)
    return 0


def _training_data(opts: dict):
    """(data, vocab, label levels) of the run: a named model's labels at every level, else one level."""
    if opts["styles"]:
        from .named import load_named, parse_repeats
        data = load_named(opts["styles"], opts["size"], True if opts["skin_tones"] is None else opts["skin_tones"],
                          parse_repeats(opts["repeat"]), opts["data"])
        vocab = data.vocab
        return data, vocab, dict(label_levels=vocab.sizes, label_nested=vocab.nested)
    if opts["repeat"]:
        raise UsageError("--repeat needs --styles (a named model)")
    return load_data(opts["data"], opts["size"], opts["skin_tones"], opts["subcategories"]), None, {}


class _Loop:
    """The training loop of one process: steps until max steps, the time limit or a signal; the log window,
    the progress bar, sample grids and checkpoints (never one with non-finite weights)."""

    def __init__(self, opts, trainer, data, vocab, cfg, run_dir, ctx, train_args):
        self.opts, self.trainer, self.data, self.vocab, self.cfg, self.ctx = opts, trainer, data, vocab, cfg, ctx
        self.run_dir, self.ckpt_path, self.train_args = run_dir, run_dir / "ckpt.pt", train_args
        self.B, self.n = opts["batch_size"], len(data.images)
        self.max_steps = opts["max_steps"]
        if opts["epochs"] is not None:
            by_epochs = int(np.ceil(opts["epochs"] * self.n / self.B))
            self.max_steps = by_epochs if self.max_steps is None else min(self.max_steps, by_epochs)
        self.images = training_inputs(data)                             # (N, S, S, 4) uint8, or --vae latents
        self.labels = torch.from_numpy(data.labels)
        if ctx.device.type == "cuda":                                   # small (8 MB at 32x32): keep it on the GPU
            self.images, self.labels = self.images.to(ctx.device), self.labels.to(ctx.device)
        self.lo, self.hi = ctx.rank * self.B // ctx.world, (ctx.rank + 1) * self.B // ctx.world
        self.saved_at = trainer.step                                    # what ckpt.pt holds now
        self.log, self.bar = None, None
        self.stop_signal = None

    def kept(self) -> str:
        return (f"{self.ckpt_path} keeps step {self.saved_at}, the last good checkpoint" if self.ckpt_path.is_file()
                else "no checkpoint was written")

    def stop_non_finite(self, what: str):
        if self.ctx.main:
            self.bar.close()
            self.log.close()
        raise NonFiniteError(f"{what}; stopped without saving: {self.kept()} (a lower --lr, or --precision f32, may help)")

    def save(self):
        trainer = self.trainer
        bad = first_nonfinite(trainer.model.state_dict(), "model") or first_nonfinite(trainer.ema.state_dict(), "ema")
        if bad:
            self.stop_non_finite(f"the weights became non-finite ({bad}) at step {trainer.step}")
        if self.ctx.main:
            atomic_save(trainer.state(self.data.class_names, self.train_args, self.vocab), self.ckpt_path)
        self.saved_at = trainer.step
        self.ctx.barrier()

    def sample_grid(self):
        step = self.trainer.step
        write_sample_grid(self.trainer.ema, self.cfg, self.vocab or self.data.class_names,
                          self.run_dir / "samples" / f"step_{step:07d}.png", self.opts)

    def on_signal(self, num, frame):                                    # first: finish the step and save; second: abort
        if self.stop_signal is not None:
            raise KeyboardInterrupt
        self.stop_signal = num

    def run(self, time_limit: float | None) -> str:
        """Steps until the end; returns why it stopped."""
        from tqdm import tqdm
        old_handlers = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.bar = tqdm(total=self.max_steps, initial=self.trainer.step, unit="step", file=sys.stderr,
                        disable=not self.ctx.main, dynamic_ncols=True)
        self.t_start = time.time()
        self.window, self.win_steps, self.win_t = None, 0, time.time()
        self.ips, self.last_t = 0.0, time.time()
        try:
            while self.max_steps is None or self.trainer.step < self.max_steps:
                self.one_step()
                out_of_time = time_limit is not None and time.time() - self.t_start >= time_limit
                if self.ctx.any(self.stop_signal is not None or out_of_time):
                    return "time limit" if out_of_time else "interrupted"
                if self.trainer.step % self.opts["ckpt_every"] == 0:
                    self.save()
            return "max steps"
        finally:
            self.bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)

    def one_step(self):
        """One training step, its loss checked (before it reaches the log, a grid or ckpt.pt), logged and shown."""
        opts, trainer, ctx, B = self.opts, self.trainer, self.ctx, self.B
        x0, y, t, eps = make_batch(self.images, self.labels, self.cfg, opts["seed"], trainer.step, B, self.lo, self.hi,
                                   opts["flip"], ctx.device, opts["t_sampling"])
        terms = trainer.train_step(x0, y, t, eps)
        vals = torch.stack([terms["loss"], terms["mse"], terms.get("vlb", torch.zeros_like(terms["mse"]))]).detach()
        if ctx.any(not bool(torch.isfinite(vals).all())):
            self.stop_non_finite(f"the loss became non-finite (loss {vals[0].item():g}, mse {vals[1].item():g}) "
                                 f"at step {trainer.step}")
        self.window = vals if self.window is None else self.window + vals
        self.win_steps += 1
        step = trainer.step
        if ctx.main:
            now = time.time()
            rate = B / max(now - self.last_t, 1e-9)
            self.ips = rate if self.ips == 0.0 else 0.9 * self.ips + 0.1 * rate
            self.last_t = now
            self.bar.update(1)
            if step % 10 == 0:
                self.bar.set_postfix(loss=f"{terms['loss'].item():.4f}", img_s=f"{self.ips:.0f}", refresh=False)
        if step % opts["log_every"] == 0 or step == self.max_steps:
            mean = ctx.mean(self.window / self.win_steps).tolist()
            if ctx.main:
                dt = time.time() - self.win_t
                self.log.write(step, step * B / self.n, *mean, self.win_steps * B / dt, time.time() - self.t_start)
            self.window, self.win_steps, self.win_t = None, 0, time.time()
        if opts["sample_every"] and step % opts["sample_every"] == 0 and ctx.main:
            started = time.time()
            self.sample_grid()
            self.win_t += time.time() - started                         # images/s counts training only
            self.last_t = time.time()


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
                      steps=opts["sample_steps"], seed=0, prediction=cfg.prediction, null=null,
                      clip_x0=not opts.get("vae"))                      # latents are not bounded to [-1, 1]
    if opts.get("vae"):
        from .latent import decode_for_grid
        x = decode_for_grid(opts["vae"], x)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid(to_uint8(x), cols=k, scale=2).save(path)
    return path


def main(argv=None) -> int:
    """`python -m dit_model.train ARGS` = `ditweb train ARGS`, importing only what training needs
    (no wgpu, jinja2 or web modules): the entry point for a bare GPU machine (scripts/gpu_train.sh)."""
    from ditformat.errors import DitwebError
    parser = argparse.ArgumentParser(prog="ditweb")
    sub = parser.add_subparsers(dest="verb", required=True)
    register(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        check_args("train", args)
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (DitwebError, FileNotFoundError, PermissionError, IsADirectoryError) as e:   # bad input: one line
        print(f"ditweb train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
