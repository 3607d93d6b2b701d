"""The GELU and the blocked attention of web/ditweb-kernels.wasm (wasm/kernels.c), called directly in node and held to
their derived error bounds against float64 torch, in the plain and the relaxed SIMD modules.

GELU (gelu4 / gelu_tanh): x / (1 + 2^t), t = -2u log2(e) = x (A + B x^2), 2^t by exp2_4 (a polynomial for 2^f on
[-1/2, 1/2], EXP2_ERR relative at most, checked over every f32 f there). Its bound, gelu_err_wasm, is derived in the
docstring; tests/test_wasm_q8.py holds the int8 matmul's GELU outputs to it too.

Attention (attention_blocked: head dims a multiple of 8 up to 64, T_kv <= 512): the scores s_j in log2 units summed
over d in order, p_j = 2^max(s_j - m, -100), l and o = sum_j p_j v_j summed over j in order, o * (1 / l); its bound,
attention_bound_wasm, below. The whole model's forward pass: tests/test_wasm.py."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import torch

from test_wasm import node_flags

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "_wasm_kernels_node.mjs"
u = 2.0 ** -24                      # an f32 rounding, relative
EXP2_ERR = 2.0e-7                   # 2^f by exp2_4 on [-1/2, 1/2]: 1.93e-7 at most over every f32 f (wasm/kernels.c)
L_GELU = 1.13                       # max |d gelu_tanh / dx| = 1.12899
GELU_C, GELU_K = 0.7978845608028654, 0.044715
LOG2E = 1.0 / math.log(2.0)


def run(calls: list[dict]) -> list[np.ndarray]:
    relaxed = any(c.get("simd") == "relaxed" for c in calls)
    r = subprocess.run(["node", *node_flags(relaxed), str(SCRIPT)], input=json.dumps(calls), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [np.asarray(c["out"], np.float32) for c in json.loads(r.stdout)]


def gelu_tanh64(x: torch.Tensor) -> torch.Tensor:
    """torch's tanh GELU 0.5 x (1 + tanh u) in float64, as x sigmoid(2u): the same function without the cancellation
    in 1 + tanh u (torch's float64 gives 0 where the value is 7e-30 at x = -9.15); within |x| 2^-50 of torch's."""
    x = x.double()
    y = x * torch.sigmoid(2.0 * GELU_C * (x + GELU_K * x ** 3))
    fin = x.abs() < 1e100
    assert ((y - torch.nn.functional.gelu(x, approximate="tanh")).abs()[fin] <= x.abs()[fin] * 2.0 ** -50).all()
    return y


def gelu_err_wasm(x: torch.Tensor, dx: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Abs error of the kernel's GELU at an f32 input within dx of x (float64 tensors), against gelu_tanh(x).
    The kernel computes y = x / (1 + e), e = 2^t~, t = -2 c (x + k x^3) log2(e) (= x (A + B x^2)):
    - t~ carries the roundings of A and B (1/2 u each), x x, B x^2, A + B x^2 (same signs: no cancellation) and the
      product with x: |t~ - t| <= 5 u |t|, taken as 6 u |t|;
    - f = t~ - n is exact and 2^f is within EXP2_ERR relatively; 2^n is exact (t~ >= -100: no subnormal), so
      e = 2^t (1 + h), |h| <= EXP2_ERR + ln2 6 u |t| (to first order);
    - y = x / (1 + e) moves by |y| e / (1 + e) |h|, and 1 + e and the division round once each (2 u |y|);
    - t~ < -100 is raised to -100 and t~ > 128 lowered to 128 (2^128 = inf, y = 0): either changes y by at most
      |x| 2^-100 (the true |y| is below |x| 2^-127 in the second case, 1 + e rounds to 1 in the first).
    At a perturbed input the true GELU moves by at most L_GELU dx, and the evaluation error is taken at the interval's
    worst point: |t| at its largest, e / (1 + e) = sigmoid(t ln2) at the interval's largest t (t falls as x rises).
    The first-order terms are enlarged by 1 %."""
    dx = torch.as_tensor(dx, dtype=torch.float64)
    x = x.double()
    tt = lambda z: -2.0 * GELU_C * (z + GELU_K * z ** 3) * LOG2E
    t_hi, t_lo = tt(x - dx), tt(x + dx)                           # t is decreasing in x
    t_abs = torch.maximum(t_hi.abs(), t_lo.abs())
    s = torch.sigmoid(t_hi.clamp(-200.0, 200.0) * math.log(2.0))    # e / (1 + e), at most
    y = gelu_tanh64(x).abs() + L_GELU * dx
    rel = s * (EXP2_ERR + math.log(2.0) * 6.0 * u * t_abs) + 2.0 * u
    return (L_GELU * dx + y * rel) * 1.01 + (x.abs() + dx) * 2.0 ** -100


def gelu_inputs() -> torch.Tensor:
    """f32 inputs: a dense grid over [-12, 12] (all of the curve that is not x or 0), magnitudes from 1e-30 to 1e30
    of either sign, zeros."""
    g = torch.Generator().manual_seed(4)
    grid = torch.linspace(-12.0, 12.0, 60001, dtype=torch.float64)
    mags = torch.logspace(-30, 30, 2001, dtype=torch.float64)
    rnd = torch.randn(8000, generator=g, dtype=torch.float64) * 4.0
    x = torch.cat([grid, mags, -mags, rnd, torch.tensor([0.0, -0.0, 5.2, -5.2, 9.99, -9.99, 88.0, -88.0])])
    return x.float().double()


def test_gelu_matches_float64_within_its_bound():
    """op_matmul with K = 1, w = 1, bias 0 gives gelu(a) exactly at the input a (a 1 + 0 is a): 8 columns through
    gelu4 (the vector epilogue) and a ninth through gelu_tanh (the N % 8 tail), which gives the same bits. Every output
    within gelu_err_wasm of float64 torch, in both modules (the same bits: GELU is unfused everywhere); the bound is
    not vacuous (some error is within 10x of it)."""
    x = gelu_inputs()
    M, N = len(x), 9
    call = {"fn": "op_matmul", "params": [M, N, 1, M, M],
            "args": [{"f32": x.tolist()}, {"f32": [1.0] * N}, {"f32": [0.0] * N}, {"zeros": M * N},
                     {"u32": 0}, {"u32": 1}, {"zeros": 4}], "read": [3, M * N]}
    plain, relaxed = run([call, {**call, "simd": "relaxed"}])
    assert (plain.view(np.uint32) == relaxed.view(np.uint32)).all()
    got = plain.reshape(M, N)
    for c in range(1, N):
        assert (got[:, c].view(np.uint32) == got[:, 0].view(np.uint32)).all(), f"column {c} differs from column 0"
    ref = gelu_tanh64(x).numpy()
    err = np.abs(got[:, 0].astype(np.float64) - ref)
    bound = gelu_err_wasm(x).numpy()
    ratios = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), np.where(err > 0, np.inf, 0.0))
    worst = int(np.argmax(ratios))
    assert (err <= bound).all(), f"x = {x[worst].item()!r}: error {err[worst]:.3g} > bound {bound[worst]:.3g}"
    ratio = ratios.max()
    rel = (err / np.maximum(np.abs(ref), 1e-30))[np.abs(x.numpy()) < 12].max()
    print(f"\n[gelu] largest error / bound {ratio:.3f}; largest relative error on [-12, 12] {rel:.3g}")
    assert ratio > 0.1
    assert np.isnan(run([{**call, "args": [{"f32": ["NaN"] * M}, *call["args"][1:]]}])[0]).all()


# batch, T_q, T_kv, H, head dim, layout: "qkv" (one buffer, q k v side by side, as the blocks' self-attention) or
# "split" (q and kv in their own buffers, with an offset); big: scale a few query rows by 30 (score gaps past the
# floor of 2^-100)
ATT_CASES = [
    (2, 64, 64, 4, 32, "qkv", False),        # the shipped model's blocks at one CFG step
    (1, 13, 67, 2, 64, "split", True),       # T_q % 8 = 5, T_kv % 4 = 3: the edge blocks
    (3, 5, 9, 3, 8, "split", False),
    (1, 512, 512, 1, 16, "qkv", True),       # ATT_KEYS keys
]


def attention_case(B, Tq, Tk, H, hd, layout, big, g):
    D = H * hd
    if layout == "qkv":
        assert Tq == Tk
        q = torch.randn(B * Tq, 3 * D, generator=g, dtype=torch.float64)
        if big:
            q[::7, :D] *= 30.0
        q = q.float().double().reshape(-1)
        kv = q
        p = {"batch": B, "T_q": Tq, "T_kv": Tk, "H": H, "q_stride": 3 * D, "q_off": 0, "kv_stride": 3 * D,
             "k_off": D, "v_off": 2 * D, "out_stride": D}
    else:
        q = torch.randn(B * Tq, D + 4, generator=g, dtype=torch.float64)
        if big:
            q[::3] *= 30.0
        q = q.float().double().reshape(-1)
        kv = torch.randn(B * Tk * (2 * D + 8), generator=g, dtype=torch.float64).float().double()
        p = {"batch": B, "T_q": Tq, "T_kv": Tk, "H": H, "q_stride": D + 4, "q_off": 4, "kv_stride": 2 * D + 8,
             "k_off": 8, "v_off": D + 8, "out_stride": D}
    return q, kv, p


def attention_bound_wasm(q, kv, p, hd):
    """The bound of attention_blocked against float64 softmax(q k^T / sqrt(hd)) v, per output, derived:
    - the scores in log2 units: c = fl(fl(1 / fl(sqrt(hd))) log2(e)) is within 4 u of log2(e) / sqrt(hd); each
      q_d c one rounding; the hd products and their sum in d order (fused or not): the score s_j is within
      sig_j = gamma(hd + 5) c sum_d |q_d k_jd| of its exact value;
    - softmax is invariant to the shift m (the largest computed score), so only each weight's own error counts:
      p_j = 2^(s_j - m) (1 + h_j) with |h_j| <= ln2 (sig_j + u gap_j) + EXP2_ERR (gap_j = m - s_j: the subtraction's
      rounding), and the floor 2^-100 adds at most 2^-100 to a weight (the largest is 1, so l >= 1);
    - o = sum_j p_j v_j / sum_j p_j with weights off by h_j: |o~ - o| <= sum_j P_j |h_j| (|v_j| + |o|) to first order
      (P the exact softmax), plus the sums' own roundings: the numerator's T_kv products and adds gamma(T_kv + 1)
      sum_j P_j |v_j|, l's gamma(T_kv) and 1 / l and the product 2 u on |o|; the floor T_kv 2^-100 (max |v| + |o|).
    Enlarged by 1 % for the second-order terms."""
    Bn, Tq, Tk, H = p["batch"], p["T_q"], p["T_kv"], p["H"]
    gam = lambda n: n * u / (1 - n * u)
    qq = q.reshape(Bn, Tq, -1)[:, :, p["q_off"]: p["q_off"] + H * hd].reshape(Bn, Tq, H, hd).transpose(1, 2)
    kk = kv.reshape(Bn, Tk, -1)
    k = kk[:, :, p["k_off"]: p["k_off"] + H * hd].reshape(Bn, Tk, H, hd).transpose(1, 2)
    v = kk[:, :, p["v_off"]: p["v_off"] + H * hd].reshape(Bn, Tk, H, hd).transpose(1, 2)
    c = LOG2E / math.sqrt(hd)
    s = (qq @ k.transpose(-1, -2)) * c                                          # log2 units
    sig = gam(hd + 5) * c * (qq.abs() @ k.abs().transpose(-1, -2))
    gap = s.amax(-1, keepdim=True) - s
    h = math.log(2.0) * (sig + u * (gap + sig.amax(-1, keepdim=True))) + EXP2_ERR
    P = torch.softmax(s * math.log(2.0), dim=-1)
    o = P @ v
    d = (P * h) @ v.abs() + o.abs() * (P * h).sum(-1, keepdim=True)
    d = d + gam(Tk + 1) * (P @ v.abs()) + (gam(Tk) + 2 * u) * o.abs()
    d = d * 1.01 + Tk * 2.0 ** -100 * (v.abs().amax(-2, keepdim=True) + o.abs())
    return d.transpose(1, 2).reshape(-1), o.transpose(1, 2).reshape(-1)


def test_blocked_attention_matches_float64_within_its_bound():
    """op_attention on head dims 8 to 64 with T_q and T_kv not multiples of the blocks, q k v side by side (the
    blocks' layout) or in two buffers with offsets, some queries 30x larger (softmax gaps past the floor): every output
    within attention_bound_wasm of float64 torch (the reference of wgsl/reference.py), in the plain and the relaxed
    module; the bound is not vacuous."""
    from wgsl.ops import OPS
    from ditformat.layout import OP_PARAMS
    g = torch.Generator().manual_seed(6)
    calls, cases = [], []
    for B, Tq, Tk, H, hd, layout, big in ATT_CASES:
        q, kv, p = attention_case(B, Tq, Tk, H, hd, layout, big, g)
        n_out = B * Tq * H * hd
        base = {"fn": "op_attention", "params": [p[name] for name in OP_PARAMS["attention"]],
                "args": [{"f32": q.tolist()}, {"f32": kv.tolist()}, {"zeros": n_out}, {"u32": hd}], "read": [2, n_out]}
        calls += [base, {**base, "simd": "relaxed"}]
        cases.append((q, kv, p, hd, n_out))
    outs = run(calls)
    ratios = []
    for k, (q, kv, p, hd, n_out) in enumerate(cases):
        x = {"q": q, "kv": kv, "dst": torch.zeros(n_out, dtype=torch.float64)}
        ref = OPS["attention"].reference(x, p, {"head_dim": hd}, None)["dst"].numpy()
        bound, o = attention_bound_wasm(q, kv, p, hd)
        assert np.allclose(o.numpy(), ref, rtol=0, atol=1e-12)
        for simd, got in zip(("plain", "relaxed"), outs[2 * k: 2 * k + 2]):
            err = np.abs(got.astype(np.float64) - ref)
            assert (err <= bound.numpy()).all(), \
                f"{p} hd {hd} {simd}: error {err.max():.3g}, {(err / bound.numpy()).max():.3g} of the bound"
            ratios.append((err / bound.numpy()).max())
    print(f"\n[attention] largest error / bound per case and module: {[f'{r:.3f}' for r in ratios]}")
    assert max(ratios) > 0.02
