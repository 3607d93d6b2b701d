"""Weight shards: safetensors files of bounded size, written by the exporter for the DiT's weights
(`weights.safetensors`, or `weights-NN.safetensors` when there is more than one) and for a latent bundle's
decoder (`decoder/weights-NN.safetensors`), read by both runtimes shard by shard (docs/bundle-format.md,
"Weight shards"). numpy only.

Browsers download, verify (sha256), cache (Cache API) and resume per file, so a 1.35 GB DiT-XL/2 in f16
comes as ~21 shards of at most 64 MiB rather than one file a failed download restarts from zero."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

SHARD_BYTES = 64 * 2 ** 20       # at most this many data bytes per shard (a larger tensor gets a shard of its own)
MIN_SHARD_BYTES = 2 ** 20        # the smallest the command line accepts (tests use smaller ones through the API)
DEFAULT_FILE = "weights.safetensors"     # the one weights file of a bundle whose weight buffers name no `file`
ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int8): "I8",
             np.dtype(np.uint8): "U8"}                 # U8: the tensors of a packed buffer (ditformat/packed.py)
BUFFER_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.int8): "i8"}


def file_order(tensors: dict[str, np.ndarray]) -> list[str]:
    """f32 tensors first (4-byte aligned by construction), then the others, each group by name."""
    return sorted(tensors, key=lambda k: (tensors[k].dtype != np.float32, k))


def plan_shards(tensors: dict[str, np.ndarray], limit: int = SHARD_BYTES,
                attached: dict[str, str] | None = None) -> list[list[str]]:
    """Tensor names in file order, cut into shards of at most `limit` bytes (each tensor counted padded to 4
    bytes); a tensor larger than the limit gets a shard of its own. attached: {name: other}: the tensor `name` goes
    into the shard of `other` (a packed buffer's steps beside its nibbles), counted with it."""
    attached = attached or {}
    follow: dict[str, list[str]] = {}
    for name, other in attached.items():
        follow.setdefault(other, []).append(name)
    out, cur, size = [], [], 0
    for name in file_order({k: v for k, v in tensors.items() if k not in attached}):
        unit = [name] + sorted(follow.get(name, []))
        nbytes = sum(-(-tensors[n].nbytes // 4) * 4 for n in unit)
        if cur and size + nbytes > limit:
            out.append(cur)
            cur, size = [], 0
        cur += unit
        size += nbytes
    if cur:
        out.append(cur)
    return out


def write_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    """Standard safetensors whose every tensor starts 4-byte aligned: f32 tensors first, and a `_ditweb.pad.k` after
    each tensor whose byte count is not a multiple of 4 (the format forbids holes): one f16 after a count of 2
    modulo 4, 1 or 3 U8 bytes after an odd count (a packed buffer's tensors)."""
    header, chunks, offset, pads = {"__metadata__": {"format": "ditweb"}}, [], 0, 0
    for name in file_order(tensors):
        a = np.ascontiguousarray(tensors[name])
        items = [(name, a)]
        if a.nbytes % 4:
            if a.nbytes % 2 and a.dtype != np.uint8:
                raise ValueError(f"{name}: {a.nbytes} bytes; shards hold tensors of an even byte count")
            pad = np.zeros(1, np.float16) if a.nbytes % 2 == 0 else np.zeros(-a.nbytes % 4, np.uint8)
            items.append((f"_ditweb.pad.{pads}", pad))
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


def shard_names(count: int, single: str | None = None) -> list[str]:
    """File names of `count` shards: weights-00.safetensors, ...; `single` names a lone shard instead."""
    if count == 1 and single:
        return [single]
    return [f"weights-{i:02d}.safetensors" for i in range(count)]


def write_shards(tensors: dict[str, np.ndarray], folder: Path, limit: int = SHARD_BYTES,
                 single: str | None = None, attached: dict[str, str] | None = None) -> dict[str, str]:
    """Write the tensors as shards into `folder` (attached: as plan_shards); returns {tensor name: shard file name}."""
    if limit < 1:
        raise ValueError(f"shard size {limit} bytes")
    groups = plan_shards(tensors, limit, attached)
    where = {}
    for fname, names in zip(shard_names(len(groups), single), groups):
        write_safetensors({n: tensors[n] for n in names}, Path(folder) / fname)
        where.update({n: fname for n in names})
    return where


def weight_entry(a: np.ndarray, name: str, file: str | None, encoding: str | None = None) -> dict:
    """A manifest weight buffer for tensor `name` stored in shard `file` (None: the default file, no field).
    encoding "q4k": `a` is the nibble tensor (N, K/2) of an i8 buffer (N, K) (ditformat/packed.py)."""
    if encoding == "q4k":
        shape = [a.shape[0], 2 * a.shape[1]]
        e = {"kind": "weight", "tensor": name, "dtype": "i8", "shape": shape, "bytes": shape[0] * shape[1],
             "encoding": encoding}
    else:
        e = {"kind": "weight", "tensor": name, "dtype": BUFFER_DTYPES[a.dtype], "shape": list(a.shape),
             "bytes": int(a.nbytes)}
    if file is not None:
        e["file"] = file
    return e


def buffer_file(b: dict) -> str:
    """The shard file a manifest weight buffer lives in."""
    return b.get("file", DEFAULT_FILE)
