"""The VAE decoder's ops in WebAssembly (wasm/kernels.c: op_conv2d, op_groupnorm, op_upsample_nearest), each called
directly in node on random inputs and held to its op's derived error bound (wgsl/ops.py, the same bound the WGSL
kernel is held to) against the op's float64 reference; the upsample is a copy, compared exactly. The committed
.wasm is a fresh build of kernels.c (tests/test_wasm.py)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from wgsl.ops import OPS

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "_wasm_kernels_node.mjs"


def call(fn: str, params: list[int], args: list[dict], read: tuple[int, int]) -> np.ndarray:
    req = {"fn": fn, "params": [int(v) for v in params], "args": args, "read": list(read)}
    r = subprocess.run(["node", str(SCRIPT)], input=json.dumps([req]), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return np.asarray(json.loads(r.stdout)[0]["out"], np.float64)


def f32(t: torch.Tensor) -> torch.Tensor:
    return t.float().double()                     # the values the f32 kernel sees, as float64


def check(op: str, x: dict, p: dict, v: dict, got: np.ndarray, out: str = "dst"):
    o = OPS[op]
    ref = o.reference(x, p, v, None)[out][: len(got)].numpy()
    bound = o.bound(x, p, v, None)[out][: len(got)].numpy()
    err = np.abs(got - ref)
    worst = float((err / np.maximum(bound, 1e-300)).max())
    assert (err <= bound).all(), f"{op} {p} {v}: error {err.max():.3g} exceeds its bound (ratio {worst:.3g})"
    return float(err.max() / max(np.abs(ref).max(), 1e-30)), worst


@pytest.mark.parametrize("k,C_in,C_out,H,W,batch,has_res", [
    (3, 4, 8, 8, 8, 1, 0),        # the favicon decoder's conv_in (latent 8x8, C 8 would be the same loop)
    (3, 8, 32, 8, 8, 2, 1),       # a ResNet conv with the shortcut added, two images
    (3, 32, 4, 32, 32, 1, 0),     # conv_out: RGBA, C_out 4 (one vec4 only)
    (3, 5, 3, 5, 11, 1, 0),       # odd sizes: W not a multiple of 8, C_out 3 (a zero column), C_in 5
    (1, 16, 12, 6, 9, 2, 1),      # 1x1 (post_quant_conv, shortcuts), C_out 12 (a half-used second vec4)
    (1, 8, 8, 8, 8, 1, 0),
])
def test_conv2d_matches_float64(k, C_in, C_out, H, W, batch, has_res):
    g = torch.Generator().manual_seed(k * 1000 + C_in * 10 + C_out)
    C_out4 = -(-C_out // 4) * 4
    blocks = batch * H * -(-W // 8)
    src = f32(torch.randn(batch * C_in * H * W, generator=g))
    w = torch.zeros(C_in * k * k, C_out4, dtype=torch.float64)
    w[:, :C_out] = f32(torch.randn(C_in * k * k, C_out, generator=g) / (C_in * k * k) ** 0.5)
    w = w.reshape(-1)
    bias = f32(torch.randn(C_out, generator=g) * 0.1)
    res = f32(torch.randn(batch * C_out * H * W, generator=g))
    dst = torch.zeros(batch * C_out * H * W, dtype=torch.float64)
    p = dict(blocks=blocks, C_in=C_in, C_out=C_out, C_out4=C_out4, H=H, W=W, has_res=has_res)
    got = call("op_conv2d", list(p.values()),
               [{"f32": src.tolist()}, {"f32": w.tolist()}, {"f32": bias.tolist()}, {"f32": res.tolist()},
                {"zeros": len(dst)}, {"u32": k}], (4, len(dst)))
    rel, ratio = check("conv2d", dict(src=src, w=w, bias=bias, res=res, dst=dst), p, {"k": k}, got)
    print(f"\nconv2d k{k} {C_in}->{C_out} {H}x{W} x{batch} res={has_res}: max error {rel:.2e} of max |out|, "
          f"{ratio:.3f} of the bound")


@pytest.mark.parametrize("act,G,C,H,W,batch", [
    ("silu", 8, 32, 32, 32, 1), ("none", 8, 64, 8, 8, 2), ("silu", 2, 6, 3, 5, 1), ("silu", 32, 64, 4, 4, 1)])
def test_groupnorm_matches_float64(act, G, C, H, W, batch):
    g = torch.Generator().manual_seed(G * 100 + C)
    HW = H * W
    src = f32(torch.randn(batch * C * HW, generator=g) * 3 + 1.5)      # an offset, so the two passes matter
    nw = f32(1 + 0.3 * torch.randn(C, generator=g))
    nb = f32(0.2 * torch.randn(C, generator=g))
    dst = torch.zeros(batch * C * HW, dtype=torch.float64)
    eps_bits = int(np.float32(1e-6).view(np.uint32))
    p = dict(rows=batch * G, G=G, C=C, HW=HW, eps_bits=eps_bits)
    got = call("op_groupnorm", list(p.values()),
               [{"f32": src.tolist()}, {"f32": nw.tolist()}, {"f32": nb.tolist()}, {"zeros": len(dst)},
                {"u32": 1 if act == "silu" else 0}], (3, len(dst)))
    rel, ratio = check("groupnorm", dict(src=src, norm_w=nw, norm_b=nb, dst=dst), p, {"act": act}, got)
    print(f"\ngroupnorm {act} G{G} C{C} {H}x{W} x{batch}: max error {rel:.2e} of max |out|, {ratio:.3f} of the bound")


@pytest.mark.parametrize("C,H,W,batch", [(4, 8, 8, 1), (3, 5, 7, 2)])
def test_upsample_nearest_is_exact(C, H, W, batch):
    src = f32(torch.randn(batch * C * H * W, generator=torch.Generator().manual_seed(C)))
    count = batch * C * 4 * H * W
    got = call("op_upsample_nearest", [count, H, W], [{"f32": src.tolist()}, {"zeros": count}], (1, count))
    ref = torch.nn.functional.interpolate(src.reshape(batch * C, 1, H, W), scale_factor=2.0, mode="nearest").reshape(-1)
    np.testing.assert_array_equal(got, ref.numpy())


def test_whole_favicon_decoder_in_wasm_ops_matches_torch():
    """A random-weight decoder of the favicon autoencoder's shape (dit_model/favicon_vae.py), run op by op through
    the wasm kernels in the order the exporter's program runs them (conv, GroupNorm+SiLU, upsample, shortcut as a
    1x1 conv with the residual), against torch in float64: within 1e-4 of max |output| (as the WGSL decoder)."""
    from dit_model.favicon_vae import FAVICON_VAE
    from dit_model.vae import VAEDecoder
    torch.manual_seed(0)
    dec = VAEDecoder(FAVICON_VAE).double().eval()
    with torch.no_grad():
        for name, prm in dec.named_parameters():
            if "norm" in name:
                prm.copy_(1 + 0.2 * torch.randn_like(prm) if name.endswith("weight") else 0.1 * torch.randn_like(prm))
        for mod in dec.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.copy_(f32(mod.weight))
                mod.bias.copy_(f32(mod.bias))
            if isinstance(mod, torch.nn.GroupNorm):
                mod.weight.copy_(f32(mod.weight))
                mod.bias.copy_(f32(mod.bias))
    z = f32(torch.randn(1, FAVICON_VAE.latent_channels, 8, 8))
    with torch.no_grad():
        ref = dec(z).numpy().reshape(-1)

    def conv(mod, x, H, W, res=None):
        k, Ci, Co = mod.kernel_size[0], mod.in_channels, mod.out_channels
        Co4 = -(-Co // 4) * 4
        wt = torch.zeros(Ci * k * k, Co4, dtype=torch.float64)
        wt[:, :Co] = mod.weight.detach().permute(1, 2, 3, 0).reshape(Ci * k * k, Co)
        p = [H * -(-W // 8), Ci, Co, Co4, H, W, int(res is not None)]
        n = Co * H * W
        return call("op_conv2d", p, [{"f32": x.tolist()}, {"f32": wt.reshape(-1).tolist()},
                                     {"f32": mod.bias.detach().tolist()},
                                     {"f32": (res if res is not None else np.zeros(1)).tolist()}, {"zeros": n},
                                     {"u32": k}], (4, n))

    def norm(mod, x, C, HW, act=True):
        eps = int(np.float32(mod.eps).view(np.uint32))
        return call("op_groupnorm", [mod.num_groups, mod.num_groups, C, HW, eps],
                    [{"f32": x.tolist()}, {"f32": mod.weight.detach().tolist()}, {"f32": mod.bias.detach().tolist()},
                     {"zeros": C * HW}, {"u32": int(act)}], (3, C * HW))

    def resnet(blk, x, C_in, H, W):
        C = blk.conv1.out_channels
        h = conv(blk.conv1, norm(blk.norm1, x, C_in, H * W), H, W)
        short = conv(blk.conv_shortcut, x, H, W) if blk.conv_shortcut is not None else x
        return conv(blk.conv2, norm(blk.norm2, h, C, H * W), H, W, res=short), C

    H = W = 8
    x = conv(dec.post_quant_conv, z.numpy().reshape(-1), H, W)
    x = conv(dec.decoder.conv_in, x, H, W)
    C = dec.decoder.conv_in.out_channels
    for blk in dec.decoder.mid_block.resnets:
        x, C = resnet(blk, x, C, H, W)
    for ub in dec.decoder.up_blocks:
        for blk in ub.resnets:
            x, C = resnet(blk, x, C, H, W)
        for up in ub.upsamplers:
            x = call("op_upsample_nearest", [C * 4 * H * W, H, W], [{"f32": x.tolist()}, {"zeros": C * 4 * H * W}],
                     (1, C * 4 * H * W))
            H, W = 2 * H, 2 * W
            x = conv(up.conv, x, H, W)
    x = conv(dec.decoder.conv_out, norm(dec.decoder.conv_norm_out, x, C, H * W), H, W)
    err = np.abs(x - ref).max() / np.abs(ref).max()
    print(f"\nfavicon decoder through the wasm ops: max error {err:.2e} of max |output|")
    assert x.shape == ref.shape and err < 1e-4
