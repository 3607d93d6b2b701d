"""Checkpoint -> shader bundle: weights.safetensors (4-byte aligned), kernels/*.wgsl, manifest.json.

See docs/bundle-format.md for the format; export/program.py for the dispatch program."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from dit_model.model import DiT
from ditformat.errors import DitwebError
from ditformat import EXPORTER_VERSION, FORMAT, FORMAT_VERSION
from ditformat.schedule import SCHEDULE
from ditformat.step import MAX_BRANCHES
from wgsl.ops import OPS, workgroup_bytes

from .program import FREQ_DIM, build

MATMUL_OPS = {"registers": "matmul", "shared": "matmul_shared"}
ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int8): "I8"}


class ExportError(DitwebError):
    """The model cannot be exported (the message says why)."""


def t_freqs(dim: int = FREQ_DIM) -> np.ndarray:
    """The float32 frequency table exactly as dit_model.model.timestep_frequencies computes it."""
    half = dim // 2
    return torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half).numpy()


def bundle_tensors(model: DiT, dtype: str) -> dict[str, np.ndarray]:
    """State-dict tensors in the bundle dtype, plus the exporter's f32 tables."""
    np_dtype = np.float16 if dtype == "f16" else np.float32
    out = {k: v.detach().cpu().float().numpy().astype(np_dtype) for k, v in model.state_dict().items()}
    out["_ditweb.t_freqs"] = t_freqs()
    return out


def write_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    """Standard safetensors whose every tensor starts 4-byte aligned: f32 tensors first, and a 1-element
    `_ditweb.pad.k` after each odd-length f16 tensor (the format forbids holes between tensors)."""
    order = sorted(tensors, key=lambda k: (tensors[k].dtype != np.float32, k))
    header, chunks, offset, pads = {"__metadata__": {"format": "ditweb"}}, [], 0, 0
    for name in order:
        a = np.ascontiguousarray(tensors[name])
        items = [(name, a)]
        if a.nbytes % 4:
            items.append((f"_ditweb.pad.{pads}", np.zeros(1, np.float16)))
            pads += 1
        for n, arr in items:
            header[n] = {"dtype": ST_DTYPES[arr.dtype], "shape": list(arr.shape),
                         "data_offsets": [offset, offset + arr.nbytes]}
            chunks.append(arr.tobytes())
            offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)                   # data starts at a multiple of 8
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for c in chunks:
            f.write(c)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_bundle(model: DiT, out: str | os.PathLike, dtype: str = "f32", class_names: list[str] | None = None,
                  onnx: bool = False, matmul: str = "registers", candidates: bool = True) -> Path:
    """Write the bundle folder atomically (a temporary folder renamed over `out`). matmul: "registers"
    (register-blocked, the default) or "shared" (workgroup-memory tiles) for every Linear layer."""
    if dtype not in ("f32", "f16"):
        raise ExportError(f"unknown --dtype {dtype!r}; choose f32 or f16")
    if matmul not in MATMUL_OPS:
        raise ExportError(f"unknown --matmul {matmul!r}; choose {' or '.join(MATMUL_OPS)}")
    cfg = model.cfg
    if cfg.freq_shift != 0.0 or cfg.norm_eps != 1e-6:                  # the kernels bake the reference DiT's values
        raise ExportError(f"this model uses freq_shift {cfg.freq_shift:g} / norm_eps {cfg.norm_eps:g} (a converted diffusers "
                          "DiT); bundles support only the reference values 0 / 1e-6 so far")
    names = list(class_names) if class_names else [str(i) for i in range(cfg.num_classes)]
    if len(names) != cfg.num_classes:
        raise ExportError(f"{len(names)} class names for {cfg.num_classes} classes")
    tensors = bundle_tensors(model, dtype)
    pb = build(cfg, dtype, {k: v.shape for k, v in tensors.items()}, MATMUL_OPS[matmul], candidates)

    out = Path(out).resolve()
    if out.is_file():
        raise ExportError(f"{out}: is a file; give a folder for the bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise ExportError(f"{out}: folder exists and is not a bundle (no manifest.json); refusing to replace it")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "kernels").mkdir(parents=True)
    try:
        write_safetensors(tensors, tmp / "weights.safetensors")
        kernels = {}
        for kname, k in sorted(pb.kernels.items()):
            (tmp / k["entry"]["file"]).write_text(OPS[k["op"]].render(k["variant"], dtype))
            kernels[kname] = k["entry"]
        buffers = {}
        for name, a in tensors.items():
            buffers[name] = {"kind": "weight", "tensor": name, "dtype": "f16" if a.dtype == np.float16 else "f32",
                             "shape": list(a.shape), "bytes": int(a.nbytes)}
        buffers.update(pb.buffers)
        if onnx:
            from .onnx_export import export_onnx
            export_onnx(model, tmp / "model.onnx")
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                files[f.relative_to(tmp).as_posix()] = {"size": f.stat().st_size, "sha256": sha256(f)}
        C, I, Co = cfg.in_channels, cfg.input_size, cfg.out_channels
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "exporter": f"ditweb {EXPORTER_VERSION}", "dtype": dtype,
            "model": cfg.to_dict(), "class_names": names, "null_class": cfg.num_classes,
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
        (tmp / "manifest.json").write_text(json.dumps(manifest, separators=(",", ":")))    # compact: first-visit bytes
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
