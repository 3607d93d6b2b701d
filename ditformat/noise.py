"""The project's counter-based Gaussian noise, the spec: the same numbers in numpy, WGSL and the browser.
Part of the format (a seed means the same image in every runtime); numpy only. dit_model/noise.py
re-exports it next to its torch twin.

normal(seed, stream, step, index) is a pure function of four integers, so a seed means the
same image whatever the batch, the device or the order of evaluation:
  1. pcg4d (Jarzynski & Olano 2020, "Hash Functions for GPU Rendering") mixes
     (index, step, seed, stream) into four uint32 words; only wrapping u32 arithmetic.
  2. Box-Muller in float32, z = sqrt(-2 ln u1) cos(2 pi u2), with ln, cos/sin and sqrt written
     as fixed polynomials and Newton steps using only +, -, * (each rounded to nearest in numpy
     and on every adapter we know; WGSL allows either neighbour, so the parity tests check the bits
     per adapter), so WGSL (wgsl/_rng.wgsl.j2) can reproduce every bit. The WGSL twin keeps
     each product out of a fused multiply-add, numpy never fuses (docs/noise.md: why the bits agree).
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
PCG_MUL, PCG_INC = 1664525, 1013904223      # pcg4d's linear congruential step (u32)
RSQRT_MAGIC = 0x5F3759DF                     # the bit-level first guess of 1/sqrt

_f = np.float32


def pcg4d(x, y, z, w):
    """Four uint32 arrays in, four out (all arithmetic modulo 2^32)."""
    with np.errstate(over="ignore"):
        mul, inc = np.uint32(PCG_MUL), np.uint32(PCG_INC)
        x = x * mul + inc
        y = y * mul + inc
        z = z * mul + inc
        w = w * mul + inc
        x = x + y * w; y = y + z * x; z = z + x * y; w = w + y * z
        x = x ^ (x >> np.uint32(16)); y = y ^ (y >> np.uint32(16))
        z = z ^ (z >> np.uint32(16)); w = w ^ (w >> np.uint32(16))
        x = x + y * w; y = y + z * x; z = z + x * y; w = w + y * z
    return x, y, z, w


def _poly(coeffs, x):
    p = np.full_like(x, _f(coeffs[-1]))
    for c in coeffs[-2::-1]:
        p *= x                                # Horner, float32, no fused multiply-add
        p += _f(c)                            # (in place: the same roundings, no temporaries)
    return p


def _ln_u24(k):
    """ln(k * 2^-24) for integer k in [1, 2^24], float32."""
    mant, e = np.frexp(k.astype(np.float32))          # k = mant 2^e, mant in [0.5, 1): exact for k <= 2^24
    m = mant * _f(2)                                   # in [1, 2), exact
    e -= 1                                             # the bit index, floor(log2 k)
    big = m > _f(SQRT2)
    np.multiply(m, _f(0.5), out=m, where=big)
    e += big
    return (e - 24).astype(np.float32) * _f(LN2) + _poly(LOG1P, m - _f(1))


def _sqrt(a):
    """sqrt(a) for a >= 0: the classic bit-level guess of 1/sqrt, three Newton steps, times a."""
    bits = a.view(np.uint32)
    y = (np.uint32(RSQRT_MAGIC) - (bits >> np.uint32(1))).view(np.float32)
    for _ in range(3):
        y = y * (_f(1.5) - _f(0.5) * a * y * y)
    return a * y


def _cos_2pi_u24(j):
    """cos(2 pi j 2^-24) for integer j in [0, 2^24), by quadrant and polynomials on [0, pi/2)."""
    q = j >> np.uint32(22)
    r = (j & np.uint32(0x3FFFFF)).astype(np.float32) * _f(2.0 ** -22)
    c, s = _poly(COS_Q, r), _poly(SIN_Q, r)
    out = np.where(q & np.uint32(1), s, c)             # quadrants 0..3: c, -s, -c, s
    np.negative(out, out=out, where=(q == 1) | (q == 2))
    return out


def normal(seed: int, stream: int, step: int, count: int, start: int = 0) -> np.ndarray:
    """float32 N(0, 1) samples for flat indices start .. start+count-1."""
    idx = np.arange(start, start + count, dtype=np.uint64).astype(np.uint32)
    # step, seed and stream are the same for every element: scalars broadcast (same words, less work)
    h0, h1, _, _ = pcg4d(idx, np.uint32(step & 0xFFFFFFFF), np.uint32(seed & 0xFFFFFFFF), np.uint32(stream & 0xFFFFFFFF))
    k = (h0 >> np.uint32(8)) + np.uint32(1)              # u1 = k 2^-24 in (0, 1]
    j = h1 >> np.uint32(8)                               # u2 = j 2^-24 in [0, 1)
    radius = _sqrt(_f(-2.0) * _ln_u24(k))
    return radius * _cos_2pi_u24(j)
