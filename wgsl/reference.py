"""The torch references of the op table (wgsl/ops.py), one function per kernel.

Each takes the kernel's bindings as tensors in the compute dtype (float64 for the reference,
float32 to measure torch's own rounding error), the params (plus the template variant), the variant
and the step-uniform fields, and returns the full new contents of every binding the kernel writes.
"""
from __future__ import annotations

import torch

from ditformat import noise


def activation(x, kind):
    """A matmul's act / in_act (wgsl/_activations.wgsl.j2) in torch."""
    if kind == "gelu":
        return torch.nn.functional.gelu(x, approximate="tanh")
    if kind == "silu":
        return torch.nn.functional.silu(x)
    return x


def _scatter_rows(dst, rows, group, stride):
    """Write compact rows (M, N) into dst viewed (-1, N) at row (m // group) * stride + m % group."""
    M, Ncol = rows.shape
    m = torch.arange(M)
    idx = (m // group) * stride + m % group
    out = dst.clone().reshape(-1, Ncol)
    out[idx] = rows
    return out.reshape(-1)


def matmul_weight(x, p):
    """(N, K) weights of a matmul; int8 kernels (matmul_q8): the dequantised q * scale[n]."""
    Nn, K = p["N"], p["K"]
    if "wq" in x:
        return unpack_i8(x["wq"][: Nn * K // 4]).reshape(Nn, K) * x["scale"][:Nn, None]
    return x["w"][: Nn * K].reshape(Nn, K)


def ref_matmul(x, p, v, step):
    M, Nn, K = p["M"], p["N"], p["K"]
    a = x["a"][: M * K].reshape(M, K)
    a = activation(a, v.get("in_act", "none"))
    w = matmul_weight(x, p)
    y = activation(a @ w.T + x["bias"][:Nn], v.get("act", "none"))          # (M, N)
    return {"dst": _scatter_rows(x["dst"], y, p["out_group"], p["out_stride"])}


def ref_matmul_naive(x, p, v, step):
    M, Nn, K = p["M"], p["N"], p["K"]
    y = x["a"][: M * K].reshape(M, K) @ x["w"][: Nn * K].reshape(Nn, K).T + x["bias"][:Nn]
    return {"dst": torch.cat([y.reshape(-1), x["dst"][M * Nn:]])}


def ref_layernorm_mod(x, p, v, step):
    rows, D, T, T_in = p["rows"], p["D"], p["T"], p["T_in"]
    r = torch.arange(rows)
    b, t = r // T, r % T
    xin = x["x"].reshape(-1, D)[b * T_in + t]                             # (rows, D)
    y = torch.nn.functional.layer_norm(xin, (D,), eps=1e-6)
    if p["has_mod"]:
        mod = x["ada"].reshape(-1, p["mod_stride"])[b]                    # (rows, stride)
        shift = mod[:, p["shift_off"]: p["shift_off"] + D]
        scale = mod[:, p["scale_off"]: p["scale_off"] + D]
        y = y * (1 + scale) + shift                                      # modulate
    out = x["dst"].clone()
    out[: rows * D] = y.reshape(-1)
    return {"dst": out}


def ref_attention(x, p, v, step):
    Bn, Tq, Tk, H = p["batch"], p["T_q"], p["T_kv"], p["H"]
    hd = v["head_dim"]
    q = x["q"].reshape(Bn, Tq, -1)[:, :, p["q_off"]: p["q_off"] + H * hd].reshape(Bn, Tq, H, hd).transpose(1, 2)
    kv = x["kv"].reshape(Bn, Tk, -1)
    k = kv[:, :, p["k_off"]: p["k_off"] + H * hd].reshape(Bn, Tk, H, hd).transpose(1, 2)
    vv = kv[:, :, p["v_off"]: p["v_off"] + H * hd].reshape(Bn, Tk, H, hd).transpose(1, 2)
    o = torch.nn.functional.scaled_dot_product_attention(q, k, vv)        # (B, H, Tq, hd)
    out = x["dst"].clone()
    out[: Bn * Tq * H * hd] = o.transpose(1, 2).reshape(-1)
    return {"dst": out}


def ref_gated_residual(x, p, v, step):
    count, D, T = p["count"], p["D"], p["T"]
    h = x["h"].clone()
    y = x["y"][:count].reshape(-1, T, D)
    if p["has_gate"]:
        gate = x["ada"].reshape(-1, p["mod_stride"])[:, p["gate_off"]: p["gate_off"] + D]
        y = gate[: y.shape[0], None, :] * y                               # x + gate * y
    h[:count] = h[:count] + y.reshape(-1)
    return {"h": h}


def ref_patchify(x, p, v, step):
    C, I, ps = p["C"], p["I"], p["p"]
    G = I // ps
    img = x["img"][: p["count"]].reshape(-1, C, G, ps, G, ps)            # (B, C, gr, pr, gc, pc)
    patches = img.permute(0, 2, 4, 1, 3, 5).reshape(-1)                  # (B, gr, gc, C, pr, pc)
    out = x["dst"].clone()
    out[: p["count"]] = patches
    return {"dst": out}


def ref_unpatchify(x, p, v, step):
    C, I, ps = p["C"], p["I"], p["p"]
    G = I // ps
    t = x["src"][: p["count"]].reshape(-1, G, G, ps, ps, C)
    img = torch.einsum("nhwpqc->nchpwq", t).reshape(-1)
    out = x["dst"].clone()
    out[: p["count"]] = img
    return {"dst": out}


def ref_pos_embed_add(x, p, v, step):
    T, D, Tb = p["T"], p["D"], p["T_buf"]
    h = x["h"].clone().reshape(-1, Tb, D)
    h[:, :T] += x["pos"][: T * D].reshape(T, D)
    return {"h": h.reshape(-1)}


def ref_timestep_embed(x, p, v, step):
    half = p["half"]
    # the model computes the sinusoid in float32 (dit_model.model.timestep_frequencies): the
    # float64 reference takes cos/sin of the same float32 arguments
    args = (x["t"].to(torch.float32)[:, None] * x["freqs"][:half].to(torch.float32)[None]).to(x["freqs"].dtype)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1).reshape(-1)
    out = x["dst"].clone()
    out[: emb.numel()] = emb
    return {"dst": out}


def label_table(x, p):
    """(rows, D) embedding table; int8 kernels (label_embed_q8): the dequantised q * scale[row]."""
    R, D = p["rows"], p["D"]
    if "scale" in x:
        return unpack_i8(x["table"][: -(-R * D // 4)])[: R * D].reshape(R, D) * x["scale"][:R, None]
    return x["table"][: R * D].reshape(R, D)


def ref_label_embed(x, p, v, step):
    D, L = p["D"], p["levels"]
    Bn = p["count"] // D
    rows = x["y"][: Bn * L].long().clamp(max=p["rows"] - 1).reshape(Bn, L)
    emb = label_table(x, p)[rows].sum(1)                                 # (B, D): the sum of the L levels' rows
    c = x["t_emb"][: Bn * D].reshape(Bn, D) + emb                        # c = t_emb + y_emb
    yo, co = x["y_emb"].clone(), x["c"].clone()
    yo[: Bn * D] = emb.reshape(-1)
    co[: Bn * D] = c.reshape(-1)
    return {"y_emb": yo, "c": co}


def ref_cond_tokens(x, p, v, step):
    D, Td, t0 = p["D"], p["T_dst"], p["tok0"]
    Bn = p["count"] // (2 * D)
    dst = x["dst"].clone().reshape(-1, Td, D)
    dst[:Bn, t0] = x["t_emb"][: Bn * D].reshape(Bn, D)
    dst[:Bn, t0 + 1] = x["y_emb"][: Bn * D].reshape(Bn, D)
    return {"dst": dst.reshape(-1)}


def ref_rng_normal(x, p, v, step):
    i = step["i"] if p["use_step"] else 0
    z = noise.normal(step["seed"], p["stream"], i, p["count"])
    out = x["dst"].clone()
    out[: p["count"]] = torch.from_numpy(z).to(out.dtype)
    return {"dst": out}


def ref_expand_batch(x, p, v, step):
    Pn, Bn = p["P"], p["B"]
    K, J, N = step["K"], step["J"], step["N"]
    xs = x["x"][: N * Pn].reshape(1, N, Pn).expand(K, N, Pn)
    if K > 1:
        z = torch.from_numpy(noise.normal(step["seed"], noise.STREAM_PERTURB, step["i"], K * N * Pn)).to(xs.dtype)
        xs = xs + step["perturb"] * z.reshape(K, N, Pn)
    xin = xs[:, None].expand(K, J, N, Pn).reshape(-1)
    out, t_out = x["x_in"].clone(), x["t_in"].clone()
    out[: Bn * Pn] = xin
    t_out[:Bn] = step["t"]
    return {"x_in": out, "t_in": t_out}


def ref_guide_combine(x, p, v, step):
    C, Co, P2 = p["C"], p["C_out"], p["P2"]
    K, J, N = step["K"], step["J"], step["N"]
    out = x["model_out"][: K * J * N * Co * P2].reshape(K, J, N, Co, P2)
    a = torch.tensor(step["coef"][:J], dtype=out.dtype).reshape(1, J, 1, 1, 1)
    eps = (a * out[:, :, :, :C]).sum(dim=1).mean(dim=0)                 # (N, C, P2)
    if Co > C:
        eps = torch.cat([eps, out[:, step["var_branch"], :, C:].mean(dim=0)], dim=1)
    g = x["guided"].clone()
    g[: eps.numel()] = eps.reshape(-1)
    return {"guided": g}


def sampler_operands(x, p, step):
    """The sampler step's operands (its reference and its bound): count, C, the model's channels Co, the guided
    output g (N, Co, P2), x_t (N, C, P2) and the step's noise z (N, C, P2) in x_t's dtype."""
    count, C, P2 = p["count"], p["C"], p["P2"]
    N = count // (C * P2)
    Co = 2 * C if p["learn_sigma"] else C
    g = x["guided"][: N * Co * P2].reshape(N, Co, P2)
    xt = x["x"][:count].reshape(N, C, P2)
    z = torch.from_numpy(noise.normal(step["seed"], noise.STREAM_STEP, step["i"], count)).to(xt.dtype).reshape(xt.shape)
    return count, C, Co, g, xt, z


def ref_sampler_step(x, p, v, step):
    count, C, Co, g, xt, z = sampler_operands(x, p, step)
    eps = g[:, :C]
    if step["flags"] & 8:                                                # v-prediction: the output is v
        x0 = step["sqrt_abar"] * xt - step["sqrt_1m_abar"] * eps
    else:
        x0 = (xt - step["sqrt_1m_abar"] * eps) / step["sqrt_abar"]
    if step["flags"] & 1:
        x0 = x0.clamp(-1, 1)
    noisy = bool(step["flags"] & 4)
    if step["flags"] & 2:                                                # DDPM
        if Co > C:
            frac = (g[:, C:] + 1) / 2
            logvar = frac * step["log_beta"] + (1 - frac) * step["log_post_var"]
        else:
            logvar = torch.full_like(xt, step["log_post_var"])
        new = step["coef1"] * x0 + step["coef2"] * xt
        if noisy:
            new = new + torch.exp(0.5 * logvar) * z
    else:                                                                # DDIM
        eps2 = (xt - step["sqrt_abar"] * x0) / step["sqrt_1m_abar"]
        new = step["sqrt_abar_prev"] * x0 + step["ddim_dir"] * eps2
        if noisy:
            new = new + step["sigma"] * z
    out = x["x"].clone()
    out[:count] = new.reshape(-1)
    return {"x": out}


# ------------------------------------------------------------------ the benchmark's torch equivalents
# (p, variant) -> a zero-argument call doing the same work as one dispatch with torch on CPU, float32.

def torch_matmul(p, variant):
    F = torch.nn.functional
    a = torch.rand(p["M"], p["K"])
    w, b = torch.rand(p["N"], p["K"]), torch.rand(p["N"])
    act = {"gelu": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu}.get(variant.get("act"), lambda x: x)
    pre = F.silu if variant.get("in_act") == "silu" else (lambda x: x)
    return lambda: act(F.linear(pre(a), w, b))


def torch_attention(p, variant):
    hd = variant["head_dim"]
    q = torch.rand(p["batch"], p["H"], p["T_q"], hd)
    k = torch.rand(p["batch"], p["H"], p["T_kv"], hd)
    return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k)


def torch_layernorm_mod(p, variant):
    x = torch.rand(p["rows"] // p["T"], p["T"], p["D"])
    s = torch.rand(x.shape[0], 1, p["D"])
    return lambda: torch.nn.functional.layer_norm(x, (p["D"],), eps=1e-6) * (1 + s) + s


# ------------------------------------------------------------------ the VAE decoder's kernels (docs/vae.md)

def f32_bits(bits: int) -> float:
    """The f32 whose bit pattern is the u32 param `bits` (eps, alpha: floats passed in the u32 params)."""
    import numpy as np
    return float(np.array([bits], np.uint32).view(np.float32)[0])


CONV_PIXELS = 8     # conv2d: pixels of a row per invocation (wgsl/conv2d.wgsl.j2); blocks = batch H ceil(W / 8)


def conv_batch(p) -> int:
    return p["blocks"] // (p["H"] * -(-p["W"] // CONV_PIXELS))


def unpack_i8(words: torch.Tensor) -> torch.Tensor:
    """u32 words (as int64 values) -> their 4 signed bytes each, low byte first (float64)."""
    w = words.to(torch.int64)
    b = torch.stack([(w >> (8 * i)) & 0xFF for i in range(4)], dim=-1)
    return torch.where(b >= 128, b - 256, b).reshape(-1).to(torch.float64)


def conv_weight(x, p, v):
    """(C_out, C_in, k, k) from the kernel's layout (C_in * k * k, C_out4), output channel fastest; int8 kernels
    (conv2d_q8): the dequantised weights q * scale[co]."""
    k, Ci, Co, Co4 = v["k"], p["C_in"], p["C_out"], p["C_out4"]
    if "wq" in x:
        w = unpack_i8(x["wq"][: Ci * k * k * Co4 // 4])
        return (w.reshape(Ci, k, k, Co4)[..., :Co] * x["scale"][:Co]).permute(3, 0, 1, 2)
    return x["w"][: Ci * k * k * Co4].reshape(Ci, k, k, Co4)[..., :Co].permute(3, 0, 1, 2)


def ref_conv2d(x, p, v, step):
    k, Ci, Co, H, W = v["k"], p["C_in"], p["C_out"], p["H"], p["W"]
    n = conv_batch(p)
    src = x["src"][: n * Ci * H * W].reshape(n, Ci, H, W)
    y = torch.nn.functional.conv2d(src, conv_weight(x, p, v), x["bias"][:Co], padding=(k - 1) // 2)
    y = y.reshape(-1)
    if p["has_res"]:
        y = y + x["res"][: y.numel()]
    out = x["dst"].clone()
    out[: y.numel()] = y
    return {"dst": out}


def ref_groupnorm(x, p, v, step):
    G, C, HW = p["G"], p["C"], p["HW"]
    n = p["rows"] // G
    xg = x["src"][: n * C * HW].reshape(n, G, -1)        # what F.group_norm computes (it refuses 1 value a group)
    mu = xg.mean(dim=2, keepdim=True)
    var = ((xg - mu) ** 2).mean(dim=2, keepdim=True)
    y = ((xg - mu) / (var + f32_bits(p["eps_bits"])).sqrt()).reshape(n, C, HW)
    y = y * x["norm_w"][:C, None] + x["norm_b"][:C, None]
    y = activation(y, v.get("act", "none")).reshape(-1)
    out = x["dst"].clone()
    out[: y.numel()] = y
    return {"dst": out}


def ref_upsample_nearest(x, p, v, step):
    H, W = p["H"], p["W"]
    src = x["src"][: p["count"] // 4].reshape(-1, 1, H, W)
    y = torch.nn.functional.interpolate(src, scale_factor=2.0, mode="nearest").reshape(-1)
    out = x["dst"].clone()
    out[: y.numel()] = y
    return {"dst": out}


def bmm_operands(x, p):
    """A (batch, M, K) and B (batch, N, K) gathered through the params' strides."""
    A = torch.as_strided(x["a"], (p["batch"], p["M"], p["K"]), (p["a_sb"], p["a_sm"], p["a_sk"]), p["a_off"])
    Bm = torch.as_strided(x["bm"], (p["batch"], p["N"], p["K"]), (p["b_sb"], p["b_sn"], p["b_sk"]), p["b_off"])
    return A, Bm


def ref_bmm(x, p, v, step):
    A, Bm = bmm_operands(x, p)
    y = (f32_bits(p["alpha_bits"]) * (A @ Bm.transpose(1, 2))).reshape(-1)
    out = x["dst"].clone()
    out[: y.numel()] = y
    return {"dst": out}


def ref_softmax_rows(x, p, v, step):
    n = p["rows"] * p["L"]
    out = x["x"].clone()
    out[:n] = x["x"][:n].reshape(p["rows"], p["L"]).softmax(-1).reshape(-1)
    return {"x": out}
