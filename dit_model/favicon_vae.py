"""The favicon autoencoder: a small KL autoencoder (RGBA 32x32 -> C x 8 x 8 latents) for latent DiT training.

Built from the Stable Diffusion VAE's own building blocks (dit_model/vae.py: ResNets with GroupNorm + SiLU,
nearest-2x upsamplers, the decoder itself) at favicon width, and stored in the diffusers AutoencoderKL
layout (`encoder.*`, `quant_conv`, `post_quant_conv`, `decoder.*`), so `load_vae` reads its decoder like any
other VAE file. The encoder mirrors the decoder: conv_in, one down block per entry of block_out_channels
(layers_per_block ResNets, then a stride-2 3x3 convolution padded on the right and bottom only, except in
the last block), a mid block, GroupNorm + SiLU, a 3x3 convolution to 2C channels (mean and log-variance),
then `quant_conv` (1x1, 2C -> 2C). docs/vae.md, "The favicon autoencoder".

The file (`save_favicon_vae`): safetensors, every tensor float32, metadata `ditweb` = "favicon-vae" and
`config` = the VAEConfig as JSON, with the latents' measured mean and std as shift_factor and
1 / scaling_factor (the DiT trains on (z - shift) * scale, whose std is 1).

`ditweb train-vae` (dit_model/favicon_vae_train.py) trains it: L1 on RGBA in [-1, 1] + an edge term (L1 of the
horizontal and vertical differences) + a small KL, AdamW, an EMA of the weights, resumable (ckpt.pt and log.csv in
the run folder).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ditformat.schema import sha256_file

from .vae import (DITWEB_VAE_FORMAT, ResampleBlock2D, UNetMidBlock2D, VAEConfig, VAEDecoder, VAEError, check_tensors,
                  conv3x3, ditweb_config, group_norm, resample_blocks)

FORMAT = DITWEB_VAE_FORMAT
# favicon width: 32 channels at 32x32, 64 at 16x16 and 8x8; 8 latent channels; no attention (the mid block is
# two ResNets), so the decoder needs only conv2d, GroupNorm(+SiLU) and nearest upsampling
FAVICON_VAE = VAEConfig(latent_channels=8, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
                        norm_num_groups=8, norm_eps=1e-6, scaling_factor=1.0, shift_factor=0.0,
                        mid_block_add_attention=False)


class Downsample2D(nn.Module):
    """A 3x3 convolution with stride 2, the input padded by one pixel on the right and bottom only."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))                         # (N, C, H/2, W/2)


class DownEncoderBlock2D(ResampleBlock2D):
    """layers_per_block ResNets, then optionally the downsampler."""
    RESAMPLERS = "downsamplers"

    def __init__(self, cfg: VAEConfig, c_in: int, c_out: int, add_downsample: bool):
        super().__init__(cfg, c_in, c_out, cfg.layers_per_block, Downsample2D(c_out) if add_downsample else None)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = list(cfg.block_out_channels)
        self.conv_in = conv3x3(cfg.out_channels, chans[0])               # the image's channels (RGBA: 4)
        self.down_blocks = resample_blocks(DownEncoderBlock2D, cfg, chans)
        self.mid_block = UNetMidBlock2D(cfg, chans[-1])
        self.conv_norm_out = group_norm(cfg, chans[-1])
        self.conv_out = conv3x3(chans[-1], 2 * cfg.latent_channels)

    def forward(self, x):
        x = self.conv_in(x)                                              # (N, C_0, H, W)
        for block in self.down_blocks:
            x = block(x)                                                 # 32x32 -> 8x8 with three blocks
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))             # (N, 2L, h, w): mean, log-variance


class FaviconVAE(nn.Module):
    """Encoder + quant_conv + the SD-layout decoder (`VAEDecoder`: post_quant_conv and decoder)."""

    def __init__(self, cfg: VAEConfig = FAVICON_VAE):
        super().__init__()
        self.cfg = cfg.validate()
        L = cfg.latent_channels
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(2 * L, 2 * L, 1)
        self.dec = VAEDecoder(cfg)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.cfg.block_out_channels) - 1)

    def moments(self, x):
        """Images (N, 4, S, S) in [-1, 1] -> posterior mean and log-variance (N, L, S/4, S/4) each."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward(self, x, noise=None):
        """(reconstruction, mean, logvar); with `noise` (N, L, h, w) the latent is a posterior sample."""
        mean, logvar = self.moments(x)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return self.dec(z), mean, logvar

    @torch.no_grad()
    def encode(self, x) -> torch.Tensor:
        """Images (N, 4, S, S) in [-1, 1] -> the DiT's latents: (mean - shift) * scaling_factor."""
        mean, _ = self.moments(x)
        return (mean - self.cfg.shift_factor) * self.cfg.scaling_factor

    @torch.no_grad()
    def decode(self, latents) -> torch.Tensor:
        return self.dec.decode(latents)

    def decoder_state_dict(self) -> dict:
        return self.dec.state_dict()

    def state_dict_diffusers(self) -> dict:
        """Every tensor under its diffusers AutoencoderKL name."""
        sd = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        sd |= {f"quant_conv.{k}": v for k, v in self.quant_conv.state_dict().items()}
        sd |= self.dec.state_dict()                                      # post_quant_conv.*, decoder.*
        return sd

    def load_state_dict_diffusers(self, sd: dict) -> None:
        self.encoder.load_state_dict({k[8:]: v for k, v in sd.items() if k.startswith("encoder.")}, strict=True)
        self.quant_conv.load_state_dict({k[11:]: v for k, v in sd.items() if k.startswith("quant_conv.")}, strict=True)
        self.dec.load_state_dict({k: v for k, v in sd.items() if k.startswith(("decoder.", "post_quant_conv."))}, strict=True)


def kl_divergence(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, 1)), mean over the latent elements."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def edge_l1(a, b):
    """L1 of the difference of horizontal and vertical neighbour steps."""
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    return 0.5 * ((dxa - dxb).abs().mean() + (dya - dyb).abs().mean())


def psnr_u8(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 RGBA arrays (N, S, S, 4), over all four channels."""
    mse = ((real.astype(np.float64) - fake.astype(np.float64)) ** 2).reshape(len(real), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


# ---------------------------------------------------------------- the file

file_sha256 = sha256_file          # the autoencoder a latent model names is pinned by this hash


def encoder_fingerprint(vae: FaviconVAE) -> str:
    """sha256 of what fixes the latent space a DiT trains in: the encoder's and quant_conv's tensors (name, shape,
    float32 bytes, in name order), the latent shift and scale. A decoder fine-tune (`ditweb train-vae --init FILE
    --decoder-only`) keeps it, so a latent model trained on FILE's latents stays valid with the new decoder."""
    h = hashlib.sha256()
    sd = {f"encoder.{k}": v for k, v in vae.encoder.state_dict().items()}
    sd |= {f"quant_conv.{k}": v for k, v in vae.quant_conv.state_dict().items()}
    for k in sorted(sd):
        t = sd[k].detach().float().contiguous().cpu()
        h.update(f"{k}:{list(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    h.update(f"shift={vae.cfg.shift_factor!r};scale={vae.cfg.scaling_factor!r}".encode())
    return h.hexdigest()


def encoder_lineage(path) -> list[str]:
    """The sha256s of the earlier autoencoder files whose encoder (and latent shift and scale) the file at `path`
    keeps, oldest first: its metadata `encoder_of`, written by a decoder fine-tune; [] for a file trained whole."""
    from .vae import safetensors_metadata
    return _lineage(safetensors_metadata(Path(path)), path)


def _lineage(meta: dict, path) -> list[str]:
    raw = meta.get("encoder_of")
    if raw is None:
        return []
    try:
        shas = json.loads(raw)
    except ValueError:
        raise VAEError(f"{path}: metadata 'encoder_of' is not JSON") from None
    if not (isinstance(shas, list) and all(isinstance(x, str) and len(x) == 64 for x in shas)):
        raise VAEError(f"{path}: metadata 'encoder_of' is not a list of sha256 hex digests")
    return shas


def shares_latents(path, sha256: str) -> bool:
    """True when the autoencoder at `path` is the file of hash `sha256`, or a decoder fine-tune of it whose
    encoder is unchanged: `sha256` in its lineage, and its recorded `encoder_sha256` the fingerprint of the
    tensors it holds now (a file edited after the fine-tune is refused)."""
    from .vae import safetensors_metadata
    if file_sha256(path) == sha256:
        return True
    meta = safetensors_metadata(Path(path))
    if sha256 not in _lineage(meta, path):
        return False
    recorded = meta.get("encoder_sha256")
    return recorded is not None and recorded == encoder_fingerprint(load_favicon_vae(path))


def save_favicon_vae(vae: FaviconVAE, path, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conf = {**vae.cfg.to_dict(), "block_out_channels": list(vae.cfg.block_out_channels)}
    meta = {"ditweb": FORMAT, "config": json.dumps(conf), **{k: str(v) for k, v in (extra or {}).items()}}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().contiguous() for k, v in vae.state_dict_diffusers().items()}, str(tmp), metadata=meta)
    tmp.chmod(0o644)                                      # safetensors writes 0600
    tmp.replace(path)
    return path


def load_favicon_vae(path, device="cpu") -> FaviconVAE:
    """Encoder and decoder of a file written by save_favicon_vae; untrusted: one-line VAEErrors."""
    from .convert import read_tensors
    path = Path(path)
    if not path.is_file():
        raise VAEError(f"{path}: no such autoencoder file")
    cfg = ditweb_config(path) if path.suffix == ".safetensors" else None
    if cfg is None:
        raise VAEError(f"{path}: not a favicon autoencoder (a .safetensors file written by `ditweb train-vae`)")
    with torch.device("meta"):
        want = FaviconVAE(cfg).state_dict_diffusers()
    sd = read_tensors(path, VAEError)
    check_tensors(sd, want, path, "the autoencoder")
    for k, v in sd.items():
        if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
            raise VAEError(f"{path}: tensor {k!r} is not finite floating point")
    vae = FaviconVAE(cfg)
    vae.load_state_dict_diffusers({k: v.float() for k, v in sd.items()})
    return vae.to(device).eval()


# ---------------------------------------------------------------- data

def split_identities(emoji_ids: np.ndarray, every: int = 20) -> np.ndarray:
    """True for the held-out images: every `every`-th identity (by a hash of its id, so fixed)."""
    h = np.asarray([int(hashlib.sha256(str(int(i)).encode()).hexdigest()[:8], 16) for i in emoji_ids])
    return h % every == 0


def load_training_images(styles: str, pack: str | None, size: int = 32):
    """(EmojiSet, held-out mask) from a pack or the npm data."""
    from .emoji import load_emoji, load_emoji_pack
    es = load_emoji_pack(pack) if pack else load_emoji(styles=[s for s in styles.split(",") if s], size=size)
    return es, split_identities(es.emoji)


def to_model(u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, S, S, 4) uint8 -> (N, 4, S, S) float32 in [-1, 1]."""
    t = torch.as_tensor(u8)
    return t.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 4, S, S) in [-1, 1] -> (N, S, S, 4) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def reconstruct(vae: FaviconVAE, images_u8: np.ndarray, batch: int = 256) -> np.ndarray:
    out = []
    for i in range(0, len(images_u8), batch):
        x = to_model(images_u8[i:i + batch])
        rec, _, _ = vae(x)
        out.append(to_uint8(rec))
    return np.concatenate(out)


@torch.no_grad()
def latent_moments(vae: FaviconVAE, images_u8: np.ndarray, batch: int = 256) -> tuple[float, float]:
    """Mean and std of the posterior means over all images (one number each, over every channel)."""
    s = s2 = n = 0.0
    for i in range(0, len(images_u8), batch):
        m, _ = vae.moments(to_model(images_u8[i:i + batch]))
        s += float(m.double().sum())
        s2 += float(m.double().square().sum())
        n += m.numel()
    mean = s / n
    return mean, math.sqrt(max(s2 / n - mean * mean, 1e-12))


def finalize(vae: FaviconVAE, images_u8: np.ndarray, path, extra: dict, lineage: list[str] | None = None) -> Path:
    """Measure the latents' mean and std over all images, store them as shift_factor and 1/scaling_factor.
    A decoder fine-tune (`lineage`: the files whose encoder it keeps) keeps its start's shift and scale instead,
    and records the lineage and its encoder's fingerprint (`shares_latents` checks both)."""
    if lineage:
        fp = encoder_fingerprint(vae)
        return save_favicon_vae(vae, path, {**extra, "encoder_of": json.dumps(lineage), "encoder_sha256": fp,
                                            "latent_mean": f"{vae.cfg.shift_factor:.6g}",
                                            "latent_std": f"{1.0 / vae.cfg.scaling_factor:.6g}"})
    mean, std = latent_moments(vae, images_u8)
    vae.cfg = replace(vae.cfg, shift_factor=mean, scaling_factor=1.0 / std)
    vae.dec.cfg = vae.cfg
    return save_favicon_vae(vae, path, {**extra, "latent_mean": f"{mean:.6g}", "latent_std": f"{std:.6g}"})


def seam_ratio(images_u8: np.ndarray, period: int = 4) -> float:
    """Mean luminance step across `period`-pixel boundaries over the mean step inside them (1 = no grid).

    Images (N, S, S, 4) uint8 RGBA are composited over white (as a browser tab shows them); luminance
    0.299 R + 0.587 G + 0.114 B; steps |L[x+1] - L[x]| between horizontal and vertical neighbours; a step is
    across a boundary where x + 1 is a multiple of `period` (between pixels 3 and 4, 7 and 8, ...)."""
    a = images_u8.astype(np.float64) / 255.0
    rgb = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
    lum = rgb @ np.array([0.299, 0.587, 0.114])                              # (N, S, S)
    dx = np.abs(np.diff(lum, axis=2))                                        # (N, S, S - 1): between x and x + 1
    dy = np.abs(np.diff(lum, axis=1))
    across = (np.arange(lum.shape[-1] - 1) + 1) % period == 0
    on = np.concatenate([dx[:, :, across].ravel(), dy[:, across, :].ravel()]).mean()
    off = np.concatenate([dx[:, :, ~across].ravel(), dy[:, ~across, :].ravel()]).mean()
    return float(on / max(off, 1e-12))
