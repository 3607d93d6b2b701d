"""Checks every verb's parsed command line gets before it runs (called by `ditweb` and by
`python -m dit_model.train`): the rules that hold for every option of every verb, so no verb can
forget one.

* every number is finite (`--lr nan`, `--shard-mb inf`, `--cfg nan`: refused);
* every integer option counts, sizes or seeds something: none is negative (`--max-steps -1`);
* a seed is a u32 (the noise generator and the step record take 32 bits: 2^32 and beyond, or -1,
  would alias another seed silently);
* an output folder (`--out`, `--run-dir`, `export ... OUT`) is not a file, nor below one.

Each failure is a UsageError: one line naming the option."""
from __future__ import annotations

import math
from pathlib import Path

from .errors import UsageError

SEED_MAX = 2 ** 32 - 1
SEEDS = ("seed",)
# verb -> the attributes that name an output folder
OUTPUT_DIRS = {"sample": {"out": "--out"}, "export": {"out": "OUT"}, "train": {"run_dir": "--run-dir"},
               "eval": {"out": "--out"}, "bench": {"out": "--out"}, "site": {"out_dir": "OUT_DIR"}}


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_number(name: str, v) -> None:
    """One parsed value (numbers in lists too)."""
    if isinstance(v, bool):
        return
    if isinstance(v, float) and not math.isfinite(v):
        raise UsageError(f"{option(name)} must be a finite number, got {v}")
    if isinstance(v, int):
        if v < 0:
            raise UsageError(f"{option(name)} must not be negative, got {v}")
        if name in SEEDS and v > SEED_MAX:
            raise UsageError(f"{option(name)} {v if len(str(v)) <= 24 else str(v)[:20] + '...'} is out of range: "
                             f"seeds are 0..{SEED_MAX} (32 bits)")
    if isinstance(v, (list, tuple)):
        for x in v:
            check_number(name, x)


def check_output_dir(label: str, value) -> None:
    """A folder to be written: it may exist (as a folder) or not, but neither it nor a parent is a file."""
    if value is None:
        return
    p = Path(value)
    for q in (p, *p.parents):
        try:
            if not q.exists():
                continue
        except (OSError, ValueError) as e:
            raise UsageError(f"{label} {str(value)[:80]!r} is not a usable path ({e})") from None
        if not q.is_dir():
            what = "is a file" if q == p else f"lies below {str(q)[:80]!r}, a file"
            raise UsageError(f"{label} {str(value)[:80]!r} {what}, not a folder")
        return


def check_args(verb: str | None, args) -> None:
    """Every rule above over an argparse Namespace (UsageError on the first failure)."""
    for name, v in vars(args).items():
        if name in ("func", "verb"):
            continue
        check_number(name, v)
    for name, label in OUTPUT_DIRS.get(verb, {}).items():
        check_output_dir(label, getattr(args, name, None))
