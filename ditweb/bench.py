"""`ditweb bench TARGET`: benchmarks print a table and save it under bench/results/. Never tests.
Tooling above the runtimes: a target may use torch, the exporter and the wgpu runtime together."""
from __future__ import annotations

import importlib

from dit_model.bench import RESULTS, publish

# target -> "module:function(args)"; each returns (title, header, rows, notes)
TARGETS = {
    "train": "dit_model.train:bench_train",
    "kernels": "runtime_py.bench:bench_kernels",
    "step": "runtime_py.bench:bench_step",
}


def register(sub):
    p = sub.add_parser("bench", help="benchmarks: " + ", ".join(TARGETS))
    p.add_argument("target", choices=list(TARGETS))
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    p.add_argument("--out", default=str(RESULTS), help="folder for the result table")
    p.add_argument("--bundle", help="bundle folder (kernels, step)")
    p.add_argument("--preset", help="preset to benchmark (kernels, step)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args):
    module, func = TARGETS[args.target].split(":")
    publish(args.target, *getattr(importlib.import_module(module), func)(args), args.out)
