"""Parity of the VAE decoder's kernels (wgsl/ops.py: conv2d, groupnorm, upsample_nearest, bmm, softmax_rows)
against their float64 torch references, within the derived error bounds (wgsl/bounds.py, docs/tolerances.md),
at small awkward shapes (widths not multiples of 4, channel counts not multiples of 4 or 32), f32 and f16 weights.
The whole-decoder check in wgpu-py is tests/test_vae_decode.py."""
from __future__ import annotations

import numpy as np
import pytest

from _gpu_helpers import gpu  # noqa: F401  (fixture)
from export.decode import conv_layout, quantize_conv
from runtime_py.parity import check_kernel
from wgsl.ops import ALL_OPS
from wgsl.reference import CONV_PIXELS

RNG = np.random.default_rng(4321)
PIPELINES: dict = {}
VAE_OPS = {"conv2d", "conv2d_q8", "groupnorm", "upsample_nearest", "bmm", "softmax_rows"}


def rnd(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def zeros(n):
    return np.zeros(n, np.float32)


def f32_bits(v: float) -> int:
    return int(np.array([v], np.float32).view(np.uint32)[0])


def conv_case(n, ci, co, h, w, k, res=False):
    weight = rnd(co, ci, k, k, scale=(ci * k * k) ** -0.5)
    blocks = n * h * -(-w // CONV_PIXELS)
    p = dict(blocks=blocks, C_in=ci, C_out=co, C_out4=-(-co // 4) * 4, H=h, W=w, has_res=int(res))
    src = rnd(n * ci * h * w)
    x = dict(src=src, w=conv_layout(weight), bias=rnd(co, scale=0.2), res=rnd(n * co * h * w) if res else src,
             dst=zeros(n * co * h * w))
    return ("conv2d", {"k": k, "vec4": "vec4"}, p, x)


def conv_q8_case(n, ci, co, h, w, k, res=False):
    op, _, p, x = conv_case(n, ci, co, h, w, k, res)
    weight = rnd(co, ci, k, k, scale=(ci * k * k) ** -0.5)
    wq, scale = quantize_conv(weight)
    x = {**{a: b for a, b in x.items() if a != "w"}, "wq": wq, "scale": scale}
    return ("conv2d_q8", {"k": k, "q8": "q8"}, p, x)


def cases():
    out = []
    for n, ci, co, h, w, k, res in [(1, 1, 1, 1, 1, 3, False), (2, 5, 7, 9, 11, 3, True), (1, 17, 9, 5, 8, 1, False)]:
        out.append(conv_q8_case(n, ci, co, h, w, k, res))
    for n, ci, co, h, w, k, res in [(1, 1, 1, 1, 1, 3, False), (2, 5, 7, 9, 11, 3, False), (1, 17, 33, 5, 8, 3, True),
                                    (1, 4, 3, 6, 6, 3, False), (3, 2, 9, 2, 3, 3, True), (1, 4, 4, 5, 5, 1, False),
                                    (2, 33, 17, 3, 7, 1, True), (1, 64, 8, 4, 4, 3, False)]:
        out.append(conv_case(n, ci, co, h, w, k, res))
    for n, G, C, HW, act, scale, shift in [(1, 1, 1, 1, "none", 1.0, 0.0), (2, 4, 8, 17, "silu", 3.0, 1.5),
                                           (1, 2, 6, 300, "silu", 0.5, -4.0), (2, 32, 64, 9, "none", 2.0, 0.0),
                                           (1, 1, 2, 1000, "silu", 1e-3, 1.0)]:
        x = rnd(n * C * HW, scale=scale) + shift
        out.append(("groupnorm", {"act": act}, dict(rows=n * G, G=G, C=C, HW=HW, eps_bits=f32_bits(1e-6)),
                    dict(src=x, norm_w=rnd(C) + 1.0, norm_b=rnd(C, scale=0.5), dst=zeros(n * C * HW))))
    for n, c, h, w in [(1, 1, 1, 1), (2, 3, 5, 7)]:
        out.append(("upsample_nearest", {}, dict(count=n * c * 4 * h * w, H=h, W=w),
                    dict(src=rnd(n * c * h * w), dst=zeros(n * c * 4 * h * w))))
    # the attention's two products over a (batch, 3C, HW) qkv buffer, channel-major
    for n, C, HW in [(1, 1, 1), (2, 5, 17), (1, 32, 66)]:
        qkv = rnd(n * 3 * C * HW, scale=2.0)
        sb = 3 * C * HW
        out.append(("bmm", {}, dict(batch=n, M=HW, N=HW, K=C, a_off=0, a_sb=sb, a_sm=1, a_sk=HW, b_off=C * HW, b_sb=sb,
                                    b_sn=1, b_sk=HW, alpha_bits=f32_bits(C ** -0.5)),
                    dict(a=qkv, bm=qkv, dst=zeros(n * HW * HW))))
        probs = np.abs(rnd(n * HW * HW))
        out.append(("bmm", {}, dict(batch=n, M=C, N=HW, K=HW, a_off=2 * C * HW, a_sb=sb, a_sm=HW, a_sk=1, b_off=0,
                                    b_sb=HW * HW, b_sn=HW, b_sk=1, alpha_bits=f32_bits(1.0)),
                    dict(a=qkv, bm=probs, dst=zeros(n * C * HW))))
    for rows, L, scale in [(1, 1, 1.0), (5, 300, 5.0), (3, 17, 40.0)]:
        out.append(("softmax_rows", {}, dict(rows=rows, L=L), dict(x=rnd(rows * L, scale=scale))))
    return out


CASES = cases()
PARAMS = [(c, "f32") for c in CASES] + [(c, "f16") for c in CASES if ALL_OPS[c[0]].uses_weights]


def case_id(c):
    op, variant, params, _ = c
    return f"{op}[{'-'.join(str(v) for v in variant.values())}]" + ",".join(f"{k}{params[k]}" for k in list(params)[:4])


def test_every_vae_op_has_a_case():
    assert {c[0] for c in CASES} == VAE_OPS <= set(ALL_OPS)


@pytest.mark.parametrize("case,wdtype", PARAMS, ids=[f"{case_id(c)}-{w}" for c, w in PARAMS])
def test_vae_kernel_parity(gpu, case, wdtype):
    op, variant, params, inputs = case
    row = check_kernel(gpu, op, variant, wdtype, params, inputs, None, pipelines=PIPELINES)
    assert row.passed, f"{row.kernel} {params}: error {row.ratio:.3g} x its bound ({row.tol:.3e}) at {row.where}"


def test_conv_layout_round_trip():
    w = rnd(5, 3, 3, 3)
    t = conv_layout(w)
    assert t.shape == (27, 8) and not t[:, 5:].any()
    assert np.array_equal(t[:, :5].T.reshape(5, 3, 3, 3), w)


def test_quantize_conv_round_trip():
    from wgsl.reference import unpack_i8
    import torch
    w = rnd(6, 3, 3, 3)
    wq, scale = quantize_conv(w)
    assert wq.dtype == np.uint32 and wq.shape == (27, 2)
    q = unpack_i8(torch.from_numpy(wq.astype(np.int64))).numpy().reshape(27, 8)
    assert not q[:, 6:].any() and np.abs(q).max() == 127
    deq = q[:, :6].T.reshape(6, 3, 3, 3) * scale[:, None, None, None]
    assert np.abs(deq - w).max() <= 0.5 * scale.max() + 1e-7           # round to nearest: half a step
