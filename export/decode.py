"""The VAE decoder (dit_model/vae.py) as a dispatch program run once after sampling (docs/vae.md).

`decoder_tensors` writes the decoder's weights in the layouts its kernels read, `build_decode` the buffers and
the `decode` program, `decoder_from_tensors` the float64 torch twin of those very tensors (for parity checks).

conv2d kernels (wgsl/conv2d.wgsl.j2) read a (C_out, C_in, k, k) convolution transposed to (C_in * k * k, C_out4),
output channel fastest, C_out4 = C_out rounded up to a multiple of 4 with zero columns, so that four output
channels are one vec4 load. The attention's q, k, v linears are one 1x1 convolution C -> 3C (`to_qkv`), its
output linear a 1x1 convolution with the residual added in its epilogue. The DiT's latents are divided by the
scaling factor (and shifted) inside `post_quant_conv`, whose weights are folded: W' = W / s, b' = b + W shift 1.
Activations are NCHW per image (N images: the linear forms' N), in a pool of buffers reused along the way."""
from __future__ import annotations

import numpy as np

from ditformat.forms import lin
from ditformat.shards import SHARD_BYTES      # weight shards, shared with the DiT's own weights (ditformat/shards.py)
from wgsl.reference import CONV_PIXELS

PREFIX = "vae."


def conv_layout(w: np.ndarray) -> np.ndarray:
    """(C_out, C_in, k, k) -> (C_in * k * k, C_out4) in the same dtype, zero columns past C_out."""
    w = np.asarray(w)
    co = w.shape[0]
    t = w.reshape(co, -1).T                                     # (C_in * k * k, C_out)
    out = np.zeros((t.shape[0], -(-co // 4) * 4), w.dtype)
    out[:, :co] = t
    return out


def quantize_conv(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C_out, C_in, k, k) float -> (q, scale): per output channel symmetric int8, scale = max |w| / 127 (1 for an
    all-zero channel), q = round(w / scale) in [-127, 127], q in conv_layout as u32 words of 4 output channels
    (the first in the low byte): (C_in k^2, C_out4 / 4) uint32, and scale (C_out,) float32."""
    w = np.asarray(w, np.float64)
    co = w.shape[0]
    m = np.abs(w.reshape(co, -1)).max(axis=1)
    scale = np.where(m > 0, m / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale.astype(np.float64)[:, None, None, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(conv_layout(q)).view(np.uint32), scale


def conv_unlayout(t: np.ndarray, c_out: int, k: int) -> np.ndarray:
    """conv_layout's inverse: (C_in * k * k, C_out4) -> (C_out, C_in, k, k)."""
    return np.ascontiguousarray(t[:, :c_out].T).reshape(c_out, -1, k, k)


def f32_bits(v: float) -> int:
    return int(np.array([v], np.float32).view(np.uint32)[0])


def decoder_tensors(vae, dtype: str) -> dict[str, np.ndarray]:
    """The decoder's tensors as the bundle stores them (names under `vae.`), in f32 or f16; int8: every convolution
    quantised per output channel (`X.weight` int8 in conv layout, `X.scale` f32), the rest f32."""
    np_dtype = np.float16 if dtype == "f16" else np.float32
    cfg = vae.cfg
    sd = {k: v.detach().cpu().double().numpy() for k, v in vae.state_dict().items()}
    L = cfg.latent_channels
    w = sd.pop("post_quant_conv.weight", None)
    b = sd.pop("post_quant_conv.bias", None)
    if w is None:                                          # no post_quant_conv: the scaling alone, as a 1x1 conv
        w, b = np.eye(L).reshape(L, L, 1, 1), np.zeros(L)
    sd["post_quant_conv.weight"] = w / cfg.scaling_factor
    sd["post_quant_conv.bias"] = b + w.reshape(L, L).sum(axis=1) * cfg.shift_factor
    a = "decoder.mid_block.attentions.0."
    if a + "to_q.weight" in sd:
        sd[a + "to_qkv.weight"] = np.concatenate([sd.pop(a + f"to_{n}.weight") for n in "qkv"])[:, :, None, None]
        sd[a + "to_qkv.bias"] = np.concatenate([sd.pop(a + f"to_{n}.bias") for n in "qkv"])
        sd[a + "to_out.0.weight"] = sd[a + "to_out.0.weight"][:, :, None, None]
    out = {}
    for k, v in sd.items():
        if v.ndim == 4 and dtype == "int8":
            wq, scale = quantize_conv(v)
            out[PREFIX + k] = wq.view(np.int8)                                  # (C_in k^2, C_out4) signed bytes
            out[PREFIX + k[:-len("weight")] + "scale"] = scale
        else:
            out[PREFIX + k] = (conv_layout(v) if v.ndim == 4 else v).astype(np_dtype)
    return out


def decoder_from_tensors(cfg, tensors: dict):
    """float64 VAEDecoder holding exactly the bundle's (folded, possibly f16-rounded) weights: its forward on the
    DiT's raw latents is what the decode program computes (before the clamp)."""
    import torch

    from dit_model.vae import VAEDecoder, VAEConfig
    cfg = VAEConfig(**{**cfg.to_dict(), "use_post_quant_conv": True}) if not cfg.use_post_quant_conv else cfg
    vae = VAEDecoder(cfg).double().eval()
    sd = vae.state_dict()
    src = {k[len(PREFIX):]: np.asarray(v, np.float64) for k, v in tensors.items() if k.startswith(PREFIX)}
    for k in [k for k in src if k.endswith(".scale")]:              # int8: dequantise, q * scale per output channel
        w = k[:-len("scale")] + "weight"
        q = src[w]
        src[w] = q * np.concatenate([src[k], np.ones(q.shape[1] - src[k].size)])[None, :]
    a = "decoder.mid_block.attentions.0."
    new = {}
    for k, ref in sd.items():
        shape = tuple(ref.shape)
        if k.startswith(a + "to_") and not k.startswith(a + "to_out"):
            n = "qkv".index(k[len(a) + 3])
            C = shape[0]
            t = src[a + "to_qkv." + k.rsplit(".", 1)[1]]
            v = conv_unlayout(t, 3 * C, 1)[n * C:(n + 1) * C, :, 0, 0] if k.endswith("weight") else t[n * C:(n + 1) * C]
        elif k == a + "to_out.0.weight":
            v = conv_unlayout(src[k], shape[0], 1)[:, :, 0, 0]
        elif len(shape) == 4:
            v = conv_unlayout(src[k], shape[0], shape[2])
        else:
            v = src[k]
        new[k] = torch.from_numpy(np.ascontiguousarray(v).reshape(shape))
    vae.load_state_dict(new)
    return vae


def image_shape(cfg, latent_size: int) -> tuple[int, int, int]:
    side = latent_size * 2 ** (len(cfg.block_out_channels) - 1)
    return cfg.out_channels, side, side


def pool_elements(cfg, latent_size: int) -> int:
    """The largest activation of one image, upsampled ones included: it sizes every buffer of the pool."""
    chans = list(reversed(cfg.block_out_channels))
    side, biggest = latent_size, cfg.latent_channels * latent_size ** 2
    for i, c in enumerate(chans):
        biggest = max(biggest, c * side * side)
        if i < len(chans) - 1:
            side *= 2
            biggest = max(biggest, c * side * side)
    return max(biggest, cfg.out_channels * side * side)


class DecodeProgram:
    """The decoder's dispatches, appended to a ProgramBuilder's current program: four pooled activation buffers
    (`dec.0` .. `dec.3`, taken and freed as the layers go) and the layers of the diffusers decoder."""

    def __init__(self, pb, cfg, q8: bool = False, pool: int = 4, size: int = 0):
        self.pb, self.cfg, self.q8 = pb, cfg, q8
        self.G, self.eps = cfg.norm_num_groups, f32_bits(cfg.norm_eps)
        self.pool = [pb.act(f"dec.{i}", 0, size) for i in range(pool)]
        self.busy: set[str] = set()

    def take(self) -> str:
        name = next(n for n in self.pool if n not in self.busy)
        self.busy.add(name)
        return name

    def free(self, *names) -> None:
        for n in names:
            self.busy.discard(n)

    def w(self, name: str) -> str:
        return self.pb.weight(PREFIX + name)

    def conv(self, label, src, dst, c_in, c_out, hw, k=3, res=None) -> None:
        blocks = hw * -(-hw // CONV_PIXELS)
        params = {"blocks": lin(0, blocks), "C_in": c_in, "C_out": c_out, "C_out4": -(-c_out // 4) * 4, "H": hw,
                  "W": hw, "has_res": int(res is not None)}
        bind = {"src": src, "bias": self.w(label + ".bias"), "res": res or src, "dst": dst}
        if self.q8:
            self.pb.emit("conv2d_q8", label, {**bind, "wq": self.w(label + ".weight"),
                                              "scale": self.w(label + ".scale")}, params, k=k, q8="q8")
        else:
            self.pb.emit("conv2d", label, {**bind, "w": self.w(label + ".weight")}, params, k=k, vec4="vec4")

    def norm(self, label, src, dst, c, hw, act="silu") -> None:
        self.pb.emit("groupnorm", label, {"src": src, "norm_w": self.w(label + ".weight"),
                                          "norm_b": self.w(label + ".bias"), "dst": dst},
                     {"rows": lin(0, self.G), "G": self.G, "C": c, "HW": hw * hw, "eps_bits": self.eps}, act=act)

    def resnet(self, label, x, c_in, c_out, hw) -> str:
        t, h = self.take(), self.take()
        self.norm(label + ".norm1", x, t, c_in, hw)
        self.conv(label + ".conv1", t, h, c_in, c_out, hw)
        self.norm(label + ".norm2", h, t, c_out, hw)
        res = x
        if c_in != c_out:
            res = self.take()
            self.conv(label + ".conv_shortcut", x, res, c_in, c_out, hw, k=1)
        self.conv(label + ".conv2", t, h, c_out, c_out, hw, res=res)      # h is free again after norm2 read it
        self.free(x, t, res)
        return h

    def attention(self, label, x, c, hw) -> str:
        pb, T = self.pb, hw * hw
        t, h = self.take(), self.take()
        qkv = pb.act("dec.qkv", 0, 3 * c * T)
        scores = pb.act("dec.scores", 0, T * T)
        self.norm(label + ".group_norm", x, t, c, hw, act="none")
        self.conv(label + ".to_qkv", t, qkv, c, 3 * c, hw, k=1)
        sb = 3 * c * T
        pb.emit("bmm", label + ".scores", {"a": qkv, "bm": qkv, "dst": scores},        # q^T k / sqrt(C)
                {"batch": lin(0, 1), "M": T, "N": T, "K": c, "a_off": 0, "a_sb": sb, "a_sm": 1, "a_sk": T,
                 "b_off": c * T, "b_sb": sb, "b_sn": 1, "b_sk": T, "alpha_bits": f32_bits(c ** -0.5)})
        pb.emit("softmax_rows", label + ".softmax", {"x": scores}, {"rows": lin(0, T), "L": T})
        pb.emit("bmm", label + ".probs_v", {"a": qkv, "bm": scores, "dst": t},         # out[c, i] = sum_j v[c, j] p[i, j]
                {"batch": lin(0, 1), "M": c, "N": T, "K": T, "a_off": 2 * c * T, "a_sb": sb, "a_sm": T, "a_sk": 1,
                 "b_off": 0, "b_sb": T * T, "b_sn": T, "b_sk": 1, "alpha_bits": f32_bits(1.0)})
        self.conv(label + ".to_out.0", t, h, c, c, hw, k=1, res=x)
        self.free(x, t)
        return h

    def up_block(self, i: int, x: str, c_in: int, c: int, hw: int, last: bool) -> tuple[str, int]:
        for j in range(self.cfg.layers_per_block + 1):
            x = self.resnet(f"decoder.up_blocks.{i}.resnets.{j}", x, c_in if j == 0 else c, c, hw)
        if last:
            return x, hw
        up = self.take()
        self.pb.emit("upsample_nearest", f"decoder.up_blocks.{i}.upsample", {"src": x, "dst": up},
                     {"count": lin(0, c * 4 * hw * hw), "H": hw, "W": hw})
        self.free(x)
        hw *= 2
        x = self.take()
        self.conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", up, x, c, c, hw)
        self.free(up)
        return x, hw

    def decoder(self, latent: str, latent_size: int) -> str:
        cfg, hw = self.cfg, latent_size
        chans = list(reversed(cfg.block_out_channels))
        x = self.take()
        self.conv("post_quant_conv", latent, x, cfg.latent_channels, cfg.latent_channels, hw, k=1)
        y = self.take()
        self.conv("decoder.conv_in", x, y, cfg.latent_channels, chans[0], hw)
        self.free(x)
        x = self.resnet("decoder.mid_block.resnets.0", y, chans[0], chans[0], hw)
        if cfg.mid_block_add_attention:
            x = self.attention("decoder.mid_block.attentions.0", x, chans[0], hw)
        x = self.resnet("decoder.mid_block.resnets.1", x, chans[0], chans[0], hw)
        for i, c in enumerate(chans):
            x, hw = self.up_block(i, x, chans[max(i - 1, 0)], c, hw, i == len(chans) - 1)
        t = self.take()
        self.norm("decoder.conv_norm_out", x, t, chans[-1], hw)
        self.free(x)
        out = self.pb.act("dec.image", 0, cfg.out_channels * hw * hw)
        self.conv("decoder.conv_out", t, out, chans[-1], cfg.out_channels, hw)
        self.free(t)
        return out


def build_decode(pb, cfg, latent_size: int, latent: str, q8: bool = False) -> str:
    """Append the decoder's buffers (names `dec.*`) and dispatches to the ProgramBuilder's current program.
    `latent`: the buffer holding the N latents (N, L, h, h). q8: int8 convolutions (conv2d_q8). Returns the
    output buffer: (N, 3, H, W), not clamped."""
    return DecodeProgram(pb, cfg, q8, size=pool_elements(cfg, latent_size)).decoder(latent, latent_size)


# ------------------------------------------------------------------ decoder/ inside a bundle

def write_preview(vae, latent_size: int, folder) -> tuple[dict, dict, float]:
    """decoder/preview.safetensors: the preview map (export/preview.py) fitted to this decoder, f32. -> (the
    manifest's `preview` entry, its weight buffer entries, the map's PSNR against the decoder)."""
    from ditformat.shards import weight_entry, write_safetensors
    from .preview import PREVIEW_FILE, PREVIEW_K, PREVIEW_TENSOR, fit_for_decoder
    M, db = fit_for_decoder(vae, (vae.cfg.latent_channels, latent_size, latent_size))
    write_safetensors({PREVIEW_TENSOR: M}, folder / PREVIEW_FILE)
    return {"buffer": PREVIEW_TENSOR, "k": PREVIEW_K}, {PREVIEW_TENSOR: weight_entry(M, PREVIEW_TENSOR, PREVIEW_FILE)}, db


def write_decoder(bundle_dir, vae, dtype: str, latent_size: int, shard_bytes: int = SHARD_BYTES, preview: bool = True):
    """Write `decoder/` into a bundle folder: manifest.json (ditformat/decoder-schema.json), kernels/*.wgsl,
    weights-NN.safetensors shards of at most shard_bytes and (preview) preview.safetensors, the page's per-step
    preview map, written to a temporary folder, then renamed; then list them in the bundle's manifest.json `files`."""
    import json
    import os
    import shutil
    from pathlib import Path

    from ditformat import EXPORTER_VERSION
    from ditformat.schema import DECODER_SCHEMA as spec
    from wgsl.ops import OPS

    from ditformat.shards import MIN_SHARD_BYTES, weight_entry, write_shards

    from .bundle import ExportError, sha256
    from .program import ProgramBuilder

    if dtype not in ("f32", "f16", "int8"):
        raise ExportError(f"unknown decoder dtype {dtype!r}; choose f32, f16 or int8")
    if shard_bytes < MIN_SHARD_BYTES:
        raise ExportError(f"shard size {shard_bytes} bytes is below 1 MiB")
    cfg = vae.cfg
    tensors = decoder_tensors(vae, dtype)
    kdtype = "f32" if dtype == "int8" else dtype          # the weights of the other kernels (norms) are f32 then
    pb = ProgramBuilder(None, kdtype, {k: v.shape for k, v in tensors.items()})
    pb.programs = {"decode": []}
    pb.current = pb.programs["decode"]
    L = cfg.latent_channels
    latent = pb.act("dec.latent", 0, L * latent_size ** 2)
    image = build_decode(pb, cfg, latent_size, latent, q8=dtype == "int8")
    root = Path(bundle_dir)
    tmp = root / f".decoder.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "kernels").mkdir(parents=True)
    try:
        buffers = {}
        where = write_shards(tensors, tmp, shard_bytes)
        for n, fname in where.items():
            buffers[n] = weight_entry(tensors[n], n, fname)
        buffers.update(pb.buffers)
        extra = {}
        if preview:
            extra["preview"], entries, db = write_preview(vae, latent_size, tmp)
            buffers.update(entries)
            print(f"preview map: {entries[extra['preview']['buffer']]['shape']} (k = {extra['preview']['k']}), "
                  f"{db:.1f} dB PSNR against the decoder on latents of the prior")
        kernels = {}
        for kname, k in sorted(pb.kernels.items()):
            (tmp / k["entry"]["file"]).write_text(OPS[k["op"]].render(k["variant"], kdtype))
            kernels[kname] = {f: k["entry"][f] for f in ("file", "op", "variant", "workgroup_size", "params", "bindings")}
        files = {f.relative_to(tmp).as_posix(): {"size": f.stat().st_size, "sha256": sha256(f)}
                 for f in sorted(tmp.rglob("*")) if f.is_file()}
        manifest = {"format": spec["format"], "format_version": spec["format_version"],
                    "exporter": f"ditweb {EXPORTER_VERSION}", "dtype": dtype, "vae": cfg.to_dict(),
                    "latent_shape": [L, latent_size, latent_size], "image_shape": list(image_shape(cfg, latent_size)),
                    "io": {"latent": latent, "image": image}, "files": files, "kernels": kernels, "buffers": buffers,
                    "program": pb.programs["decode"], **extra}
        manifest["vae"]["block_out_channels"] = list(cfg.block_out_channels)
        (tmp / "manifest.json").write_text(json.dumps(manifest, separators=(",", ":")))
        out = root / "decoder"
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the bundle's manifest lists every decoder file (size, sha256): its verification covers them, the
    # runtimes look for a decoder only where "decoder/manifest.json" is listed, `ditweb site` copies them
    if not (root / "manifest.json").is_file():          # a bare folder (tests): nothing to register in
        return out
    bundle_manifest = json.loads((root / "manifest.json").read_text())
    for rel in sorted(out.rglob("*")):
        if rel.is_file():
            bundle_manifest["files"][f"decoder/{rel.relative_to(out).as_posix()}"] = {"size": rel.stat().st_size,
                                                                                  "sha256": sha256(rel)}
    part = root / f".manifest.json.partial-{os.getpid()}"
    part.write_text(json.dumps(bundle_manifest, separators=(",", ":")))
    part.replace(root / "manifest.json")
    return out
