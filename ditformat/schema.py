"""The declarative manifest schema (ditformat/bundle-schema.json) and its checker.

The schema is data, so the browser's verifier (web/bundle.js) reads the same file, generated into
web/bundle-schema.js (tests/test_fuzz_bundles.py keeps the two identical). check() walks a value
against a spec and names the first field that does not fit."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .jsonfmt import compact_json

SCHEMA_PATH = Path(__file__).resolve().parent / "bundle-schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
# decoder/manifest.json of a latent bundle (docs/vae.md): its own format and fields, the named types of SCHEMA
DECODER_SCHEMA_PATH = SCHEMA_PATH.parent / "decoder-schema.json"
DECODER_SCHEMA = json.loads(DECODER_SCHEMA_PATH.read_text())
REACH = json.loads((SCHEMA_PATH.parent / "reach.json").read_text())       # ditformat/reach.py evaluates it
_HEX64 = re.compile(r"[0-9a-f]{64}")


class SchemaMismatch(Exception):
    """Raised by check(); the verifier turns it into its own named error."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "bool", type(None): "null"}.get(type(v), type(v).__name__)


def check(value, spec, where: str) -> None:
    def fail(msg):
        raise SchemaMismatch(f"{where}: {msg}")
    if isinstance(spec, str):
        if spec in SCHEMA["types"]:
            return check(value, SCHEMA["types"][spec], where)
        ok = {"string": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
              "object": lambda v: isinstance(v, dict),
              "hex64": lambda v: isinstance(v, str) and _HEX64.fullmatch(v) is not None,
              "form3": lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(x) and 0 <= x < SCHEMA["max_bytes"] for x in v),
              "form4": lambda v: isinstance(v, list) and len(v) == 4 and all(_is_int(x) and 0 <= x < SCHEMA["max_bytes"] for x in v)
              and v[3] >= 1}[spec]
        if not ok(value):
            fail(f"expected {spec}, got {_kind(value)} {json.dumps(value)[:40]}")
        return
    if "all" in spec:                                   # every spec in turn (a named type and what this use adds)
        for sub in spec["all"]:
            check(value, sub, where)
    elif "enum" in spec:
        if not (isinstance(value, str) and value in spec["enum"]):
            fail(f"{json.dumps(value)[:40]} is not one of {', '.join(spec['enum'])}")
    elif "int" in spec:
        lo, hi = spec["int"]
        if not _is_int(value):
            fail(f"expected an integer, got {_kind(value)}")
        if not lo <= value <= hi:
            fail(f"{value} out of range [{lo}, {hi}]")
    elif "number" in spec:
        lo, hi = spec["number"]
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)):
            fail(f"expected a number, got {_kind(value)}")
        if not lo <= value <= hi:
            fail(f"{value} out of range [{lo}, {hi}]")
    elif "list" in spec:
        if not isinstance(value, list):
            fail(f"expected a list, got {_kind(value)}")
        if "len" in spec and len(value) != spec["len"]:
            fail(f"expected {spec['len']} entries, got {len(value)}")
        if "max" in spec and len(value) > spec["max"]:
            fail(f"more than {spec['max']} entries")
        for i, v in enumerate(value):
            check(v, spec["list"], f"{where}[{i}]")
    elif "map" in spec:
        if not isinstance(value, dict):
            fail(f"expected an object, got {_kind(value)}")
        for k, v in value.items():
            check(v, spec["map"], f"{where}.{k}")
    elif "fields" in spec:
        if not isinstance(value, dict):
            fail(f"expected an object, got {_kind(value)}")
        optional = spec.get("optional", ())
        for k, sub in spec["fields"].items():
            if k not in value:
                if k in optional:
                    continue
                fail(f"missing field {k!r}")
            check(value[k], sub, f"{where}.{k}")
    elif "tagged" in spec:
        tag = value.get(spec["tagged"]) if isinstance(value, dict) else None
        if not isinstance(tag, str) or tag not in spec["cases"]:
            fail(f"{spec['tagged']} {json.dumps(tag)[:40]} is not one of {', '.join(spec['cases'])}")
        check(value, spec["cases"][tag], where)
    else:
        raise AssertionError(f"bad schema spec at {where}: {spec}")


def check_model_config(d, where: str) -> None:
    """A model config (a checkpoint's or a manifest's) against the schema's types and ranges; fields
    it lacks are allowed (older checkpoints; the config's defaults fill them)."""
    if not isinstance(d, dict):
        raise SchemaMismatch(f"{where}: expected an object, got {_kind(d)}")
    fields = SCHEMA["types"]["model"]["fields"]
    for k, sub in fields.items():
        if k in d:
            check(d[k], sub, f"{where}.{k}")


def check_manifest(m) -> None:
    check(m, SCHEMA["manifest"], "manifest.json")


_SEGMENT = re.compile(SCHEMA["file_name"]["segment"], re.ASCII)
MAX_JSON_DEPTH = SCHEMA["max_json_depth"]
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def unsafe_path(rel) -> bool:
    """A file name a manifest may not list (docs/bundle-format.md, "File names"): anything but segments of
    [A-Za-z0-9._-] (not starting with '.') joined by '/', at most 255 characters. So no empty, '.' or '..' step, no
    absolute path, '%', '?', '#', '\\', ':', whitespace or control character, and a URL parser and a file system
    read the same file. (web/bundle.js unsafePath is the twin.)"""
    return not isinstance(rel, str) or not rel or len(rel) > SCHEMA["file_name"]["max_length"] or \
        not all(_SEGMENT.fullmatch(s) for s in rel.split("/"))


def sha256_file(path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks: what a `files` entry records and both verifiers compare
    (the browser: web/bundle.js sha256Hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def js_number(text: str):
    """A JSON number as JavaScript reads it: an IEEE double; integral values are integers (2.0, 2e0 and 2 are the
    int 2, 9007199254740993 is 9007199254740992), others floats (1e999 is inf, refused by every range)."""
    v = float(text)
    return int(v) if v.is_integer() else v


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")          # json.loads would accept NaN / Infinity; JSON.parse does not


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings (both runtimes refuse JSON deeper than MAX_JSON_DEPTH before
    parsing it: Python's parser would hit its recursion limit where JSON.parse would not)."""
    depth = deepest = 0
    for m in _STRING_OR_BRACKET.finditer(text):
        c = m.group(0)
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def loads_json(raw: bytes):
    """The one JSON reading of both runtimes (web/bundle.js parseJson is the twin): UTF-8 without a byte-order mark,
    at most MAX_JSON_DEPTH levels, no NaN / Infinity, numbers as JavaScript reads them (js_number). ValueError
    (or UnicodeDecodeError, a ValueError) with the reason."""
    if raw[:3] == b"\xef\xbb\xbf":
        raise ValueError("starts with a UTF-8 byte-order mark (not allowed)")
    text = raw.decode("utf-8")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text, parse_float=js_number, parse_int=js_number, parse_constant=_no_constants)


def js_module() -> str:
    """web/bundle-schema.js: the same schemas (the bundle's, the decoder's) and buffer-reach rules (ditformat/reach.json)
    as an ES module (written by
    `python -m ditformat`)."""
    return ("// Generated from ditformat/bundle-schema.json, decoder-schema.json and reach.json by `python -m ditformat`; "
            "do not edit.\n"
            f"export const SCHEMA = {compact_json(SCHEMA)};\n"
            f"export const DECODER_SCHEMA = {compact_json(DECODER_SCHEMA)};\n"
            f"export const REACH = {compact_json(REACH)};\n")
