"""Checkpoint -> shader bundle: weight shards (weights.safetensors, or weights-NN.safetensors past 64 MiB; 4-byte
aligned), kernels/*.wgsl, manifest.json.

See docs/bundle-format.md for the format; export/program.py for the dispatch program."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from dit_model.model import DiT, count_params
from ditformat.errors import DitwebError
from ditformat import EXPORTER_VERSION, FORMAT, FORMAT_VERSION
from ditformat.schedule import SCHEDULE
from ditformat.schema import sha256_file
from ditformat.packed import QUANTISED_DTYPES, choose_steps, pack_q4k, packed_shapes, steps_tensor
from ditformat.shards import DEFAULT_FILE, SHARD_BYTES, weight_entry, write_shards
from ditformat.step import MAX_BRANCHES
from wgsl.ops import OPS, workgroup_bytes

from .card import CARD_FILE, render_card
from .program import FREQ_DIM, LABEL_TABLE, build

MATMUL_OPS = {"registers": "matmul", "shared": "matmul_shared"}
VOCABULARY_FILE = "vocabulary.json"          # a named model's label vocabulary (ditformat/labels.py)


def model_entry(cfg) -> dict:
    """The manifest's model: the config, label levels only for a named model (one-level bundles as before)."""
    d = cfg.to_dict()
    if cfg.label_levels:
        d["label_levels"], d["label_nested"] = list(cfg.label_levels), cfg.label_nested
    return d


class ExportError(DitwebError):
    """The model cannot be exported (the message says why)."""


def t_freqs(dim: int = FREQ_DIM) -> np.ndarray:
    """The float32 frequency table of dit_model.model's timestep embedding, exp(-ln(10000) i / half): the float32
    argument as torch forms it, the exponential in float64 rounded once. Every CPU exports the same bytes (torch's
    own float32 exp differs by 1 ulp in a few entries between CPUs); the parity bounds absorb that ulp."""
    half = dim // 2
    arg = (np.float32(-math.log(10000)) * np.arange(half, dtype=np.float32)) / np.float32(half)   # float32, as torch
    return np.exp(arg.astype(np.float64)).astype(np.float32)


def quantize_linear(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Linear weight (N, ...) -> (q, scale): per output channel symmetric int8 over the flattened row (K values),
    scale = max |w| / 127 (1 for an all-zero row), q = round(w / scale) in [-127, 127] as (N, K) int8, scale (N,)
    float32. The same rule as the decoder's convolutions (export/decode.py quantize_conv)."""
    w = np.asarray(w, np.float64).reshape(len(w), -1)
    m = np.abs(w).max(axis=1)
    scale = np.where(m > 0, m / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale.astype(np.float64)[:, None]), -127, 127).astype(np.int8)
    return q, scale


def quantize_linear_q4k(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Linear weight (N, K) -> (nibbles uint8 (N, K/2), k uint8 (N, K/32), scale (N,) float32): the int8 scale of
    quantize_linear, and per group of 32 inputs of a row the step k (1..18) whose q4 = clip(round(g / k), -7, 7)
    (g = w / scale) is nearest g in least squares (ditformat/packed.py choose_steps); the i8 values q4 k, exact in
    int8, are what the runtimes unpack and the int8 kernels read."""
    w = np.asarray(w, np.float64).reshape(len(w), -1)
    _, scale = quantize_linear(w)
    q, k = choose_steps(w / scale.astype(np.float64)[:, None])
    nibbles, k = pack_q4k(q, k)
    return nibbles, k, scale


def packed_layer(prefix: str, shape) -> bool:
    """Whether an int4 bundle stores the Linear `prefix` (weight shape (N, K)) packed: a transformer block's, with K
    a multiple of the group (32); the others stay int8."""
    return prefix.startswith("blocks.") and packed_shapes(list(shape)) is not None


def linear_layers(model: DiT) -> list[str]:
    """The prefixes X of the Linear layers the program runs as matmuls (X.weight, X.bias)."""
    cfg = model.cfg
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()} | {"_ditweb.t_freqs": (FREQ_DIM // 2,)}
    pb = build(cfg, "f32", shapes, candidates=False)
    return sorted({d["label"] for p in pb.programs.values() for d in p if pb.kernels[d["kernel"]]["op"] == "matmul"})


def bundle_tensors(model: DiT, dtype: str) -> dict[str, np.ndarray]:
    """State-dict tensors in the bundle dtype, plus the exporter's f32 tables. int8: every Linear weight
    quantised per output channel (X.weight int8 (N, K), X.scale f32 (N,)), its bias f32; the label table by the
    same rule per row (LABEL_TABLE.weight int8 (rows, D), LABEL_TABLE.scale f32 (rows,)); the rest f16. int4: as
    int8, but each transformer block's Linear weight packed (packed_layer): X.weight its nibbles uint8 (N, K/2),
    X.weight.k its steps uint8 (N, K/32) (quantize_linear_q4k; ditformat/packed.py unpack_q4k gives the int8 values)."""
    np_dtype = np.float16 if dtype == "f16" or dtype in QUANTISED_DTYPES else np.float32
    sd = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    out = {k: v.astype(np_dtype) for k, v in sd.items()}
    if dtype in QUANTISED_DTYPES:
        for x in linear_layers(model):
            w = sd[x + ".weight"].reshape(len(sd[x + ".weight"]), -1)
            if dtype == "int4" and packed_layer(x, w.shape):
                out[x + ".weight"], out[steps_tensor(x + ".weight")], out[x + ".scale"] = quantize_linear_q4k(w)
            else:
                out[x + ".weight"], out[x + ".scale"] = quantize_linear(w)
            out[x + ".bias"] = sd[x + ".bias"].astype(np.float32)
        out[LABEL_TABLE + ".weight"], out[LABEL_TABLE + ".scale"] = quantize_linear(sd[LABEL_TABLE + ".weight"])
    out["_ditweb.t_freqs"] = t_freqs()
    return out


ONNX_FILE = "model.onnx"     # export --onnx: beside the bundle's files, never in its manifest


sha256 = sha256_file                # a `files` entry's hash, as both verifiers compute it


def manifest_class_names(cfg, class_names, vocab) -> list[str]:
    """The manifest's class names: one per class for a one-level model, none for a named one (its names live in
    vocabulary.json, which must fit the model's label levels). Refuses what the kernels cannot run."""
    if cfg.freq_shift != 0.0 or cfg.norm_eps != 1e-6:                  # the kernels bake the reference DiT's values
        raise ExportError(f"this model uses freq_shift {cfg.freq_shift:g} / norm_eps {cfg.norm_eps:g} (a converted diffusers "
                          "DiT); bundles support only the reference values 0 / 1e-6 so far")
    if cfg.label_levels:
        if vocab is None:
            raise ExportError(f"this is a named model (labels at {len(cfg.label_levels)} levels) without its vocabulary")
        if tuple(vocab.sizes) != tuple(cfg.label_levels) or vocab.nested != cfg.label_nested:
            raise ExportError(f"the vocabulary (levels {list(vocab.sizes)}, {vocab.nested} nested) disagrees with the "
                              f"model (levels {list(cfg.label_levels)}, {cfg.label_nested} nested)")
        return []                       # the names live in vocabulary.json: the manifest stays small
    if vocab is not None:
        raise ExportError("a vocabulary was given for a one-level model")
    names = list(class_names) if class_names else [str(i) for i in range(cfg.num_classes)]
    if len(names) != cfg.num_classes:
        raise ExportError(f"{len(names)} class names for {cfg.num_classes} classes")
    return names


def make_manifest(cfg, dtype: str, names: list[str], vocab, files: dict, kernels: dict, buffers: dict, pb) -> dict:
    """manifest.json (docs/bundle-format.md): the model, io, every file with its size and sha256, the device limits
    the kernels need, kernels, buffers, programs, candidates, sampler and guidance."""
    C, I, Co = cfg.in_channels, cfg.input_size, cfg.out_channels
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "exporter": f"ditweb {EXPORTER_VERSION}", "dtype": dtype,
        "model": model_entry(cfg), "class_names": names, **({} if vocab else {"null_class": cfg.num_classes}),
        "io": {"x": "x_in", "x_shape": [C, I, I], "t": "t_in", "y": "y_in", "out": "out",
               "out_shape": [Co, I, I], "sample": "x_sample"},
        "files": files,
        "limits": {"max_storage_buffer_binding_size": max(-(-b["bytes"] // 4) * 4 for b in buffers.values()
                                                          if b["kind"] == "weight"),
                   "max_compute_workgroup_storage_size": max(
                       workgroup_bytes(k["op"], k["variant"]) for k in pb.kernels.values()),
                   "max_compute_invocations_per_workgroup": 256,
                   "max_storage_buffers_per_shader_stage": max(len(k["bindings"]) - 1 for k in kernels.values())},
        "kernels": kernels, "buffers": buffers, "programs": pb.programs, "candidates": pb.candidates,
        "sampler": {"prediction": cfg.prediction, **SCHEDULE}, "guidance": {"max_branches": MAX_BRANCHES},
    }


def export_bundle(model: DiT, out: str | os.PathLike, dtype: str = "f32", class_names: list[str] | None = None,
                  onnx: bool = False, matmul: str = "registers", candidates: bool = True,
                  shard_bytes: int = SHARD_BYTES, vocab=None, card: dict | None = None, title: str | None = None) -> Path:
    """Write the bundle folder atomically (a temporary folder renamed over `out`). matmul: "registers"
    (register-blocked, the default) or "shared" (workgroup-memory tiles) for every Linear layer. Weights go to
shards of at most shard_bytes (ditformat/shards.py): one shard is weights.safetensors (its buffers name no
file), more are weights-NN.safetensors, each weight buffer naming its `file`. A named model (cfg.label_levels) needs
its vocabulary (ditformat.labels.Vocabulary), written to vocabulary.json; its manifest lists no class names.
Every bundle gets its model card, README.md (export/card.py), from `card` (the checkpoint's record merged with a card
file; None: what is unknown says so), titled `title` (default: the folder's name). onnx: also the forward pass as
ONNX, ONNX_FILE in the folder, not listed in the manifest (for other tools; docs/bundle-format.md)."""
    if dtype not in ("f32", "f16", "int8", "int4"):
        raise ExportError(f"unknown --dtype {dtype!r}; choose f32, f16, int8 or int4")
    if shard_bytes < 1:
        raise ExportError(f"shard size {shard_bytes} bytes")
    if matmul not in MATMUL_OPS:
        raise ExportError(f"unknown --matmul {matmul!r}; choose {' or '.join(MATMUL_OPS)}")
    cfg = model.cfg
    names = manifest_class_names(cfg, class_names, vocab)
    q8 = dtype in QUANTISED_DTYPES                       # every Linear runs matmul_q8 (int4: on the unpacked values)
    kdtype = "f16" if q8 else dtype                      # the weights of the kernels other than matmul_q8
    try:
        tensors = bundle_tensors(model, dtype)
        packed = {k[: -len(steps_tensor(""))]: k for k in tensors if k.endswith(steps_tensor("")) and
                  tensors[k].dtype == np.uint8}          # nibble tensor -> its steps tensor
        shapes = {k: ((v.shape[0], 2 * v.shape[1]) if k in packed else v.shape) for k, v in tensors.items()
                  if k not in packed.values()}           # the buffers' shapes: a packed one as its i8 values
        pb = build(cfg, kdtype, shapes, MATMUL_OPS[matmul], candidates, q8=q8)
    except ValueError as e:
        raise ExportError(str(e)) from None

    out = Path(out).resolve()
    if out.is_file():
        raise ExportError(f"{out}: is a file; give a folder for the bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise ExportError(f"{out}: folder exists and is not a bundle (no manifest.json); refusing to replace it")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "kernels").mkdir(parents=True)
    try:
        where = write_shards(tensors, tmp, shard_bytes, single=DEFAULT_FILE, attached={v: k for k, v in packed.items()})
        if vocab is not None:
            (tmp / VOCABULARY_FILE).write_bytes(vocab.dumps().encode("utf-8"))
        kernels = {}
        for kname, k in sorted(pb.kernels.items()):
            (tmp / k["entry"]["file"]).write_text(OPS[k["op"]].render(k["variant"], kdtype))
            kernels[kname] = k["entry"]
        buffers = {}
        for name, a in tensors.items():
            if name in packed.values():
                continue                                 # a packed buffer's steps: named by its encoding
            buffers[name] = weight_entry(a, name, None if where[name] == DEFAULT_FILE else where[name],
                                         "q4k" if name in packed else None)
        buffers.update(pb.buffers)
        (tmp / CARD_FILE).write_text(render_card(title or out.name, cfg, names, vocab, dtype, count_params(model), card,
                                                 f"ditweb {EXPORTER_VERSION}", FORMAT_VERSION), encoding="utf-8")
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                files[f.relative_to(tmp).as_posix()] = {"size": f.stat().st_size, "sha256": sha256(f)}
        manifest = make_manifest(cfg, dtype, names, vocab, files, kernels, buffers, pb)
        (tmp / "manifest.json").write_text(json.dumps(manifest, separators=(",", ":")))    # compact: first-visit bytes
        if onnx:        # in the folder, not in `files`: no runtime reads it (the browser fetches every listed file)
            from .onnx_export import export_onnx
            export_onnx(model, tmp / ONNX_FILE)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@torch.no_grad()
def randomize_(model: DiT, seed: int = 0, gain: float = 1.0) -> DiT:
    """Random weights in EVERY tensor (gates and zero-initialised layers too) except the fixed pos_embed:
    a freshly initialised adaLN-Zero DiT outputs exactly zero, which would make parity checks vacuous."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.named_parameters():
        if name == "pos_embed":
            continue
        fan_in = t[0].numel() if t.dim() > 1 else t.numel()
        std = gain / math.sqrt(fan_in) if t.dim() > 1 else 0.1
        if "embedding_table" in name:
            std = 0.5
        t.copy_(torch.randn(t.shape, generator=g) * std)
    return model
