"""Linear forms: a batch-dependent integer in the manifest is [b, n, c] = b*B + n*N + c, with B rows
of the model batch and N images being sampled; a workgroup count is [b, n, c, d] = ceil(form / d)."""
from __future__ import annotations

import re


def lin(b: int = 0, n: int = 0, c: int = 0) -> list[int]:
    return [int(b), int(n), int(c)]


def const(c: int) -> list[int]:
    return lin(0, 0, c)


def evaluate(form, B: int, N: int) -> int:
    b, n, c = form[:3]
    v = b * B + n * N + c
    return -(-v // form[3]) if len(form) == 4 else v


def group_rule(op_groups) -> list[str]:
    """A kernel's workgroup-count rule as the manifest writes it (`groups`, one string per dimension):
    "NAME/d" = ceil(param NAME / d), or a literal count "c"."""
    out = []
    for what, div in op_groups:
        out.append(f"{what}/{int(div)}" if isinstance(what, str) else str(-(-int(what) // int(div))))
    return out


def parse_group(rule: str, params: list[str]):
    """(param index, divisor) or (None, count) from one `groups` entry; ValueError if malformed."""
    if re.fullmatch(r"[0-9]{1,9}", rule):
        return None, int(rule)
    match = re.fullmatch(r"(.+)/([0-9]{1,9})", rule)
    if not match or match[1] not in params or int(match[2]) < 1:
        raise ValueError(rule)
    return params.index(match[1]), int(match[2])


def workgroup_forms(groups: list[str], params: list[str], param_forms: list) -> list[list[int]]:
    """The [b, n, c, d] workgroup counts of a dispatch of a kernel with rule `groups` and params `param_forms`."""
    out = []
    for rule in groups:
        i, d = parse_group(rule, params)
        out.append([0, 0, d, 1] if i is None else list(param_forms[i][:3]) + [d])
    return out
