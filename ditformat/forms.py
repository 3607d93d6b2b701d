"""Linear forms: a batch-dependent integer in the manifest is [b, n, c] = b*B + n*N + c, with B rows
of the model batch and N images being sampled; a workgroup count is [b, n, c, d] = ceil(form / d)."""
from __future__ import annotations


def lin(b: int = 0, n: int = 0, c: int = 0) -> list[int]:
    return [int(b), int(n), int(c)]


def const(c: int) -> list[int]:
    return lin(0, 0, c)


def evaluate(form, B: int, N: int) -> int:
    b, n, c = form[:3]
    v = b * B + n * N + c
    return -(-v // form[3]) if len(form) == 4 else v
