"""Published DiT layouts -> ours. The reference `.pt` files (bare or under "ema") already use our
names; this module converts the diffusers layout (`DiTTransformer2DModel`, or the older
`Transformer2DModel` with adaLN-Zero: the `transformer/` folder of a DiT pipeline).

Besides names, diffusers differs from the reference in two numbers, which the converted config
records so the converted model reproduces diffusers: timestep frequencies divided by half - 1
(`freq_shift` 1) and eps 1e-5 (its config's `norm_eps`) in the LayerNorm before the MLP.
Diffusers stores a timestep and class embedder in every block; the reference shares one, so a
file whose copies differ is refused. See docs/vae.md ("Published DiT layouts")."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ditformat.errors import DitwebError

from .model import sincos_2d


class ConvertError(DitwebError):
    """A published file that cannot be converted; the message names the file and what is wrong."""

CLASS_NAMES = ("DiTTransformer2DModel", "Transformer2DModel")
DIFFUSERS_FREQ_SHIFT = 1.0            # diffusers' Timesteps(downscale_freq_shift=1) in its DiT
DIFFUSERS_NORM_EPS = 1e-5             # DiTTransformer2DModel's default norm_eps (its pre-MLP LayerNorm)
_EMB = "transformer_blocks.{i}.norm1.emb."
_EMBEDDERS = ("timestep_embedder.linear_1.weight", "timestep_embedder.linear_1.bias",
              "timestep_embedder.linear_2.weight", "timestep_embedder.linear_2.bias",
              "class_embedder.embedding_table.weight")


def is_diffusers_dit(sd: dict) -> bool:
    return "transformer_blocks.0.norm1.linear.weight" in sd or "pos_embed.proj.weight" in sd


def _unpickle_reason(e: Exception) -> str:
    """The one informative line of torch's many-line weights_only error."""
    text = str(e)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"it names code ({m[1]}), which is never run"
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return m[1].strip() if m else (lines[0][:160] if lines else type(e).__name__)


def read_tensors(path: Path, error: type = ConvertError) -> dict:
    """Named tensors from a .safetensors file or a torch file (.ckpt, .bin; weights_only, so no
    pickle code runs), also under "state_dict" (latent-diffusion / Lightning files)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise error(f"{path}: not a readable safetensors file ({first})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise error(f"{path}: not a loadable checkpoint (weights_only load failed: {_unpickle_reason(e)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise error(f"{path}: expected a dict of named tensors (or one under 'state_dict')")
    from .tensor_checks import CheckpointError, check_owned_storage
    try:
        check_owned_storage(obj, path)                  # before any conversion copies a view into real memory
    except CheckpointError as e:
        raise error(str(e)) from None
    return obj


def _locate(path: Path) -> tuple[Path, Path] | None:
    """(weights, config.json) of a diffusers DiT folder (or a pipeline folder holding transformer/)."""
    if not path.is_dir():
        return None
    folder = path / "transformer" if (path / "transformer" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise ConvertError(f"{path}: a folder without config.json; not a diffusers DiT folder")
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name, folder / "config.json"
    raise ConvertError(f"{folder}: no diffusion_pytorch_model.safetensors beside config.json")


def _read_config(path: Path) -> dict:
    """The fields of a diffusers DiT config.json we use, checked (it is untrusted input)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConvertError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(d, dict):
        raise ConvertError(f"{path}: expected a JSON object")
    if d.get("_class_name", CLASS_NAMES[0]) not in CLASS_NAMES:
        raise ConvertError(f"{path}: describes a {d['_class_name']!r}, not a DiTTransformer2DModel")
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
    must = {"num_attention_heads": lambda v: is_int(v) and 1 <= v <= 1024,
            "attention_head_dim": lambda v: is_int(v) and 1 <= v <= 4096,
            "sample_size": lambda v: is_int(v) and 1 <= v <= 1024}
    may = {"norm_eps": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
           "norm_type": lambda v: v == "ada_norm_zero", "activation_fn": lambda v: v == "gelu-approximate",
           "norm_elementwise_affine": lambda v: v is False, "attention_bias": lambda v: v is True}
    for k, ok in must.items():
        if k not in d:
            raise ConvertError(f"{path}: missing field {k!r}")
    for k, ok in {**must, **may}.items():
        if k in d and not ok(d[k]):
            raise ConvertError(f"{path}: field {k!r} has an unsupported value {json.dumps(d[k])[:60]}")
    return d


def from_diffusers(sd: dict, config: dict, where) -> tuple[dict, dict]:
    """(our state dict, our config dict) from a diffusers DiT state dict and its config.json."""
    try:
        return _from_diffusers(sd, config, where)
    except ConvertError:
        raise
    except (IndexError, ValueError, RuntimeError) as e:      # a tensor with too few dimensions, and the like
        raise ConvertError(f"{where}: tensor shapes that no DiT has ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _from_diffusers(sd: dict, config: dict, where) -> tuple[dict, dict]:
    used = set()

    def get(name):
        if name not in sd:
            raise ConvertError(f"{where}: missing tensor {name!r} (diffusers DiT layout)")
        used.add(name)
        return sd[name]

    D, C, p, _ = get("pos_embed.proj.weight").shape
    heads = config["num_attention_heads"]
    if heads * config["attention_head_dim"] != D:
        raise ConvertError(f"{where}: config says {heads} heads x {config['attention_head_dim']} = "
                              f"{heads * config['attention_head_dim']} channels, the tensors have {D}")
    depth = len({k.split(".")[1] for k in sd if k.startswith("transformer_blocks.")})
    # the reference shares one timestep/class embedder; diffusers keeps a copy per block
    for name in _EMBEDDERS:
        first = get(_EMB.format(i=0) + name)
        for i in range(1, depth):
            other = get(_EMB.format(i=i) + name)
            if other.shape != first.shape or not torch.equal(other, first):
                raise ConvertError(f"{where}: block {i}'s {name.split('.')[0]} differs from block 0's; the reference "
                                      "DiT shares one embedder, so this file cannot be converted")
    grid = config["sample_size"] // p
    params = sum(v.numel() for v in sd.values())
    if grid * grid * D > params:      # a real DiT's position table is far smaller than its weights
        raise ConvertError(f"{where}: sample_size {config['sample_size']} asks for a {grid * grid} x {D} position "
                              f"table, larger than all {params} weights in the file")
    emb = _EMB.format(i=0)
    out = {"x_embedder.proj.weight": get("pos_embed.proj.weight"), "x_embedder.proj.bias": get("pos_embed.proj.bias"),
           # the fixed sin-cos table is not stored by diffusers; ours stores it like the reference files
           "pos_embed": torch.tensor(sincos_2d(D, grid), dtype=torch.float32)[None],             # (1, T, D)
           "t_embedder.mlp.0.weight": get(emb + "timestep_embedder.linear_1.weight"),
           "t_embedder.mlp.0.bias": get(emb + "timestep_embedder.linear_1.bias"),
           "t_embedder.mlp.2.weight": get(emb + "timestep_embedder.linear_2.weight"),
           "t_embedder.mlp.2.bias": get(emb + "timestep_embedder.linear_2.bias"),
           "y_embedder.embedding_table.weight": get(emb + "class_embedder.embedding_table.weight")}
    for i in range(depth):
        b, o = f"transformer_blocks.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            q, k, v = (get(f"{b}attn1.to_{n}.{kind}") for n in "qkv")
            if not q.shape == k.shape == v.shape:
                raise ConvertError(f"{where}: {b}attn1.to_q/to_k/to_v.{kind} differ in shape")
            out[f"{o}attn.qkv.{kind}"] = torch.cat([q, k, v], dim=0)                            # (3D, D) or (3D,)
            out[f"{o}adaLN_modulation.1.{kind}"] = get(f"{b}norm1.linear.{kind}")
            out[f"{o}attn.proj.{kind}"] = get(f"{b}attn1.to_out.0.{kind}")
            out[f"{o}mlp.fc1.{kind}"] = get(f"{b}ff.net.0.proj.{kind}")
            out[f"{o}mlp.fc2.{kind}"] = get(f"{b}ff.net.2.{kind}")
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = get(f"proj_out_1.{kind}")
        out[f"final_layer.linear.{kind}"] = get(f"proj_out_2.{kind}")
    extra = sorted(set(sd) - used)
    if extra:
        raise ConvertError(f"{where}: unexpected tensor {extra[0]!r} in a diffusers DiT ({len(extra)} unexpected)")
    c_out = out["final_layer.linear.weight"].shape[0] // (p * p)
    if c_out not in (C, 2 * C):
        raise ConvertError(f"{where}: {c_out} output channels for {C} input channels; a DiT has C or 2C")
    hidden = out["blocks.0.mlp.fc1.weight"].shape[0] if depth else 4 * D
    cfg = dict(input_size=config["sample_size"], patch_size=p, in_channels=C, hidden_size=D, depth=depth,
               num_heads=heads, mlp_ratio=hidden / D, num_classes=out["y_embedder.embedding_table.weight"].shape[0] - 1,
               learn_sigma=c_out == 2 * C, conditioning="adaln-zero",
               freq_shift=DIFFUSERS_FREQ_SHIFT, norm_eps=float(config.get("norm_eps", DIFFUSERS_NORM_EPS)))
    return out, cfg


def read_published(path: Path):
    """A diffusers DiT folder as a checkpoint object ({"ema": state dict, "config": ...}); None
    for anything else (a file: checkpoint.load_model reads it and passes it to convert_object)."""
    found = _locate(Path(path))
    if found is None:
        return None
    weights, config_path = found
    config = _read_config(config_path)
    sd = read_tensors(weights)
    if not is_diffusers_dit(sd):
        raise ConvertError(f"{weights}: not in the diffusers DiT layout (no pos_embed.proj / transformer_blocks tensors)")
    ours, cfg = from_diffusers(sd, config, weights)
    return {"ema": ours, "config": cfg}


def convert_object(obj, path):
    """A loaded checkpoint file, unchanged unless it is a bare diffusers DiT state dict, which
    cannot be used without its config.json (the image size and head count are not in the tensors)."""
    if isinstance(obj, dict) and is_diffusers_dit(obj) and "blocks.0.attn.qkv.weight" not in obj:
        raise ConvertError(f"{path}: a diffusers DiT state dict without its config.json (the image size and "
                              "heads are not in the tensors); pass the folder that holds both")
    return obj
