"""The full fuzz corpus of issue 24: tampered bundles, named bundles, decoder/ folders and int4 bundles (packed
weights, family "packed": bad nibbles and steps, entries, renamed tensors) through both verifiers
(runtime_py/verify.py in-process, web/bundle.js + web/decode.js in node), case by case.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz.py                  # 2,000 cases per kind (8,000 per runtime)
    OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz.py --cases 500 --kinds bundle
    OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz.py --gpu 200    # + 200 accepted bundles (and int4 bundles) sampled in wgpu-py

The corpus is tests/_fuzz_corpus.py (the families: manifest edits and bytes, safetensors headers, WGSL edits with
updated hashes, numbers re-encoded, file names, buffer reach, NaN bits, byte-order marks; vocabulary files for named
bundles), the same mechanism the CI subset of tests/test_fuzz_bundles.py runs. Prints one table row per kind and
family (cases, rejected by Python, rejected by JS, disagreements, Python tracebacks, JS crashes) and writes
bench/results/fuzz.md. Exit status 1 on any disagreement or crash."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def table(results: dict) -> list[str]:
    """Markdown rows: per kind and family, then the totals."""
    lines = ["| kind | family | cases | rejected (Python) | rejected (JS) | disagreements | Python tracebacks | JS crashes |",
             "|---|---|---|---|---|---|---|---|"]
    total = [0] * 6
    for kind, r in results.items():
        fams = {}
        for _, fam, py, js in r["rows"]:
            row = fams.setdefault(fam, [0] * 6)
            row[0] += 1
            row[1] += py != "ok"
            row[2] += js != "ok"
            row[3] += (py == "ok") != (js == "ok")
            row[4] += py.startswith("CRASH")
            row[5] += not (js == "ok" or js.startswith("BundleError: "))
        for fam, row in sorted(fams.items()):
            lines.append(f"| {kind} | {fam} | " + " | ".join(str(v) for v in row) + " |")
            total = [a + b for a, b in zip(total, row)]
    lines.append("| **all** | | " + " | ".join(f"**{v}**" for v in total) + " |")
    return lines


def gpu_pass(rows: list, limit: int) -> dict:
    """The first `limit` cases that both verifiers accepted, loaded and sampled (one DDIM step, plan "auto": every
    candidate compiled and timed) in wgpu-py: {"ok", "refused" (one-line GPURefusedError), "error" (another
    DitwebError), "traceback": [..]}. The aim: every accepted case runs."""
    from ditformat.errors import DitwebError
    from runtime_py.bundle import Bundle
    from runtime_py.gpu import GPURefusedError, get_gpu
    gpu = get_gpu(verbose=False)
    out = {"ok": 0, "refused": [], "error": [], "traceback": []}
    for folder, fam, _, _ in [r for r in rows if r[2] == "ok" and r[3] == "ok"][:limit]:
        try:
            x = Bundle.load(folder, gpu=gpu, plan="auto").sample(0, steps=1, n=1)
            out["ok"] += x.shape[0] == 1
        except GPURefusedError as e:
            out["refused"].append((fam, str(e)[:200]))
        except DitwebError as e:
            out["error"].append((fam, f"{type(e).__name__}: {str(e)[:200]}"))
        except Exception as e:                  # noqa: BLE001 (what the pass is there to find)
            out["traceback"].append((fam, f"{type(e).__name__}: {str(e)[:200]}"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000, help="cases per kind (default 2000)")
    ap.add_argument("--kinds", default="bundle,named,decoder,int4",
                    help="comma-separated: bundle, named, decoder, int4 (a bundle with packed weights)")
    ap.add_argument("--gpu", type=int, default=0, help="also load and sample this many accepted bundles in wgpu-py "
                                                         "(of each kind bundle and int4)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fuzz.md"))
    args = ap.parse_args()
    import _fuzz_corpus as corpus
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in corpus.KINDS]
    if unknown or args.cases < 1:
        ap.error(f"unknown kind(s) {unknown}; choose from {sorted(corpus.KINDS)}" if unknown else "--cases must be >= 1")
    tmp = Path(tempfile.mkdtemp(prefix="ditweb-fuzz-"))
    results, seconds, gpu = {}, {}, None
    try:
        for kind in kinds:
            t0 = time.perf_counter()
            (tmp / f"good-{kind}").mkdir()
            (tmp / kind).mkdir()
            good = corpus.build_good(kind, tmp / f"good-{kind}")
            results[kind] = corpus.run_corpus(kind, good, tmp / kind, args.cases)
            seconds[kind] = time.perf_counter() - t0
            print(f"{kind}: {len(results[kind]['rows'])} cases in {seconds[kind]:.0f} s", file=sys.stderr)
        if args.gpu and ("bundle" in results or "int4" in results):
            t0 = time.perf_counter()
            os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")      # the plans tuned here stay out of ~/.cache
            for k in [k for k in ("bundle", "int4") if k in results]:       # each kind's first accepted cases
                one = gpu_pass(results[k]["rows"], args.gpu)
                gpu = one if gpu is None else {n: gpu[n] + one[n] for n in gpu}
            seconds["gpu"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = table(results)
    bad = {k: r["disagree"] + r["py_crash"] + r["js_crash"] for k, r in results.items()}
    examples = [f"* {k}: {row[1]}: Python `{row[2][:200]}`, JS `{row[3][:200]}`" for k, rows in bad.items() for row in rows[:5]]
    text = "\n".join(["# Fuzz corpus: both verifiers, case by case (bench/fuzz.py)", "",
                      f"`OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz.py --cases {args.cases} --kinds {','.join(kinds)}`; "
                      + ", ".join(f"{k} {s:.0f} s" for k, s in seconds.items()) + " on this machine's CPUs.", "",
                      *lines, "", *(["Disagreements and crashes:", "", *examples] if examples else
                                    ["No disagreement, no traceback, no JS crash."]), "", *gpu_lines(gpu)])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print("\n".join(lines))
    print(f"wrote {Path(args.out).relative_to(ROOT) if Path(args.out).is_relative_to(ROOT) else args.out}")
    print("\n".join(gpu_lines(gpu)))
    return 1 if any(bad.values()) or (gpu and (gpu["refused"] or gpu["traceback"])) else 0


def gpu_lines(gpu) -> list[str]:
    if not gpu:
        return []
    n = gpu["ok"] + sum(len(gpu[k]) for k in ("refused", "error", "traceback"))
    lines = [f"Accepted bundles then run in wgpu-py (`--gpu`, one DDIM step, plan auto): {n} loaded and sampled: {gpu['ok']} "
             f"ran, {len(gpu['refused'])} refused by the GPU (one-line GPURefusedError), {len(gpu['error'])} other "
             f"one-line errors, {len(gpu['traceback'])} tracebacks.", ""]
    counts: dict[str, int] = {}
    for k in ("refused", "error", "traceback"):
        for fam, msg in gpu[k]:
            key = f"{k}, family {fam}, {msg.split(':')[0]}"
            counts[key] = counts.get(key, 0) + 1
    return lines + [f"* {n} x {key}" for key, n in sorted(counts.items())] + [""] + \
        [f"* {k}: {fam}: {msg}" for k in ("refused", "error", "traceback") for fam, msg in gpu[k][:3]] + [""]


if __name__ == "__main__":
    sys.exit(main())
