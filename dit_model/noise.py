"""The counter-based Gaussian noise: the spec (numpy) lives in the format module, ditformat/noise.py,
and is re-exported here; this module adds the torch views of it (normal_tensor, and a torch twin
that computes the same bits on any device for training)."""
from __future__ import annotations

import numpy as np

from ditformat.noise import (COS_Q, LN2, LOG1P, PCG_INC, PCG_MUL, RSQRT_MAGIC, SIN_Q, SQRT2,  # noqa: F401
                             STREAM_INIT, STREAM_PERTURB, STREAM_STEP, _cos_2pi_u24, _f, _ln_u24, _poly, _sqrt, normal, pcg4d)


def normal_tensor(seed: int, stream: int, step: int, shape, start: int = 0):
    import torch
    count = int(np.prod(shape))
    return torch.from_numpy(normal(seed, stream, step, count, start).reshape(shape))


# ---------------------------------------------------------------- the same numbers, computed by torch

# Why a twin: training draws one normal() per pixel of every batch; on a GPU the numpy version
# (host CPU, then a copy) costs more than the step itself. These functions repeat normal()
# operation by operation in torch, on any device, with the same bits: u32 words are held in
# int64 and reduced mod 2^32 (products split in 16-bit halves so no intermediate exceeds 2^49);
# float32 steps are separate eager ops, one rounding each, as in numpy; constants are the float32
# values themselves, so nothing is rounded twice. Never torch.compile these (it would fuse a*b+c).
# tests/test_train.py checks every k and j of the float part exhaustively against numpy, and
# training checks a slice on its device before trusting it (dit_model.randomness.device_noise_ok).

_U32 = 0xFFFFFFFF


def _mul32(a, b):
    """a * b mod 2^32 for int64 tensors (or ints) holding values in [0, 2^32)."""
    lo = a * (b & 0xFFFF)                                             # < 2^48
    hi = ((a * (b >> 16)) & 0xFFFF) << 16                             # only the low 16 bits survive the shift
    return (lo + hi) & _U32


def pcg4d_torch(x, y, z, w):
    """pcg4d on int64 tensors holding uint32 values; the same words."""
    x = (x * PCG_MUL + PCG_INC) & _U32                             # < 2^53: exact in int64
    y = (y * PCG_MUL + PCG_INC) & _U32
    z = (z * PCG_MUL + PCG_INC) & _U32
    w = (w * PCG_MUL + PCG_INC) & _U32
    x = (x + _mul32(y, w)) & _U32; y = (y + _mul32(z, x)) & _U32
    z = (z + _mul32(x, y)) & _U32; w = (w + _mul32(y, z)) & _U32
    x = x ^ (x >> 16); y = y ^ (y >> 16); z = z ^ (z >> 16); w = w ^ (w >> 16)
    x = (x + _mul32(y, w)) & _U32; y = (y + _mul32(z, x)) & _U32
    z = (z + _mul32(x, y)) & _U32; w = (w + _mul32(y, z)) & _U32
    return x, y, z, w


def _c(text: str) -> float:
    return float(_f(text))                                            # the float32 value, exact as a Python float


def _poly_torch(coeffs, x):
    import torch
    p = torch.full_like(x, _c(coeffs[-1]))
    for c in coeffs[-2::-1]:
        p = p * x + _c(c)
    return p


def _ln_u24_torch(k):
    """_ln_u24 for an int64 tensor k in [1, 2^24]."""
    import torch
    mant, ex = torch.frexp(k.to(torch.float32))                       # k = mant 2^ex, mant in [0.5, 1): exact
    m, e = mant * 2.0, ex.to(torch.int32) - 1                         # m in [1, 2), e = floor(log2 k)
    big = m > _c(SQRT2)
    m = torch.where(big, m * 0.5, m)
    e = torch.where(big, e + 1, e)
    return (e - 24).to(torch.float32) * _c(LN2) + _poly_torch(LOG1P, m - 1.0)


def _sqrt_torch(a):
    import torch
    bits = a.view(torch.int32).to(torch.int64) & _U32                 # as numpy's uint32 (-0.0 included)
    y = (RSQRT_MAGIC - (bits >> 1)) & _U32
    y = torch.where(y >= 2 ** 31, y - 2 ** 32, y).to(torch.int32).view(torch.float32)
    for _ in range(3):
        y = y * (1.5 - 0.5 * a * y * y)
    return a * y


def _cos_2pi_u24_torch(j):
    import torch
    q = j >> 22
    r = (j & 0x3FFFFF).to(torch.float32) * 2.0 ** -22
    c, s = _poly_torch(COS_Q, r), _poly_torch(SIN_Q, r)
    return torch.where(q == 0, c, torch.where(q == 1, -s, torch.where(q == 2, -c, s)))


def normal_torch(seed: int, stream: int, step: int, count: int, start: int = 0, device="cpu"):
    """normal(seed, stream, step, count, start) as a float32 tensor on `device`: the same bits."""
    import torch
    idx = torch.arange(start, start + count, dtype=torch.int64, device=device) & _U32
    const = lambda v: torch.full_like(idx, int(v) & _U32)
    h0, h1, _, _ = pcg4d_torch(idx, const(step), const(seed), const(stream))
    k = (h0 >> 8) + 1
    j = h1 >> 8
    radius = _sqrt_torch(-2.0 * _ln_u24_torch(k))
    return radius * _cos_2pi_u24_torch(j)
