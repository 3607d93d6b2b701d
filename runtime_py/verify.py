"""Bundle verification before any GPU work: one named error per problem, each naming file and field.

A bundle is untrusted input (docs/bundle-format.md, "Verification")."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from dit_model.model import DiTConfig
from ditformat import FORMAT, FORMAT_VERSION
MAX_BYTES = 2 ** 31          # any single buffer at B = N = 1 above this is absurd
ST_ITEMSIZE = {"F32": 4, "F16": 2}
DTYPE_NAME = {"F32": "f32", "F16": "f16"}


class BundleError(ValueError):
    """Base class: the bundle cannot be used."""


class ManifestError(BundleError):
    """manifest.json missing, not JSON, or a required field missing / of the wrong type."""


class FormatVersionError(BundleError):
    """Unknown format or format_version."""


class MissingFileError(BundleError):
    """A file listed in the manifest is absent."""


class MissingKernelError(BundleError):
    """A kernel of the manifest has no WGSL file."""


class SizeMismatchError(BundleError):
    """A file's size differs from the manifest (e.g. truncated weights)."""


class HashMismatchError(BundleError):
    """A file's sha256 differs from the manifest."""


class WeightsError(BundleError):
    """weights.safetensors is malformed or disagrees with the buffer table."""


class ShapeError(BundleError):
    """A model config, tensor or buffer size that no DiT can have."""


class ProgramError(BundleError):
    """A dispatch names an unknown kernel or buffer, or has the wrong number of bindings / params."""



def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

def _need(d: dict, key: str, typ, where: str):
    if not isinstance(d, dict) or key not in d:
        raise ManifestError(f"{where}: missing field {key!r}")
    if not isinstance(d[key], typ):
        raise ManifestError(f"{where}.{key}: expected {getattr(typ, '__name__', typ)}, got {type(d[key]).__name__}")
    return d[key]


def _form(v, where: str, n: int = 3) -> list[int]:
    if not (isinstance(v, list) and len(v) == n and all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
        raise ProgramError(f"{where}: expected a list of {n} integers, got {v!r}")
    if any(x < 0 for x in v) or any(abs(x) >= MAX_BYTES for x in v):
        raise ShapeError(f"{where}: value {v!r} out of range")
    return v


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightsError(f"{path}: shorter than the 8-byte safetensors header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise WeightsError(f"{path}: header length {n} exceeds the file size {size}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightsError(f"{path}: header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header is not a JSON object")
    start = 8 + n
    data = size - start
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dt, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise WeightsError(f"{path}: tensor {name!r} lacks dtype/shape/data_offsets") from None
        if dt not in ST_ITEMSIZE:
            raise WeightsError(f"{path}: tensor {name!r} has unsupported dtype {dt!r} (F32 or F16)")
        if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b <= data):
            raise WeightsError(f"{path}: tensor {name!r} data_offsets {[a, b]} outside the {data}-byte data section")
        if int(np.prod(shape, dtype=np.int64)) * ST_ITEMSIZE[dt] != b - a:
            raise WeightsError(f"{path}: tensor {name!r} shape {shape} {dt} does not fill data_offsets {[a, b]}")
        if (start + a) % 4 and not name.startswith("_ditweb.pad."):     # pads only fill the gap
            raise WeightsError(f"{path}: tensor {name!r} starts at byte {start + a}, not 4-byte aligned")
        spans.append((a, b, name))
    spans.sort()
    pos = 0
    for a, b, name in spans:
        if a != pos:
            raise WeightsError(f"{path}: tensor {name!r} starts at {a}, expected {pos} (holes or overlaps)")
        pos = b
    if pos != data:
        raise WeightsError(f"{path}: tensors cover {pos} bytes of a {data}-byte data section")
    return header, start


def verify_bundle(path) -> dict:
    """The parsed manifest if the bundle is sound, else a BundleError subclass. Touches no GPU."""
    root = Path(path)
    mpath = root / "manifest.json"
    if not root.is_dir():
        raise MissingFileError(f"{root}: not a bundle folder")
    if not mpath.is_file():
        raise ManifestError(f"{mpath}: missing")
    try:
        m = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{mpath}: not JSON ({e})") from None
    if not isinstance(m, dict):
        raise ManifestError(f"{mpath}: not a JSON object")
    if m.get("format") != FORMAT:
        raise FormatVersionError(f"{mpath}: format is {m.get('format')!r}, expected {FORMAT!r}")
    if m.get("format_version") != FORMAT_VERSION:
        raise FormatVersionError(f"{mpath}: format_version {m.get('format_version')!r} is not supported "
                                 f"(this runtime reads version {FORMAT_VERSION})")
    where = mpath.name
    for key, typ in [("dtype", str), ("model", dict), ("class_names", list), ("io", dict), ("files", dict),
                     ("kernels", dict), ("buffers", dict), ("programs", dict), ("sampler_tables", dict)]:
        _need(m, key, typ, where)
    if m["dtype"] not in ("f32", "f16"):
        raise ManifestError(f"{where}.dtype: {m['dtype']!r} is neither f32 nor f16")
    try:
        cfg = DiTConfig.from_dict(m["model"])
    except (TypeError, ValueError) as e:
        raise ShapeError(f"{where}.model: {e}") from None
    if not (1 <= cfg.input_size <= 1024 and 1 <= cfg.hidden_size <= 16384 and cfg.depth <= 256
            and 1 <= cfg.in_channels <= 64 and cfg.num_classes <= 100_000 and cfg.num_heads >= 1
            and 1 <= cfg.hidden_size // cfg.num_heads <= 256 and 0 < cfg.mlp_ratio <= 16):
        raise ShapeError(f"{where}.model: absurd config {cfg.to_dict()}")
    if len(m["class_names"]) != cfg.num_classes:
        raise ManifestError(f"{where}.class_names: {len(m['class_names'])} names for {cfg.num_classes} classes")

    # kernels: each has its file
    for kname, k in m["kernels"].items():
        f = _need(k, "file", str, f"{where}.kernels.{kname}")
        for key, typ in [("bindings", list), ("params", list), ("workgroup_size", list)]:
            _need(k, key, typ, f"{where}.kernels.{kname}")
        if f not in m["files"] or not (root / f).is_file():
            raise MissingKernelError(f"{root / f}: kernel {kname!r} has no WGSL file")
    # files: present, sizes, hashes
    for rel, info in m["files"].items():
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ManifestError(f"{where}.files: unsafe path {rel!r}")
        size = _need(info, "size", int, f"{where}.files.{rel}")
        digest = _need(info, "sha256", str, f"{where}.files.{rel}")
        f = root / rel
        if not f.is_file():
            raise MissingFileError(f"{f}: listed in manifest.json files but absent")
        if f.stat().st_size != size:
            raise SizeMismatchError(f"{f}: {f.stat().st_size} bytes, manifest.json files says {size} (truncated or replaced?)")
        got = sha256_file(f)
        if got != digest:
            raise HashMismatchError(f"{f}: sha256 {got[:16]}... differs from manifest.json ({digest[:16]}...)")
    wpath = root / "weights.safetensors"
    if "weights.safetensors" not in m["files"]:
        raise MissingFileError(f"{wpath}: not listed in manifest.json files")
    header, start = read_safetensors_header(wpath)
    # buffers
    for name, b in m["buffers"].items():
        kind = _need(b, "kind", str, f"{where}.buffers.{name}")
        if kind == "weight":
            t = header.get(_need(b, "tensor", str, f"{where}.buffers.{name}"))
            if t is None:
                raise WeightsError(f"{wpath}: no tensor {b['tensor']!r} for buffer {name!r}")
            if DTYPE_NAME[t["dtype"]] != b.get("dtype") or list(t["shape"]) != b.get("shape") or \
                    t["data_offsets"][1] - t["data_offsets"][0] != b.get("bytes"):
                raise WeightsError(f"{wpath}: tensor {b['tensor']!r} is {t['dtype']} {t['shape']}, manifest.json buffer "
                                   f"{name!r} says {b.get('dtype')} {b.get('shape')} ({b.get('bytes')} bytes)")
            b["_offset"] = start + t["data_offsets"][0]
        elif kind == "activation":
            el = _form(b.get("elements"), f"{where}.buffers.{name}.elements")
            if 4 * sum(el) >= MAX_BYTES:
                raise ShapeError(f"{where}.buffers.{name}: {4 * sum(el)} bytes at B = N = 1")
            if b.get("dtype") not in ("f32", "u32"):
                raise ManifestError(f"{where}.buffers.{name}.dtype: {b.get('dtype')!r}")
        elif kind == "step":
            if b.get("bytes") != 128:
                raise ManifestError(f"{where}.buffers.{name}.bytes: the step uniform is 128 bytes")
        else:
            raise ManifestError(f"{where}.buffers.{name}.kind: unknown kind {kind!r}")
    # programs
    for pname in ("forward", "init", "step_begin", "step_end"):
        prog = _need(m["programs"], pname, list, f"{where}.programs")
        for n, d in enumerate(prog):
            w = f"{where}.programs.{pname}[{n}]"
            k = m["kernels"].get(_need(d, "kernel", str, w))
            if k is None:
                raise ProgramError(f"{w}: unknown kernel {d['kernel']!r}")
            binds = _need(d, "bindings", list, w)
            if len(binds) != len(k["bindings"]) - 1:
                raise ProgramError(f"{w} ({d.get('label')}): {len(binds)} bindings, kernel {d['kernel']} declares "
                                   f"{len(k['bindings']) - 1}")
            for i, bname in enumerate(binds, 1):
                if bname not in m["buffers"]:
                    raise ProgramError(f"{w} ({d.get('label')}): binding {i} names unknown buffer {bname!r}")
                is_uniform = k["bindings"][i]["type"] == "uniform"
                if is_uniform != (m["buffers"][bname]["kind"] == "step"):
                    raise ProgramError(f"{w} ({d.get('label')}): binding {i} type {k['bindings'][i]['type']} "
                                       f"cannot take buffer {bname!r}")
            params = _need(d, "params", list, w)
            if len(params) != len(k["params"]):
                raise ProgramError(f"{w} ({d.get('label')}): {len(params)} params, kernel declares {len(k['params'])}")
            for i, p in enumerate(params):
                _form(p, f"{w}.params[{i}]")
            groups = _need(d, "workgroups", list, w)
            if len(groups) != 3:
                raise ProgramError(f"{w}: workgroups must have 3 dimensions")
            for i, g in enumerate(groups):
                _form(g, f"{w}.workgroups[{i}]", 4)
                if g[3] == 0:
                    raise ProgramError(f"{w}.workgroups[{i}]: divisor 0")
    return m
