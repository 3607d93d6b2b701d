"""Checkpoints: load ours, the reference training script's and the published bare state dicts
safely (weights_only=True or safetensors), infer the config from tensor shapes, save atomically."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ditformat.errors import DitwebError
from ditformat.atomic import write_atomic
from ditformat.schema import SchemaMismatch, check_model_config

from .model import PRESETS, DiT, DiTConfig, build_meta, preset_config
from .tensor_checks import (CheckpointError, check_finite, check_model_budget, check_owned_storage,  # noqa: F401
                            first_nonfinite, memory_budget)


def atomic_write(path: str | os.PathLike, write, what: str = "checkpoint", error: type = CheckpointError) -> Path:
    """write(f) into a temporary file in the same folder, fsync, then rename over `path` (a private file, 0600).
    A failure (e.g. a full disk) leaves the previous file untouched and raises `error`."""
    try:
        return write_atomic(path, write, mode=None)
    except (OSError, RuntimeError) as e:
        raise error(f"{path}: could not write {what} ({e}); the previous file is unchanged") from e


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save, atomically (see atomic_write); raises CheckpointError on failure."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_weights(model, path, class_names: list[str], step: int | None = None, vocab=None, extra: dict | None = None,
                 card: dict | None = None) -> None:
    """A model's weights as .safetensors, with its config and class names in the metadata
    (how the shipped default model travels: no pickle at all), a named model's label
    vocabulary (ditformat.labels) and the model card's record (dit_model/card.py). Written atomically."""
    import json
    from safetensors.torch import save
    meta = {"config": json.dumps(model.cfg.to_dict()), "class_names": json.dumps(list(class_names)),
            "step": str(step if step is not None else "")}
    if vocab is not None:
        meta["vocabulary"] = vocab.dumps()
    if card is not None:
        meta["card"] = json.dumps(card)
    meta.update(extra or {})                             # e.g. a latent model's autoencoder (dit_model/latent.py)
    data = save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, metadata=meta)
    atomic_write(path, lambda f: f.write(data), "weights")


def _torch_load(path: Path) -> object:
    if path.suffix == ".safetensors":
        import json
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                sd = {k: f.get_tensor(k) for k in f.keys()}
                meta = f.metadata() or {}
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        if "config" not in meta:
            return sd
        try:
            out = {"ema": sd, "config": json.loads(meta["config"]), "class_names": json.loads(meta.get("class_names", "[]")),
                   "step": int(meta["step"]) if meta.get("step") else None}
            if "vocabulary" in meta:
                out["vocabulary"] = meta["vocabulary"]
            if "card" in meta:
                out["card"] = json.loads(meta["card"])
            return out
        except ValueError as e:
            raise CheckpointError(f"{path}: bad metadata in safetensors header ({e})") from None
    try:
        # the reference training script stores an argparse.Namespace under "args"
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except Exception as e:
        raise CheckpointError(f"{path}: {_load_failure(e)}") from None
    check_owned_storage(obj, path)
    return obj


def _load_failure(e: Exception) -> str:
    """Our own words for a failed weights_only load: never torch's advice to load with weights_only=False
    (which would run whatever code the file's pickle names)."""
    import re
    text = str(e)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"GLOBAL ([\w.]+) was not an allowed global", text)
    if m:
        return (f"refused: its pickle names code ({m[1][:80]}), which a checkpoint may not hold; only tensors, numbers, "
                f"strings, lists and dicts are read and nothing in the file was run")
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if m and "weights_only" not in m[1]:
        return f"not a loadable checkpoint (its pickle: {m[1].strip()[:120]}; refused, nothing in the file was run)"
    if "weights only" in text.lower() or "weights_only" in text:
        return ("not a loadable checkpoint (its pickle holds something other than tensors, numbers, strings, lists "
                "and dicts; refused, nothing in the file was run)")
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return f"not a loadable checkpoint ({lines[0][:160] if lines else type(e).__name__})"


def extract_state_dict(obj, path) -> tuple[dict, dict]:
    """(state dict, the rest): EMA weights preferred, then model, then a bare state dict."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    for key in ("ema", "model", "state_dict"):
        if isinstance(obj.get(key), dict):
            return obj[key], obj
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise CheckpointError(f"{path}: no state dict found (keys: {', '.join(map(str, list(obj)[:8]))})")


def infer_config(sd: dict, path="checkpoint", preset: str | None = None) -> DiTConfig:
    """Config from tensor shapes; heads come from the preset with the same depth and width."""
    def shape(name):
        if name not in sd:
            raise CheckpointError(f"{path}: missing tensor {name!r}; not a DiT state dict")
        return tuple(sd[name].shape)
    D, C, p, _ = shape("x_embedder.proj.weight")
    T = shape("pos_embed")[1]
    grid = round(T ** 0.5)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    num_classes = shape("y_embedder.embedding_table.weight")[0] - 1
    out = shape("final_layer.linear.weight")[0] // (p * p)
    if "blocks.0.adaLN_modulation.1.weight" in sd:
        conditioning = "adaln-zero" if shape("blocks.0.adaLN_modulation.1.weight")[0] == 6 * D else "adaln"
    else:
        conditioning = "cross-attn" if "blocks.0.cross_attn.q.weight" in sd else "in-context"
    fields = dict(input_size=grid * p, in_channels=C, num_classes=num_classes, learn_sigma=out == 2 * C,
                  conditioning=conditioning)
    if preset is not None:
        return preset_config(preset, **fields)
    for name, pre in PRESETS.items():
        if pre["depth"] == depth and pre["hidden_size"] == D and pre["patch_size"] == p:
            return preset_config(name, **fields)
    raise CheckpointError(
        f"{path}: matches no preset (saw depth {depth}, hidden {D}, patch {p}, {C} input channels, "
        f"{T} tokens, {num_classes} classes); pass --preset")


def load_model(path, preset: str | None = None, device="cpu") -> tuple[DiT, dict]:
    """A DiT with the checkpoint's (EMA) weights, and its metadata (config, class_names, ...)."""
    path = Path(path)
    from .convert import convert_object, read_published    # the diffusers DiT layout -> ours
    obj = read_published(path)
    if obj is None:
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        obj = convert_object(_torch_load(path), path)
    sd, meta = extract_state_dict(obj, path)
    cfg_dict = meta.get("config") if isinstance(meta, dict) else None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{path}: the state dict holds something other than named tensors")
    try:
        if isinstance(cfg_dict, dict):
            check_model_config(cfg_dict, "config")       # types and ranges before any allocation
            cfg = DiTConfig.from_dict(cfg_dict)
        else:
            cfg = infer_config(sd, path, preset)
    except (IndexError, ZeroDivisionError):
        raise CheckpointError(f"{path}: tensor shapes that no DiT has; not a DiT state dict") from None
    except (SchemaMismatch, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    # shapes first, on the meta device: a config that disagrees with the tensors (or asks for a
    # model far larger than the file) fails here, before anything is allocated
    pos = (1, cfg.num_patches, cfg.hidden_size)          # bounds the model by a tensor the file really holds
    if "pos_embed" not in sd or tuple(sd["pos_embed"].shape) != pos:
        got = list(sd["pos_embed"].shape) if "pos_embed" in sd else "missing"
        raise CheckpointError(f"{path}: incompatible with its config (d={cfg.hidden_size}, input {cfg.input_size}, "
                              f"patch {cfg.patch_size}): pos_embed is {got}, the config needs {list(pos)}")
    meta_model = build_meta(cfg)
    want = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    bad = [k for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{path}: incompatible with {cfg.conditioning} DiT (d={cfg.hidden_size}, depth={cfg.depth}): "
                              f"tensor {k} is {list(sd[k].shape)}, the config needs {list(want[k])}")
    if set(want) != set(sd):
        missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
        raise CheckpointError(f"{path}: incompatible with {cfg.conditioning} DiT (d={cfg.hidden_size}, depth={cfg.depth}): "
                              + (f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {extra[0]!r}")
                              + f" ({len(missing)} missing, {len(extra)} unexpected)")
    check_owned_storage(sd, path)                        # the converted layouts too (diffusers, reference)
    check_model_budget(cfg, path, params=sum(p.numel() for p in meta_model.parameters()))
    check_finite(sd, path)
    names = read_class_names(meta, cfg, path)
    model = DiT(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        raise CheckpointError(f"{path}: incompatible with {cfg.conditioning} DiT (d={cfg.hidden_size}, depth={cfg.depth}): {lines[1] if len(lines) > 1 else lines[0]}") from None
    vocab = read_vocabulary(meta, cfg, path)
    return model.to(device).eval(), {"config": cfg, "class_names": list(names), "vocab": vocab,
                                     "step": meta.get("step") if isinstance(meta, dict) else None,
                                     "card": read_card(meta, path)}


def read_card(meta, path) -> dict | None:
    """The model card's record (dit_model/card.py) a checkpoint carries; None for one written before cards."""
    from .card import CardError, check_card
    card = meta.get("card") if isinstance(meta, dict) else None
    if card is None:
        args = meta.get("train_args") if isinstance(meta, dict) else None
        if not isinstance(args, dict) or not isinstance(meta.get("step"), int):
            return None
        from .card import training_card                  # a run's checkpoint from before cards: its options say
        return training_card(args, meta["step"], {})     # the data and recipe; the compute is unknown
    try:
        return check_card(card, path)
    except CardError as e:
        raise CheckpointError(str(e)) from None


def _kind(v) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def read_class_names(meta, cfg: DiTConfig, path) -> list[str]:
    """The checkpoint's class names: a list of strings (one per class), or absent (then "0", "1", ...).
    Anything else is a CheckpointError, not a guess."""
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if names is None or (isinstance(names, list) and not names):
        return [str(i) for i in range(cfg.num_classes)]
    if not isinstance(names, (list, tuple)):
        raise CheckpointError(f"{path}: class_names must be a list of strings, found a {_kind(names)}")
    bad = [n for n in names if not isinstance(n, str) or not n.isprintable()][:1]
    if bad:
        bad = bad[0]
        raise CheckpointError(f"{path}: class_names must be a list of printable strings, found a {_kind(bad)}")
    if len(names) != cfg.num_classes:
        return [str(i) for i in range(cfg.num_classes)]   # e.g. a published model's names: not ours to guess
    return list(names)


def read_vocabulary(meta, cfg: DiTConfig, path):
    """A named model's vocabulary (None for a one-level model); it must fit the label table."""
    from ditformat.labels import Vocabulary, VocabularyError
    text = meta.get("vocabulary") if isinstance(meta, dict) else None
    if text is not None and not isinstance(text, str):
        raise CheckpointError(f"{path}: its vocabulary must be a JSON text, found a {_kind(text)}")
    if not cfg.label_levels:
        return None
    if not isinstance(text, str):
        raise CheckpointError(f"{path}: a model with label levels {list(cfg.label_levels)} but no vocabulary")
    try:
        vocab = Vocabulary.loads(text, "its vocabulary")
    except VocabularyError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if vocab.sizes != tuple(cfg.label_levels) or vocab.nested != cfg.label_nested:
        raise CheckpointError(f"{path}: its vocabulary (levels {list(vocab.sizes)}, {vocab.nested} nested) disagrees "
                              f"with the weights (levels {list(cfg.label_levels)}, {cfg.label_nested} nested)")
    return vocab
