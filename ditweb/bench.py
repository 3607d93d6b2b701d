"""`ditweb bench TARGET`: benchmarks print a table and save it under bench/results/. Never tests.
Tooling above the runtimes: a target may use torch, the exporter and the wgpu runtime together."""
from __future__ import annotations

import importlib

from dit_model.bench import RESULTS, publish
from export.cli import add_benchmark_model_options, check_dtypes

# target -> "module:function(args)"; each returns (title, header, rows, notes)
TARGETS = {
    "train": "dit_model.bench:bench_train",
    "kernels": "runtime_py.bench:bench_kernels",
    "step": "runtime_py.bench:bench_step",
}
STEP_DTYPES = ("f32", "f16")          # the weight dtypes `bench step` times


def register(sub):
    p = sub.add_parser("bench", help="benchmarks: " + ", ".join(TARGETS))
    p.add_argument("target", choices=list(TARGETS))
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    p.add_argument("--out", default=str(RESULTS), help="folder for the result table")
    p.add_argument("--bundle", help="bundle folder (kernels, step)")
    add_benchmark_model_options(p, None, "f32,f16", STEP_DTYPES, preset_for="kernels, step: ",
                                dtypes_for="step: ")
    p.add_argument("--images", default="1,4", help="step: image counts N to time (comma-separated; batch B = 2N)")
    p.add_argument("--no-torch", action="store_true", help="kernels, step: no torch / onnxruntime CPU rows (large models)")
    p.add_argument("--sizes", default="", help="kernels: also square f32 matmuls of these sizes, e.g. 1024,4096")
    p.set_defaults(func=cmd_bench)


def _ints(text: str, what: str) -> str:
    from ditformat.errors import UsageError
    for v in filter(None, text.split(",")):
        if not v.isdigit() or not 1 <= int(v) <= 65536:
            raise UsageError(f"{what}: {v[:20]!r} is not an integer in [1, 65536]")
    return text


def cmd_bench(args):
    check_dtypes(args.dtypes, STEP_DTYPES)
    _ints(args.images, "--images")
    _ints(args.sizes, "--sizes")
    module, func = TARGETS[args.target].split(":")
    publish(args.target, *getattr(importlib.import_module(module), func)(args), args.out)
