"""The declarative manifest schema (ditformat/bundle-schema.json) and its checker.

The schema is data, so the browser's verifier (web/bundle.js) reads the same file, generated into
web/bundle-schema.js (tests/test_fuzz_bundles.py keeps the two identical). check() walks a value
against a spec and names the first field that does not fit."""
from __future__ import annotations

import json
import re
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parent / "bundle-schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
# decoder/manifest.json of a latent bundle (docs/vae.md): its own format and fields, the named types of SCHEMA
DECODER_SCHEMA_PATH = SCHEMA_PATH.parent / "decoder-schema.json"
DECODER_SCHEMA = json.loads(DECODER_SCHEMA_PATH.read_text())
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
    if "enum" in spec:
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
    fields = SCHEMA["manifest"]["fields"]["model"]["fields"]
    for k, sub in fields.items():
        if k in d:
            check(d[k], sub, f"{where}.{k}")


def check_manifest(m) -> None:
    check(m, SCHEMA["manifest"], "manifest.json")


def unsafe_path(rel) -> bool:
    """A file name a manifest may not list: empty, absolute, with a backslash, a colon (drive, scheme) or a
    `..` step; every listed file must lie inside the bundle folder. (web/bundle.js unsafePath is the twin.)"""
    return not rel or rel.startswith("/") or "\\" in rel or ":" in rel or ".." in rel.split("/")


def js_module() -> str:
    """web/bundle-schema.js: the same schemas (the bundle's, the decoder's) as an ES module (written by
    `python -m ditformat`)."""
    return ("// Generated from ditformat/bundle-schema.json and ditformat/decoder-schema.json by `python -m ditformat`; "
            "do not edit.\n"
            f"export const SCHEMA = {json.dumps(SCHEMA, indent=1)};\n"
            f"export const DECODER_SCHEMA = {json.dumps(DECODER_SCHEMA, indent=1)};\n")

