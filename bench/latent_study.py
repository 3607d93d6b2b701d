"""The latent study (issue 20, item 4; the paper's Figures 6 and 8 at favicon size): today's pixel Favicon-T/4
against latent DiTs on the favicon autoencoder's 8x8x8 latents, patch 1 and 2 at two widths, every row trained
for the same training compute, on the shipped named model's data and recipe, judged by `ditweb eval` (identity
judges, category judge, FD per style) and by the seam ratio of the issue's Aim.

    .venv/bin/python bench/latent_study.py status            # what is trained and evaluated
    .venv/bin/python bench/latent_study.py train latent-T1   # one row (resumable: a rerun continues its ckpt)
    .venv/bin/python bench/latent_study.py eval latent-T1    # evaluate its finished checkpoints not yet evaluated
    .venv/bin/python bench/latent_study.py table             # bench/results/latent-study.md + .json
    .venv/bin/python bench/latent_study.py plot              # bench/results/latent-study.png
    OMP_NUM_THREADS=1 nohup nice -n 5 .venv/bin/python bench/latent_study.py run-all \\
        >> runs/latent-study/run-all.log 2>&1 &              # every unfinished row in order, then table and plot

Compute: training Tflop = 3 x forward Gflops per image x images seen (forward + backward; the recipe study's
convention, bench/recipes.py), forward Gflops by dit_model.model.forward_gflops (`ditweb info`, the paper's
multiply-accumulates). Every row gets twice a recipe-study row (2 x 43 Tflop): its steps are that compute over
3 x Gflops x batch, so a cheap model trains for more steps. Each row is trained in sittings that stop at 1/4, 1/2
and all of its compute; the checkpoint of each is kept (runs/latent-study/ROW/at-STEP.pt); run-all evaluates
every row's final checkpoint first, then the ones along the way, so the plot gets FD/floor against compute.
Data and recipe: the shipped named model's (three styles, Animals & Nature 10x, v-prediction, Min-SNR-5,
logit-normal t, batch 64, lr 3e-4) with the recipe study's EMA 0.995 and seed 0, all from scratch (no row has a
warm start of the same architecture). Evaluation: `ditweb eval` at guidance 4 with 2 seeds per request (its
minimum: 600 samples of 100 emoji x 3 styles), and the seam ratio of 8 samples per category.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import recipes  # noqa: E402  the recipe study: batch, common flags, its rows' compute
from dit_model.bench import publish, save_text, shown_path  # noqa: E402

VAE = ROOT / "models" / "favicon-vae.safetensors"
RECIPE_TFLOP = 3 * recipes.STEPS * recipes.BATCH * recipes.GFLOPS["Favicon-T/4"] / 1e3   # 43: a recipe-study row
NAMED = ["--styles", "twemoji,noto,fluent", "--repeat", "Animals & Nature:10", "--prediction", "v",
         "--loss-weighting", "min-snr", "--t-sampling", "logit-normal"]   # the shipped named model's data and recipe
SCALE = 4.0                                       # the shipped named model's guidance scale

# name -> (preset, on latents?), in the order run-all trains them: the pixel model and the latent model with the
# same token count (64) first, then the wider patch-1 model (the most Gflops), then patch 2 at both widths.
ROWS = {
    "pixel-T4": ("Favicon-T/4", False),
    "latent-T1": ("Favicon-T/1", True),
    "latent-S1": ("Favicon-S/1", True),
    "latent-T2": ("Favicon-T/2", True),
    "latent-S2": ("Favicon-S/2", True),
}


@dataclass
class Study:
    """Where the study lives and how big it is; `--smoke DIR` shrinks it to two steps per row in DIR."""
    runs: Path = ROOT / "runs" / "latent-study"
    results: Path = ROOT / "bench" / "results"
    vae: Path = VAE
    tflop: float = 2 * RECIPE_TFLOP
    batch: int = recipes.BATCH
    fractions: tuple = (0.25, 0.5, 1.0)           # the checkpoints kept and evaluated, as shares of the compute
    rows: tuple = tuple(ROWS)
    steps: int | None = None                      # smoke: every row this many steps instead of equal compute
    train_flags: list = field(default_factory=lambda: recipes.COMMON + ["--ckpt-every", "250"])  # later flags win
    eval_flags: list = field(default_factory=lambda: ["--seeds", "2"])
    seam_per_category: int = 8                    # the Aim's measurement: 8 samples per category
    seam_steps: int = 50
    name: str = "latent-study"

    def run(self, row: str) -> Path:
        return self.runs / row


def smoke(folder) -> Study:
    d = Path(folder).resolve()
    return Study(runs=d / "runs", results=d, vae=d / "vae.safetensors" if (d / "vae.safetensors").is_file() else VAE,
                 batch=4, fractions=(0.5, 1.0), rows=("pixel-T4", "latent-T2"), steps=2,
                 train_flags=[f for f in recipes.COMMON] + ["--batch-size", "4", "--ckpt-every", "1", "--log-every", "1"],
                 eval_flags=["--seeds", "2", "--steps", "1", "--styles", "noto", "--hippo-seeds", "1", "--floor-pairs", "2"],
                 seam_per_category=2, seam_steps=1)


# ---------------------------------------------------------------- compute

def row_config(study: Study, row: str):
    """The DiT config a row trains: the preset on 32x32 RGBA pixels, or on the autoencoder's latents."""
    from dit_model.model import preset_config
    preset, latent = ROWS[row]
    if not latent:
        return preset_config(preset, input_size=32, in_channels=4)
    from dit_model.favicon_vae import load_favicon_vae
    vae = load_favicon_vae(study.vae)
    return preset_config(preset, input_size=32 // vae.downscale, in_channels=vae.cfg.latent_channels)


def plan(study: Study, row: str) -> dict:
    """Gflops, steps and the kept checkpoints' steps of a row."""
    from dit_model.model import forward_gflops
    cfg = row_config(study, row)
    g = forward_gflops(cfg)
    steps = study.steps or round(study.tflop * 1e3 / (3 * g * study.batch))
    marks = sorted({max(1, round(f * steps)) for f in study.fractions})
    return {"gflops": g, "steps": steps, "marks": marks, "patch": cfg.patch_size, "width": cfg.hidden_size,
            "tokens": cfg.num_patches, "input": f"{cfg.in_channels}x{cfg.input_size}x{cfg.input_size}"}


def tflop(study: Study, gflops: float, steps: int) -> float:
    return 3 * gflops * steps * study.batch / 1e3


# ---------------------------------------------------------------- training

def ckpt_step(path: Path) -> int | None:
    if not path.is_file():
        return None
    import torch
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])


def log(msg: str) -> None:
    print(f"[latent-study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def train_to(study: Study, row: str, step: int) -> None:
    """Train ROW until its checkpoint holds `step` steps: a new run, or the run's checkpoint continued exactly."""
    preset, latent = ROWS[row]
    run = study.run(row)
    if (run / "ckpt.pt").exists():
        cmd = ["train", "--resume", str(run)]
    else:
        cmd = ["train", preset, "--run-dir", str(run)] + NAMED + study.train_flags + (["--vae", str(study.vae)] if latent else [])
    subprocess.run([recipes.DITWEB] + cmd + ["--max-steps", str(step)], check=True, env=_env(), cwd=ROOT)


def snapshot(study: Study, row: str, step: int) -> Path:
    return study.run(row) / f"at-{step}.pt"


def train(study: Study, row: str) -> None:
    """Train a row to its compute in sittings that stop at each mark, keeping the checkpoint of each."""
    p = plan(study, row)
    run = study.run(row)
    for mark in p["marks"]:
        keep = snapshot(study, row, mark)
        if not keep.is_file():
            have = ckpt_step(run / "ckpt.pt") or 0
            if have > mark:
                log(f"{row}: its checkpoint is past step {mark} (at {have}) with no copy of step {mark}; skipped")
                continue
            if have < mark:
                log(f"{row} ({ROWS[row][0]}{' on latents' if ROWS[row][1] else ''}, {p['gflops']:.4f} Gflops): training "
                    f"step {have} -> {mark} of {p['steps']} ({tflop(study, p['gflops'], mark):.1f} of "
                    f"{tflop(study, p['gflops'], p['steps']):.1f} Tflop)")
                train_to(study, row, mark)
            tmp = keep.with_suffix(".tmp")
            shutil.copyfile(run / "ckpt.pt", tmp)
            if ckpt_step(tmp) != mark:
                tmp.unlink()
                raise RuntimeError(f"{run / 'ckpt.pt'} is not at step {mark} after training to it")
            tmp.replace(keep)
            log(f"{row}: kept step {mark} as {shown_path(keep)}")


# ---------------------------------------------------------------- evaluation

def eval_path(study: Study, row: str, step: int) -> Path:
    return study.run(row) / f"eval-{step}.json"


def seam_path(study: Study, row: str, step: int) -> Path:
    return study.run(row) / f"seam-{step}.json"


def evaluate(study: Study, row: str, marks=None) -> None:
    """`ditweb eval` (guidance 4, EMA weights) and the seam ratio of every kept checkpoint not yet evaluated."""
    for mark in marks or plan(study, row)["marks"]:
        ck = snapshot(study, row, mark)
        if not ck.is_file():
            continue
        out = eval_path(study, row, mark)
        if not out.is_file():
            log(f"{row}: evaluating step {mark}")
            t0 = time.time()
            subprocess.run([recipes.DITWEB, "eval", str(ck), "--weights", "ema", "--scales", f"{SCALE:g}",
                            *study.eval_flags, "--out", str(study.run(row)), "--json", str(out)],
                           check=True, env=_env(), cwd=ROOT)
            log(f"{row}: step {mark} evaluated in {time.time() - t0:.0f} s")
        if not seam_path(study, row, mark).is_file():
            t0 = time.time()
            s = seam(ck, study.seam_per_category, study.seam_steps)
            save_text(seam_path(study, row, mark), json.dumps(s, indent=1) + "\n")
            log(f"{row}: step {mark} seam ratio {s['generated']:.3f} (real {s['real']:.3f}) in {time.time() - t0:.0f} s")


def seam(ckpt, per_category: int, steps: int, seed: int = 0) -> dict:
    """The Aim's seam ratio (dit_model.favicon_vae.seam_ratio: the mean luminance step across 4-pixel boundaries
    over the mean step inside them) of samples drawn evenly over the categories, against the real base images of
    the same categories and styles: per category, `per_category` emoji of it drawn with a fixed seed, the styles
    taken in turn, sampled at guidance 4 with `steps` DDIM steps; the ratio is the mean over categories."""
    import numpy as np
    import torch

    from dit_model import identity
    from dit_model.evaluate import load_eval_model
    from dit_model.favicon_vae import seam_ratio
    from dit_model.images import to_uint8
    from dit_model.latent import vae_for_model
    from dit_model.named_eval import sample_requests
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, meta = load_eval_model(ckpt, "ema")
    vae, _ = vae_for_model(ckpt)
    vocab, cfg = meta["vocab"], meta["config"]
    data = identity.load_data()
    styles = list(vocab.names[vocab.level("style")])
    base = identity.is_base(data)
    cats = identity.category_labels(data)
    in_styles = np.isin(np.array(data.styles)[data.style], styles)
    rng = np.random.default_rng(seed)
    requests, of_cat = [], []
    for c in range(len(data.categories)):
        ids = np.unique(data.emoji[base & in_styles & (cats == c)])
        if len(ids) == 0:
            continue
        pick = rng.choice(ids, per_category, replace=len(ids) < per_category)
        requests += [(int(e), styles[k % len(styles)]) for k, e in enumerate(pick)]
        of_cat += [c] * per_category
    labels = [vocab.label(0, e, style=s).ids for e, s in requests]
    x = to_uint8(sample_requests(model, cfg, vocab, labels, SCALE, steps, seed, log=lambda *a: None, vae=vae))
    of_cat = np.array(of_cat)
    per = {}
    for c in sorted(set(of_cat.tolist())):
        per[data.categories[c]] = {"generated": seam_ratio(x[of_cat == c]),
                                   "real": seam_ratio(data.images[base & in_styles & (cats == c)])}
    gen = float(np.mean([v["generated"] for v in per.values()]))
    real = float(np.mean([v["real"] for v in per.values()]))
    return {"generated": gen, "real": real, "vs_real": gen / real, "per_category": per, "samples": len(x),
            "per_category_samples": per_category, "steps": steps, "scale": SCALE, "seed": seed, "styles": styles}


# ---------------------------------------------------------------- results

def runtime(study: Study, row: str, step: int) -> dict:
    """Seconds per step from the run's log.csv: the wall clock of the sittings up to `step` (each sitting's
    elapsed_s starts again from 0) over the steps (one thread on a shared machine)."""
    path = study.run(row) / "log.csv"
    if not path.is_file():
        return {}
    rows = [r for r in csv.DictReader(open(path, newline="")) if int(r["step"]) <= step]
    if not rows:
        return {}
    total, last = 0.0, 0.0
    for r in rows:
        e = float(r["elapsed_s"])
        if e < last:                                                   # a new sitting
            total += last
        last = e
    total += last
    return {"seconds_per_step": round(total / int(rows[-1]["step"]), 3), "minutes": round(total / 60, 1)}


def point(study: Study, row: str, step: int) -> dict | None:
    """One evaluated checkpoint's numbers, from its eval-STEP.json and seam-STEP.json."""
    ep, sp = eval_path(study, row, step), seam_path(study, row, step)
    if not ep.is_file():
        return None
    ev = json.loads(ep.read_text())
    p = plan(study, row)
    label = f"cfg {SCALE:g}"
    styles = {w["style"]: w for w in ev["rows"] if w["label"] == label}
    every = styles.pop("all")
    res = {"step": step, "tflop": round(tflop(study, p["gflops"], step), 2), "of_compute": round(step / p["steps"], 3),
           "top1": every["top1"], "top5": every["top5"], "category_accuracy": every["category_balanced_accuracy"],
           "category_of_ceiling": every["category_of_ceiling"], "diversity": every["diversity"],
           "fd_over_floor": {s: w["fd_over_floor"] for s, w in sorted(styles.items())},
           "fd_over_floor_mean": sum(w["fd_over_floor"] for w in styles.values()) / len(styles),
           "seeds": ev["meta"].get("seeds per request"), "sampling_steps": ev["meta"].get("steps"),
           **runtime(study, row, step)}
    if sp.is_file():
        s = json.loads(sp.read_text())
        res["seam"] = {k: s[k] for k in ("generated", "real", "vs_real", "samples")}
    return res


def effective(flags: list) -> list:
    """'--opt value' pairs with a repeated option's last value (the one `ditweb train` takes) in its first place."""
    opts = {}
    for k, v in zip(flags[::2], flags[1::2]):
        opts[k] = v
    return [x for k, v in opts.items() for x in (k, v)]


def collect(study: Study) -> dict:
    """Every evaluated checkpoint, merged into the study's JSON (rows evaluated in an earlier session keep their
    numbers when runs/ is gone)."""
    path = study.results / f"{study.name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.setdefault("rows", {})
    for row in study.rows:
        p = plan(study, row)
        entry = results["rows"].setdefault(row, {"points": {}})
        entry.update({"preset": ROWS[row][0], "kind": "latent" if ROWS[row][1] else "pixel", "input": p["input"],
                      "patch": p["patch"], "width": p["width"], "tokens": p["tokens"], "gflops": round(p["gflops"], 5),
                      "steps": p["steps"], "tflop": round(tflop(study, p["gflops"], p["steps"]), 2)})
        for mark in p["marks"]:
            pt = point(study, row, mark)
            if pt is not None:
                entry["points"][str(mark)] = pt
    results["meta"] = {"tflop_per_row": round(study.tflop, 2), "batch": study.batch, "guidance": SCALE,
                       "autoencoder": shown_path(study.vae), "recipe": shlex.join(effective(NAMED + study.train_flags))}
    results["rows"] = {r: results["rows"][r] for r in ROWS if r in results["rows"]}
    save_text(path, json.dumps(results, indent=1, sort_keys=False) + "\n")
    return results


def table(study: Study) -> Path:
    results = collect(study)
    styles = sorted({s for e in results["rows"].values() for pt in e["points"].values() for s in pt["fd_over_floor"]})
    header = (["row", "preset", "input", "patch", "width", "tokens", "fwd Gflops", "steps", "train Tflop",
               "identity top-1 %", "identity top-5 %", "category acc % (of ceiling)"]
              + [f"FD/floor {s}" for s in styles] + ["FD/floor mean", "seam gen. (real)", "seam vs real", "s/step"])
    rows = []
    for name, e in results["rows"].items():
        for mark, pt in sorted(e["points"].items(), key=lambda kv: int(kv[0])):
            seam_cells = ([f"{pt['seam']['generated']:.3f} ({pt['seam']['real']:.3f})", f"{pt['seam']['vs_real']:.2f}"]
                          if "seam" in pt else ["-", "-"])
            rows.append([name, e["preset"], f"{e['kind']} {e['input']}", e["patch"], e["width"], e["tokens"],
                         f"{e['gflops']:.4f}", f"{pt['step']} of {e['steps']}", f"{pt['tflop']:.1f}",
                         f"{pt['top1']:.1f}", f"{pt['top5']:.1f}",
                         f"{pt['category_accuracy']:.1f} ({pt['category_of_ceiling']:.0f}%)"]
                        + [f"{pt['fd_over_floor'][s]:.2f}" if s in pt["fd_over_floor"] else "-" for s in styles]
                        + [f"{pt['fd_over_floor_mean']:.2f}"] + seam_cells
                        + [f"{pt['seconds_per_step']:.2f}" if "seconds_per_step" in pt else "-"])
    pending = [r for r in ROWS if r in study.rows and not any(int(k) == results["rows"][r]["steps"]
                                                                for k in results["rows"][r]["points"])]
    m = results["meta"]
    notes = (f"Every row: the shipped named model's data and recipe (`{m['recipe']}`), from scratch, trained for "
             f"{m['tflop_per_row']:.0f} Tflop (twice a recipe-study row, bench/results/recipes.md): train Tflop = 3 x "
             f"forward Gflops x steps x {m['batch']} images; the latent rows on the 8x8x8 latents of "
             f"{m['autoencoder']}. Rows are listed at each evaluated checkpoint (kept at 1/4, 1/2 and all of the compute; the ones along the way are evaluated once every row is finished). Judged by "
             f"`ditweb eval` at guidance {m['guidance']:g} (EMA weights, 50 DDIM steps, the 100 evaluation emoji x 3 "
             f"styles x 2 seeds; latent samples decoded by the autoencoder): identity top-1 / top-5 by the held-out-style "
             f"identity judges, category balanced accuracy by the all-styles category judge (and its share of the judge's "
             f"ceiling), FD/floor per style in the category judge's features (docs/evaluation.md). Seam: the mean luminance "
             f"step across 4-pixel boundaries over the step inside them (dit_model.favicon_vae.seam_ratio), mean over "
             f"the 9 categories of 8 samples each (guidance 4, 50 steps), and the same for the real base images of each "
             f"category; the Aim: within 10% of real (seam vs real 0.9-1.1). s/step: wall clock per training step at "
             f"one thread on the shared 2-core machine (other work running; not comparable between rows). "
             f"{'Not finished yet: ' + ', '.join(pending) + '. ' if pending else ''}"
             f"Run: `bench/latent_study.py run-all` (docs/training.md, 'The latent study').")
    return publish(study.name, "Latent study: pixel vs latent DiT at equal training compute (named emoji)", header, rows,
                   notes, study.results)


def plot(study: Study) -> Path:
    """FD/floor (mean over styles) against training Tflop (every kept checkpoint) and against forward Gflops (the
    checkpoints at the full compute), and identity top-5 against training Tflop."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    results = collect(study)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    colours = dict(zip(ROWS, ["black", "tab:blue", "tab:orange", "tab:green", "tab:red"]))
    for name, e in results["rows"].items():
        pts = sorted(e["points"].values(), key=lambda p: p["step"])
        if not pts:
            continue
        lab = f"{name} ({e['gflops']:.3f} Gflops)"
        style = dict(color=colours[name], marker="s" if e["kind"] == "pixel" else "o", label=lab)
        ax[0].plot([p["tflop"] for p in pts], [p["fd_over_floor_mean"] for p in pts], **style)
        ax[2].plot([p["tflop"] for p in pts], [p["top5"] for p in pts], **style)
        end = [p for p in pts if p["step"] == e["steps"]]
        if end:
            ax[1].scatter([e["gflops"]], [end[0]["fd_over_floor_mean"]], color=colours[name], s=60,
                          marker="s" if e["kind"] == "pixel" else "o", label=name)
            ax[1].annotate(name, (e["gflops"], end[0]["fd_over_floor_mean"]), textcoords="offset points", xytext=(5, 5))
    m = results["meta"]
    if not any(p["step"] == e["steps"] for e in results["rows"].values() for p in e["points"].values()):
        ax[1].text(0.5, 0.5, "no row at the full compute yet", ha="center", va="center", transform=ax[1].transAxes)
    for a in (ax[0], ax[2]):
        a.set_xlim(0, 1.05 * m["tflop_per_row"])
    ax[2].set_ylim(bottom=0)
    ax[0].set(xlabel="training Tflop", ylabel="FD / floor (mean of styles; 1 = real)", yscale="log",
              title="FD/floor against training compute")
    ax[1].set(xlabel="forward Gflops per image", ylabel="FD / floor at the full compute", xscale="log", yscale="log",
              title=f"FD/floor against model Gflops ({m['tflop_per_row']:.0f} Tflop each)")
    ax[2].set(xlabel="training Tflop", ylabel="identity top-5 % (all styles)", title="identity accuracy")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")    # 20, not 2 x 10^1, on the log axes
    for a in ax:
        for axis in (a.xaxis, a.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_formatter(plain)
                axis.set_minor_formatter(plain)
        a.grid(True, which="both", alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.suptitle(f"Latent study (named emoji, guidance {m['guidance']:g}; square: pixels, circles: latents)")
    fig.tight_layout()
    out = study.results / f"{study.name}.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out)
    print(f"saved {shown_path(out)}")
    return out


# ---------------------------------------------------------------- the commands

def status(study: Study) -> None:
    for row in study.rows:
        p = plan(study, row)
        have = ckpt_step(study.run(row) / "ckpt.pt")
        done = [m for m in p["marks"] if eval_path(study, row, m).is_file()]
        print(f"{row:10} {ROWS[row][0]:12} {p['input']:7} {p['gflops']:.4f} Gflops  {p['steps']:6} steps "
              f"({tflop(study, p['gflops'], p['steps']):.1f} Tflop)  trained {have or 0}  evaluated {done or '-'}")


def evaluated(study: Study, row: str, mark: int) -> bool:
    return eval_path(study, row, mark).is_file() and seam_path(study, row, mark).is_file()


def run_all(study: Study) -> None:
    """Every row in order: train it (keeping the checkpoint at each mark), evaluate its final checkpoint, refresh
    the table and plot; then, with every row at the full compute, evaluate the kept checkpoints along the way (an
    evaluation of the pixel model takes about as long as a fifth of its training, so the comparison at equal
    compute comes first). Rerunning it continues where it stopped: kept checkpoints and finished evaluations are
    skipped, a run resumes its ckpt.pt."""
    study.runs.mkdir(parents=True, exist_ok=True)
    for row in study.rows:
        p = plan(study, row)
        if evaluated(study, row, p["steps"]):
            continue
        log(f"{row}: {p['steps']} steps, {tflop(study, p['gflops'], p['steps']):.1f} Tflop, kept at {p['marks']}")
        train(study, row)
        evaluate(study, row, [p["steps"]])
        table(study)
        plot(study)
    for row in study.rows:
        marks = [m for m in plan(study, row)["marks"] if not evaluated(study, row, m)]
        if marks:
            evaluate(study, row, marks)
            table(study)
            plot(study)
    log("all rows trained and evaluated")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", metavar="DIR", help=argparse.SUPPRESS)   # the test: two steps a row, all in DIR
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a row to its compute (resumes its checkpoint)")
    t.add_argument("row", choices=list(ROWS))
    e = sub.add_parser("eval", help="evaluate a row's kept checkpoints not yet evaluated")
    e.add_argument("rows", nargs="+", choices=list(ROWS))
    sub.add_parser("table", help="bench/results/latent-study.md and .json")
    sub.add_parser("plot", help="bench/results/latent-study.png")
    sub.add_parser("status", help="each row's steps, compute, progress")
    sub.add_parser("run-all", help="train and evaluate every unfinished row in order, then table and plot")
    a = p.parse_args(argv)
    study = smoke(a.smoke) if a.smoke else Study()
    if a.cmd == "train":
        train(study, a.row)
    elif a.cmd == "eval":
        for r in a.rows:
            evaluate(study, r)
    elif a.cmd == "table":
        table(study)
    elif a.cmd == "plot":
        plot(study)
    elif a.cmd == "status":
        status(study)
    else:
        run_all(study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
