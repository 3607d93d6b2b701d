"""Result tables: benchmarks and evaluations print a table and save it under bench/results/; and the model's own
benchmark, `ditweb bench train` (bench_train: whole training steps per precision, each case in a fresh process).
The `ditweb bench TARGET` verb that runs them is ditweb/bench.py (tooling above the runtimes); torch is imported
inside the functions, so the result-table helpers stay importable without it."""
from __future__ import annotations

import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def shown_path(path) -> str:
    """A file as a result table names it: relative to the repository where it lies inside it, else its name alone
    (a table never carries a machine path)."""
    p = Path(path).resolve()
    return p.relative_to(REPO).as_posix() if p.is_relative_to(REPO) else p.name


def format_table(header: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in header]] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def save_text(path: Path, text: str) -> Path:
    """A result table, written atomically (a half-written table never replaces a good one)."""
    from .checkpoint import atomic_write
    return atomic_write(path, lambda f: f.write(text.encode()), "the result table", ValueError)


def publish(name: str, title: str, header: list[str], rows: list[list], notes: str, out_dir) -> Path:
    """Print a result table with when and where it was measured, and save it as OUT_DIR/NAME.md."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    text = (f"# {title}\n\n{stamp}, {platform.machine()}, {platform.processor() or platform.platform()}\n\n"
            f"{format_table(header, rows)}\n\n{notes}\n")
    print(text)
    path = save_text(Path(out_dir) / f"{name}.md", text)
    print(f"saved {path}")
    return path


# ---------------------------------------------------------------- `ditweb bench train`

BENCH_CASES = [("Favicon-T/2", 32), ("Favicon-T/4", 32), ("Favicon-S/2", 32), ("Favicon-N/2", 32), ("DiT-S/2", 8)]
BENCH_MODES = [("f32", "f32", False), ("bf16", "bf16", False), ("bf16 + compile", "bf16", True)]


def _bench_case(preset: str, batch: int, warmup: int, min_steps: int, min_seconds: float, device: str,
                precision: str, compile: bool, queue):
    """In a fresh process (so peak memory and compiled code are this case's): time full training steps."""
    import resource

    import torch

    from .model import preset_config
    from .randomness import make_batch
    from .trainer import Trainer
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
    import json
    import multiprocessing as mp
    import os
    import sys

    import torch

    from .data import TWEMOJI
    from .model import forward_gflops, preset_config
    from .precision import CPU_BF16_FLAGS, auto_precision, cpu_flags
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
