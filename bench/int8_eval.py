"""What `--dtype int8` costs on the shipped model, measured by the eval: `ditweb eval` (the judge's class accuracy,
the Frechet distance in judge features against the real-vs-real floor) of the weights an f16 bundle and an int8
bundle of the same checkpoint hold, and of the checkpoint itself for scale; then the bundles themselves run on
the WebAssembly path (node, web/wasm-runtime.js, the page's worker engine) against torch at those weights, so the
eval's numbers are the bundles' numbers.

    .venv/bin/python bench/int8_eval.py                  # the page's settings: 25 DDIM steps, cfg 4, 32 per class
    .venv/bin/python bench/int8_eval.py --n-per-class 16 --scales 2,4

`ditweb eval` samples a checkpoint with torch; a bundle's weights are a checkpoint too: int8 Linear weights
dequantised (q * scale per output channel, export's quantize_linear), every other tensor rounded to f16, as the
bundle stores them (export.bundle.bundle_tensors). The int8 kernels (op_matmul_q8, matmul_q8.wgsl.j2) compute
(a . q) * scale in f32, within ~1e-5 of the output's range of torch at these weights (tests/test_wasm.py), far
below anything the eval can see. Writes bench/results/int8-eval.md.

A named model (one with a label vocabulary, e.g. models/named.safetensors) gets `ditweb eval`'s named evaluation
(identity top-1/top-5 per style, category accuracy, FD per style against its floor, diversity, the hippo) at
scripts/ship_named.sh's settings (--seeds 2, 50 steps, --scales 4), so its eval-named.json can stand in for the
checkpoint's row; the table, with a verdict of int8 against that row within the eval's spread, goes to
bench/results/int8-eval-named.md, and the bundle check draws the hippo in every style:

    .venv/bin/python bench/int8_eval.py --ckpt models/named.safetensors --reference-json bench/results/eval-named.json
    .venv/bin/python bench/int8_eval.py --ckpt models/named.safetensors --dtypes int8 --no-f32   # int8 alone

`--dtypes int4` measures the int4 bundle the same way (its block weights q4 * k per group of 32 inputs, unpacked to
int8 exactly as the runtimes unpack them: ditformat/packed.py); the verdict is then int4's, written to
bench/results/int4-eval-named.md (int4-eval.md for a category model), leaving int8's files as they are:

    .venv/bin/python bench/int8_eval.py --ckpt models/named.safetensors --dtypes int4 --no-f32 \
        --reference-json bench/results/eval-named.json"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NODE = ROOT / "tests" / "_wasm_node.mjs"     # the engine driver the wasm tests use: {cmd: "sample", bundle, opts}
CHECK_HEADER = ["comparison", "PSNR", "bundle bytes"]   # the bundles on the WebAssembly path, one row per comparison

from dit_model.bench import format_table, save_text, shown_path  # noqa: E402  (after the path insert)
from dit_model.evaluate import FLOOR_PAIRS                # noqa: E402
from dit_model.named_eval import HIPPO_SEEDS              # noqa: E402
from ditformat.packed import QUANTISED_DTYPES as QUANTISED  # noqa: E402  (the dtypes a verdict is about)


def judged(dtypes) -> str:
    """The quantised dtype whose verdict the table gives (int4 where both are evaluated), named in its file."""
    return next((d for d in ("int4", "int8") if d in dtypes), "int8")


def stored_weights(model, dtype: str) -> dict:
    """The model's state dict at the values a `dtype` bundle holds, as float32 torch tensors (int4: the packed
    weights unpacked to their int8 values, as every runtime does, then q * scale)."""
    import torch
    from ditformat.packed import steps_tensor, unpack_q4k
    from export.bundle import bundle_tensors
    stored = bundle_tensors(model, dtype)
    sd = {}
    for k, v in model.state_dict().items():
        w = stored[k]
        if w.dtype == np.uint8 and steps_tensor(k) in stored:
            w = unpack_q4k(w, stored[steps_tensor(k)], k)
        w = np.asarray(w, np.float64)
        scale = stored.get(k[: -len(".weight")] + ".scale") if k.endswith(".weight") else None
        if scale is not None:
            w = w * np.asarray(scale, np.float64)[:, None]
        sd[k] = torch.from_numpy(w.reshape(tuple(v.shape)).astype(np.float32))
    return sd


def write_checkpoint(ckpt: Path, sd: dict, out: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out), metadata=meta)


def run_eval(ckpt: Path, args, work: Path, named: bool) -> dict:
    """`ditweb eval --json` of a checkpoint at the script's settings: a named model by --seeds per request (its
    identity eval), a category model by --n-per-class."""
    js = work / (ckpt.stem + ".json")
    cmd = [sys.executable, "-m", "ditweb", "eval", str(ckpt), "--steps", str(args.steps), "--scales", args.scales]
    if named:
        cmd += ["--seeds", str(args.seeds)]
        for flag in ("styles", "hippo_seeds", "floor_pairs"):      # quick runs only; ship_named.sh passes none
            if getattr(args, flag) is not None:
                cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    else:
        cmd += ["--n-per-class", str(args.n_per_class)]
    cmd += ["--json", str(js), "--out", str(work / ckpt.stem)]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    return json.loads(js.read_text())


def reference_mismatch(ref: dict, args, meta) -> str | None:
    """What differs between a named eval's --json result and this run's settings (None: nothing)."""
    m = ref.get("meta", {})
    vocab = meta["vocab"]
    styles = [s.strip() for s in args.styles.split(",")] if args.styles else list(vocab.names[vocab.level("style")])
    hippo = ref.get("hippo") or [{}]
    want = {"scales": sorted(float(s) for s in args.scales.split(",")), "seeds": args.seeds, "steps": args.steps,
            "styles": sorted(styles), "model step": meta.get("step"),
            "hippo seeds": args.hippo_seeds or HIPPO_SEEDS, "floor pairs": args.floor_pairs or FLOOR_PAIRS}
    got = {"scales": sorted({float(h.get("cfg", "nan")) for h in hippo}), "seeds": m.get("seeds per request"),
           "steps": m.get("steps"), "styles": sorted(ref.get("styles", [])), "model step": m.get("step"),
           "hippo seeds": hippo[0].get("seeds"), "floor pairs": ref.get("floor_pairs")}
    bad = [f"{k} {got[k]} (this run: {want[k]})" for k in want if got[k] != want[k]]
    return ", ".join(bad) or None


def reference_result(path: str, args, meta) -> dict:
    try:
        ref = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"int8_eval: --reference-json {path}: does not read as JSON ({e})") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("rows"), list):
        raise SystemExit(f"int8_eval: --reference-json {path}: not a `ditweb eval --json` result of a named model")
    bad = reference_mismatch(ref, args, meta)
    if bad:
        raise SystemExit(f"int8_eval: --reference-json {path}: not this run's eval: {bad}")
    return ref


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.clip((a + 1) / 2, 0, 1), np.clip((b + 1) / 2, 0, 1)
    return float(10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-30)))


def bundle_requests(meta) -> tuple[dict, list[tuple], object]:
    """What the bundle check draws: (export_bundle's label arguments, [(torch label, node opts, seed)], the null
    label). A category model: one image per class, seed c. A named model: the hippo in every style, seed k."""
    vocab = meta.get("vocab")
    if vocab is None:
        names = meta["class_names"]
        return {"class_names": names}, [(c, {"classIds": [c]}, c) for c in range(len(names))], None
    from dit_model.identity import HIPPO
    hippo = list(vocab.codes).index(HIPPO)
    null = list(vocab.sizes)
    labels = [list(vocab.label(0, hippo, style=s).ids) for s in vocab.names[vocab.level("style")]]
    return {"vocab": vocab}, [(ids, {"classIds": [ids], "nullLabel": null}, k) for k, ids in enumerate(labels)], null


def bundle_check(model, meta, args, work: Path) -> list[list]:
    """The images of bundle_requests at the eval's first scale from each bundle on the wasm path, against torch
    sampling at the bundle's weights, and int8 against f16 on the wasm path."""
    from ditformat.guidance import Guide
    from dit_model.sample import sample_images
    from export.bundle import export_bundle
    cfg = meta["config"]
    labels, requests, null = bundle_requests(meta)
    scale = float(args.scales.split(",")[0])
    wasm, ref, size = {}, {}, {}
    for dtype in args.dtypes:
        bundle = export_bundle(model, work / f"bundle-{dtype}", dtype, **labels)
        twin = type(model)(cfg).eval()
        twin.load_state_dict(stored_weights(model, dtype))
        imgs, refs = [], []
        for label, node_opts, seed in requests:
            opts = {**node_opts, "seed": seed, "steps": args.steps, "cfg": scale, "sampler": "ddim"}
            r = subprocess.run(["node", str(NODE)], input=json.dumps({"cmd": "sample", "bundle": str(bundle), "opts": opts}),
                               capture_output=True, text=True, check=True)
            imgs.append(np.asarray(json.loads(r.stdout)["x"], np.float32))
            refs.append(sample_images(twin, in_channels=cfg.in_channels, input_size=cfg.input_size,
                                      num_classes=cfg.num_classes, class_ids=[label], guide=Guide(scale=scale),
                                      steps=args.steps, seed=seed, prediction=cfg.prediction, null=null).numpy().reshape(-1))
        wasm[dtype], ref[dtype] = np.concatenate(imgs), np.concatenate(refs)
        size[dtype] = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    rows = [[f"{d} bundle, wasm path vs torch at its weights", f"{psnr(wasm[d], ref[d]):.1f} dB", f"{size[d] / 1e6:.2f} MB"]
            for d in args.dtypes]
    for d in [d for d in QUANTISED if d in wasm and "f16" in wasm]:
        rows.append([f"{d} vs f16 bundle, both on the wasm path", f"{psnr(wasm[d], wasm['f16']):.1f} dB", "-"])
    return rows


def category_table(results: dict, checks: list[list], args, load, seconds: float) -> str:
    rows = []
    for name, r in results.items():
        for w in r["rows"]:
            rows.append([name, f"{w['scale']:g}", w["n"], f"{w['balanced_accuracy']:.1f}", f"{w['of_ceiling']:.0f}%",
                         f"{w['fd']:.2f} ± {w['fd_std']:.2f}", f"{w['fd_excess']:.2f}", f"{w['near_median']:.3f}"])
    first = next(iter(results.values()))
    fl = first["floor"]
    q = judged(args.dtypes)
    lines = [f"# {q} weights on the shipped model: the eval's verdict", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}, `.venv/bin/python bench/int8_eval.py --n-per-class {args.n_per_class} "
             f"--steps {args.steps} --scales {args.scales} --dtypes {','.join(args.dtypes)}`; load average at start {load[0]:.2f}, {seconds:.0f} s in all", "",
             format_table(["weights", "cfg", "n", "balanced class accuracy %", "of ceiling", "FD (judge features)",
                           "FD - floor", "nearest-copy RMSE median"], rows)]
    lines += ["", f"Judge ceiling {first['ceiling']:.1f}% (held-out real images); real-vs-real floor FD "
              f"{fl['mean']:.2f} ± {fl['std']:.2f} ({fl['pairs']} pairs). Same seeds for every row (class c: seed c), "
              f"{args.steps} DDIM steps, as `ditweb eval`. The f16 and int8 rows are `ditweb eval` of the weights those "
              "bundles hold (int8: q * scale per output channel, the rest f16; int4: its block weights q4 * k per group "
              "of 32 inputs, unpacked to int8, then the same).", "",
              "The bundles themselves on the WebAssembly path (one image per class, seed c, the first scale):", "",
              format_table(CHECK_HEADER, checks)]
    return "\n".join(lines) + "\n"


def named_rows(name: str, r: dict) -> list[list]:
    """One table row per (scale, style) of a named eval's result, and its all-styles row."""
    hippo = {(h["cfg"], h["style"]): h for h in r["hippo"]}
    rows = []
    for w in r["rows"]:
        scale = float(w["label"].split()[-1])
        if w["style"] == "all":
            hs = [h for (c, _), h in hippo.items() if c == scale]
            cat, fd = f"{w['category_of_ceiling']:.0f}%", "-"
            hip = f"{sum(h['top5'] for h in hs)}/{sum(h['seeds'] for h in hs)}"
        else:
            h = hippo[(scale, w["style"])]
            cat = f"{100 * w['category_balanced_accuracy'] / r['category_ceiling']:.0f}%"
            fd, hip = f"{w['fd_over_floor']:.2f}x ({w['fd']:.2f} ± {w['fd_std']:.2f})", f"{h['top5']}/{h['seeds']}"
        rows.append([name, f"{scale:g}", w["style"], w["n"], f"{w['top1']:.1f}", f"{w['top5']:.1f}", cat, fd,
                     f"{w['diversity']:.3f}", hip])
    return rows


def binomial_se(p_a: float, n_a: int, p_b: float, n_b: int) -> float:
    """Standard error (percentage points) of the difference of two rates in % over n_a and n_b samples, as if
    independent (the rows share seeds, so this overstates the noise of their difference)."""
    p = (p_a * n_a + p_b * n_b) / (n_a + n_b) / 100
    return 100 * math.sqrt(max(p * (1 - p), 1e-12) * (1 / n_a + 1 / n_b))


def verdict(results: dict, ref_name: str, q: str = "int8") -> list[str]:
    """q (int8 or int4) against the reference row at every scale: within 2 standard errors (identity top-5 and
    category accuracy, binomial over the row's n) or within 2 x the eval's FD ± (per style)."""
    out = []
    a_rows, b_rows = results[q]["rows"], results[ref_name]["rows"]
    for a in a_rows:
        b = next(w for w in b_rows if (w["label"], w["style"]) == (a["label"], a["style"]))
        checks = [("identity top-5", a["top5"], b["top5"], 2 * binomial_se(a["top5"], a["n"], b["top5"], b["n"]))]
        if a["style"] == "all":
            checks.append(("category %", a["category_balanced_accuracy"], b["category_balanced_accuracy"],
                           2 * binomial_se(a["category_balanced_accuracy"], a["n"], b["category_balanced_accuracy"], b["n"])))
        else:
            checks.append(("FD", a["fd"], b["fd"], 2 * max(a["fd_std"], b["fd_std"])))
        for what, x, y, spread in checks:
            word = "within" if abs(x - y) <= spread else "OUTSIDE"
            out.append(f"{a['label']} {a['style']} {what}: {q} {x:.2f} vs {y:.2f} (diff {x - y:+.2f}, spread "
                       f"± {spread:.2f}: {word})")
    bad = [line for line in out if line.endswith("OUTSIDE)")]
    head = (f"**Verdict: {q} is within the eval's spread of {ref_name} on every measure.**" if not bad else
            f"**Verdict: {q} differs from {ref_name} beyond the eval's spread on {len(bad)} of {len(out)} measures.**")
    return [head, ""] + [f"- {line}" for line in out]


def named_table(results: dict, checks: list[list] | None, args, load, seconds: float) -> str:
    q = judged(args.dtypes)
    ref_name = next((n for n in results if n not in QUANTISED and n != "f16"), "f16")
    cmd = (f"--ckpt {shown_path(args.ckpt)} --seeds {args.seeds} --steps {args.steps} --scales {args.scales} "
           f"--dtypes {','.join(args.dtypes)}" + (f" --reference-json {shown_path(args.reference_json)}"
                                                  if args.reference_json else ""))
    lines = [f"# {q} weights on the named model: the eval's verdict", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}, `.venv/bin/python bench/int8_eval.py {cmd}`; load average at start "
             f"{load[0]:.2f}, {seconds:.0f} s in all", "",
             format_table(["weights", "cfg", "style", "n", "identity top-1 %", "identity top-5 %",
                           "category, % of ceiling", "FD / floor (FD ± over reference sets)", "diversity", "hippo top-5"],
                          [row for name, r in results.items() for row in named_rows(name, r)])]
    first = next(iter(results.values()))
    lines += ["", f"`ditweb eval` (named: identity judges per held-out style, category judge ceiling "
              f"{first['category_ceiling']:.1f}%, FD per style against its real-vs-real floor, hippo over "
              f"{first['hippo'][0]['seeds']} seeds per style); same seeds for every row, {args.steps} DDIM steps, "
              f"{args.seeds} seeds per request. The f16, int8 and int4 rows are the eval of the weights those bundles "
              "hold (int8: q * scale per output channel, the rest f16; int4: its block weights q4 * k per group of 32 "
              "inputs, unpacked to int8, then the same)"
              + (f"; the checkpoint row is {shown_path(args.reference_json)}." if args.reference_json else "."), ""]
    if q in results and ref_name in results:
        lines += verdict(results, ref_name, q) + [""]
        lines += ["Spread: identity top-5 and category accuracy, 2 binomial standard errors of the difference of two "
                  "rates over each row's n images (treated as independent; the rows share seeds, so this overstates "
                  "the noise); FD, 2 x the larger of the two rows' ± (std over the eval's real reference sets).", ""]
    if checks is None:
        lines += ["The bundles on the WebAssembly path: not checked (--no-bundle-check)."]
    else:
        lines += ["The bundles themselves on the WebAssembly path (the hippo in every style, seed k, the first scale):",
                  "", format_table(CHECK_HEADER, checks)]
    return "\n".join(lines) + "\n"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(ROOT / "models" / "default.safetensors"))
    ap.add_argument("--n-per-class", type=int, default=32, help="a category model: samples per class")
    ap.add_argument("--seeds", type=int, default=2, help="a named model: seeds per request (scripts/ship_named.sh's 2)")
    ap.add_argument("--steps", type=int, help="DDIM steps (default: 25 for a category model, as the page; 50 for a "
                                              "named model, as scripts/ship_named.sh)")
    ap.add_argument("--scales", default="4")
    ap.add_argument("--dtypes", default="f16,int8", help="the bundle weights to evaluate, comma-separated, of f16, "
                                                          "int8, int4 (the verdict and file: int4's where it is given)")
    ap.add_argument("--reference-json", help="a named model: an existing `ditweb eval --json` result of the checkpoint "
                                             "at the same scales/seeds/steps (e.g. bench/results/eval-named.json), "
                                             "the reference row instead of evaluating the checkpoint again")
    ap.add_argument("--styles", help="a named model, quick runs: only these styles (default: all)")
    ap.add_argument("--hippo-seeds", type=int, help=f"a named model, quick runs (default {HIPPO_SEEDS})")
    ap.add_argument("--floor-pairs", type=int, help=f"a named model, quick runs (default {FLOOR_PAIRS})")
    ap.add_argument("--no-f32", action="store_true", help="skip the checkpoint's own (f32) row")
    ap.add_argument("--no-bundle-check", action="store_true", help="skip the bundles on the WebAssembly path")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for the table")
    args = ap.parse_args()
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not args.dtypes or any(d not in ("f16",) + QUANTISED for d in args.dtypes) or len(set(args.dtypes)) < len(args.dtypes):
        ap.error(f"--dtypes: f16, int8 and/or int4, comma-separated (got {','.join(args.dtypes)!r})")
    return args


def main():
    args = parse_args()
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from dit_model.checkpoint import load_model
    model, meta = load_model(args.ckpt)
    model = model.float().eval()
    named = meta.get("vocab") is not None
    if args.steps is None:
        args.steps = 50 if named else 25
    if args.reference_json and not named:
        raise SystemExit("int8_eval: --reference-json is for a named model (a model with a label vocabulary)")
    reference = reference_result(args.reference_json, args, meta) if args.reference_json else None
    work = Path(tempfile.mkdtemp(prefix="ditweb-int8-eval-"))
    load = os.getloadavg()
    t0 = time.time()
    results = {}
    for dtype in args.dtypes:
        path = work / f"weights-{dtype}.safetensors"
        write_checkpoint(Path(args.ckpt), stored_weights(model, dtype), path)
        results[dtype] = run_eval(path, args, work, named)
    if reference is not None:
        results["f32 (checkpoint, --reference-json)"] = reference
    elif not args.no_f32:
        results["f32 (checkpoint)"] = run_eval(Path(args.ckpt), args, work, named)
    checks = None if args.no_bundle_check else bundle_check(model, meta, args, work)
    if named:
        text, name = named_table(results, checks, args, load, time.time() - t0), f"{judged(args.dtypes)}-eval-named.md"
    else:
        text, name = category_table(results, checks or [], args, load, time.time() - t0), f"{judged(args.dtypes)}-eval.md"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"saved {save_text(out / name, text)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
