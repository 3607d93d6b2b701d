"""The WebAssembly path of the shipped model in headless Chromium on a cross-origin isolated page (COOP + COEP,
as `ditweb serve`): ms per CFG step at 1 and N threads for the f16 and the int8 bundle, each with the plain and
the relaxed SIMD kernels (where Chromium has relaxed SIMD; timed in turns, so background load hits every variant
alike), and the time to the first favicon from navigation to the last of
25 steps, cold (a fresh browser profile) and warm (the same profile again: the Cache API holds the verified
files), broken down into the bundle's fetch + verify, the kernels' fetch + compile, the worker's start and
weight unpacking, the steps. Not a test: the machine is shared, so every table carries the load average.

    .venv/bin/python bench/web/threads.py [--ckpt models/default.safetensors | --bundles bundles/named,bundles/named-int8]
                                          [--threads 2] [--reps 15]
                                          [--simd plain,relaxed] [--favicon-simd auto]

Writes bench/results/web-threads.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dit_model.bench import format_table, save_text, shown_path  # noqa: E402
from webserve.browser import chromium, local_server  # noqa: E402

ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
RESULTS = REPO / "bench" / "results" / "web-threads.md"


def bundle_bytes(b: Path) -> int:
    return sum(f.stat().st_size for f in b.rglob("*") if f.is_file())


def steps_table(ctx, url: str, threads: int, reps: int, n: int, simds: list[str]) -> list[list]:
    variants = [{"label": f"{d}, {t} thread{'s' if t > 1 else ''}, {s}", "bundle": f"/{d}/", "runtime": "wasm",
                 "threads": t, "simd": s, "dtype": d}
                for d in ("f16", "int8") for t in sorted({1, threads}) for s in simds]
    page = ctx.new_page()
    page.set_default_timeout(900_000)
    page.goto(url)
    page.wait_for_selector('body[data-state="ready"]', state="attached")
    res = page.evaluate("cfg => window.runBench(cfg)", {"variants": variants, "N": n, "reps": reps, "onnx": None})
    page.close()
    base = {d: res["ours"][f"{d}, 1 thread, {simds[0]}"]["stepMs"] for d in ("f16", "int8")}
    rows = []
    for v in variants:
        o = res["ours"][v["label"]]
        rows.append([v["label"], o["threads"], o["simd"], 2 * n, round(o["firstMs"], 1), round(o["stepMs"], 1),
                     round(min(o["times"]), 1), f"{base[v['dtype']] / o['stepMs']:.2f}x", " ".join(f"{t:.1f}" for t in o["times"])])
    return rows


def first_favicon(url: str, bundle: str, threads: int, steps: int, simd: str) -> list[dict]:
    """Cold (fresh profile) then warm (same profile, a new page)."""
    out = []
    with chromium(gpu=False) as ctx:
        for cache in ("cold", "warm"):
            page = ctx.new_page()
            page.set_default_timeout(900_000)
            page.goto(url)
            page.wait_for_selector('body[data-state="ready"]', state="attached")
            r = page.evaluate("cfg => window.firstFavicon(cfg)", {"bundle": bundle, "runtime": "wasm", "threads": threads,
                                                                   "simd": simd, "steps": steps, "useCache": True})
            page.close()
            out.append({"cache": cache, **r})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(REPO / "models" / "default.safetensors"))
    ap.add_argument("--bundles", help="an f16 and an int8 bundle folder to time as they are instead of exporting --ckpt "
                                      "(e.g. bundles/named,bundles/named-int8: the page's latent model with its decoder)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--n", type=int, default=1, help="images per step (batch rows 2N)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--simd", default="plain,relaxed", help="the kernels of the step table, the first as its base")
    ap.add_argument("--favicon-simd", default="auto", help="the kernels of the first-favicon runs (auto: as a visitor)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.bundles:     # shipped bundles as they are (a latent bundle carries its decoder: the first favicon decodes)
        import json
        bundles = {json.loads((Path(b) / "manifest.json").read_text())["dtype"]: Path(b) for b in args.bundles.split(",")}
        if sorted(bundles) != ["f16", "int8"]:
            raise SystemExit(f"--bundles: an f16 and an int8 bundle, got {sorted(bundles)}")
    else:
        from dit_model.checkpoint import load_model
        from export.bundle import export_bundle
        model, meta = load_model(args.ckpt)
        work = Path(tempfile.mkdtemp(prefix="ditweb-threads-"))
        bundles = {d: export_bundle(model, work / d, d, meta["class_names"], vocab=meta.get("vocab")) for d in ("f16", "int8")}
    routes = {"/": REPO / "bench" / "web", "/web/": REPO / "web", **{f"/{d}/": b for d, b in bundles.items()}}
    load0 = os.getloadavg()
    with local_server(routes, headers=ISOLATED) as url:
        with chromium(gpu=False) as ctx:
            step_rows = steps_table(ctx, url, args.threads, args.reps, args.n, args.simd.split(","))
        fav = []
        for d in ("f16", "int8"):
            for t in sorted({1, args.threads}):
                for r in first_favicon(url, f"/{d}/", t, args.steps, args.favicon_simd):
                    fav.append([d, r["threads"], r["simd"], r["cache"], round(r["total"]), round(r["navToStart"]), round(r["fetchVerifyMs"]),
                                f"{round(r['compileMs'])} / {round(r['kernelsMs'])}", round(r["initMs"]), round(r["stepsMs"]),
                                f"{r['downloaded'] / 1e6:.2f} / {r['cached'] / 1e6:.2f}"])
    load1 = os.getloadavg()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    sizes = ", ".join(f"{d} bundle {bundle_bytes(b) / 1e6:.2f} MB" for d, b in bundles.items())
    text = (f"# WebAssembly path: threads, int8, time to the first favicon\n\n"
            f"{stamp}, headless Chromium, {os.cpu_count()} cores (shared); load average {load0[0]:.2f} at the start, "
            f"{load1[0]:.2f} at the end. Model {shown_path(args.ckpt) if not args.bundles else 'the bundles ' + args.bundles} ({sizes}).\n"
            f"Command: `.venv/bin/python bench/web/threads.py {'--bundles ' + args.bundles + ' ' if args.bundles else ''}"
            f"--threads {args.threads} --reps {args.reps} --n {args.n} "
            f"--steps {args.steps} --simd {args.simd} --favicon-simd {args.favicon_simd}`\n\n"
            "## ms per CFG step (step_begin + forward + step_end, timed from the page)\n\n"
            + format_table(["bundle, threads asked, SIMD asked", "threads that ran", "SIMD that ran", "batch rows", "first step ms", "median ms/step", "fastest ms/step",
                            f"speed-up over 1 thread {args.simd.split(',')[0]}", "every step ms"], step_rows)
            + "\n\n## Time to the first favicon (navigation to the last step)\n\n"
            + format_table(["bundle", "threads", "SIMD", "cache", "total ms", "navigation to script", "fetch + verify",
                            "waited for the kernels / their fetch + compile", "worker init + unpack", f"{args.steps} steps",
                            "MB downloaded / from the Cache API"], fav)
            + "\n\nThe kernels are fetched and compiled, and the worker started, while the bundle downloads: the "
              "wait column is what remained after the files were verified. The page is bench/web/index.html (its module loads before the clock of the other columns starts: "
              "'navigation to script'). Cold: a fresh browser profile; warm: a second page of the same profile "
              "(the Cache API holds the verified bundle files). The local server adds no network latency. On 2 "
              "shared cores another process's load lands on one of the threads: compare rows of one run only. "
              "SIMD: plain = ditweb-kernels(-mt).wasm, relaxed = ditweb-kernels(-mt)-relaxed.wasm (fused "
              "multiply-add in the matmul, attention and conv inner loops).\n")
    print(text)
    print(f"saved {save_text(Path(args.out), text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
