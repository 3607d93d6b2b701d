"""The Stable Diffusion VAE decoder (AutoencoderKL, decoder half): DiT latents -> RGB images.

The paper's DiT models sample 4 x S/8 x S/8 latents; an image needs this decoder. Read top to
bottom next to docs/vae.md: the config, the three building blocks (ResNet, single-head spatial
attention, nearest-2x upsampler), the decoder, its multiply-accumulate count, then `load_vae`,
which reads the published file layouts (diffusers folders and files, the older attention
names, latent-diffusion `.ckpt` files) without executing pickle code. Module names follow the
diffusers layout, so a diffusers state dict loads as is. Shapes: N images, C channels, H x W.
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ditformat.errors import DitwebError

from .convert import read_tensors


class VAEError(DitwebError):
    """A VAE file or folder that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class VAEConfig:
    latent_channels: int = 4
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)   # encoder order; the decoder runs them reversed
    layers_per_block: int = 2             # the decoder's up blocks hold one more ResNet than this
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    scaling_factor: float = 0.18215       # the DiT's latents are the VAE's latents times this
    shift_factor: float = 0.0             # 0 for the SD VAE; decode adds it after the division
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def validate(self) -> "VAEConfig":
        if not 1 <= len(self.block_out_channels) <= 8:
            raise VAEError(f"block_out_channels must have 1 to 8 entries, got {len(self.block_out_channels)}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise VAEError(f"{c} channels are not divisible into {self.norm_num_groups} GroupNorm groups")
        if self.latent_channels <= 0 or self.out_channels <= 0 or self.layers_per_block < 0:
            raise VAEError("latent_channels and out_channels must be positive, layers_per_block non-negative")
        if not self.scaling_factor > 0:
            raise VAEError(f"scaling_factor must be positive, got {self.scaling_factor}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


SD_VAE = VAEConfig()    # sd-vae-ft-ema / sd-vae-ft-mse, the VAE of the paper's models


# ---------------------------------------------------------------- building blocks

def group_norm(cfg: VAEConfig, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(cfg.norm_num_groups, channels, eps=cfg.norm_eps)


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class ResnetBlock2D(nn.Module):
    """h = conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))); out = shortcut(x) + h (no time embedding)."""

    def __init__(self, cfg: VAEConfig, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = group_norm(cfg, c_in)
        self.conv1 = conv3x3(c_in, c_out)
        self.norm2 = group_norm(cfg, c_out)
        self.conv2 = conv3x3(c_out, c_out)
        # a 1x1 conv only where the channel count changes (the first ResNet of some up blocks)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))                            # (N, C_out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))                            # (N, C_out, H, W)
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    """One head over all C channels; the H*W positions are the tokens. result = x + out."""

    def __init__(self, cfg: VAEConfig, channels: int):
        super().__init__()
        self.group_norm = group_norm(cfg, channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # a list so the file's name is to_out.0

    def forward(self, x):
        N, C, H, W = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)                # (N, HW, C)
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)               # (N, HW, C) each
        scores = q @ k.transpose(1, 2) / math.sqrt(C)                    # (N, HW, HW)
        # the softmax runs in at least float32, also for half-precision weights (as published)
        probs = scores.to(torch.promote_types(scores.dtype, torch.float32)).softmax(-1).to(v.dtype)
        out = self.to_out[0](probs @ v)                                  # (N, HW, C)
        return x + out.transpose(1, 2).reshape(N, C, H, W)


class Upsample2D(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv with the same channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))   # (N, C, 2H, 2W)


class UNetMidBlock2D(nn.Module):
    """ResNet -> attention -> ResNet at the lowest resolution."""

    def __init__(self, cfg: VAEConfig, channels: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cfg, channels, channels) for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(cfg, channels)] if cfg.mid_block_add_attention else [])

    def forward(self, x):
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class ResampleBlock2D(nn.Module):
    """n ResNets (the first maps c_in -> c_out), then optionally one resampler (2x up or down). The modules are
    `resnets` and, named by the subclass's RESAMPLERS, `upsamplers` or `downsamplers`: the files' tensor names."""
    RESAMPLERS = ""

    def __init__(self, cfg: VAEConfig, c_in: int, c_out: int, n: int, resampler: nn.Module | None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cfg, c_in if j == 0 else c_out, c_out) for j in range(n)])
        setattr(self, self.RESAMPLERS, nn.ModuleList([resampler] if resampler is not None else []))

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        for resample in getattr(self, self.RESAMPLERS):
            x = resample(x)
        return x


class UpDecoderBlock2D(ResampleBlock2D):
    """layers_per_block + 1 ResNets, then optionally the upsampler."""
    RESAMPLERS = "upsamplers"

    def __init__(self, cfg: VAEConfig, c_in: int, c_out: int, add_upsample: bool):
        super().__init__(cfg, c_in, c_out, cfg.layers_per_block + 1, Upsample2D(c_out) if add_upsample else None)


def resample_blocks(block, cfg: VAEConfig, chans: list[int]) -> nn.ModuleList:
    """One block per width of chans, each from the width before it; every block but the last resamples."""
    return nn.ModuleList([block(cfg, chans[max(i - 1, 0)], c, i < len(chans) - 1) for i, c in enumerate(chans)])


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = list(reversed(cfg.block_out_channels))                   # SD: 512, 512, 256, 128
        self.conv_in = conv3x3(cfg.latent_channels, chans[0])
        self.mid_block = UNetMidBlock2D(cfg, chans[0])
        self.up_blocks = resample_blocks(UpDecoderBlock2D, cfg, chans)
        self.conv_norm_out = group_norm(cfg, chans[-1])
        self.conv_out = conv3x3(chans[-1], cfg.out_channels)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))                             # (N, C_0, h, w)
        for block in self.up_blocks:
            x = block(x)                                                 # SD: 32x32 latent -> 256x256 after the last
        return self.conv_out(F.silu(self.conv_norm_out(x)))             # (N, 3, H, W)


class VAEDecoder(nn.Module):
    """post_quant_conv (outside `decoder.` in the files) followed by the decoder."""

    def __init__(self, cfg: VAEConfig = SD_VAE):
        super().__init__()
        self.cfg = cfg.validate()
        L = cfg.latent_channels
        self.post_quant_conv = nn.Conv2d(L, L, 1) if cfg.use_post_quant_conv else None
        self.decoder = Decoder(cfg)

    def forward(self, z):
        """The raw decoder on the VAE's own latents z (what AutoencoderKL.decode computes)."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)                                  # (N, L, h, w)
        return self.decoder(z)                                           # (N, 3, 8h, 8w) for SD

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The DiT's latents (N, L, h, w) -> images (N, 3, H, W) in [-1, 1]."""
        w = next(self.parameters())
        z = latents.to(w.device, w.dtype) / self.cfg.scaling_factor + self.cfg.shift_factor
        return self(z).clamp(-1.0, 1.0)


# ---------------------------------------------------------------- counting

def decode_gmacs(cfg: VAEConfig, latent_size: int) -> float:
    """Multiply-accumulates (G) of decoding one h x h latent: convolutions and the attention's
    matmuls (the paper's convention for the DiT; norms and activations are not counted)."""
    def conv(hw, c_in, c_out, k=3):
        return hw * c_in * c_out * k * k

    chans = list(reversed(cfg.block_out_channels))
    side = latent_size
    hw = side * side
    macs = conv(hw, cfg.latent_channels, cfg.latent_channels, 1) if cfg.use_post_quant_conv else 0
    macs += conv(hw, cfg.latent_channels, chans[0])
    resnet = lambda hw, c_in, c_out: conv(hw, c_in, c_out) + conv(hw, c_out, c_out) + (conv(hw, c_in, c_out, 1) if c_in != c_out else 0)
    macs += 2 * resnet(hw, chans[0], chans[0])
    if cfg.mid_block_add_attention:
        macs += 4 * hw * chans[0] ** 2 + 2 * hw * hw * chans[0]        # q, k, v, out; q k^T and probs v
    for i, c in enumerate(chans):
        c_in = chans[max(i - 1, 0)]
        macs += resnet(hw, c_in, c) + cfg.layers_per_block * resnet(hw, c, c)
        if i < len(chans) - 1:
            side *= 2
            hw = side * side
            macs += conv(hw, c, c)
    macs += conv(hw, chans[-1], cfg.out_channels)
    return macs / 1e9


def build_meta(cfg: VAEConfig) -> VAEDecoder:
    with torch.device("meta"):
        return VAEDecoder(cfg)


# ---------------------------------------------------------------- published layouts -> ours

_LDM_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_OLD_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _from_ldm(sd: dict) -> dict:
    """latent-diffusion names -> diffusers names. Up blocks are numbered in reverse there
    (`decoder.up.{n-1}` runs first), ResNets are `block`, shortcuts `nin_shortcut`, and the
    attention's q/k/v/proj_out are 1x1 convolutions."""
    n = len({k.split(".")[2] for k in sd if k.startswith("decoder.up.")})
    out = {}
    for k, v in sd.items():
        new = k.replace("nin_shortcut", "conv_shortcut")
        new = re.sub(r"^decoder\.mid\.block_([12])\.", lambda m: f"decoder.mid_block.resnets.{int(m[1]) - 1}.", new)
        m = re.match(r"^decoder\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", new)
        if m:
            new = f"decoder.mid_block.attentions.0.{_LDM_ATTN[m[1]]}.{m[2]}"
            if m[1] != "norm" and v.dim() == 4 and v.shape[2:] == (1, 1):
                v = v[:, :, 0, 0]                                        # (C, C, 1, 1) conv -> (C, C) linear
        m = re.match(r"^decoder\.up\.(\d+)\.(block|upsample)\.(.*)$", new)
        if m:
            i = n - 1 - int(m[1])
            new = (f"decoder.up_blocks.{i}.resnets.{m[3]}" if m[2] == "block"
                   else f"decoder.up_blocks.{i}.upsamplers.0.{m[3]}")
        new = re.sub(r"^decoder\.norm_out\.", "decoder.conv_norm_out.", new)
        out[new] = v
    return out


def _from_old_attention(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        m = re.match(r"^(decoder\.mid_block\.attentions\.0)\.(query|key|value|proj_attn)\.(weight|bias)$", k)
        out[f"{m[1]}.{_OLD_ATTN[m[2]]}.{m[3]}" if m else k] = v
    return out


def to_diffusers_layout(sd: dict, where: str) -> tuple[dict, str]:
    """(decoder tensors under diffusers names, the layout's name). The encoder, quant_conv and
    anything else not needed for decoding (the UNet of a full SD checkpoint, losses) is dropped."""
    if any(k.startswith("first_stage_model.") for k in sd):              # a full Stable Diffusion checkpoint
        sd = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    sd = {k: v for k, v in sd.items() if k.startswith(("decoder.", "post_quant_conv."))}
    if any(k.startswith(("decoder.mid.", "decoder.up.")) for k in sd):
        return _from_ldm(sd), "latent-diffusion"
    if any(k.startswith("decoder.mid_block.attentions.0.query.") for k in sd):
        return _from_old_attention(sd), "diffusers (older attention names)"
    if any(k.startswith("decoder.mid_block.") for k in sd):
        return sd, "diffusers"
    raise VAEError(f"{where}: unknown layout: no VAE decoder tensors (decoder.mid_block.* or decoder.mid.*)")


def infer_vae_config(sd: dict, where: str) -> VAEConfig:
    """Channels and depths from the tensor shapes (diffusers names); GroupNorm groups and eps and
    the scaling factor cannot be seen in shapes: the Stable Diffusion values are assumed."""
    try:
        return _infer_vae_config(sd, where)
    except VAEError as e:
        raise VAEError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    except (IndexError, ValueError) as e:                    # a tensor with too few dimensions
        raise VAEError(f"{where}: tensor shapes that no VAE decoder has ({e})") from None


def _infer_vae_config(sd: dict, where: str) -> VAEConfig:
    def shape(name):
        if name not in sd:
            raise VAEError(f"{where}: missing tensor {name!r}")
        return tuple(sd[name].shape)
    n = len({k.split(".")[2] for k in sd if k.startswith("decoder.up_blocks.")})
    if n == 0:
        raise VAEError(f"{where}: missing tensor 'decoder.up_blocks.0.resnets.0.conv1.weight'")
    chans = [shape(f"decoder.up_blocks.{i}.resnets.0.conv1.weight")[0] for i in range(n)]
    resnets = len({k.split(".")[4] for k in sd if k.startswith("decoder.up_blocks.0.resnets.")})
    return VAEConfig(latent_channels=shape("decoder.conv_in.weight")[1], out_channels=shape("decoder.conv_out.weight")[0],
                     block_out_channels=tuple(reversed(chans)), layers_per_block=resnets - 1,
                     use_post_quant_conv="post_quant_conv.weight" in sd,
                     mid_block_add_attention=any(".attentions." in k for k in sd)).validate()


def _int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def config_from_json(path: Path) -> VAEConfig:
    """A diffusers AutoencoderKL config.json, checked field by field (it is untrusted input)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VAEError(f"{path}: not a readable JSON config ({e})") from None
    return config_from_dict(d, str(path))


def config_from_dict(d, path: str) -> VAEConfig:
    """A config as a dict (a diffusers config.json, or the `config` metadata of a favicon autoencoder file),
    checked field by field; errors name `path`."""
    if not isinstance(d, dict):
        raise VAEError(f"{path}: expected a JSON object")
    if d.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise VAEError(f"{path}: describes a {d['_class_name']!r}, not an AutoencoderKL")
    checks = {
        "block_out_channels": lambda v: isinstance(v, list) and 1 <= len(v) <= 8 and all(_int(c, 1, 4096) for c in v),
        "layers_per_block": lambda v: _int(v, 0, 16), "latent_channels": lambda v: _int(v, 1, 64),
        "out_channels": lambda v: _int(v, 1, 64), "norm_num_groups": lambda v: _int(v, 1, 4096),
        "scaling_factor": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e6,
        "shift_factor": lambda v: v is None or isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6,
        "norm_eps": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
        "use_post_quant_conv": lambda v: isinstance(v, bool), "mid_block_add_attention": lambda v: isinstance(v, bool),
        "act_fn": lambda v: v == "silu",
        "up_block_types": lambda v: isinstance(v, list) and all(t == "UpDecoderBlock2D" for t in v),
    }
    for k, ok in checks.items():
        if k in d and not ok(d[k]):
            raise VAEError(f"{path}: field {k!r} has an unsupported value {json.dumps(d[k])[:60]}")
    fields = {k: d[k] for k in VAEConfig.__dataclass_fields__ if k in d}
    if "block_out_channels" in fields:
        fields["block_out_channels"] = tuple(fields["block_out_channels"])
        if len(d.get("up_block_types", fields["block_out_channels"])) != len(fields["block_out_channels"]):
            raise VAEError(f"{path}: up_block_types and block_out_channels differ in length")
    if fields.get("shift_factor") is None:
        fields.pop("shift_factor", None)
    try:
        return VAEConfig(**fields).validate()
    except VAEError as e:
        raise VAEError(f"{path}: {e}") from None


# ---------------------------------------------------------------- loading

def _locate(path: Path) -> tuple[Path, Path | None]:
    """(weights file, config.json or None): a diffusers VAE folder (or a pipeline folder with
    vae/ in it), or a bare file."""
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        config = folder / "config.json"
        if not config.is_file():
            raise VAEError(f"{path}: a folder without config.json; not a diffusers VAE folder")
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
            if (folder / name).is_file():
                return folder / name, config
        raise VAEError(f"{folder}: no diffusion_pytorch_model.safetensors beside config.json")
    if not path.is_file():
        raise VAEError(f"{path}: no such VAE file or folder")
    return path, None


def save_vae_folder(vae: VAEDecoder, path) -> Path:
    """The decoder half as a diffusers VAE folder (config.json + diffusion_pytorch_model.safetensors): what
    load_vae reads back, e.g. to pass random-weight decoders to `ditweb export --vae` in tests and benchmarks."""
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    conf = {"_class_name": "AutoencoderKL", **vae.cfg.to_dict(), "block_out_channels": list(vae.cfg.block_out_channels)}
    (path / "config.json").write_text(json.dumps(conf))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, path / "diffusion_pytorch_model.safetensors")
    return path


DITWEB_VAE_FORMAT = "favicon-vae"


def safetensors_metadata(path: Path) -> dict:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VAEError(f"{path}: not a readable safetensors file ({first})") from None


def ditweb_config(path: Path) -> VAEConfig | None:
    """The config a `ditweb train-vae` file carries in its safetensors metadata (`ditweb` = favicon-vae,
    `config` = the VAEConfig as JSON, checked field by field); None for any other file."""
    if Path(path).suffix != ".safetensors":
        return None
    meta = safetensors_metadata(path)
    if meta.get("ditweb") != DITWEB_VAE_FORMAT:
        return None
    try:
        conf = json.loads(meta.get("config", ""))
    except ValueError as e:
        raise VAEError(f"{path}: metadata 'config' is not JSON ({e})") from None
    return config_from_dict(conf, str(path))


def check_tensors(sd: dict, want: dict, where, needs: str, layout: str | None = None) -> None:
    """The tensors of a file (sd) are those of the model (`want`: its state dict, on the meta device), at their
    shapes: a one-line VAEError naming `where` otherwise (with the file's `layout` and a count, where given)."""
    def count(n: int, what: str) -> str:
        return f" ({layout} layout; {n} {what})" if layout else ""
    shapes = {k: tuple(v.shape) for k, v in want.items()}
    for k in shapes:
        if k not in sd:
            raise VAEError(f"{where}: missing tensor {k!r}{count(sum(k not in sd for k in shapes), 'missing')}")
        if tuple(sd[k].shape) != shapes[k]:
            raise VAEError(f"{where}: tensor {k!r} is {list(sd[k].shape)}, {needs} needs {list(shapes[k])}")
    extra = sorted(set(sd) - set(shapes))
    if extra:
        raise VAEError(f"{where}: unexpected tensor {extra[0]!r}{count(len(extra), 'unexpected')}")


def load_vae(path, device="cpu", dtype: torch.dtype = torch.float32, quiet: bool = False) -> VAEDecoder:
    """The decoder of a published VAE file; layouts in the module docstring. Untrusted input:
    every problem is a one-line VAEError, and shapes are checked before anything is allocated."""
    weights, config = _locate(Path(path))
    sd, layout = to_diffusers_layout(read_tensors(weights, VAEError), str(weights))
    own = ditweb_config(weights)
    if own is not None:                                                  # a favicon autoencoder (ditweb train-vae)
        cfg, layout = own, "ditweb favicon autoencoder"
    elif config is not None:
        cfg = config_from_json(config)
    else:
        cfg = infer_vae_config(sd, str(weights))
        if not quiet:
            print(f"{weights}: {layout} layout without config.json: channels from the tensor shapes, the Stable "
                  f"Diffusion VAE's GroupNorm ({cfg.norm_num_groups} groups, eps {cfg.norm_eps}) and scaling factor "
                  f"{cfg.scaling_factor} assumed", file=sys.stderr)
    check_tensors(sd, build_meta(cfg).state_dict(), weights, "the decoder", layout)
    bad = [k for k, v in sd.items() if not v.is_floating_point()]
    if bad:
        raise VAEError(f"{weights}: tensor {bad[0]!r} is {sd[bad[0]].dtype}, not floating point")
    model = VAEDecoder(cfg)
    model.load_state_dict(sd, strict=True)
    return model.to(device=device, dtype=dtype).eval()
