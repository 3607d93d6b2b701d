"""Per-kernel parity: every op of wgsl/ops.py on the GPU vs its float64 torch reference, at awkward sizes
(1, 17, 65, 257: not multiples of any workgroup or tile), f32 and f16 weights.

Each output element must lie within its error bound (wgsl/bounds.py, derived in docs/tolerances.md):
what the WGSL spec lets f32 arithmetic do to that element, computed from the actual inputs, never
tuned to one machine's rounding. f16 weights are compared with torch on the same f16-rounded values.
The RNG must be bit-identical to ditformat/noise.py (lavapipe: checks that no FMA was contracted).
tests/test_tolerances.py holds the committed fixtures and the property test over shapes and scales."""
from __future__ import annotations

import numpy as np
import pytest

from _gpu_helpers import gpu  # noqa: F401  (fixture)
from ditformat.schedule import sampler_tables
from ditformat.step import rounded, step_fields
from runtime_py.parity import check_kernel, compare, run_kernel
from wgsl.ops import ALL_OPS, OPS

RNG = np.random.default_rng(1234)
TABLES = sampler_tables(20)
TABLES_1000 = sampler_tables(1000)
PIPELINES: dict = {}


def rnd(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def zeros(n):
    return np.zeros(n, np.float32)


# ------------------------------------------------------------------ cases: (op, variant, params, inputs, step)

def matmul_case(M, N, K, in_act="none", act="none", group=None, stride=None, op="matmul", vec4="scalar"):
    group = group or M
    stride = stride or group
    rows_out = (M // group) * stride + (M % group and stride)
    variant = {"in_act": in_act, "act": act} | ({"vec4": vec4} if op == "matmul" else {})
    return (op, variant, dict(M=M, N=N, K=K, out_group=group, out_stride=stride),
            dict(a=rnd(M, K), w=rnd(N, K, scale=K ** -0.5), bias=rnd(N), dst=rnd(max(rows_out, M) * N)), None)


def matmul_q8_case(M, N, K, in_act="none", act="none"):
    """matmul_q8: the weights quantised as `ditweb export --dtype int8` does (export/bundle.py quantize_linear), one
    row all zeros (scale 1) and one with a wide range; the reference runs the dequantised q * scale."""
    from export.bundle import quantize_linear
    w = rnd(N, K, scale=K ** -0.5)
    w[0] = 0.0
    if N > 2:
        w[1, 0] *= 50.0
    q, scale = quantize_linear(w)
    return ("matmul_q8", {"in_act": in_act, "act": act, "vec4": "vec4"}, dict(M=M, N=N, K=K, out_group=M, out_stride=M),
            dict(a=rnd(M, K), wq=np.ascontiguousarray(q).view(np.uint32).reshape(-1), scale=scale, bias=rnd(N),
                 dst=rnd(M * N)), None)


def label_embed_q8_case(B, D, sizes):
    """label_embed_q8: the table quantised per row as `ditweb export --dtype int8` does (export/bundle.py
    quantize_linear), one row all zeros (scale 1) and one with a 50x outlier; the reference sums the dequantised
    q * scale. Bound (wgsl/bounds.py bound_label_embed): each value q * scale is one rounding (q exact in f32), so
    y_emb is within gamma(L) sum_l |e_l| (L = 1: U |e|), c one rounding more, U (|t_emb| + sum_l |e_l|)."""
    from export.bundle import quantize_linear
    starts = np.cumsum([0] + [n + 1 for n in sizes[:-1]])
    rows = sum(sizes) + len(sizes)
    table = rnd(rows, D, scale=3.0)
    table[0] = 0.0
    table[-1, 0] *= 50.0
    q, scale = quantize_linear(table)
    ids = np.stack([np.arange(B) * (3 + l) % (n + 1) for l, n in enumerate(sizes)], 1)   # null rows included
    y = (ids + starts).astype(np.uint32).reshape(-1)
    y[0] = rows + 5                                   # past the table: the last row
    return ("label_embed_q8", {}, dict(count=B * D, D=D, rows=rows, levels=len(sizes)),
            dict(y=y, table=np.ascontiguousarray(q).view(np.uint32).reshape(-1), scale=scale, t_emb=rnd(B * D),
                 y_emb=zeros(B * D), c=zeros(B * D)), None)


def cases():
    out = []
    for M, N, K in [(1, 1, 1), (17, 65, 257), (65, 17, 33), (257, 17, 65)]:
        for in_act, act in [("none", "none"), ("none", "gelu"), ("none", "silu"), ("silu", "none")]:
            out.append(matmul_case(M, N, K, in_act, act))
    out.append(matmul_case(34, 65, 17, group=17, stride=19))        # in-context: T of T+2 rows per item
    for M, N, K in [(1, 1, 4), (17, 65, 256), (65, 17, 32), (257, 17, 64), (2, 257, 4)]:   # vec4 loads, K % 4 == 0
        for in_act, act in [("none", "none"), ("none", "gelu"), ("silu", "silu")]:
            out.append(matmul_case(M, N, K, in_act, act, vec4="vec4"))
    out.append(matmul_case(34, 65, 16, group=17, stride=19, vec4="vec4"))
    for tile in ("8x4", "8x8"):                                            # the wider-block candidates
        for M, N, K in [(1, 1, 4), (65, 17, 32), (257, 33, 64)]:
            for in_act, act in [("none", "none"), ("silu", "gelu")]:
                c = matmul_case(M, N, K, in_act, act)
                out.append((f"matmul_{tile}", {"in_act": in_act, "act": act, "tile": tile, "vec4": "vec4"}, *c[2:]))
        c = matmul_case(34, 65, 16, group=17, stride=19)
        out.append((f"matmul_{tile}", {"in_act": "none", "act": "none", "tile": tile, "vec4": "vec4"}, *c[2:]))
    for M, N, K, in_act, act in [(1, 1, 4, "none", "none"), (17, 65, 256, "none", "gelu"), (65, 17, 32, "silu", "silu"),
                                 (2, 257, 4, "silu", "none")]:                  # int8 weights: per-row scales
        out.append(matmul_q8_case(M, N, K, in_act, act))
    c = matmul_q8_case(34, 65, 16)
    c[2].update(out_group=17, out_stride=19)
    c[3]["dst"] = rnd(38 * 65)
    out.append(c)
    for M, N, K in [(1, 1, 1), (17, 65, 257), (257, 17, 65)]:
        out.append(matmul_case(M, N, K, "silu", "gelu", op="matmul_shared"))
    out.append(matmul_case(34, 65, 17, group=17, stride=19, op="matmul_shared"))
    for M, N, K in [(1, 1, 1), (17, 65, 257), (257, 129, 65)]:            # the 64x64-tile candidate
        out.append(matmul_case(M, N, K, "silu", "gelu", op="matmul_shared64"))
    out.append(matmul_case(34, 65, 17, group=17, stride=19, op="matmul_shared64"))
    for M, N, K in [(1, 1, 1), (17, 65, 257)]:
        out.append(("matmul_naive", {}, dict(M=M, N=N, K=K, MN=M * N),
                    dict(a=rnd(M, K), w=rnd(N, K), bias=rnd(N), dst=zeros(M * N)), None))
    for rows, D, T, T_in, has_mod in [(1, 1, 1, 1, 0), (17, 65, 17, 17, 1), (34, 257, 17, 19, 1), (3, 17, 1, 1, 0)]:
        B = rows // T
        stride = 3 * D
        for op in ("layernorm_mod", "layernorm_rows"):          # the workgroup design and its candidate
            out.append((op, {}, dict(rows=rows, D=D, T=T, T_in=T_in, has_mod=has_mod, mod_stride=stride,
                                     shift_off=D, scale_off=2 * D),
                        dict(x=rnd(B * T_in * D, scale=3.0) + 1.5, ada=rnd(B * stride), dst=zeros(rows * D)), None))
    for B, Tq, Tk, H, hd, self_attn in [(1, 1, 1, 1, 1, True), (2, 17, 17, 3, 16, True), (1, 257, 257, 2, 8, True), (2, 65, 2, 2, 17, False),
                                        (1, 65, 65, 1, 72, True), (2, 33, 2, 2, 8, False)]:
        D = H * hd
        if self_attn:
            qkv = rnd(B * Tq * 3 * D, scale=2.0)
            p = dict(batch=B, T_q=Tq, T_kv=Tk, H=H, q_stride=3 * D, q_off=0, kv_stride=3 * D, k_off=D, v_off=2 * D,
                     out_stride=D)
            inputs = dict(q=qkv, kv=qkv, dst=zeros(B * Tq * D))
        else:
            p = dict(batch=B, T_q=Tq, T_kv=Tk, H=H, q_stride=D, q_off=0, kv_stride=2 * D, k_off=0, v_off=D, out_stride=D)
            inputs = dict(q=rnd(B * Tq * D, scale=2.0), kv=rnd(B * Tk * 2 * D, scale=2.0), dst=zeros(B * Tq * D))
        out.append(("attention", {"head_dim": hd}, p, inputs, None))
        out.append(("attention_direct", {"head_dim": hd}, p, inputs, None))
        if hd % 4 == 0:                        # vec4 rows: 4 queries per invocation, T_q not a multiple of 32
            out.append(("attention_q4", {"head_dim": hd, "vec4": "vec4"}, p, inputs, None))
    for rows, D, T, has_gate in [(1, 1, 1, 1), (34, 65, 17, 1), (17, 257, 17, 0)]:
        B = rows // T
        out.append(("gated_residual", {}, dict(count=rows * D, D=D, T=T, has_gate=has_gate, mod_stride=6 * D,
                                                gate_off=2 * D),
                    dict(h=rnd(rows * D), y=rnd(rows * D), ada=rnd(B * 6 * D)), None))
    for B, C, I, p in [(1, 1, 1, 1), (3, 4, 8, 2), (2, 3, 17, 1), (1, 2, 65, 5)]:
        T = (I // p) ** 2
        out.append(("patchify", {}, dict(count=B * C * I * I, C=C, I=I, p=p),
                    dict(img=rnd(B * C * I * I), dst=zeros(B * C * I * I)), None))
        out.append(("unpatchify", {}, dict(count=B * C * I * I, C=C, I=I, p=p),
                    dict(src=rnd(B * T * p * p * C), dst=zeros(B * C * I * I)), None))
    for B, T, D, T_buf in [(1, 1, 1, 1), (2, 17, 65, 19), (3, 257, 17, 257)]:
        out.append(("pos_embed_add", {}, dict(count=B * T * D, T=T, D=D, T_buf=T_buf),
                    dict(h=rnd(B * T_buf * D), pos=rnd(T * D)), None))
    import math
    freqs = np.exp(-math.log(10000) * np.arange(128, dtype=np.float32) / 128).astype(np.float32)
    for t in [[0], [1, 17, 65, 257, 500, 998, 999]]:
        out.append(("timestep_embed", {}, dict(count=len(t) * 256, half=128),
                    dict(t=np.array(t, np.uint32), freqs=freqs, dst=zeros(len(t) * 256)), None))
    for B, D, ncls in [(1, 1, 1), (17, 65, 9)]:
        y = np.arange(B, dtype=np.uint32) % (ncls + 1)                  # includes the null class
        out.append(("label_embed", {}, dict(count=B * D, D=D, rows=ncls + 1, levels=1),
                    dict(y=y, table=rnd((ncls + 1) * D), t_emb=rnd(B * D), y_emb=zeros(B * D), c=zeros(B * D)), None))
    for B, D, sizes in [(1, 1, (1, 1, 1, 1)), (13, 67, (37, 11, 5, 3))]:   # named models: the sum of 4 levels' rows
        starts = np.cumsum([0] + [n + 1 for n in sizes[:-1]])
        rows = sum(sizes) + len(sizes)
        ids = np.stack([np.arange(B) * (3 + l) % (n + 1) for l, n in enumerate(sizes)], 1)   # null rows included
        y = (ids + starts).astype(np.uint32).reshape(-1)
        out.append(("label_embed", {}, dict(count=B * D, D=D, rows=rows, levels=len(sizes)),
                    dict(y=y, table=rnd(rows * D, scale=3.0), t_emb=rnd(B * D), y_emb=zeros(B * D), c=zeros(B * D)), None))
    for B, D, sizes in [(1, 4, (1,)), (17, 64, (9,)), (13, 68, (37, 11, 5, 3))]:   # int8 tables (D % 4 == 0, as exported)
        out.append(label_embed_q8_case(B, D, sizes))
    for B, D, T_dst, tok0 in [(1, 1, 2, 0), (3, 17, 19, 17)]:
        out.append(("cond_tokens", {}, dict(count=B * 2 * D, D=D, T_dst=T_dst, tok0=tok0),
                    dict(t_emb=rnd(B * D), y_emb=rnd(B * D), dst=rnd(B * T_dst * D)), None))
    for count, stream, use_step, i, seed in [(1, 0, 0, 0, 0), (17, 1, 1, 5, 7), (65537, 2, 1, 999, 2 ** 32 - 1)]:
        out.append(("rng_normal", {}, dict(count=count, stream=stream, use_step=use_step), dict(dst=zeros(count)),
                    step_fields(TABLES_1000, i, seed=seed)))
    for K, J, N, Pn in [(1, 2, 1, 17), (3, 2, 2, 65)]:
        B = K * J * N
        out.append(("expand_batch", {}, dict(count=B * Pn, P=Pn, B=B),
                    dict(x=rnd(N * Pn), x_in=zeros(B * Pn), t_in=np.zeros(B, np.uint32)),
                    step_fields(TABLES, 11, seed=3, K=K, J=J, N=N, tau=0.7)))
    for K, J, N, C, Co, P2 in [(1, 1, 1, 1, 1, 1), (2, 3, 2, 4, 8, 17), (1, 8, 1, 3, 3, 65)]:
        coef = list(rnd(J) * 3)
        out.append(("guide_combine", {}, dict(count=N * Co * P2, C=C, C_out=Co, P2=P2),
                    dict(model_out=rnd(K * J * N * Co * P2), guided=zeros(N * Co * P2)),
                    step_fields(TABLES, 4, seed=0, K=K, J=J, N=N, var_branch=J - 1, coef=coef)))
    for sampler, eta, i, clip, learn in [("ddim", 0.0, 10, True, 1), ("ddim", 1.0, 10, False, 0),
                                        ("ddpm", 0.0, 10, True, 1), ("ddpm", 0.0, 10, False, 0),
                                        ("ddpm", 0.0, 0, True, 1), ("ddim", 0.5, 19, True, 1)]:
        N, C, P2 = 2, 3, 17
        Co = 2 * C if learn else C
        out.append(("sampler_step", {}, dict(count=N * C * P2, C=C, P2=P2, learn_sigma=learn),
                    dict(guided=rnd(N * Co * P2), x=rnd(N * C * P2, scale=1.5)),
                    step_fields(TABLES, i, seed=9, N=N, sampler=sampler, eta=eta, clip_x0=clip)))
    return out


CASES = cases()


def case_id(c):
    op, variant, params, _, _ = c
    v = "-".join(str(x) for x in variant.values())
    shape = ",".join(f"{k}{params[k]}" for k in list(params)[:3])
    return f"{op}[{v}]{shape}"


def test_every_op_has_a_case():
    from test_vae_kernels import VAE_OPS         # the VAE decoder's kernels have their cases there
    assert {c[0] for c in CASES} | VAE_OPS == set(ALL_OPS)


def test_matmul_naive_is_not_exported():
    assert "matmul_naive" not in OPS          # the benchmark's baseline only


# f16 bundles change only the kernels that read weights (unpack2x16float): those run twice
PARAMS = [(c, "f32") for c in CASES] + [(c, "f16") for c in CASES if ALL_OPS[c[0]].uses_weights]


@pytest.mark.parametrize("case,wdtype", PARAMS, ids=[f"{case_id(c)}-{w}" for c, w in PARAMS])
def test_kernel_parity(gpu, case, wdtype):
    op, variant, params, inputs, step = case
    row = check_kernel(gpu, op, variant, wdtype, params, inputs, step, pipelines=PIPELINES)
    assert row.passed, (f"{row.kernel} {params}: error {row.ratio:.3g} x its bound ({row.tol:.3e}) at {row.where}")
    if ALL_OPS[op].exact:
        assert row.max_abs == 0.0



def test_attention_q4_same_bits_as_attention_direct(gpu):
    """attention_q4 does each query's arithmetic in attention_direct's order: a plan switching between them
    changes no bit."""
    B, T, H, hd = 2, 37, 2, 16
    D = H * hd
    qkv = rnd(B * T * 3 * D, scale=2.0)
    p = dict(batch=B, T_q=T, T_kv=T, H=H, q_stride=3 * D, q_off=0, kv_stride=3 * D, k_off=D, v_off=2 * D, out_stride=D)
    got = {op: run_kernel(gpu, ALL_OPS[op], v, "f32", p, dict(q=qkv, kv=qkv, dst=zeros(B * T * D)), None, PIPELINES)["dst"]
           for op, v in [("attention_direct", {"head_dim": hd}), ("attention_q4", {"head_dim": hd, "vec4": "vec4"})]}
    assert np.array_equal(got["attention_direct"].view(np.uint32), got["attention_q4"].view(np.uint32))


def test_checker_catches_a_small_error():
    """The comparison is not vacuous: a matmul result off by 1e-4 relative in one element fails."""
    op, variant, params, inputs, _ = matmul_case(17, 65, 257)
    from runtime_py.parity import reference
    import torch
    ref = reference(OPS[op], inputs, params, variant, "f32", None, torch.float64)["dst"].numpy()
    bad = ref.copy()
    bad[5] += 1e-4 * np.abs(ref).max()
    row = compare(OPS[op], "matmul", {"dst": bad}, inputs, params, variant, "f32", None)
    assert not row.passed and "dst[5]" in row.where
    good = compare(OPS[op], "matmul", {"dst": ref.astype(np.float32)}, inputs, params, variant, "f32", None)
    assert good.passed


def test_rng_matches_numpy_bit_for_bit_in_sampler_noise(gpu):
    """The sampler step draws z in-kernel: with x0 coefficient 0 and sigma 1 the output IS the noise."""
    from dit_model import noise
    f = step_fields(TABLES, 3, seed=12345, N=1, sampler="ddim", eta=1.0, clip_x0=False)
    f.update(sqrt_abar_prev=0.0, ddim_dir=0.0, sigma=1.0)
    from runtime_py.parity import run_kernel
    got = run_kernel(gpu, OPS["sampler_step"], {}, "f32", dict(count=1 * 4 * 65, C=4, P2=65, learn_sigma=0),
                     dict(guided=rnd(4 * 65), x=rnd(4 * 65)), rounded(f), PIPELINES)["x"]
    want = noise.normal(12345, noise.STREAM_STEP, 3, 4 * 65)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_op_table_offers_its_variants():
    """The variants an op offers are data of the op table; a kernel outside them is refused by name."""
    assert OPS["matmul"].variants["act"] == ("none", "gelu", "silu")
    with pytest.raises(ValueError, match="act='relu'"):
        OPS["matmul"].kernel_name({"in_act": "none", "act": "relu", "vec4": "scalar"}, "f32")
    from wgsl.ops import workgroup_bytes
    assert workgroup_bytes("attention", {"head_dim": 64}) == 2 * 16 * 16 * 16 <= 16384
    assert max(op.workgroup_storage({"head_dim": 128}) for op in ALL_OPS.values()) <= 16384   # WebGPU default
