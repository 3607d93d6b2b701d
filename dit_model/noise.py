"""The project's counter-based Gaussian noise: the same numbers in numpy, WGSL and the browser.

normal(seed, stream, step, index) is a pure function of four integers, so a seed means the
same image whatever the batch, the device or the order of evaluation:
  1. pcg4d (Jarzynski & Olano 2020, "Hash Functions for GPU Rendering") mixes
     (index, step, seed, stream) into four uint32 words; only wrapping u32 arithmetic.
  2. Box-Muller in float32, z = sqrt(-2 ln u1) cos(2 pi u2), with ln, cos/sin and sqrt written
     as fixed polynomials and Newton steps using only +, -, * (each correctly rounded in IEEE
     and in WGSL), so WGSL (wgsl/rng.wgsl.j2) can reproduce every bit. The WGSL twin keeps
     each product out of a fused multiply-add (see rng template), numpy never fuses.
Element `index` is the flat index in the (N, C, H, W) tensor being filled.
"""
from __future__ import annotations

import numpy as np

STREAM_INIT = 0       # x_T, step 0
STREAM_STEP = 1       # noise added by a sampler step i (DDPM, DDIM with eta > 0)
STREAM_PERTURB = 2    # batch-estimated guidance: K perturbed copies at step i

# Least-squares polynomial fits (float32 literals; WGSL parses the same decimals to the same bits).
LOG1P = ["0.0", "1", "-0.49999976", "0.3333337", "-0.25002462", "0.20000857", "-0.16591594",
         "0.1418735", "-0.13369992", "0.12928559", "-0.073820256"]   # ln(1+x), x in [sqrt(.5)-1, sqrt(2)-1]
COS_Q = ["1", "0.00000013102257", "-1.233704", "0.000034794986", "0.25349486", "0.00048672303",
         "-0.02164285", "0.0006913764", "0.00063896226"]              # cos(r pi/2), r in [0, 1]
SIN_Q = ["0.0", "1.5707963", "0.000003296861", "-0.6460008", "0.00019882838", "0.07909309",
         "0.0010624186", "-0.005788612", "0.00063555944"]              # sin(r pi/2), r in [0, 1]
LN2 = "0.6931472"
SQRT2 = "1.4142135"

_f = np.float32
_M = np.uint32(0xFFFFFFFF)


def pcg4d(x, y, z, w):
    """Four uint32 arrays in, four out (all arithmetic modulo 2^32)."""
    with np.errstate(over="ignore"):
        x = x * np.uint32(1664525) + np.uint32(1013904223)
        y = y * np.uint32(1664525) + np.uint32(1013904223)
        z = z * np.uint32(1664525) + np.uint32(1013904223)
        w = w * np.uint32(1664525) + np.uint32(1013904223)
        x = x + y * w; y = y + z * x; z = z + x * y; w = w + y * z
        x = x ^ (x >> np.uint32(16)); y = y ^ (y >> np.uint32(16))
        z = z ^ (z >> np.uint32(16)); w = w ^ (w >> np.uint32(16))
        x = x + y * w; y = y + z * x; z = z + x * y; w = w + y * z
    return x, y, z, w


def _poly(coeffs, x):
    p = np.full_like(x, _f(coeffs[-1]))
    for c in coeffs[-2::-1]:
        p = p * x + _f(c)                     # Horner, float32, no fused multiply-add
    return p


def _ln_u24(k):
    """ln(k * 2^-24) for integer k in [1, 2^24], float32."""
    e = np.floor(np.log2(k.astype(np.float64))).astype(np.int32)          # exact for k < 2^25: bit index
    m = k.astype(np.float32) * np.ldexp(_f(1), -e).astype(np.float32)     # in [1, 2), exact
    big = m > _f(SQRT2)
    m = np.where(big, m * _f(0.5), m)
    e = np.where(big, e + 1, e)
    return (e - 24).astype(np.float32) * _f(LN2) + _poly(LOG1P, m - _f(1))


def _sqrt(a):
    """sqrt(a) for a >= 0: the classic bit-level guess of 1/sqrt, three Newton steps, times a."""
    bits = a.view(np.uint32)
    y = (np.uint32(0x5F3759DF) - (bits >> np.uint32(1))).view(np.float32)
    for _ in range(3):
        y = y * (_f(1.5) - _f(0.5) * a * y * y)
    return a * y


def _cos_2pi_u24(j):
    """cos(2 pi j 2^-24) for integer j in [0, 2^24), by quadrant and polynomials on [0, pi/2)."""
    q = j >> np.uint32(22)
    r = (j & np.uint32(0x3FFFFF)).astype(np.float32) * _f(2.0 ** -22)
    c, s = _poly(COS_Q, r), _poly(SIN_Q, r)
    return np.select([q == 0, q == 1, q == 2], [c, -s, -c], s)


def normal(seed: int, stream: int, step: int, count: int, start: int = 0) -> np.ndarray:
    """float32 N(0, 1) samples for flat indices start .. start+count-1."""
    idx = np.arange(start, start + count, dtype=np.uint64).astype(np.uint32)
    n = idx.shape[0]
    h0, h1, _, _ = pcg4d(idx, np.full(n, step & 0xFFFFFFFF, np.uint32),
                         np.full(n, seed & 0xFFFFFFFF, np.uint32), np.full(n, stream & 0xFFFFFFFF, np.uint32))
    k = (h0 >> np.uint32(8)) + np.uint32(1)              # u1 = k 2^-24 in (0, 1]
    j = h1 >> np.uint32(8)                               # u2 = j 2^-24 in [0, 1)
    radius = _sqrt(_f(-2.0) * _ln_u24(k))
    return radius * _cos_2pi_u24(j)


def normal_tensor(seed: int, stream: int, step: int, shape, start: int = 0):
    import torch
    count = int(np.prod(shape))
    return torch.from_numpy(normal(seed, stream, step, count, start).reshape(shape))
