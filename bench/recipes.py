"""The recipe study (issue: favicons that look like emoji): training recipes at equal images seen,
judged by `ditweb eval` at fixed seeds and guidance scales 1 and 4.

    .venv/bin/python bench/recipes.py train A-baseline        # one row, one thread (run two side by side)
    .venv/bin/python bench/recipes.py eval A-baseline C-v-minsnr
    .venv/bin/python bench/recipes.py table                   # bench/results/recipes.md

Every row is Favicon-T/4 unless it says otherwise, batch 64, AdamW lr 3e-4 (constant), EMA 0.995
(the rows are short: the paper's 0.9999 would still hold 82% of the random initial weights after
2,000 steps), seed 0, flips, hybrid loss (learned sigma). Rows differ only in the flags listed.
The warm-started row W starts from the previous shipped default (Favicon-T/4, eps, 13,168 steps; its weights:
`git show f787cd2:models/default.safetensors > runs/study/prev-default-eps-13168.safetensors`).
Equal images seen: STEPS x 64 for every row trained from scratch, except the patch-2 row, which
gets the same training compute (forward Gflops x images), i.e. fewer steps.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "study"
DITWEB = str(ROOT / ".venv" / "bin" / "ditweb")
STEPS = 2000
BATCH = 64
GFLOPS = {"Favicon-T/4": 0.112, "Favicon-T/2": 0.540}   # `ditweb info`: forward Gflops per image

# name -> (what it tests, preset, steps, flags)
ROWS = {
    "A-baseline": ("the paper: eps, uniform t, constant lr", "Favicon-T/4", STEPS, []),
    "B-eps-minsnr": ("eps + Min-SNR-5 weighting", "Favicon-T/4", STEPS, ["--loss-weighting", "min-snr"]),
    "C-v-minsnr": ("v-prediction + Min-SNR-5", "Favicon-T/4", STEPS, ["--prediction", "v", "--loss-weighting", "min-snr"]),
    "D-v-minsnr-logitnormal": ("v + Min-SNR-5 + logit-normal t", "Favicon-T/4", STEPS,
                               ["--prediction", "v", "--loss-weighting", "min-snr", "--t-sampling", "logit-normal"]),
    "E-T2-v-minsnr": ("patch 2 at equal compute, v + Min-SNR-5", "Favicon-T/2",
                      round(STEPS * GFLOPS["Favicon-T/4"] / GFLOPS["Favicon-T/2"]),
                      ["--prediction", "v", "--loss-weighting", "min-snr"]),
    "F-v-minsnr-warmup": ("v + Min-SNR-5 + 500-step lr warm-up", "Favicon-T/4", STEPS,
                          ["--prediction", "v", "--loss-weighting", "min-snr", "--warmup", "500"]),
    "G-adaln": ("Figure 5: adaLN (no zero init), v + Min-SNR-5", "Favicon-T/4", STEPS,
                ["--prediction", "v", "--loss-weighting", "min-snr", "--conditioning", "adaln"]),
    "H-in-context": ("Figure 5: in-context conditioning, v + Min-SNR-5", "Favicon-T/4", STEPS,
                     ["--prediction", "v", "--loss-weighting", "min-snr", "--conditioning", "in-context"]),
    "I-cross-attn": ("Figure 5: cross-attention conditioning, v + Min-SNR-5", "Favicon-T/4", STEPS,
                     ["--prediction", "v", "--loss-weighting", "min-snr", "--conditioning", "cross-attn"]),
    "W-v-minsnr-warm": ("continuation: the previous default (13,168 eps steps) warm-started, v + Min-SNR-5",
                        "Favicon-T/4", STEPS, ["--prediction", "v", "--loss-weighting", "min-snr",
                                               "--init", "runs/study/prev-default-eps-13168.safetensors"]),
    "L-long": ("the long run: W's start + logit-normal t, EMA 0.999, as long as the session allowed",
               "Favicon-T/4", 100_000, ["--prediction", "v", "--loss-weighting", "min-snr", "--t-sampling", "logit-normal",
                                        "--ema", "0.999", "--seed", "1", "--ckpt-every", "250", "--time-limit", "125m",
                                        "--init", "runs/study/prev-default-eps-13168.safetensors"]),
}
COMMON = ["--batch-size", str(BATCH), "--lr", "3e-4", "--ema", "0.995", "--seed", "0", "--sample-every", "0",
          "--log-every", "100", "--ckpt-every", "500"]
SCALES = "1,4"


def train(name: str) -> None:
    _, preset, steps, flags = ROWS[name]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    run = RUNS / name
    cmd = [DITWEB, "train"] + (["--resume", str(run)] if (run / "ckpt.pt").exists() else [preset, "--run-dir", str(run)])
    subprocess.run(cmd + COMMON + flags + ["--max-steps", str(steps)], check=True, env=env, cwd=ROOT)  # a row's flags win


def run_dir(name: str) -> Path:
    """Row W continued as the long run; its row is the copy taken at the row's length."""
    frozen = RUNS / f"{name.split('-')[0]}-at-{ROWS[name][2]}"
    return frozen if frozen.is_dir() else RUNS / name


def evaluate(name: str, n_per_class: int) -> None:
    out = RUNS / f"{name}.eval.json"
    cmd = [DITWEB, "eval", str(run_dir(name) / "ckpt.pt"), "--weights", "ema", "--scales", SCALES,
           "--n-per-class", str(n_per_class), "--json", str(out), "--out", str(run_dir(name))]
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")), cwd=ROOT)


def cost(name: str) -> tuple[int, float]:
    """(steps, wall-clock minutes) from the run's log.csv."""
    with open(run_dir(name) / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= ROWS[name][2]]
    return int(rows[-1]["step"]), float(rows[-1]["elapsed_s"]) / 60


RESULTS = ROOT / "bench" / "results" / "recipes.json"   # every evaluated row's numbers, kept in the tree


def row_result(name: str) -> dict:
    """The numbers a table row needs, from a fresh `eval` of the row (runs/study/ROW.eval.json)."""
    ev = json.loads((RUNS / f"{name}.eval.json").read_text())
    steps, minutes = cost(name)
    scales = {}
    for r in ev["rows"]:
        scales[f"{float(r['scale']):g}"] = {k: r[k] for k in ("balanced_accuracy", "of_ceiling", "fd_over_floor", "fd_excess")}
    return {"steps": steps, "minutes": round(minutes, 1), "n_per_class": ev.get("n_per_class"), "scales": scales}


def table() -> None:
    """Merge fresh evaluations into bench/results/recipes.json, then write bench/results/recipes.md from it
    (rows evaluated in earlier sessions keep their numbers when runs/ is gone)."""
    sys.path.insert(0, str(ROOT))
    from dit_model.bench import publish
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in ROWS:
        if (RUNS / f"{name}.eval.json").exists():
            results[name] = row_result(name)
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    header = ["row", "what it tests", "preset", "steps", "images seen", "train Tflop", "minutes",
              "acc cfg 1 (% ceil)", "FD/floor (FD-floor) cfg 1", "acc cfg 4 (% ceil)", "FD/floor (FD-floor) cfg 4"]
    rows = []
    for name, (what, preset, _, _) in ROWS.items():
        if name not in results:
            continue
        res = results[name]
        steps = res["steps"]
        cells = []
        for s in ("1", "4"):
            r = res["scales"].get(s)
            cells += ([f"{r['balanced_accuracy']:.1f} ({r['of_ceiling']:.0f}%)", f"{r['fd_over_floor']:.2f} ({r['fd_excess']:.2f})"]
                      if r else ["-", "-"])
        rows.append([name, what, preset, steps, steps * BATCH, f"{3 * steps * BATCH * GFLOPS[preset] / 1e3:.0f}",
                     f"{res['minutes']:.0f}"] + cells)
    notes = (f"Each row: `bench/recipes.py train ROW` (flags in bench/recipes.py; batch {BATCH}, lr 3e-4, EMA 0.995, seed 0, "
             f"one thread, two rows side by side on 2 cores while other work ran: minutes are wall clock under load, "
             f"not comparable between rows), then `bench/recipes.py eval ROW` (EMA weights, 50 DDIM steps, fixed seeds). "
             f"Train Tflop = 3 x forward Gflops x images seen (forward + backward); row W adds its 2,000 steps to the 13,168 it started from. Accuracy is the judge's balanced "
             f"class accuracy on the samples and its share of the judge's accuracy on real images; FD/floor is the "
             f"Frechet distance in judge features over the real-vs-real floor, FD-floor their difference, which depends "
             f"less on the number of samples (32 per class here; docs/evaluation.md).")
    publish("recipes", "Recipe study: Favicon DiT training recipes at equal images seen", header, rows, notes,
            ROOT / "bench" / "results")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train"); t.add_argument("row", choices=list(ROWS))
    e = sub.add_parser("eval"); e.add_argument("rows", nargs="+", choices=list(ROWS))
    e.add_argument("--n-per-class", type=int, default=32)
    sub.add_parser("table")
    a = p.parse_args()
    if a.cmd == "train":
        train(a.row)
    elif a.cmd == "eval":
        for r in a.rows:
            evaluate(r, a.n_per_class)
    else:
        table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
