"""`ditweb train-vae`: trains the favicon autoencoder (dit_model/favicon_vae.py) on emoji of every style.

Loss: L1 on RGBA in [-1, 1] + `--edge` x the L1 of the horizontal and vertical neighbour differences + `--kl` x the
KL divergence to N(0, 1) (per latent element), the latent a posterior sample. AdamW with a linear warm-up and a
cosine decay to 10% at --max-steps; an EMA of the weights is what is saved. Every 20th identity (by hash) is held
out; the log's PSNR is the EMA's on a fixed quarter of them. Resumable exactly: the batch order is a permutation
per (seed, epoch), the flips and the posterior noise a generator per (seed, step); ckpt.pt holds the weights, the
EMA, AdamW's state and the options. At the end the latents' mean and std are measured over all images and stored
in the file (`finalize`): run folder's vae.safetensors, and --out.

`--init FILE --decoder-only [--latent-noise S]` fine-tunes the decoder of an existing autoencoder and keeps its
encoder, latent shift and scale bit for bit, so latent DiTs trained on FILE's latents decode with the new file
(`favicon_vae.shares_latents`): the decoder reads the posterior mean plus Gaussian noise of a standard deviation
drawn uniformly from [0, S] per image, in the DiT's scaled units, and learns to map the near misses a DiT samples
to clean images (docs/vae.md, "A decoder for sampled latents").
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ditformat.errors import UsageError

from .favicon_vae import (FAVICON_VAE, FaviconVAE, edge_l1, encoder_lineage, file_sha256, finalize, kl_divergence,
                          load_favicon_vae, load_training_images, psnr_u8, reconstruct, save_favicon_vae, to_model)
from .train import add_run_options, parse_duration
from .vae import VAEConfig, VAEError


# ---------------------------------------------------------------- `ditweb train-vae`

DEFAULTS = dict(styles="twemoji,noto,fluent", data=None, latent_channels=FAVICON_VAE.latent_channels,
                channels=",".join(map(str, FAVICON_VAE.block_out_channels)), layers_per_block=FAVICON_VAE.layers_per_block,
                groups=FAVICON_VAE.norm_num_groups, batch_size=32, lr=1e-3, warmup=100, ema=0.999, kl=1e-4, edge=0.5,
                seed=0, max_steps=3000, time_limit=None, log_every=50, eval_every=500, ckpt_every=250, run_dir=None,
                out=None, init=None, decoder_only=False, latent_noise=0.0)


def register(sub):
    d = DEFAULTS
    p = sub.add_parser("train-vae", help="train the favicon autoencoder (RGBA 32x32 -> 8x8 latents) for latent DiTs",
                       argument_default=argparse.SUPPRESS,
                       description="Train a small KL autoencoder on emoji of every style (docs/vae.md, 'The favicon "
                                   "autoencoder'). Resumable: --resume RUN_DIR continues exactly.")
    p.add_argument("--styles", help=f"emoji styles (default {d['styles']})")
    p.add_argument("--data", help="an emoji pack (`ditweb data --styles ... --pack`) instead of the npm data")
    p.add_argument("--latent-channels", type=int, help=f"latent channels C (default {d['latent_channels']})")
    p.add_argument("--channels", help=f"block widths, encoder order (default {d['channels']}; 3 blocks = 4x down)")
    p.add_argument("--layers-per-block", type=int, help=f"ResNets per encoder block (default {d['layers_per_block']})")
    p.add_argument("--groups", type=int, help=f"GroupNorm groups (default {d['groups']})")
    p.add_argument("--batch-size", type=int, help=f"default {d['batch_size']}")
    p.add_argument("--lr", type=float, help=f"peak AdamW learning rate, cosine to 10%% at --max-steps (default {d['lr']:g})")
    p.add_argument("--warmup", type=int, help=f"linear warm-up steps (default {d['warmup']})")
    p.add_argument("--ema", type=float, help=f"EMA decay of the saved weights (default {d['ema']})")
    p.add_argument("--kl", type=float, help=f"KL weight (per latent element, against mean L1; default {d['kl']:g})")
    p.add_argument("--edge", type=float, help=f"weight of the edge (neighbour-difference) L1 term (default {d['edge']:g})")
    p.add_argument("--max-steps", type=int, help=f"total steps (default {d['max_steps']}); the learning-rate schedule's length")
    p.add_argument("--eval-every", type=int, help=f"steps between held-out PSNR rows (default {d['eval_every']})")
    add_run_options(p, d, "ckpt.pt, log.csv, vae.safetensors (default runs/vae-favicon)", "RUN_DIR")
    p.add_argument("--out", help="also write the final EMA autoencoder here (e.g. models/favicon-vae.safetensors)")
    p.add_argument("--init", metavar="FILE", help="start from this favicon autoencoder (its shape replaces the shape options)")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train the decoder alone; the encoder, latent shift and scale stay FILE's, so "
                        "latent models trained on FILE's latents keep working")
    p.add_argument("--latent-noise", type=float, metavar="S",
                   help="with --decoder-only: add Gaussian noise of std uniform in [0, S] (the DiT's scaled units) to "
                        "the latents the decoder reads (default 0)")
    p.set_defaults(func=cmd_train_vae)


def _config(opts: dict) -> VAEConfig:
    try:
        chans = tuple(int(c) for c in str(opts["channels"]).split(","))
    except ValueError:
        raise UsageError(f"--channels {opts['channels']!r}: want comma-separated integers, e.g. 32,64,64") from None
    try:
        return replace(FAVICON_VAE, latent_channels=opts["latent_channels"], block_out_channels=chans,
                       layers_per_block=opts["layers_per_block"], norm_num_groups=opts["groups"]).validate()
    except VAEError as e:
        raise UsageError(f"bad autoencoder shape: {e}") from None


def _lr(opts: dict, step: int) -> float:
    if step < opts["warmup"]:
        return opts["lr"] * (step + 1) / opts["warmup"]
    frac = min(1.0, (step - opts["warmup"]) / max(1, opts["max_steps"] - opts["warmup"]))
    return opts["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def cmd_train_vae(args):
    given = {k: v for k, v in vars(args).items() if k in DEFAULTS or k == "resume"}
    saved = None
    if given.get("resume"):
        run_dir = Path(given.pop("resume"))
        ck = run_dir / "ckpt.pt"
        if not ck.is_file():
            raise UsageError(f"{ck}: no checkpoint to resume")
        saved = torch.load(ck, map_location="cpu", weights_only=True)
        opts = {**DEFAULTS, **json.loads(saved["opts"]), "time_limit": None, **given}   # a time limit is per leg
    else:
        opts = {**DEFAULTS, **given}
        run_dir = Path(opts["run_dir"] or "runs/vae-favicon")
        if (run_dir / "ckpt.pt").exists():
            raise UsageError(f"{run_dir / 'ckpt.pt'} exists; continue it with `ditweb train-vae --resume {run_dir}`")
    opts["run_dir"] = str(run_dir)
    if opts["decoder_only"] and not opts["init"]:
        raise UsageError("--decoder-only needs --init FILE: the autoencoder whose encoder is kept")
    if opts["latent_noise"] and not opts["decoder_only"]:
        raise UsageError("--latent-noise needs --decoder-only (the noise is in the latent units of a fixed encoder)")
    if not (0.0 <= opts["latent_noise"] <= 10.0):
        raise UsageError(f"--latent-noise {opts['latent_noise']}: want a standard deviation in [0, 10]")
    return train_vae(opts, saved, run_dir, parse_duration(opts["time_limit"]))


@torch.no_grad()
def _evaluate(vae: FaviconVAE, images: np.ndarray) -> float:
    vae.eval()
    p = float(psnr_u8(images, reconstruct(vae, images)).mean())
    return p


def batch_indices(seed: int, step: int, B: int, n: int) -> torch.Tensor:
    """The images of a step: a permutation of the n images per (seed, epoch), read B at a time (wrapping)."""
    epoch, k = divmod(step * B, n)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))[k:k + B]
    if len(idx) < B:                                                       # the batch wraps into the next epoch
        nxt = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch + 1))
        idx = torch.cat([idx, nxt[:B - len(idx)]])
    return idx


class _Run:
    """One sitting of a train-vae run: the model, its EMA and AdamW, the data, the log; `step` trains one batch."""
    HEADER = ["step", "epoch", "loss", "l1", "edge", "kl", "lr", "img_per_s", "elapsed_s", "heldout_psnr"]

    def __init__(self, opts: dict, saved: dict | None, run_dir: Path):
        self.opts, self.run_dir, self.cfg = opts, run_dir, _config(opts)
        self.es, held = load_training_images(opts["styles"], opts["data"])
        self.train_u8 = torch.from_numpy(np.ascontiguousarray(self.es.images[~held]))   # (N, S, S, 4)
        self.held_u8 = self.es.images[held][::4]                                          # a fixed quarter: the log's PSNR
        if len(self.held_u8) == 0:                                                        # tiny data: nothing held out
            self.held_u8 = self.es.images[:64]
        self.n, self.B = len(self.train_u8), opts["batch_size"]
        torch.manual_seed(opts["seed"])
        self.lineage = []
        if opts["init"]:
            self.vae = self._start(opts)
            self.cfg = self.vae.cfg
        else:
            self.vae = FaviconVAE(self.cfg)
        self.ema = FaviconVAE(self.cfg)
        self.ema.load_state_dict(self.vae.state_dict())
        for p in self.ema.parameters():
            p.requires_grad_(False)
        trained = self.vae.dec if opts["decoder_only"] else self.vae
        if opts["decoder_only"]:
            for p in [*self.vae.encoder.parameters(), *self.vae.quant_conv.parameters()]:
                p.requires_grad_(False)
        self.opt = torch.optim.AdamW(trained.parameters(), lr=opts["lr"], weight_decay=0.0)
        self.step = 0
        if saved is not None:
            self.vae.load_state_dict(saved["model"])
            self.ema.load_state_dict(saved["ema"])
            self.opt.load_state_dict(saved["opt"])
            self.step = int(saved["step"])
        run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt = run_dir / "ckpt.pt"
        self._open_log(saved is not None)

    def _start(self, opts: dict) -> FaviconVAE:
        """The --init autoencoder, checked to be the file the run started from (a resumed run re-reads it)."""
        path = Path(opts["init"])
        try:
            vae = load_favicon_vae(path)
        except VAEError as e:
            raise UsageError(f"--init: {e}") from None
        sha = file_sha256(path)
        if opts.setdefault("init_sha256", sha) != sha:
            raise UsageError(f"--init {path}: sha256 {sha[:12]}... is not the file this run started from "
                             f"({opts['init_sha256'][:12]}...)")
        if opts["decoder_only"]:
            self.lineage = [*encoder_lineage(path), sha]
        return vae

    def _open_log(self, resumed: bool):
        path, rows = self.run_dir / "log.csv", []
        if resumed and path.is_file():                                     # rows past the checkpoint are dropped
            with open(path, newline="") as f:
                rows = [r for r in list(csv.reader(f))[1:] if r and r[0].isdigit() and int(r[0]) <= self.step]
        self.logf = open(path, "w", newline="")
        self.log = csv.writer(self.logf)
        self.log.writerow(self.HEADER)
        self.log.writerows(rows)

    def save(self):
        tmp = self.ckpt.with_name("ckpt.pt.tmp")
        torch.save({"model": self.vae.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                    "step": self.step, "opts": json.dumps(self.opts), "config": json.dumps(self.cfg.to_dict())}, tmp)
        tmp.replace(self.ckpt)
        extra = {"step": self.step, "images_seen": self.step * self.B}
        if self.lineage:                      # a decoder fine-tune's file is usable (and checked) at every checkpoint
            finalize(self.ema, self.es.images, self.run_dir / "vae.safetensors", extra, self.lineage)
        else:
            save_favicon_vae(self.ema, self.run_dir / "vae.safetensors", extra)

    def train_step(self) -> np.ndarray:
        """One batch: images (flipped per a generator of (seed, step)), a posterior sample, the loss, AdamW, EMA."""
        opts, B, step = self.opts, self.B, self.step
        gs = torch.Generator().manual_seed(opts["seed"] * 7_919 + step + 1)
        x = to_model(self.train_u8[batch_indices(opts["seed"], step, B, self.n)])
        flip = torch.rand(B, generator=gs) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        side = x.shape[-1] // self.vae.downscale
        noise = torch.randn(B, self.cfg.latent_channels, side, side, generator=gs)
        self.vae.train()
        for group in self.opt.param_groups:
            group["lr"] = _lr(opts, step)
        if opts["decoder_only"]:                          # the fixed encoder's mean, plus noise in the DiT's units
            with torch.no_grad():
                mean, _ = self.vae.moments(x)
            sigma = torch.rand(B, generator=gs) * opts["latent_noise"] / self.cfg.scaling_factor
            rec = self.vae.dec(mean + sigma[:, None, None, None] * noise)
            l1, edge, kl = (rec - x).abs().mean(), edge_l1(rec, x), torch.zeros(())
        else:
            rec, mean, logvar = self.vae(x, noise)
            l1, edge, kl = (rec - x).abs().mean(), edge_l1(rec, x), kl_divergence(mean, logvar)
        loss = l1 + opts["edge"] * edge + opts["kl"] * kl
        if not bool(torch.isfinite(loss)):
            raise UsageError(f"the loss became non-finite at step {step}; {self.ckpt} keeps the last checkpoint")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.vae.parameters()), 1.0 - opts["ema"])
        self.step += 1
        return np.array([loss.item(), l1.item(), edge.item(), kl.item()])

    def write_row(self, mean_terms: np.ndarray, ips: float, elapsed: float) -> str:
        step, last = self.step, self.step == self.opts["max_steps"]
        psnr = f"{_evaluate(self.ema, self.held_u8):.2f}" if step % self.opts["eval_every"] == 0 or last else ""
        self.log.writerow([step, f"{step * self.B / self.n:.3f}", *(f"{v:.5f}" for v in mean_terms),
                           f"{_lr(self.opts, step - 1):.2e}", f"{ips:.1f}", f"{elapsed:.0f}", psnr])
        self.logf.flush()
        return psnr


def train_vae(opts: dict, saved: dict | None, run_dir: Path, time_limit: float | None) -> int:
    from tqdm import tqdm
    run = _Run(opts, saved, run_dir)
    cfg = run.cfg
    print(f"training the favicon autoencoder ({sum(p.numel() for p in run.vae.parameters()):,} params: "
          f"{cfg.block_out_channels}, {cfg.latent_channels} latent channels) on {run.n} images (held out: "
          f"{len(run.held_u8) * 4}) of {','.join(run.es.styles)}; batch {run.B}; run dir {run_dir}; from step "
          f"{run.step}", file=sys.stderr)
    stop = {"signal": None}

    def on_signal(num, frame):                                            # first: finish the step and save
        if stop["signal"] is not None:
            raise KeyboardInterrupt
        stop["signal"] = num
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=opts["max_steps"], initial=run.step, unit="step", file=sys.stderr, dynamic_ncols=True)
    t0 = time.time()
    win, win_n, win_t = np.zeros(4), 0, time.time()
    reason = "max steps"
    try:
        while run.step < opts["max_steps"]:
            terms = run.train_step()
            win, win_n = win + terms, win_n + 1
            bar.update(1)
            if run.step % 10 == 0:
                bar.set_postfix(loss=f"{terms[0]:.4f}", refresh=False)
            if run.step % opts["log_every"] == 0 or run.step == opts["max_steps"]:
                psnr = run.write_row(win / win_n, win_n * run.B / (time.time() - win_t), time.time() - t0)
                if psnr:
                    bar.write(f"step {run.step}: loss {win[0] / win_n:.4f}, held-out PSNR (EMA) {psnr} dB")
                win, win_n, win_t = np.zeros(4), 0, time.time()
            if run.step % opts["ckpt_every"] == 0:
                run.save()
            if stop["signal"] is not None or (time_limit is not None and time.time() - t0 >= time_limit):
                reason = "interrupted" if stop["signal"] is not None else "time limit"
                break
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)
    run.save()
    run.logf.close()
    final = finalize(run.ema, run.es.images, run_dir / "vae.safetensors", {"step": run.step, "images_seen": run.step * run.B},
                     run.lineage)
    if opts["out"]:
        Path(opts["out"]).write_bytes(final.read_bytes())
    kept = "the start's encoder, latent shift and scale kept" if run.lineage else "latent mean/std measured and stored"
    print(f"stopped ({reason}) at step {run.step}; {final} ({kept}); continue with "
          f"`ditweb train-vae --resume {run_dir}`", file=sys.stderr)
    return 0
