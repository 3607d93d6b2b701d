"""Bundle verification before any GPU work: one named error per problem, each naming file and field.

A bundle is untrusted input (docs/bundle-format.md, "Verification"), and so is the decoder/ of a latent bundle
(docs/vae.md): both are checked here, by the same functions (files, kernels and their WGSL, dispatches, weight
shards). The field types and ranges come from the declarative schemas ditformat/bundle-schema.json and
decoder-schema.json, which web/bundle.js and web/decode.js read too; the checks between fields (cross
references, the WGSL sources against the manifest, the safetensors header against the buffer table) are
written here and in web/bundle.js, and one corpus of tampered bundles and decoders (tests/test_fuzz_bundles.py)
runs against both. numpy and the standard library only: no torch."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from ditformat import FORMAT, FORMAT_VERSION
from ditformat.errors import DitwebError
from ditformat.forms import evaluate, parse_group, workgroup_forms
from ditformat.labels import Vocabulary, VocabularyError
from ditformat.reach import REACH, ReachError, reach
from ditformat.schema import (DECODER_SCHEMA, SCHEMA, SchemaMismatch, check, check_manifest, loads_json, sha256_file,
                              unsafe_path)
from ditformat.packed import UnpackError, packed_shapes, steps_tensor, unpack_q4k
from ditformat.shards import buffer_file
from ditformat.version import reexport_hint
from ditformat.wgsl import WgslError, interface

MAX_BYTES = SCHEMA["max_bytes"]          # any single buffer at B = N = 1 above this is absurd
ST_ITEMSIZE = {"F32": 4, "F16": 2, "I8": 1, "U8": 1}   # I8: int8 weights; U8: packed ones (ditformat/packed.py)
DTYPE_NAME = {"F32": "f32", "F16": "f16", "I8": "i8", "U8": "u8"}   # no buffer is u8: a packed buffer is i8
PROGRAMS = tuple(SCHEMA["programs"])
LABEL_OPS = tuple(SCHEMA["label_ops"])   # the ops that sum a label's table rows (param levels = the model's L)


class BundleError(DitwebError):
    """Base class: the bundle cannot be used. The message is one printable line whatever names the
    bundle puts in it (control characters are escaped)."""

    def __init__(self, message: str):
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message)))


class ManifestError(BundleError):
    """manifest.json missing, not JSON, or a field missing / of the wrong type / out of range."""


class FormatVersionError(BundleError):
    """Unknown format or format_version: the bundle was written by another ditweb."""


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


class KernelError(BundleError):
    """A kernel's WGSL disagrees with its manifest entry (bindings, types, workgroup size)."""


class VocabularyFileError(BundleError):
    """A named bundle's vocabulary.json is malformed or disagrees with the model's label levels."""


VOCABULARY_FILE = "vocabulary.json"      # a named model's label vocabulary (ditformat/labels.py)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ------------------------------------------------------------------ safetensors

def parse_safetensors_header(raw: bytes, size: int, path="weights.safetensors") -> tuple[dict, int]:
    """(header, data start) from the first bytes of a safetensors file of `size` bytes; every tensor
    F32/F16, its data_offsets inside the data section, 4-byte aligned, contiguous, covering it all."""
    if len(raw) < 8:
        raise WeightsError(f"{path}: shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > size - 8 or n > 100_000_000:
        raise WeightsError(f"{path}: header length {n} exceeds the file size {size}")
    try:
        header = loads_json(raw[8:8 + n])
    except (ValueError, RecursionError) as e:
        raise WeightsError(f"{path}: header is not JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header is not a JSON object")
    start = 8 + n
    data = size - start
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(info, dict) and isinstance(info.get("shape"), list)
                and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2):
            raise WeightsError(f"{path}: tensor {name!r} lacks dtype/shape/data_offsets")
        dt, shape, (a, b) = info.get("dtype"), info["shape"], info["data_offsets"]
        if not isinstance(dt, str) or dt not in ST_ITEMSIZE:
            raise WeightsError(f"{path}: tensor {name!r} has unsupported dtype {str(dt)[:20]!r} (F32, F16, I8 or U8)")
        if not all(_int(d) and 0 <= d < MAX_BYTES for d in shape) or len(shape) > 8:
            raise WeightsError(f"{path}: tensor {name!r} has a bad shape {str(shape)[:60]}")
        if not (_int(a) and _int(b) and 0 <= a <= b <= data):
            raise WeightsError(f"{path}: tensor {name!r} data_offsets {str([a, b])[:60]} outside the {data}-byte data section")
        if int(np.prod(shape, dtype=object)) * ST_ITEMSIZE[dt] != b - a:
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


def check_weight_buffers(root: Path, buffers: dict, manifest_name: str) -> None:
    """Every weight buffer against the header of its shard (`file`; weights.safetensors when absent): the tensor
    exists with the listed dtype, shape and byte count (a packed buffer: check_packed). Each shard's header is read
    once. Sets `_file` and `_offset` (the tensor's first byte in its shard) on each weight buffer (a packed one:
    `_steps_offset` too). Shared by the bundle and decoder/."""
    headers = {}
    for name, b in buffers.items():
        if b["kind"] != "weight":
            continue
        fname = buffer_file(b)
        wpath = root / fname
        if fname not in headers:
            headers[fname] = read_safetensors_header(wpath)
        header, start = headers[fname]
        t = header.get(b["tensor"]) if b["tensor"] != "__metadata__" else None
        if t is None:
            raise WeightsError(f"{wpath}: no tensor {b['tensor'][:60]!r} for buffer {name!r}")
        if "encoding" in b:
            b["_steps_offset"] = start + check_packed(wpath, name, b, header, start, manifest_name)
        elif DTYPE_NAME[t["dtype"]] != b["dtype"] or list(t["shape"]) != b["shape"] or \
                t["data_offsets"][1] - t["data_offsets"][0] != b["bytes"]:
            raise WeightsError(f"{wpath}: tensor {b['tensor']!r} is {t['dtype']} {t['shape']}, {manifest_name} buffer "
                               f"{name!r} says {b['dtype']} {b['shape']} ({b['bytes']} bytes)")
        b["_file"], b["_offset"] = fname, start + t["data_offsets"][0]


def check_packed(wpath: Path, name: str, b: dict, header: dict, start: int, manifest_name: str) -> int:
    """A packed weight buffer (encoding q4k, ditformat/packed.py) against its shard: an i8 [N, K] buffer of N K bytes
    with K a multiple of the group; its nibble tensor U8 [N, K/2] and steps tensor U8 [N, K/group]; their data
    unpacked (no step outside its range, no nibble -8). Returns the steps tensor's data offset. web/bundle.js
    checkPacked is the twin (the same checks in the same order)."""
    shapes = packed_shapes(b["shape"]) if b["dtype"] == "i8" else None
    if shapes is None or b["bytes"] != b["shape"][0] * b["shape"][1]:
        raise WeightsError(f"{wpath}: {manifest_name} buffer {name!r} says {b['dtype']} {str(b['shape'])[:40]} "
                           f"({b['bytes']} bytes); q4k encodes an i8 [N, K] buffer of N K bytes, K a multiple of 32")
    found = []
    for tensor, shape in ((b["tensor"], shapes[0]), (steps_tensor(b["tensor"]), shapes[1])):
        t = header.get(tensor) if tensor != "__metadata__" else None
        if t is None:
            raise WeightsError(f"{wpath}: no tensor {tensor[:60]!r} for buffer {name!r}")
        if t["dtype"] != "U8" or list(t["shape"]) != shape:
            raise WeightsError(f"{wpath}: tensor {tensor!r} is {t['dtype']} {t['shape']}, {manifest_name} buffer "
                               f"{name!r} (q4k) needs U8 {shape}")
        found.append(t["data_offsets"])
    with open(wpath, "rb") as f:
        data = []
        for (a, e), shape in zip(found, shapes):
            f.seek(start + a)
            data.append(np.frombuffer(f.read(e - a), np.uint8).reshape(shape))
    try:
        unpack_q4k(data[0], data[1], b["tensor"])
    except UnpackError as e:
        raise WeightsError(f"{wpath}: {e}") from None
    return found[1][0]


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        raw = head + (f.read(n) if n <= min(size - 8, 100_000_000) else b"")
    return parse_safetensors_header(raw, size, path)


# ------------------------------------------------------------------ WGSL against the manifest

def check_kernel_source(name: str, k: dict, code: str, where: str) -> None:
    """A kernel's WGSL, parsed (ditformat/wgsl.py), declares what its manifest entry says: the bindings and their
    types, a params struct that fits the params uniform, a step struct that fits the step record, the entry point
    `main` and its workgroup size."""
    try:
        face = interface(code)
    except WgslError as e:
        raise KernelError(f"{where}: {e}") from None
    binds, wg = face["bindings"], face["workgroup_size"]
    if [(b["binding"], b["type"]) for b in binds] != [(b["binding"], b["type"]) for b in k["bindings"]]:
        got = ", ".join(f"{b['binding']}:{b['type']}" for b in binds)
        want = ", ".join(f"{b['binding']}:{b['type']}" for b in k["bindings"])
        raise KernelError(f"{where}: the shader declares bindings [{got}], manifest.json kernels.{name} says [{want}]")
    if wg != k["workgroup_size"]:
        raise KernelError(f"{where}: @workgroup_size{tuple(wg)} but manifest.json kernels.{name}.workgroup_size is "
                          f"{k['workgroup_size']}")
    params_bytes = 16 * max(1, -(-len(k["params"]) // 4))
    for b in binds:
        room = params_bytes if b["binding"] == 0 else SCHEMA["step_bytes"]
        if b["type"] == "uniform" and b["size"] > room:
            what = f"the params uniform ({len(k['params'])} params)" if b["binding"] == 0 else "the step record"
            raise KernelError(f"{where}: binding {b['binding']} declares {b['size']} bytes, {what} holds {room}")


# ------------------------------------------------------------------ the manifest

def check_version(m: dict, where: str = "manifest.json") -> None:
    if m.get("format") != FORMAT:
        raise FormatVersionError(f"{where}: format is {str(m.get('format'))[:40]!r}, expected {FORMAT!r}")
    v = m.get("format_version")
    if v != FORMAT_VERSION:
        by = f" (written by {str(m['exporter'])[:40]})" if isinstance(m.get("exporter"), str) else ""
        raise FormatVersionError(f"{where}: format_version {str(v)[:20]}{by} is not supported: this runtime reads "
                                 f"version {FORMAT_VERSION}; {reexport_hint()}")


# ------------------------------------------------------------------ checks shared by the bundle and its decoder/

def check_paths(files: dict, w: str) -> None:
    for rel in files:
        if unsafe_path(rel):
            raise ManifestError(f"{w}.files: unsafe path {rel[:60]!r} (names are [A-Za-z0-9._-] segments joined by '/', "
                                f"at most {SCHEMA['file_name']['max_length']} characters)")


def check_kernel_bindings(k: dict, where: str) -> None:
    b = k["bindings"]
    if [x["binding"] for x in b] != list(range(len(b))) or not b or b[0]["type"] != "uniform":
        raise ManifestError(f"{where}.bindings: must be 0, 1, ... in order, binding 0 the params uniform")


def check_dispatch(d: dict, k: dict, buffers: dict, where: str) -> None:
    """A dispatch against its kernel: as many bindings and params as it declares, known buffers, a step buffer
    exactly where the kernel has a uniform, no weight buffer bound where the kernel may write, and a buffer it
    writes bound once."""
    if len(d["bindings"]) != len(k["bindings"]) - 1:
        raise ProgramError(f"{where}: {len(d['bindings'])} bindings, kernel {d['kernel']} declares "
                           f"{len(k['bindings']) - 1}")
    for i, bname in enumerate(d["bindings"], 1):
        if bname not in buffers:
            raise ProgramError(f"{where}: binding {i} names unknown buffer {bname[:60]!r}")
        kind, btype = buffers[bname]["kind"], k["bindings"][i]["type"]
        if (btype == "uniform") != (kind == "step"):
            raise ProgramError(f"{where}: binding {i} type {btype} cannot take buffer {bname!r}")
        if kind == "weight" and btype == "storage":
            raise ProgramError(f"{where}: binding {i} would write weight buffer {bname!r}")
    for i, bname in enumerate(d["bindings"], 1):
        if k["bindings"][i]["type"] == "storage" and d["bindings"].count(bname) > 1:
            raise ProgramError(f"{where}: binding {i} writes buffer {bname[:60]!r}, which another binding of the dispatch "
                               "also binds (WebGPU refuses a writable buffer bound twice)")
    if len(d["params"]) != len(k["params"]):
        raise ProgramError(f"{where}: {len(d['params'])} params, kernel {d['kernel']} declares {len(k['params'])}")


BATCHES = [tuple(b) for b in REACH["batches"]]      # (B, N) at which every dispatch's reach is checked


def buffer_elements(b: dict, B: int, N: int) -> int | None:
    """Elements a buffer holds at batch (B, N): an activation's 4-byte words, a weight tensor's values; None for
    the step record (uniform bindings are checked against the WGSL's struct size)."""
    if b["kind"] == "activation":
        return evaluate(b["elements"], B, N)
    if b["kind"] == "weight":
        return math.prod(b["shape"])
    return None


def check_dispatch_reach(where: str, d: dict, k: dict, forms: list, buffers: dict, B: int, N: int) -> None:
    """One dispatch run by kernel k (workgroup forms `forms`) at batch (B, N): no 0 workgroups, params within u32,
    and every binding's reach (ditformat/reach.py) inside its buffer."""
    values = [evaluate(p, B, N) for p in d["params"]]
    groups = [evaluate(g, B, N) for g in forms]
    if max(values + groups, default=0) >= 2 ** 32:
        if (B, N) == (1, 1):
            raise ProgramError(f"{where}: a param or workgroup count overflows u32 at B = N = 1")
        return                               # the runtimes refuse such a batch (DeviceLimitError)
    if min(groups) == 0:
        raise ProgramError(f"{where}: workgroups {groups} at B = {B}, N = {N}: a dispatch of 0 workgroups does nothing")
    try:
        need = reach(k, values, B, N, groups)
    except ReachError as e:
        raise ProgramError(f"{where}: {e}") from None
    for i, (bname, n) in enumerate(zip(d["bindings"], need), 1):
        have = buffer_elements(buffers[bname], B, N)
        if have is not None and n > have:
            raise ProgramError(f"{where}: binding {i} ({bname[:60]}) holds {have} elements at B = {B}, N = {N}; the "
                               f"dispatch reaches {n}")


def check_reach(kernels: dict, buffers: dict, dispatches: list, candidates: dict, batches) -> None:
    """Every dispatch ((where, d) pairs), run by its kernel and by each of its candidates, at every batch."""
    done = set()                 # dispatches alike in kernel, params, workgroups and buffer sizes are checked once
    for where, d in dispatches:
        sizes = [(buffers[n]["kind"], buffers[n].get("elements"), buffer_elements(buffers[n], 1, 1)) for n in d["bindings"]]
        for kname in candidates.get(d["kernel"], [d["kernel"]]):
            k = kernels[kname]
            own = kname == d["kernel"]
            forms = d["workgroups"] if own else workgroup_forms(k["groups"], k["params"], d["params"])
            key = json.dumps([kname, d["params"], forms, sizes])
            if key in done:
                continue
            done.add(key)
            for B, N in batches:
                check_dispatch_reach(where if own else f"{where} [candidate {kname}]", d, k, forms, buffers, B, N)


def check_io_sizes(buffers: dict, needs: list, batches, w: str) -> None:
    """needs: (field, buffer name, rows per B, rows per N, elements per row): what the host writes or reads back."""
    for field, name, per_b, per_n, row in needs:
        for B, N in batches:
            have, want = buffer_elements(buffers[name], B, N), (per_b * B + per_n * N) * row
            if have < want:
                raise ShapeError(f"{w}.io.{field}: buffer {name[:60]!r} holds {have} elements at B = {B}, N = {N}; the "
                                 f"runtime writes or reads {want}")


def read_manifest_json(path: Path) -> dict:
    """A manifest file's JSON (no NaN / Infinity); ManifestError if missing, not UTF-8 or not JSON."""
    if not path.is_file():
        raise ManifestError(f"{path}: missing")
    try:
        return loads_json(path.read_bytes())
    except (ValueError, RecursionError) as e:
        raise ManifestError(f"{path}: not JSON ({str(e).splitlines()[0][:80]})") from None


def check_files(root: Path, files: dict, manifest_name: str, kernel_files=()) -> None:
    """Every listed file present, with its size and sha256."""
    for rel, info in files.items():
        f = root / rel
        if not f.is_file():
            err = MissingKernelError if rel in kernel_files else MissingFileError
            raise err(f"{f}: listed in {manifest_name} files but absent")
        if f.stat().st_size != info["size"]:
            raise SizeMismatchError(f"{f}: {f.stat().st_size} bytes, {manifest_name} files says {info['size']} "
                                    f"(truncated or replaced?)")
        got = sha256_file(f)
        if got != info["sha256"]:
            raise HashMismatchError(f"{f}: sha256 {got[:16]}... differs from {manifest_name} ({info['sha256'][:16]}...)")


def check_kernel_sources(root: Path, kernels: dict) -> None:
    """Each kernel's WGSL declares what the manifest says (bindings, workgroup size)."""
    for kname, k in kernels.items():
        try:
            code = (root / k["file"]).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise KernelError(f"{root / k['file']}: not UTF-8 text") from None
        check_kernel_source(kname, k, code, str(root / k["file"]))


def check_label_levels(m: dict, w: str) -> None:
    """One-level model: a class name per class. Named model (model.label_levels): levels summing to num_classes,
    label_nested within them, no class names, and its vocabulary.json listed in files."""
    cfg = m["model"]
    levels = cfg.get("label_levels")
    if levels is None:
        if "label_nested" in cfg:
            raise ManifestError(f"{w}.model: label_nested without label_levels")
        if len(m["class_names"]) != cfg["num_classes"]:
            raise ManifestError(f"{w}.class_names: {len(m['class_names'])} names for {cfg['num_classes']} classes")
        if VOCABULARY_FILE in m["files"]:
            raise ManifestError(f"{w}.files: {VOCABULARY_FILE} listed for a one-level model (no model.label_levels)")
        return
    if not levels or sum(levels) != cfg["num_classes"]:
        raise ManifestError(f"{w}.model.label_levels {levels} must be 1 to 8 sizes summing to num_classes {cfg['num_classes']}")
    if not 1 <= cfg.get("label_nested", 0) <= len(levels):
        raise ManifestError(f"{w}.model.label_nested must be an integer in [1, {len(levels)}] for {len(levels)} label levels")
    if m["class_names"]:
        raise ManifestError(f"{w}.class_names: a named model lists its names in {VOCABULARY_FILE}, not here")
    if VOCABULARY_FILE not in m["files"]:
        raise MissingFileError(f"{w}.files: a named model (model.label_levels) needs {VOCABULARY_FILE} listed")


def check_vocabulary(text: bytes, m: dict, where: str) -> Vocabulary:
    """vocabulary.json (its size and sha256 already checked) against the model's label levels."""
    try:
        d = loads_json(text)
    except UnicodeDecodeError:
        raise VocabularyFileError(f"{where}: not UTF-8 text") from None
    except (ValueError, RecursionError) as e:
        raise VocabularyFileError(f"{where}: not valid JSON ({str(e)[:80]})") from None
    try:
        vocab = Vocabulary.from_json(d, where)
    except VocabularyError as e:
        raise VocabularyFileError(str(e)) from None
    cfg = m["model"]
    if list(vocab.sizes) != cfg["label_levels"] or vocab.nested != cfg["label_nested"]:
        raise VocabularyFileError(f"{where}: levels {list(vocab.sizes)} ({vocab.nested} nested) disagree with the weights' "
                                  f"model.label_levels {cfg['label_levels']} ({cfg['label_nested']} nested)")
    return vocab


def read_vocabulary(root, m: dict) -> Vocabulary | None:
    """A named bundle's verified vocabulary; None for a one-level bundle."""
    if "label_levels" not in m["model"]:
        return None
    f = Path(root) / VOCABULARY_FILE
    return check_vocabulary(f.read_bytes(), m, str(f))


def check_fields(m: dict) -> None:
    """The relations between manifest fields that the schema cannot say (no file access)."""
    cfg = m["model"]
    w = "manifest.json"
    if cfg["input_size"] % cfg["patch_size"]:
        raise ShapeError(f"{w}.model: input_size {cfg['input_size']} is not divisible by patch_size {cfg['patch_size']}")
    if cfg["hidden_size"] % cfg["num_heads"] or cfg["hidden_size"] // cfg["num_heads"] > 256:
        raise ShapeError(f"{w}.model: hidden_size {cfg['hidden_size']} over {cfg['num_heads']} heads is no head size in [1, 256]")
    check_label_levels(m, w)
    if m["sampler"]["prediction"] != cfg["prediction"]:
        raise ManifestError(f"{w}.sampler.prediction {m['sampler']['prediction']!r} differs from model.prediction {cfg['prediction']!r}")
    if m["sampler"]["beta_start"] > m["sampler"]["beta_end"]:
        raise ManifestError(f"{w}.sampler: beta_start {m['sampler']['beta_start']} exceeds beta_end {m['sampler']['beta_end']}")
    C, I = cfg["in_channels"], cfg["input_size"]
    if m["io"]["x_shape"] != [C, I, I] or m["io"]["out_shape"] != [C * (2 if cfg["learn_sigma"] else 1), I, I]:
        raise ShapeError(f"{w}.io: x_shape {m['io']['x_shape']} / out_shape {m['io']['out_shape']} do not fit the model")
    check_paths(m["files"], w)
    for name, b in m["buffers"].items():
        if b["kind"] == "weight" and buffer_file(b) not in m["files"]:
            raise MissingFileError(f"{w}.buffers.{name[:60]}: its weights file {buffer_file(b)[:60]!r} is not listed in files")
    for kname, k in m["kernels"].items():
        if k["file"] not in m["files"]:
            raise MissingKernelError(f"{w}.kernels.{kname}.file {k['file'][:60]!r} is not listed in files")
        check_kernel_bindings(k, f"{w}.kernels.{kname}")
        for rule in k["groups"]:
            try:
                parse_group(rule, k["params"])
            except ValueError:
                raise ManifestError(f"{w}.kernels.{kname}.groups: {rule[:40]!r} is neither a count nor PARAM/divisor "
                                    "of the kernel's params") from None
    for kname, names in m.get("candidates", {}).items():
        k = m["kernels"].get(kname)
        if k is None or kname not in names:
            raise ManifestError(f"{w}.candidates.{kname[:60]}: must name a kernel and list it among its candidates")
        for c in names:
            ck = m["kernels"].get(c)
            if ck is None:
                raise ManifestError(f"{w}.candidates.{kname}: unknown kernel {c[:60]!r}")
            if ck["params"] != k["params"] or [b["type"] for b in ck["bindings"]] != [b["type"] for b in k["bindings"]]:
                raise ManifestError(f"{w}.candidates.{kname}: kernel {c!r} differs in params or binding types")
    for name, b in m["buffers"].items():
        if b["kind"] == "activation" and 4 * sum(b["elements"]) >= MAX_BYTES:
            raise ShapeError(f"{w}.buffers.{name}: {4 * sum(b['elements'])} bytes at B = N = 1")
    for key in ("x", "t", "y", "out", "sample"):
        if m["buffers"].get(m["io"][key], {}).get("kind") != "activation":
            raise ManifestError(f"{w}.io.{key}: {m['io'][key][:60]!r} names no activation buffer")
    for name, b in m["buffers"].items():
        if (b["kind"] == "step") != (name == "step"):
            raise ManifestError(f"{w}.buffers.{name[:60]}: the step record is the one buffer named 'step', of kind step")
    n_levels = len(cfg.get("label_levels", [0]))
    if m["buffers"][m["io"]["y"]]["elements"] != [n_levels, 0, 0]:
        raise ShapeError(f"{w}.buffers.{m['io']['y'][:60]}: elements {m['buffers'][m['io']['y']]['elements']} do not hold "
                         f"{n_levels} label row(s) per batch row ([{n_levels}, 0, 0])")
    for pname in PROGRAMS:
        for n, d in enumerate(m["programs"][pname]):
            where = f"{w}.programs.{pname}[{n}] ({d['label'][:40]})"
            k = m["kernels"].get(d["kernel"])
            if k is None:
                raise ProgramError(f"{where}: unknown kernel {d['kernel'][:60]!r}")
            check_dispatch(d, k, m["buffers"], where)
            if d["workgroups"] != workgroup_forms(k["groups"], k["params"], d["params"]):
                raise ProgramError(f"{where}: workgroups {str(d['workgroups'])[:80]} do not follow kernel "
                                   f"{d['kernel']}'s groups {k['groups']}")
            if k["op"] in LABEL_OPS and "levels" in k["params"] and \
                    d["params"][k["params"].index("levels")] != [0, 0, n_levels]:
                raise ProgramError(f"{where}: levels {d['params'][k['params'].index('levels')]} differ from the "
                                   f"model's {n_levels} label levels")
    check_reach(m["kernels"], m["buffers"], [(f"{w}.programs.{p}[{n}] ({d['label'][:40]})", d) for p in PROGRAMS
                                             for n, d in enumerate(m["programs"][p])], m.get("candidates", {}), BATCHES)
    x, o = int(np.prod(m["io"]["x_shape"])), int(np.prod(m["io"]["out_shape"]))
    check_io_sizes(m["buffers"], [("x", m["io"]["x"], 1, 0, x), ("t", m["io"]["t"], 1, 0, 1),
                                  ("out", m["io"]["out"], 1, 0, o), ("sample", m["io"]["sample"], 0, 1, x)], BATCHES, w)


def verify_manifest(m) -> dict:
    """Version, schema and cross-field checks of a parsed manifest; no file access."""
    if not isinstance(m, dict):
        raise ManifestError("manifest.json: not a JSON object")
    check_version(m)
    try:
        check_manifest(m)
    except SchemaMismatch as e:
        raise ManifestError(str(e)) from None
    check_fields(m)
    return m


def load_manifest(root: Path) -> dict:
    if not root.is_dir():
        raise MissingFileError(f"{root}: not a bundle folder")
    return read_manifest_json(root / "manifest.json")


def verify_bundle(path) -> dict:
    """The parsed manifest if the bundle is sound, else a BundleError subclass. Touches no GPU."""
    root = Path(path)
    try:
        m = verify_manifest(load_manifest(root))
    except BundleError as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith(str(root)) else f"{root}/{msg}") from None
    check_files(root, m["files"], "manifest.json", {k["file"] for k in m["kernels"].values()})
    check_kernel_sources(root, m["kernels"])
    # weights: each shard's header, then every weight buffer against its tensor
    check_weight_buffers(root, m["buffers"], "manifest.json")
    read_vocabulary(root, m)
    return m


# ------------------------------------------------------------------ decoder/ of a latent bundle

DECODER_OPS = tuple(DECODER_SCHEMA["ops"])


def verify_decoder_manifest(m, w: str = "decoder/manifest.json", latent_shape=None) -> dict:
    """Version, schema and cross-field checks of a parsed decoder manifest (docs/vae.md); no file access.
    `latent_shape`: the DiT's x_shape, which the decoder must take."""
    if not isinstance(m, dict) or m.get("format") != DECODER_SCHEMA["format"] or \
            m.get("format_version") != DECODER_SCHEMA["format_version"]:
        got = (m.get("format"), m.get("format_version")) if isinstance(m, dict) else None
        raise FormatVersionError(f"{w}: format {str(got)[:60]} is not {DECODER_SCHEMA['format']} version "
                                 f"{DECODER_SCHEMA['format_version']}; re-export the bundle with --vae")
    try:
        check(m, DECODER_SCHEMA["manifest"], w)
    except SchemaMismatch as e:
        raise ManifestError(str(e)) from None
    if latent_shape is not None and m["latent_shape"] != list(latent_shape):
        raise ManifestError(f"{w}: latent_shape {m['latent_shape']} differs from the model's x_shape {list(latent_shape)}")
    check_paths(m["files"], w)
    bufs = m["buffers"]
    for name, b in bufs.items():
        if b["kind"] == "weight" and b["file"] not in m["files"]:
            raise WeightsError(f"{w}.buffers.{name}.file {b['file'][:60]!r} is not listed in files")
    for kname, k in m["kernels"].items():
        if k["file"] not in m["files"]:
            raise KernelError(f"{w}.kernels.{kname}.file {k['file'][:60]!r} is not listed in files")
        if k["op"] not in DECODER_OPS:
            raise KernelError(f"{w}.kernels.{kname}.op {k['op'][:40]!r} is not a decoder kernel ({', '.join(DECODER_OPS)})")
        check_kernel_bindings(k, f"{w}.kernels.{kname}")
    for key in ("latent", "image"):
        if bufs.get(m["io"][key], {}).get("kind") != "activation":
            raise ManifestError(f"{w}.io.{key}: {m['io'][key][:60]!r} names no activation buffer")
    for n, d in enumerate(m["program"]):
        where = f"{w}.program[{n}] ({d['label'][:40]})"
        k = m["kernels"].get(d["kernel"])
        if k is None:
            raise ProgramError(f"{where}: unknown kernel {d['kernel'][:60]!r}")
        check_dispatch(d, k, bufs, where)
    check_preview(m, w)
    batches = [(n, n) for b, n in BATCHES if b == n]          # a decoder runs at B = N (its images)
    check_reach(m["kernels"], bufs, [(f"{w}.program[{n}] ({d['label'][:40]})", d) for n, d in enumerate(m["program"])],
                {}, batches)
    check_io_sizes(bufs, [("latent", m["io"]["latent"], 0, 1, int(np.prod(m["latent_shape"]))),
                          ("image", m["io"]["image"], 0, 1, int(np.prod(m["image_shape"])))], batches, w)
    return m


def preview_shape(m: dict, k: int) -> list[int] | None:
    """The shape a decoder's preview map must have (export/preview.py): (k k C + 1, Co f f), f the image side over
    the latent side; None when the image is not a whole multiple of the latent."""
    (C, h, w), (Co, H, W) = m["latent_shape"], m["image_shape"]
    f = H // h
    if H % h or W % w or W // w != f:
        return None
    return [k * k * C + 1, Co * f * f]


def check_preview(m: dict, w: str) -> None:
    """The optional preview map (docs/vae.md, "Live previews"): an f32 weight buffer of preview_shape (web/decode.js
    checkPreview is the twin)."""
    p = m.get("preview")
    if p is None:
        return
    b = m["buffers"].get(p["buffer"])
    if b is None or b["kind"] != "weight" or b["dtype"] != "f32":
        raise ManifestError(f"{w}.preview.buffer {p['buffer'][:60]!r} names no f32 weight buffer")
    if p["k"] % 2 != 1:
        raise ManifestError(f"{w}.preview.k is {p['k']}; a preview map reads 1 or 3 cells a side")
    want = preview_shape(m, p["k"])
    if want is None:
        raise ManifestError(f"{w}: image_shape {m['image_shape']} is not a whole multiple of latent_shape "
                            f"{m['latent_shape']}, so there is no preview map")
    if b["shape"] != want:
        raise ManifestError(f"{w}.preview: the map {p['buffer'][:60]!r} is {b['shape']}, a k = {p['k']} map of these "
                            f"latents and images is {want}")


def verify_decoder(root, latent_shape=None) -> dict:
    """decoder/manifest.json of a bundle and its files, checked like the bundle itself before any GPU call:
    the manifest (verify_decoder_manifest), file sizes and sha256, the WGSL bindings and workgroup sizes, the
    weight shards' headers against the buffer table. Returns the manifest (weights get `_offset`)."""
    root = Path(root)
    w = root / "manifest.json"
    m = verify_decoder_manifest(read_manifest_json(w), str(w), latent_shape)
    check_files(root, m["files"], w.name, {k["file"] for k in m["kernels"].values()})
    check_kernel_sources(root, m["kernels"])
    check_weight_buffers(root, m["buffers"], w.name)
    return m
