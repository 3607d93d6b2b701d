"""The favicon autoencoder's reconstructions: PSNR per category and per style, the seam ratio, a contact sheet.

    .venv/bin/python bench/vae_favicon.py [--vae models/favicon-vae.safetensors] [--run /work/runs/vae-favicon]

Every emoji of the three styles (with skin tones) is encoded to its posterior mean and decoded. PSNR (dB) over
the four RGBA channels of the uint8 images, and over RGB composited on white (what a tab shows); held out = the
identities training never saw (every 20th by hash, dit_model/favicon_vae.py split_identities). Seam ratio: mean
luminance step across 4-pixel boundaries over the mean step inside them (favicon_vae.seam_ratio), real vs
reconstructed. The run folder's log.csv gives the training curve and speed. Writes bench/results/vae-favicon.md
and docs/samples/vae-favicon.png (per style: a row of real images, the row of their reconstructions below).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dit_model.bench import shown_path  # noqa: E402


def psnr_over_white(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    def comp(a):
        a = a.astype(np.float64) / 255.0
        return a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
    mse = ((comp(real) - comp(fake)) ** 2).reshape(len(real), -1).mean(1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))


def contact_sheet(es, rec, held, per_category: int = 2, scale: int = 3):
    from dit_model.images import grid
    cats, _ = es.labels("category")
    rows = []
    for s in range(len(es.styles)):
        pick = []
        for c in range(len(es.categories)):
            idx = np.flatnonzero((es.style == s) & (cats == c) & held)
            if len(idx) < per_category:
                idx = np.flatnonzero((es.style == s) & (cats == c))
            pick += list(idx[np.linspace(0, len(idx) - 1, per_category).round().astype(int)])
        rows += [es.images[pick], rec[pick]]
    cols = len(rows[0])
    return grid(np.concatenate(rows), cols=cols, scale=scale)


def table(head, rows) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return out + ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]


def lineage_note(meta: dict) -> str:
    """For a decoder fine-tune (metadata `encoder_of`): which file's encoder, shift and scale it keeps."""
    if "encoder_of" not in meta:
        return ""
    import json
    parent = json.loads(meta["encoder_of"])[-1]                     # the file the fine-tune started from
    return (f" of a decoder fine-tune (`ditweb train-vae --init FILE --decoder-only --latent-noise S`): the encoder, "
            f"shift and scale of the file with sha256 {parent[:12]}... kept bit for bit")


def training_summary(run: Path, fine_tune: bool = False) -> tuple[list[str], dict]:
    path = run / "log.csv"
    if not path.is_file():
        return [f"(no {path}: training numbers not available)"], {}
    rows = list(csv.DictReader(open(path)))
    last = rows[-1]
    ips = [float(r["img_per_s"]) for r in rows]
    curve = [(r["step"], r["epoch"], r["loss"], r["l1"], r["edge"], r["kl"], r["heldout_psnr"]) for r in rows
             if r["heldout_psnr"]]
    info = {"steps": int(last["step"]), "epochs": float(last["epoch"]), "ips": float(np.median(ips))}
    lines = [f"{info['steps']} steps ({info['epochs']:.2f} epochs), median {info['ips']:.1f} img/s wall-clock "
             f"(one thread, on a 2-core machine shared with a DiT training run and tests). Held-out PSNR of the EMA "
             f"weights during training (RGBA dB, from the posterior mean without noise; the EMA starts from "
             f"{'the start file (a decoder fine-tune: --init --decoder-only; no KL term)' if fine_tune else 'the random initial weights'}):", ""]
    lines += table(["step", "epoch", "loss", "L1", "edge", "KL", "held-out PSNR"], curve)
    return lines, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", default=str(ROOT / "models" / "favicon-vae.safetensors"))
    ap.add_argument("--run", default="/work/runs/vae-favicon", help="the training run folder (its log.csv)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "vae-favicon.md"))
    ap.add_argument("--sheet", default=str(ROOT / "docs" / "samples" / "vae-favicon.png"))
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from dit_model.emoji import load_emoji
    from dit_model.favicon_vae import load_favicon_vae, psnr_u8, reconstruct, seam_ratio, split_identities
    from dit_model.vae import decode_gmacs
    vae = load_favicon_vae(args.vae)
    from dit_model.vae import safetensors_metadata
    meta = safetensors_metadata(Path(args.vae))
    es = load_emoji(styles=("twemoji", "noto", "fluent"))
    held = split_identities(es.emoji)
    t = time.process_time()
    rec = reconstruct(vae, es.images)
    enc_dec_ips = len(rec) / (time.process_time() - t)
    z = vae.encode(torch.zeros(256, 4, 32, 32))
    t = time.process_time()
    with torch.no_grad():
        vae.decode(z)
    dec_ips = 256 / (time.process_time() - t)
    p4 = psnr_u8(es.images, rec)
    pw = psnr_over_white(es.images, rec)
    cats, _ = es.labels("category")

    def cell(mask):
        h, a = mask & held, mask
        return [f"{p4[h].mean():.2f}" if h.any() else "-", f"{p4[a].mean():.2f}", f"{pw[h].mean():.2f}" if h.any() else "-",
                f"{seam_ratio(es.images[a]):.3f}", f"{seam_ratio(rec[a]):.3f}", int(h.sum()), int(a.sum())]
    head = ["", "held-out RGBA dB", "all RGBA dB", "held-out over white dB", "seam real", "seam recon.", "held out", "images"]
    by_style = [[s, *cell(es.style == i)] for i, s in enumerate(es.styles)]
    by_cat = [[c, *cell(cats == i)] for i, c in enumerate(es.categories)]
    every = [["all", *cell(np.ones(len(es.images), bool))]]
    cfg = vae.cfg
    lines = ["# The favicon autoencoder (`ditweb train-vae`, dit_model/favicon_vae.py)", "",
             f"`{shown_path(args.vae)}`: RGBA 32x32 -> "
             f"{cfg.latent_channels}x8x8 latents, block widths {list(cfg.block_out_channels)}, "
             f"{cfg.layers_per_block} ResNet per encoder block ({cfg.layers_per_block + 1} per decoder block), "
             f"GroupNorm {cfg.norm_num_groups} groups, no attention; "
             f"{sum(p.numel() for p in vae.parameters()):,} parameters "
             f"({sum(p.numel() for p in vae.dec.parameters()):,} in the decoder, "
             f"{decode_gmacs(cfg, 8) * 1000:.0f} M multiply-adds per decoded favicon); latent mean {cfg.shift_factor:.4g}, "
             f"std {1 / cfg.scaling_factor:.4g} (stored as shift_factor and 1/scaling_factor). The file holds the "
             f"{'raw' if meta.get('weights') == 'model' else 'EMA'} weights of step {meta.get('step', '?')}"
             f"{lineage_note(meta)}.", "",
             f"Reconstruction of all {len(es.images)} emoji (Twemoji, Noto, Fluent; skin tones included) from the "
             f"posterior mean. Torch on one CPU thread: encode + decode {enc_dec_ips:.0f} img/s, decode alone "
             f"{dec_ips:.0f} img/s (CPU time).", "", "## By style", ""]
    lines += table(head, by_style + every) + ["", "## By category", ""] + table(head, by_cat) + [""]
    lines += ["Seam ratio: mean luminance step across 4-pixel boundaries over the mean step inside them (1.0 = no "
              "grid; the issue measured 1.42 for the pixel model's samples). Real images vs the same images "
              "reconstructed.", "", "## Training", ""]
    train_lines, _ = training_summary(Path(args.run), "encoder_of" in meta)
    lines += train_lines + ["", f"Contact sheet: `{shown_path(args.sheet)}` (per style: real row, "
                                 f"reconstructed row; two held-out emoji per category).", ""]
    Path(args.out).write_text("\n".join(lines))
    contact_sheet(es, rec, held).save(args.sheet)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
