"""Error bounds of the op table's kernels: how far a WGSL f32 result may lie from the exact value.

Each function takes the same arguments as the op's torch reference (wgsl/reference.py): the
kernel's inputs as float64 tensors (the exact f32 / f16 operands), the params plus the template
variant, the variant and the step uniform (f32-rounded fields), and returns, for every binding the
kernel writes, a float64 tensor of the same size: the largest error the WGSL spec allows in that
element. Elements a kernel does not write, copies and integer outputs get 0 (must be exact).

The derivations are in docs/tolerances.md; the symbols here follow it:
  U = 2^-23    WGSL lets every f32 +, -, * round to either neighbour: |err| <= U |result|
  ULP(x) <= U |x|, so a spec bound of n ULP is a relative error of at most n U
  exp: 3 + 2|x| ULP;  x / y: 2.5 ULP;  inverseSqrt: 2 ULP;  sqrt = 1 / inverseSqrt: 4.5 ULP
  gamma(n) = n U / (1 - n U): n roundings of one value, compounded
Bounds are first order in U; SECOND_ORDER (1.01) covers the products of two or more U terms
(the largest first-order relative coefficient used here is < 10^-3), TINY covers results a
GPU may flush to zero below 2^-126.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .reference import label_table, sampler_operands

U = 2.0 ** -23
SECOND_ORDER = 1.01
TINY = 2.0 ** -100
EXP_CONST, EXP_SLOPE = 3.0, 2.0      # exp(x): 3 + 2|x| ULP
DIV = 2.5                            # x / y: 2.5 ULP for |y| in [2^-126, 2^126]
SQRT = 2.0 + DIV                     # sqrt(x) is inherited from 1 / inverseSqrt(x): 2 + 2.5 ULP
L_SILU = 1.1                         # max |d silu / dx| = 1.09984
L_GELU = 1.13                        # max |d gelu_tanh / dx| = 1.12899
GELU_C, GELU_K = 0.7978845608028654, 0.044715


def gamma(n) -> float:
    n = float(n)
    return n * U / (1.0 - n * U)


def _finish(b: torch.Tensor) -> torch.Tensor:
    return b * SECOND_ORDER + TINY


def _full(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like, dtype=torch.float64)


def _scatter_rows(dst, rows, group, stride):
    M, Ncol = rows.shape
    m = torch.arange(M)
    out = dst.clone().reshape(-1, Ncol)
    out[(m // group) * stride + m % group] = rows
    return out.reshape(-1)


# ------------------------------------------------------------------ activations at an f32 input x

def silu_rel(x: torch.Tensor) -> torch.Tensor:
    """Relative error of x / (1 + exp(-x)) evaluated in WGSL f32: exp's (3 + 2|x|) ULP enters the
    denominator with weight exp(-x) / (1 + exp(-x)) = sigmoid(-x); + 1 rounding of 1 + e; 2.5 ULP division."""
    return U * (1.0 + DIV + (EXP_CONST + EXP_SLOPE * x.abs()) * torch.sigmoid(-x))


def silu_err(x: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Abs error of act(x~) with |x~ - x| <= dx: L dx + the evaluation error at x~. For x < -80, exp(-x)
    may overflow and the result be 0: allow |silu(x)| itself."""
    y = torch.nn.functional.silu(x).abs()
    ax = x.abs() + dx
    return L_SILU * dx + silu_rel(ax * torch.sign(x)) * (y + L_SILU * dx) + y * (x < -80)


def gelu_err(x: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Abs error of the WGSL tanh-GELU 0.5 x (1 + tanh(u)), u = c (x + k x^3), tanh(u) = 1 - 2 / (exp(2|u|) + 1),
    at an input within dx of x (docs/tolerances.md, "GELU")."""
    ax = x.abs() + dx
    uu = GELU_C * (ax + GELU_K * ax ** 3)                      # |u|; computed with relative error 7 U
    with np.errstate(over="ignore"):
        E = torch.exp((2.0 * uu).clamp(max=700.0))
    e_E = U * (EXP_CONST + EXP_SLOPE * 2.0 * uu + 2.0 * uu * 7.0)
    q = 2.0 / (E + 1.0)                                        # 1 - tanh|u|
    e_q = E / (E + 1.0) * e_E + U + DIV * U
    dq = q * e_q + q * (2.0 * uu > 88.0)                       # exp overflow: q becomes 0
    t = 1.0 - q
    dt = dq + U * t
    one_t = torch.where(x < 0, q, 2.0 - q)                     # 1 + sign(x) tanh|u|
    d1t = dt + U * one_t
    y = 0.5 * ax * one_t
    return L_GELU * dx + 0.5 * ax * d1t + U * y


ACT_ERR = {"silu": silu_err, "gelu": gelu_err}


# ------------------------------------------------------------------ kernels

def dot_bound(M, N, K, a, w, bias, in_act, act):
    """(M, N) bound of act(in_act(a) w^T + bias): a (M, K) f32 values, w (N, K), bias (N,)."""
    if in_act == "silu":
        s = torch.nn.functional.silu(a)
        e_in = (s.abs() * silu_rel(a)) @ w.abs().T              # error carried in by the inputs
    else:
        s, e_in = a, torch.zeros(M, N, dtype=torch.float64)
    S = s.abs() @ w.abs().T                                     # sum_k |a_k| |w_k|
    dz = gamma(K + 1) * (S + bias.abs()) + e_in * (1.0 + gamma(K))
    if act == "none":
        return dz
    z = s @ w.T + bias
    return ACT_ERR[act](z, dz)


def bound_matmul(x, p, v, step):
    """dot_bound over K products; matmul_q8 (int8 weights): the products a q (q exact integers) and their sum
    round as for K products, then the sum is multiplied by scale[n] > 0 once: one rounding more, K + 1 in place of
    K, with w = q * scale (the dequantised weights the reference uses), as conv2d_q8's bound."""
    from .reference import matmul_weight
    M, Nn, K = p["M"], p["N"], p["K"]
    a = x["a"][: M * K].reshape(M, K)
    w = matmul_weight(x, p)
    y = dot_bound(M, Nn, K + ("wq" in x), a, w, x["bias"][:Nn], v.get("in_act", "none"), v.get("act", "none"))
    return {"dst": _finish(_scatter_rows(_full(x["dst"]), y, p["out_group"], p["out_stride"]))}


def bound_matmul_naive(x, p, v, step):
    M, Nn, K = p["M"], p["N"], p["K"]
    y = dot_bound(M, Nn, K, x["a"][: M * K].reshape(M, K), x["w"][: Nn * K].reshape(Nn, K), x["bias"][:Nn],
                  "none", "none")
    out = _full(x["dst"])
    out[: M * Nn] = y.reshape(-1)
    return {"dst": _finish(out)}


def bound_layernorm_mod(x, p, v, step, n_sum=None):
    """Two-pass layer norm: lane sums of ceil(D/64) terms then a 6-level tree (docs/tolerances.md); n_sum:
    another summation's longest chain of roundings (layernorm_rows)."""
    rows, D, T, T_in = p["rows"], p["D"], p["T"], p["T_in"]
    r = torch.arange(rows)
    b, t = r // T, r % T
    xin = x["x"].reshape(-1, D)[b * T_in + t]                   # (rows, D)
    n_sum = n_sum or -(-D // 64) + 6
    mu = xin.mean(dim=1, keepdim=True)
    d_mu = gamma(n_sum) * xin.abs().sum(dim=1, keepdim=True) / D + (DIV + 1.0) * U * mu.abs()
    c = xin - mu
    var = (c * c).mean(dim=1, keepdim=True)
    W = var + 1e-6
    dW = var * (3.0 * U + gamma(n_sum) + (DIV + 1.0) * U) + d_mu ** 2 + 1e-6 * U + U * W
    rstd = W.rsqrt()
    e_rstd = dW / (2.0 * W) + (SQRT + DIV) * U
    y = c * rstd
    dy = rstd * (d_mu + U * (c.abs() + d_mu)) + y.abs() * (e_rstd + U)
    if p["has_mod"]:
        mod = x["ada"].reshape(-1, p["mod_stride"])[b]
        shift = mod[:, p["shift_off"]: p["shift_off"] + D]
        one_s = (1.0 + mod[:, p["scale_off"]: p["scale_off"] + D]).abs()
        ys = y.abs() * one_s
        dy = dy * one_s + ys * U + U * ys + U * (ys + shift.abs())
    out = _full(x["dst"])
    out[: rows * D] = dy.reshape(-1)
    return {"dst": _finish(out)}



def bound_layernorm_rows(x, p, v, step):
    """layernorm_mod's bound with one invocation's sums: 4 interleaved lanes of ceil(D/4) terms, then 2 levels."""
    return bound_layernorm_mod(x, p, v, step, n_sum=-(-p["D"] // 4) + 2)

ATTENTION_TILE = 16      # keys per workgroup-memory tile (wgsl.ops.ATTENTION_TILE; kept equal by a test)


def bound_attention(x, p, v, step):
    """Online-softmax attention (docs/tolerances.md, "Attention")."""
    Bn, Tq, Tk, H = p["batch"], p["T_q"], p["T_kv"], p["H"]
    hd = v["head_dim"]
    hd4 = -(-hd // 4)
    q = x["q"].reshape(Bn, Tq, -1)[:, :, p["q_off"]: p["q_off"] + H * hd].reshape(Bn, Tq, H, hd).transpose(1, 2)
    kv = x["kv"].reshape(Bn, Tk, -1)
    k = kv[:, :, p["k_off"]: p["k_off"] + H * hd].reshape(Bn, Tk, H, hd).transpose(1, 2)
    vv = kv[:, :, p["v_off"]: p["v_off"] + H * hd].reshape(Bn, Tk, H, hd).transpose(1, 2)
    scale = hd ** -0.5
    s = (q * scale) @ k.transpose(-1, -2)                                   # (B, H, Tq, Tk)
    sig = (gamma(hd4 + 3) + 3.0 * U) * ((q.abs() * scale) @ k.abs().transpose(-1, -2))   # score errors
    m = s.amax(dim=-1, keepdim=True)
    gap = m - s                                                              # >= 0
    n_tiles = -(-Tk // ATTENTION_TILE)
    e_w = (U * (EXP_CONST + 5.0 * n_tiles + 5.0 * gap) + sig + sig.amax(dim=-1, keepdim=True))
    P = torch.softmax(s, dim=-1)
    o = P @ vv                                                               # (B, H, Tq, hd)
    num = (P * (e_w + gamma(Tk + 1))) @ vv.abs()
    den = (P * e_w).sum(dim=-1, keepdim=True) + gamma(Tk) + (DIV + 1.0) * U
    d = num + o.abs() * den
    out = _full(x["dst"])
    out[: Bn * Tq * H * hd] = d.transpose(1, 2).reshape(-1)
    return {"dst": _finish(out)}


def bound_gated_residual(x, p, v, step):
    count, D, T = p["count"], p["D"], p["T"]
    y = x["y"][:count].reshape(-1, T, D)
    if p["has_gate"]:
        gate = x["ada"].reshape(-1, p["mod_stride"])[:, p["gate_off"]: p["gate_off"] + D]
        y = gate[: y.shape[0], None, :] * y
    out = _full(x["h"])
    out[:count] = U * (x["h"][:count].abs() + 2.0 * y.reshape(-1).abs())
    return {"h": _finish(out)}


def bound_pos_embed_add(x, p, v, step):
    T, D, Tb = p["T"], p["D"], p["T_buf"]
    h = x["h"].reshape(-1, Tb, D)
    out = _full(x["h"]).reshape(-1, Tb, D)
    out[:, :T] = U * (h[:, :T].abs() + x["pos"][: T * D].reshape(T, D).abs())
    return {"h": _finish(out.reshape(-1))}


def bound_label_embed(x, p, v, step):
    # y_emb: L rows added in order, L - 1 roundings: |err| <= gamma(L - 1) sum_l |e_l| (exact for L = 1);
    # c = t_emb + y_emb: that error plus one rounding of U |t_emb + y_emb| <= U (|t_emb| + sum_l |e_l|).
    # label_embed_q8: each e_l is the product q * scale[row] (q exact in f32), one rounding more per term:
    # |fl(q s) - q s| <= U |e_l|, and the L - 1 additions of the rounded terms make it gamma(L) sum_l |e_l| in all
    # (L = 1: U |e|, the product alone), with e_l = q s the dequantised value the reference sums.
    D, L = p["D"], p["levels"]
    Bn = p["count"] // D
    n = L - 1 + ("scale" in x)                                           # roundings of y_emb
    rows = x["y"][: Bn * L].long().clamp(max=p["rows"] - 1).reshape(Bn, L)
    mag = label_table(x, p)[rows].abs().sum(1).reshape(-1)              # sum_l |e_l|, (B D,)
    y_emb, c = _full(x["y_emb"]), _full(x["c"])
    y_emb[: Bn * D] = gamma(n) * mag
    c[: Bn * D] = (gamma(n) + U) * mag + U * x["t_emb"][: Bn * D].abs()
    return {"y_emb": _finish(y_emb) if n > 0 else y_emb, "c": _finish(c)}


def bound_exact(x, p, v, step, names=("dst",)):
    return {n: _full(x[n]) for n in names}


def bound_expand_batch(x, p, v, step):
    from ditformat import noise
    Pn, Bn = p["P"], p["B"]
    K, J, N = step["K"], step["J"], step["N"]
    xs = x["x"][: N * Pn].reshape(1, N, Pn).expand(K, N, Pn)
    if K > 1:
        z = torch.from_numpy(noise.normal(step["seed"], noise.STREAM_PERTURB, step["i"], K * N * Pn)).double()
        e = U * (xs.abs() + 2.0 * abs(step["perturb"]) * z.reshape(K, N, Pn).abs())
    else:
        e = torch.zeros_like(xs)
    out = _full(x["x_in"])
    out[: Bn * Pn] = e[:, None].expand(K, J, N, Pn).reshape(-1)
    return {"x_in": _finish(out), "t_in": _full(x["t_in"])}


def bound_guide_combine(x, p, v, step):
    C, Co, P2 = p["C"], p["C_out"], p["P2"]
    K, J, N = step["K"], step["J"], step["N"]
    o = x["model_out"][: K * J * N * Co * P2].reshape(K, J, N, Co, P2)
    a = torch.tensor(step["coef"][:J], dtype=torch.float64).reshape(1, J, 1, 1, 1)
    eps = (a * o[:, :, :, :C]).sum(dim=1).mean(dim=0)
    d = gamma(J + K) * (a.abs() * o[:, :, :, :C].abs()).sum(dim=1).mean(dim=0) + DIV * U * eps.abs()
    if Co > C:
        ov = o[:, step["var_branch"], :, C:]
        d = torch.cat([d, gamma(K) * ov.abs().mean(dim=0) + DIV * U * ov.mean(dim=0).abs()], dim=1)
    out = _full(x["guided"])
    out[: d.numel()] = d.reshape(-1)
    return {"guided": _finish(out)}


def bound_sampler_step(x, p, v, step):
    """One DDPM / DDIM update (docs/tolerances.md, "Sampler step"); flags: 1 clip, 2 DDPM, 4 noise, 8 v-prediction."""
    count, C, Co, g, xt, z = sampler_operands(x, p, step)
    z = z.double()
    out_ = g[:, :C]
    sa, s1 = step["sqrt_abar"], step["sqrt_1m_abar"]
    flags = step["flags"]
    if flags & 8:                                                        # x0 = sa xt - s1 v
        x0 = sa * xt - s1 * out_
        d_x0 = 2.0 * U * (abs(sa) * xt.abs() + abs(s1) * out_.abs())
    else:                                                                # x0 = (xt - s1 eps) / sa
        num = xt - s1 * out_
        x0 = num / sa
        d_x0 = (U * abs(s1) * out_.abs() + U * num.abs()) / abs(sa) + DIV * U * x0.abs()
    if flags & 1:
        x0 = x0.clamp(-1, 1)                                             # 1-Lipschitz: d_x0 stays
    if not flags & 4:
        z = torch.zeros_like(z)
    if flags & 2:                                                        # DDPM
        lb, lpv = step["log_beta"], step["log_post_var"]
        if Co > C:
            f = (g[:, C:] + 1) / 2
            d_f = (1.0 + DIV) * U * f.abs()
            L = f * lb + (1 - f) * lpv
            d_L = (d_f * abs(lb) + U * (f * lb).abs() + (d_f + U * (1 - f).abs()) * abs(lpv)
                   + U * ((1 - f) * lpv).abs() + U * ((f * lb).abs() + ((1 - f) * lpv).abs()))
        else:
            L = torch.full_like(xt, lpv)
            d_L = torch.zeros_like(xt)
        sd = torch.exp(0.5 * L)
        e_sd = U * (EXP_CONST + EXP_SLOPE * 0.5 * L.abs()) + 0.5 * d_L
        T1, T2, T3 = (step["coef1"] * x0).abs(), (step["coef2"] * xt).abs(), (sd * z).abs()
        d = (abs(step["coef1"]) * d_x0 + U * T1 + U * T2 + (e_sd + U) * T3
             + U * (T1 + T2) + U * (T1 + T2 + T3))
    else:                                                                # DDIM
        n2 = xt - sa * x0
        eps2 = n2 / s1
        d_eps2 = (abs(sa) * d_x0 + U * (sa * x0).abs() + U * n2.abs()) / abs(s1) + DIV * U * eps2.abs()
        T1, T2, T3 = (step["sqrt_abar_prev"] * x0).abs(), (step["ddim_dir"] * eps2).abs(), (step["sigma"] * z).abs()
        d = (abs(step["sqrt_abar_prev"]) * d_x0 + abs(step["ddim_dir"]) * d_eps2 + U * (T1 + T2 + T3)
             + U * (T1 + T2) + U * (T1 + T2 + T3))
    out = _full(x["x"])
    out[:count] = d.reshape(-1)
    return {"x": _finish(out)}


# ------------------------------------------------------------------ timestep_embed: Cody-Waite + Cephes

SIN_COEFS = ("-1.6666654611e-1", "8.3321608736e-3", "-1.9515295891e-4")                     # r + r z (...)
COS_COEFS = ("4.166664568298827e-2", "-1.388731625493765e-3", "2.443315711809948e-5")       # 1 - z/2 + z^2 (...)
PIO2_PARTS = ("1.5703125", "4.837512969970703125e-4", "7.549789948768648e-8")


def _poly_error() -> float:
    """Max |poly - sin| and |poly - cos| on |r| <= pi/4 (1 + 1e-6), with the f32-rounded coefficients
    evaluated in float64 on 200001 points, doubled (the polynomials are smooth: the grid max is within
    a few percent of the true max)."""
    r = np.linspace(-math.pi / 4 * (1 + 1e-6), math.pi / 4 * (1 + 1e-6), 200001)
    z = r * r
    s3, s5, s7 = (float(np.float32(c)) for c in SIN_COEFS)
    c4, c6, c8 = (float(np.float32(c)) for c in COS_COEFS)
    s = r + r * z * (s3 + z * (s5 + z * s7))
    c = 1.0 - 0.5 * z + z * z * (c4 + z * (c6 + z * c8))
    return 2.0 * max(np.abs(s - np.sin(r)).max(), np.abs(c - np.cos(r)).max())


POLY_ERROR = _poly_error()
PIO2_TAIL = abs(math.pi / 2 - sum(float(np.float32(c)) for c in PIO2_PARTS))
POLY_ROUNDING = 11 * 1.6 * U        # <= 11 roundings per path, each of a value |v| <= 1.6, output sensitivity <= 1


def bound_timestep_embed(x, p, v, step):
    half = p["half"]
    # the argument t * f is one f32 product in the model and on the GPU: the GPU may round it to the other
    # neighbour, a difference of up to U |arg| (and |d sin/dx|, |d cos/dx| <= 1)
    arg = (x["t"].to(torch.float32)[:, None] * x["freqs"][:half].to(torch.float32)[None]).double()
    k = torch.round(arg * (2 / math.pi)).abs()
    r = (arg - torch.round(arg * (2 / math.pi)) * (math.pi / 2)).abs()
    d_r = 3.0 * U * (r + k * float(np.float32(PIO2_PARTS[1]))) + U * k * float(np.float32(PIO2_PARTS[2])) + k * PIO2_TAIL
    e = U * arg.abs() + d_r + POLY_ERROR + POLY_ROUNDING
    emb = torch.cat([e, e], dim=1).reshape(-1)
    out = _full(x["dst"])
    out[: emb.numel()] = emb
    return {"dst": _finish(out)}


# ------------------------------------------------------------------ the VAE decoder's kernels (docs/tolerances.md, "VAE")

def bound_conv2d(x, p, v, step):
    """Implicit-GEMM convolution: every output is a sum of K = C_in k^2 products, then + bias (+ res):
    gamma(K + 1) (S + |bias|), or gamma(K + 2) (S + |bias| + |res|), S = conv(|src|, |w|). conv2d_q8: the
    products src * q round, the sum is scaled once (scale > 0): one more rounding, K + 1 in place of K."""
    from .reference import conv_batch, conv_weight
    k, Ci, Co, H, W = v["k"], p["C_in"], p["C_out"], p["H"], p["W"]
    n = conv_batch(p)
    src = x["src"][: n * Ci * H * W].reshape(n, Ci, H, W)
    S = torch.nn.functional.conv2d(src.abs(), conv_weight(x, p, v).abs(), padding=(k - 1) // 2)
    S = (S + x["bias"][:Co].abs()[None, :, None, None]).reshape(-1)
    K = Ci * k * k + ("wq" in x)            # conv2d_q8: + the product by scale[co] after the sum
    if p["has_res"]:
        d = gamma(K + 2) * (S + x["res"][: S.numel()].abs())
    else:
        d = gamma(K + 1) * S
    out = _full(x["dst"])
    out[: d.numel()] = d
    return {"dst": _finish(out)}


def bound_groupnorm(x, p, v, step):
    """layernorm_mod's two-pass bound over the C / G * HW values of a group (256 invocations: lane sums of
    ceil(n / 256) terms, an 8-level tree), eps from the params, then the per-channel affine z = y w + b
    (a product and a sum) and, for act = silu, the activation at z~ within dz of z."""
    from .reference import f32_bits
    G, C, HW = p["G"], p["C"], p["HW"]
    rows = p["rows"]
    cpg = C // G
    n = cpg * HW
    eps = f32_bits(p["eps_bits"])
    xg = x["src"][: rows * n].reshape(rows, n)
    n_sum = -(-n // 256) + 8
    mu = xg.mean(dim=1, keepdim=True)
    d_mu = gamma(n_sum) * xg.abs().sum(dim=1, keepdim=True) / n + (DIV + 1.0) * U * mu.abs()
    c = xg - mu
    var = (c * c).mean(dim=1, keepdim=True)
    Wv = var + eps
    dW = var * (3.0 * U + gamma(n_sum) + (DIV + 1.0) * U) + d_mu ** 2 + eps * U + U * Wv
    rstd = Wv.rsqrt()
    e_rstd = dW / (2.0 * Wv) + (SQRT + DIV) * U
    y = c * rstd
    dy = rstd * (d_mu + U * (c.abs() + d_mu)) + y.abs() * (e_rstd + U)
    ch = (torch.arange(rows)[:, None] % G) * cpg + torch.arange(n)[None, :] // HW      # channel of each value
    w, b = x["norm_w"][:C][ch], x["norm_b"][:C][ch]
    yw = (y * w).abs()
    dz = dy * w.abs() + U * yw + U * (yw + b.abs())
    if v.get("act", "none") == "silu":
        dz = silu_err(y * w + b, dz)
    out = _full(x["dst"])
    out[: rows * n] = dz.reshape(-1)
    return {"dst": _finish(out)}


def bound_bmm(x, p, v, step):
    """K products summed (K roundings each), then the product by alpha: gamma(K + 1) |alpha| |A| |B|^T."""
    from .reference import bmm_operands, f32_bits
    A, Bm = bmm_operands(x, p)
    d = (gamma(p["K"] + 1) * abs(f32_bits(p["alpha_bits"])) * (A.abs() @ Bm.abs().transpose(1, 2))).reshape(-1)
    out = _full(x["dst"])
    out[: d.numel()] = d
    return {"dst": _finish(out)}


def bound_softmax_rows(x, p, v, step):
    """w_j = exp(s_j - m) (m the row max, exact; gap_j = m - s_j >= 0): the subtraction's rounding (U gap_j)
    and exp's 3 + 2 gap_j ULP give e_j = U (3 + 3 gap_j); l = sum_j w_j (ceil(L / 256) + 8 roundings), then
    1 / l (2.5 ULP) and the product (U): dp_j = p_j (e_j + sum_k p_k e_k + gamma(ceil(L / 256) + 8) + 3.5 U)."""
    rows, L = p["rows"], p["L"]
    s = x["x"][: rows * L].reshape(rows, L)
    gap = s.amax(dim=1, keepdim=True) - s
    e = U * (EXP_CONST + (EXP_SLOPE + 1.0) * gap)
    P = s.softmax(-1)
    d = P * (e + (P * e).sum(dim=1, keepdim=True) + gamma(-(-L // 256) + 8) + (DIV + 1.0) * U)
    out = _full(x["x"])
    out[: rows * L] = d.reshape(-1)
    return {"x": _finish(out)}
