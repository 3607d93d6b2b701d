"""The subcategory model (98 Twemoji subcategories) judged at the category level (slow-ish; not in CI).

    .venv/bin/python bench/subcategories.py [--model models/subcategories.safetensors] [--n 4] [--scales 2,4]

There is no judge for 98 classes of ~19 images each, so this asks what the committed 9-class judge
(models/judge.safetensors, `ditweb eval`) can answer: is a sample of subcategory s judged to be of s's category?
Per scale: --n samples per subcategory (14 subcategories a batch, seed = batch index, 50 DDIM steps), the judge's prediction against the parent
category, accuracy averaged over the 9 categories (each category's samples pooled over its subcategories) and as
a share of the judge's balanced accuracy on held-out real images (the ceiling of `ditweb eval`). Also the share
of subcategories whose samples are mostly (> half) judged right. Writes bench/results/subcategories.md."""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHUNK = 14                                                  # subcategories per sampling batch (98 = 7 batches)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "subcategories.safetensors"))
    ap.add_argument("--n", type=int, default=4, help="samples per subcategory")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--table", default=str(ROOT / "bench" / "results" / "subcategories.md"))
    args = ap.parse_args()
    import torch
    from tqdm import tqdm

    from dit_model.checkpoint import load_model
    from dit_model.data import load_twemoji
    from dit_model.evaluate import JUDGE, balanced_accuracy, load_judge, predict, split
    from ditformat.guidance import Guide
    from dit_model.sample import sample_images
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model, meta = load_model(args.model)
    cfg, names = meta["config"], meta["class_names"]
    coarse, fine = load_twemoji(), load_twemoji(subcategories=True)
    if names != fine.class_names:
        sys.exit(f"{args.model}: its classes are not the Twemoji subcategories of this data set")
    cats = coarse.class_names
    parent = np.array([cats.index(fine.parents[s]) for s in names])         # subcategory id -> category id
    judge, _ = load_judge(JUDGE, cats, cfg.input_size, cfg.in_channels)
    pred_real, _ = predict(judge, coarse.tensor())
    _, te = split(coarse.labels)
    ceiling = 100 * balanced_accuracy(pred_real[te], coarse.labels[te])
    sub_of = np.repeat(np.arange(len(names)), args.n)
    chunks = [range(c, min(c + CHUNK, len(names))) for c in range(0, len(names), CHUNK)]
    rows = []
    for s in [float(v) for v in args.scales.split(",")]:
        t0 = time.time()
        imgs = []
        bar = tqdm(total=len(chunks) * args.steps, desc=f"sampling cfg {s:g}", unit="step", file=sys.stderr)
        for k, chunk in enumerate(chunks):                  # CHUNK subcategories a batch, seed = batch index
            imgs.append(sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size,
                                      num_classes=cfg.num_classes, class_ids=[c for c in chunk for _ in range(args.n)],
                                      guide=Guide(scale=s), steps=args.steps, seed=k, prediction=cfg.prediction,
                                      on_step=lambda *a: bar.update(1)))
        bar.close()
        pred, _ = predict(judge, torch.cat(imgs))
        right = pred == parent[sub_of]
        acc = 100 * balanced_accuracy(pred, parent[sub_of])
        mostly = 100 * float(np.mean([right[sub_of == c].mean() > 0.5 for c in range(len(names))]))
        rows.append((s, len(pred), acc, 100 * acc / ceiling, mostly, time.time() - t0))
        print(f"cfg {s:g}: category accuracy {acc:.1f}% ({100 * acc / ceiling:.0f}% of the ceiling), "
              f"{mostly:.0f}% of subcategories mostly right, {time.time() - t0:.0f} s", flush=True)
    lines = ["# The subcategory model judged by category", "",
             f"`.venv/bin/python bench/subcategories.py --n {args.n} --scales {args.scales}`: {args.model} "
             f"(step {meta.get('step')}, {len(names)} classes), {args.n} samples per subcategory ({CHUNK} a batch, seed = batch index, "
             f"{args.steps} DDIM steps), judged by {JUDGE.relative_to(ROOT)} (9 categories). Category accuracy: "
             "the judge's prediction against the sample's parent category, averaged over the categories; the "
             f"ceiling is the judge's balanced accuracy on {len(te)} held-out real images ({ceiling:.1f}%). "
             f"CPU: {platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} at the end.",
             "", "| cfg | samples | category accuracy % | of ceiling | subcategories mostly right | s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {s:g} | {n} | {a:.1f} | {o:.0f}% | {m:.0f}% | {t:.0f} |" for s, n, a, o, m, t in rows]
    Path(args.table).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
