"""The fuzz corpus of tampered bundles, shared by tests/test_fuzz_bundles.py (a fixed subset in CI) and bench/fuzz.py
(the full corpus, >= 2,000 cases per runtime): one mechanism for the kinds of folder a runtime verifies (a
bundle, a named bundle with its vocabulary.json, the decoder/ of a latent bundle, an int4 bundle with packed weights).

Hypothesis (fixed seed, no database) draws a family of damage and its details; each case is a folder (hard links
to the good files, the damaged ones rewritten; edited files re-hashed in the manifest most of the time so the
damage reaches the checks behind the sha256). Every case goes through runtime_py/verify.py in-process and through
web/bundle.js (web/decode.js) in node (tests/_verify_node.mjs, _verify_decoder_node.mjs); the verdicts are compared
case by case. Families: manifest (JSON edits), manifest-bytes, header, header-bytes, weights-cut, wgsl (text and
parse-level edits: attribute order, comments, spaces, non-ASCII digits, BOM, garbage, grown params structs, entry
points), numbers (integers re-encoded as 3.0 / 3e0 / huge / NaN in the raw JSON), names (renamed and extra files),
reach (shrunk buffers, params and workgroup counts that overrun or reach 0), nan (NaN bit patterns in the weights),
bom (a byte-order mark), for named bundles vocab / vocab-bytes / labels, and for int4 bundles packed (fam_packed)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ditformat.forms import workgroup_forms
from ditformat.schema import unsafe_path

ROOT = Path(__file__).resolve().parent.parent
LATENT = [4, 8, 8]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 64, 2 ** 64),
                      st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 53 + 1, 10 ** 30]),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                      st.sampled_from(["uniform", "storage", "bogus", "f16", "F16", "weights.safetensors", "../x",
                                       "/etc/passwd", "step", "weight", "activation", "v", "eps"]))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                          max_leaves=6)


# ------------------------------------------------------------------ the good folders

def build_good(kind: str, tmp: Path) -> Path:
    """The untampered folder of a kind: a random-weight Favicon-N/2 bundle (f16; int4: its block weights packed), the
    same named, or a decoder/."""
    from _gpu_helpers import random_model
    from dit_model.model import preset_config
    from export.bundle import export_bundle
    if kind in ("bundle", "int4"):
        return export_bundle(random_model(preset_config("Favicon-N/2"), seed=1), tmp / "b", "f16" if kind == "bundle" else kind)
    if kind == "named":
        from test_named import tiny_set
        from dit_model.named import named_data
        vocab = named_data(tiny_set()).vocab
        cfg = preset_config("Favicon-N/2", num_classes=sum(vocab.sizes), label_levels=vocab.sizes, label_nested=vocab.nested)
        return export_bundle(random_model(cfg, seed=2), tmp / "b", "f16", vocab=vocab)
    from dit_model.vae import load_vae
    from export.decode import write_decoder
    from test_vae_bundle import VAE, write_vae_folder
    return write_decoder(tmp / "bundle", load_vae(write_vae_folder(tmp / "vae", VAE)), "f16", LATENT[1])


# ------------------------------------------------------------------ helpers shared by the families

def paths(v, prefix=()):
    """Every path into a JSON value (dict keys, list indices), the value itself excluded."""
    out = []
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, sub in items:
        out.append(prefix + (k,))
        out += paths(sub, prefix + (k,))
    return out


def mutate_json(data, v):
    """One structural edit somewhere in v (in place): delete, replace, or nudge a number."""
    ps = paths(v)
    if not ps:
        return data.draw(json_value)
    p = data.draw(st.sampled_from(ps))
    parent = v
    for k in p[:-1]:
        parent = parent[k]
    action = data.draw(st.sampled_from(["delete", "replace", "nudge"]))
    old = parent[p[-1]]
    if action == "delete":
        if isinstance(parent, dict):
            del parent[p[-1]]
        else:
            parent.pop(p[-1])
    elif action == "nudge" and isinstance(old, int) and not isinstance(old, bool):
        parent[p[-1]] = data.draw(st.sampled_from([old + 1, old - 1, 2 * old, -old, old + 2 ** 32, 0]))
    else:
        parent[p[-1]] = data.draw(json_value)
    return v


def rehash(folder: Path, rel: str) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    data = (folder / rel).read_bytes()
    m["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(m))


@dataclass
class Case:
    """One case being built: the good folder, the case folder, its manifest (written back by save())."""
    data: object
    good: Path
    folder: Path
    m: dict

    def draw(self, strategy):
        return self.data.draw(strategy)

    def save(self) -> None:
        (self.folder / "manifest.json").write_text(json.dumps(self.m))

    def replace(self, rel: str, raw: bytes, p_rehash=(1, 2)) -> None:
        """Rewrite file rel; re-hash it in the manifest with probability p_rehash (numerator, denominator)."""
        if (self.folder / rel).exists():
            (self.folder / rel).unlink()
        (self.folder / rel).write_bytes(raw)
        if self.draw(st.integers(0, p_rehash[1] - 1)) < p_rehash[0]:
            rehash(self.folder, rel)
            self.m = json.loads((self.folder / "manifest.json").read_text())


def copy_folder(good: Path, folder: Path) -> None:
    """The good folder as hard links, manifest.json a copy (every family rewrites files, never edits in place)."""
    for f in good.rglob("*"):
        if f.is_file() and f != good / "manifest.json":
            (folder / f.relative_to(good)).parent.mkdir(parents=True, exist_ok=True)
            os.link(f, folder / f.relative_to(good))
    shutil.copy(good / "manifest.json", folder / "manifest.json")


def shards(m: dict) -> list[str]:
    return sorted({b.get("file", "weights.safetensors") for b in m["buffers"].values() if b["kind"] == "weight"})


def kernel_files(m: dict) -> list[str]:
    return sorted({k["file"] for k in m["kernels"].values()})


def dispatches(m: dict) -> list[dict]:
    return [d for p in ("forward", "init", "step_begin", "step_end") for d in m.get("programs", {}).get(p, [])] + \
        m.get("program", [])


# ------------------------------------------------------------------ families

def fam_manifest(c: Case, sections) -> None:
    section = c.draw(st.sampled_from(list(sections) + [None]))
    if section is None or section not in c.m:
        mutate_json(c.data, c.m)
    else:
        c.m[section] = mutate_json(c.data, c.m[section])
    c.save()


def fam_manifest_bytes(c: Case) -> None:
    raw = bytearray((c.good / "manifest.json").read_bytes())
    i = c.draw(st.integers(0, len(raw) - 1))
    if c.draw(st.booleans()):
        raw = raw[:i]
    else:
        raw[i] = c.draw(st.integers(0, 255))
    (c.folder / "manifest.json").write_bytes(bytes(raw))


def fam_header(c: Case, how: str) -> None:
    shard = c.draw(st.sampled_from(shards(c.m)))
    raw = (c.good / shard).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, body = json.loads(raw[8:8 + n]), raw[8 + n:]
    if how == "header":
        mutate_json(c.data, header)
        new = pack_header(header, body)
    elif how == "header-bytes":
        new = struct.pack("<Q", c.draw(st.sampled_from([0, 1, n - 1, n + 1, len(raw), 2 ** 63, 2 ** 64 - 1]))) + raw[8:]
    elif how == "nan":                   # NaN / Inf bit patterns in one tensor's data: the verifiers accept them
        name = c.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        a, b = header[name]["data_offsets"]
        pattern = c.draw(st.sampled_from([b"\x00\x00\xc0\x7f", b"\x00\x7e", b"\x00\x00\x80\x7f", b"\xff\xff\xff\xff"]))
        fill = (pattern * ((b - a) // len(pattern) + 1))[:b - a]
        new = raw[:8 + n + a] + fill + raw[8 + n + b:]
    else:
        new = raw[:c.draw(st.integers(0, len(raw) - 1))]
    c.replace(shard, new, (3, 4) if how == "nan" else (1, 2))


def pack_header(header: dict, body: bytes, text: bytes | None = None) -> bytes:
    text = text if text is not None else json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _grow_params(code: str, k: int) -> str:
    return re.sub(r"(struct Params \{[^}]*?)(\};)", lambda mm: mm.group(1) + "".join(f"  extra{i}: u32,\n" for i in range(k))
                  + mm.group(2), code, count=1)


WGSL_EDITS: dict[str, Callable[[str], str]] = {
    "read->read_write": lambda c: c.replace("var<storage, read>", "var<storage, read_write>", 1),
    "read_write->read": lambda c: c.replace("var<storage, read_write>", "var<storage, read>", 1),
    "binding 1->7": lambda c: c.replace("@binding(1)", "@binding(7)", 1),
    "uniform->storage": lambda c: c.replace("@binding(0) var<uniform>", "@binding(0) var<storage, read>", 1),
    "workgroup_size 2,": lambda c: c.replace("@workgroup_size(", "@workgroup_size(2, ", 1),
    "workgroup_size N": lambda c: c.replace("@workgroup_size(", "@workgroup_size(N, ", 1),
    "binding commented out": lambda c: c.replace("@group(0) @binding(", "// @group(0) @binding(", 1),
    "attributes swapped": lambda c: re.sub(r"@group\((\d+)\) @binding\((\d+)\)", r"@binding(\2) @group(\1)", c, count=1),
    "line kept in a comment": lambda c: re.sub(r"(@group\(0\) @binding\((\d+)\) var<storage, read>)([^\n]*)",
                                               r"// \1\3\n@binding(\2) @group(0) var<storage, read_write>\3", c, count=1),
    "workgroup_size space": lambda c: c.replace("@workgroup_size(", "@workgroup_size (", 1),
    "arabic digit": lambda c: c.replace("@binding(1)", "@binding(\u0661)", 1),
    "digit separator": lambda c: re.sub(r"@workgroup_size\((\d)(\d+)", r"@workgroup_size(\1_\2", c, count=1),
    "leading zero": lambda c: c.replace("@binding(1)", "@binding(01)", 1),
    "hex literal": lambda c: c.replace("@binding(1)", "@binding(0x1)", 1),
    "u suffix": lambda c: c.replace("@binding(1)", "@binding(1u)", 1),
    "spaces in attribute": lambda c: c.replace("@binding(1)", "@binding( 1 )", 1),
    "nested comment": lambda c: c.replace("@group(0) @binding(1)", "@group(0) /* a /* b */ c */ @binding(1)", 1),
    "no space after comma": lambda c: c.replace("var<storage, read_write>", "var<storage,read_write>", 1),
    "entry renamed": lambda c: c.replace("fn main(", "fn main2(", 1),
    "second entry point": lambda c: c + "\n@compute @workgroup_size(1) fn other() {}\n",
    "group 1": lambda c: c.replace("@group(0) @binding(1)", "@group(1) @binding(1)", 1),
    "f16 storage": lambda c: c.replace("array<f32>", "array<f16>", 1),
    "byte-order mark": lambda c: "\ufeff" + c,
    "NUL appended": lambda c: c + "\x00",
    "brace appended": lambda c: c + "\n}\n",
    "comment appended": lambda c: c + "\n// the end\n",
    "unterminated comment": lambda c: c + "\n/* the end\n",
    "params grown by 1": lambda c: _grow_params(c, 1),
    "params grown by 4": lambda c: _grow_params(c, 4),
    "workgroup_size 1 u": lambda c: re.sub(r"@workgroup_size\((\d+)", r"@workgroup_size(\1u", c, count=1),
}


def fam_wgsl(c: Case) -> None:
    rel = c.draw(st.sampled_from(kernel_files(c.m)))
    code = (c.good / rel).read_text()
    edit = c.draw(st.sampled_from(sorted(WGSL_EDITS)))
    c.replace(rel, WGSL_EDITS[edit](code).encode(), (3, 4))


NUMBER = re.compile(r"(?<=[:\[,] )-?\d+(?=[,\]}])|(?<=[:\[,])-?\d+(?=[,\]}])")
ENCODINGS = [lambda v: f"{v}.0", lambda v: f"{v}e0", lambda v: f"{v}0e-1", lambda v: f"{v}E+0",
             lambda v: f"{v}.00000000000000001", lambda v: f"{v}.5", lambda v: f"{v}" + "0" * 400, lambda v: "1e999",
             lambda v: "-0", lambda v: "NaN", lambda v: "Infinity", lambda v: f"0{v}", lambda v: f"+{v}",
             lambda v: str(int(v) + 2 ** 53), lambda v: f"{v}.0e0"]


def recode(c: Case, text: str) -> str:
    """text with one integer token re-encoded."""
    spans = [mm.span() for mm in NUMBER.finditer(text)]
    if not spans:
        return text
    a, b = c.draw(st.sampled_from(spans))
    enc = c.draw(st.sampled_from(range(len(ENCODINGS))))
    return text[:a] + ENCODINGS[enc](text[a:b]) + text[b:]


def fam_numbers(c: Case) -> None:
    if c.draw(st.integers(0, 3)) == 0 and shards(c.m):     # in a safetensors header (offsets, shapes)
        shard = c.draw(st.sampled_from(shards(c.m)))
        raw = (c.good / shard).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        text = recode(c, raw[8:8 + n].decode().rstrip(" "))
        c.replace(shard, pack_header({}, raw[8 + n:], text.encode()), (3, 4))
    else:
        (c.folder / "manifest.json").write_text(recode(c, json.dumps(c.m)))

BAD_NAMES = ["kernels/%2e%2e/%2e%2e/outside.wgsl", "kernels/x.wgsl?x=1", "kernels/x.wgsl#frag", "kernels/a b.wgsl",
             "kernels/a%00.wgsl", "a" * 300, "kernels/" + "b" * 129, "kernels//x.wgsl", "kernels/./x.wgsl", "./x.wgsl",
             ".hidden.wgsl", "kernels/\u00fc.wgsl", "kernels/x.wgsl ", "kernels\\x.wgsl", "C:x.wgsl", "/abs.wgsl",
             "kernels/x\n.wgsl", "kernels/..", "x/" * 60 + "y", "kernels/\u0661.wgsl", "kernels/x\u200b.wgsl", ""]
GOOD_NAMES = ["kernels/renamed-OK_1.wgsl", "kernels/" + "b" * 128, "deep/er/name.bin", "x" * 100 + "/" + "y" * 100,
              "-dash.start", "a..b"]


def fam_names(c: Case) -> None:
    """A listed file renamed (references follow; on disk where the file system allows), or an extra file."""
    if c.draw(st.integers(0, 2)) == 0:
        extra = c.draw(st.sampled_from(["README.md", "notes/card.md", "model.onnx"]))
        body = b"# model card\n"
        how = c.draw(st.sampled_from(["listed", "wrong hash", "absent", "unlisted", "wrong size"]))
        if (c.folder / extra).exists():
            (c.folder / extra).unlink()          # a hard link to the good folder's file: never write through it
        if how != "absent":
            (c.folder / extra).parent.mkdir(parents=True, exist_ok=True)
            (c.folder / extra).write_bytes(body)
        if how != "unlisted":
            c.m["files"][extra] = {"size": len(body) + (how == "wrong size"),
                                   "sha256": hashlib.sha256(body + (b"!" if how == "wrong hash" else b"")).hexdigest()}
        c.save()
        return
    old = c.draw(st.sampled_from(sorted(f for f in c.m["files"] if "/" not in f or f.startswith("kernels/"))))
    new = c.draw(st.sampled_from(BAD_NAMES + GOOD_NAMES))
    c.m["files"][new] = c.m["files"].pop(old)
    for k in c.m["kernels"].values():
        if k["file"] == old:
            k["file"] = new
    for b in c.m["buffers"].values():
        if b["kind"] == "weight" and b.get("file", "weights.safetensors") == old:
            b["file"] = new
    if not unsafe_path(new):             # never outside the case folder: an unsafe name stays a name
        (c.folder / new).parent.mkdir(parents=True, exist_ok=True)
        os.rename(c.folder / old, c.folder / new)
    c.save()


def fam_reach(c: Case) -> None:
    """Sizes that no longer fit: an activation shrunk, a dispatch's params (with workgroups that follow them) or its
    workgroup counts changed, a binding pointed at another buffer of the same kind."""
    how = c.draw(st.sampled_from(["shrink", "param", "workgroups", "rebind"]))
    if how == "shrink":
        acts = sorted(n for n, b in c.m["buffers"].items() if b["kind"] == "activation")
        b = c.m["buffers"][c.draw(st.sampled_from(acts))]
        e = b["elements"]
        b["elements"] = c.draw(st.sampled_from([[0, 0, 1], [e[0], e[1], max(e[2] - 1, 0)], [e[0] // 2, e[1] // 2, e[2] // 2],
                                                [max(e[0] - 1, 0), e[1], e[2]], [e[0], max(e[1] - 1, 0), e[2]]]))
        c.save()
        return
    d = c.draw(st.sampled_from(dispatches(c.m)))
    k = c.m["kernels"][d["kernel"]]
    if how == "param" and d["params"]:
        i = c.draw(st.integers(0, len(d["params"]) - 1))
        f = d["params"][i]
        d["params"][i] = c.draw(st.sampled_from([[0, 0, 0], [2 * f[0], 2 * f[1], 2 * f[2]], [f[0], f[1], f[2] + 1],
                                                 [f[0], f[1], f[2] + 64], [0, 0, 2 ** 31 - 1], [f[0] + 1, f[1], f[2]]]))
        if "groups" in k:
            d["workgroups"] = workgroup_forms(k["groups"], k["params"], d["params"])
    elif how == "workgroups":
        j = c.draw(st.integers(0, 2))
        d["workgroups"][j] = c.draw(st.sampled_from([[0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 2 ** 20, 1]]))
    elif d["bindings"]:
        j = c.draw(st.integers(0, len(d["bindings"]) - 1))
        kind = c.m["buffers"][d["bindings"][j]]["kind"]
        d["bindings"][j] = c.draw(st.sampled_from(sorted(n for n, b in c.m["buffers"].items() if b["kind"] == kind)))
    c.save()


def fam_bom(c: Case) -> None:
    rel = c.draw(st.sampled_from(["manifest.json"] + kernel_files(c.m)[:3] + (["vocabulary.json"] if "vocabulary.json"
                                                                               in c.m["files"] else [])))
    raw = b"\xef\xbb\xbf" + (c.good / rel).read_bytes()
    if rel == "manifest.json":
        (c.folder / rel).write_bytes(raw)
    else:
        c.replace(rel, raw, (3, 4))


def fam_vocab(c: Case, how: str) -> None:
    """A named bundle's vocabulary.json (JSON edits, raw bytes) or the label fields of its manifest."""
    if how == "vocab":
        v = json.loads((c.good / "vocabulary.json").read_text())
        section = c.draw(st.sampled_from(["levels", "names", "nested", "parents", "short_names", "keywords", "codes", None]))
        if section is None:
            mutate_json(c.data, v)
        else:
            v[section] = mutate_json(c.data, v[section])
        c.replace("vocabulary.json", json.dumps(v, ensure_ascii=c.draw(st.booleans())).encode(), (3, 4))
    elif how == "vocab-bytes":
        raw = bytearray((c.good / "vocabulary.json").read_bytes())
        i = c.draw(st.integers(0, len(raw) - 1))
        choice = c.draw(st.sampled_from(["cut", "byte", "bom"]))
        raw = raw[:i] if choice == "cut" else b"\xef\xbb\xbf" + raw if choice == "bom" else raw
        if choice == "byte":
            raw[i] = c.draw(st.integers(0, 255))
        c.replace("vocabulary.json", bytes(raw))
    else:
        key = c.draw(st.sampled_from(["label_levels", "label_nested", "num_classes", "class_names", "files", "y_in",
                                      "levels"]))
        if key in c.m["model"]:
            if c.draw(st.booleans()):
                c.m["model"].pop(key)
            else:
                c.m["model"][key] = c.draw(json_value | st.lists(st.integers(0, 12), max_size=5))
        elif key == "class_names":
            c.m["class_names"] = c.draw(st.lists(st.text(max_size=4), max_size=3))
        elif key == "files":
            c.m["files"].pop("vocabulary.json")
        elif key == "y_in":
            c.m["buffers"]["y_in"]["elements"] = [c.draw(st.integers(0, 6)), 0, 0]
        else:
            d = next(d for d in c.m["programs"]["forward"] if d["label"] == "y_embedder")
            d["params"][3] = [0, 0, c.draw(st.integers(0, 6))]
        c.save()


def fam_packed(c: Case) -> None:
    """An int4 bundle's packed buffers (encoding q4k): bytes of a nibble or steps tensor set (a nibble of -8, a step
    of 0 or above 18 among them), the manifest entry's encoding, shape or dtype changed, or a tensor renamed."""
    packed = sorted(n for n, b in c.m["buffers"].items() if b.get("encoding"))
    name = c.draw(st.sampled_from(packed))
    b = c.m["buffers"][name]
    how = c.draw(st.sampled_from(["nibble", "step", "byte", "entry", "rename"]))
    if how == "entry":
        key = c.draw(st.sampled_from(["encoding", "shape", "dtype", "bytes"]))
        b[key] = c.draw(st.sampled_from({"encoding": [None, "q4", "q4k "], "shape": [[b["shape"][0], b["shape"][1] + 32],
                        [b["shape"][0], 16], [b["shape"][1], b["shape"][0]], [b["shape"][0] * b["shape"][1]]],
                        "dtype": ["f16", "f32", "u8"], "bytes": [b["bytes"] // 2, b["bytes"] + 1]}[key]))
        if b[key] is None:
            b.pop(key)
        c.save()
        return
    shard = b.get("file", "weights.safetensors")
    raw = bytearray((c.good / shard).read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    tensor = b["tensor"] + (".k" if how == "step" or (how == "byte" and c.draw(st.booleans())) else "")
    if how == "rename":
        header[tensor + c.draw(st.sampled_from([".k", "x", ""]))] = header.pop(tensor)
        new = pack_header(header, bytes(raw[8 + n:]))
    else:
        a, e = header[tensor]["data_offsets"]
        i = 8 + n + a + c.draw(st.integers(0, e - a - 1))
        raw[i] = c.draw({"nibble": st.sampled_from([0x08, 0x80, 0x88, 0x7f, 0xf7]),
                         "step": st.sampled_from([0, 1, 18, 19, 255])}.get(how, st.integers(0, 255)))
        new = bytes(raw)
    c.replace(shard, new, (3, 4))


BUNDLE_SECTIONS = ["model", "io", "files", "kernels", "buffers", "programs", "sampler", "class_names", "guidance",
                   "candidates"]
DECODER_SECTIONS = ["vae", "latent_shape", "image_shape", "io", "files", "kernels", "buffers", "program", "dtype", "preview"]
# family -> (weight, function); a kind draws its families with these weights
FAMILIES = {
    "manifest": (4, None), "manifest-bytes": (1, fam_manifest_bytes), "header": (1, lambda c: fam_header(c, "header")),
    "header-bytes": (1, lambda c: fam_header(c, "header-bytes")), "weights-cut": (1, lambda c: fam_header(c, "cut")),
    "wgsl": (3, fam_wgsl), "numbers": (2, fam_numbers), "names": (2, fam_names), "reach": (3, fam_reach),
    "nan": (1, lambda c: fam_header(c, "nan")), "bom": (1, fam_bom),
}
NAMED_FAMILIES = {"vocab": (3, lambda c: fam_vocab(c, "vocab")), "vocab-bytes": (1, lambda c: fam_vocab(c, "vocab-bytes")),
                  "labels": (2, lambda c: fam_vocab(c, "labels"))}


@dataclass
class Kind:
    name: str
    sections: list
    families: dict
    node: str                                   # the node helper
    arg: Callable[[str], object]                # one case as that helper's stdin takes it

    def verify(self, folder: Path) -> None:
        from runtime_py.verify import verify_bundle, verify_decoder
        if self.name == "decoder":
            verify_decoder(folder, LATENT)
        else:
            verify_bundle(folder)


KINDS = {
    "bundle": Kind("bundle", BUNDLE_SECTIONS, FAMILIES, "_verify_node.mjs", lambda f: f),
    "named": Kind("named", BUNDLE_SECTIONS, {**FAMILIES, **NAMED_FAMILIES}, "_verify_node.mjs", lambda f: f),
    "decoder": Kind("decoder", DECODER_SECTIONS, FAMILIES, "_verify_decoder_node.mjs", lambda f: [f, LATENT]),
    "int4": Kind("int4", BUNDLE_SECTIONS, {**FAMILIES, "packed": (4, fam_packed)}, "_verify_node.mjs", lambda f: f),
}


def damage(kind: Kind, data, good: Path, folder: Path) -> str:
    """Copy the good folder into `folder` and damage it with one family of the kind. Returns the family."""
    folder.mkdir()
    copy_folder(good, folder)
    names = sorted(kind.families)
    family = data.draw(st.sampled_from([n for n in names for _ in range(kind.families[n][0])]))
    c = Case(data, good, folder, json.loads((good / "manifest.json").read_text()))
    if family == "manifest":
        fam_manifest(c, kind.sections)
    else:
        kind.families[family][1](c)
    return family


# ------------------------------------------------------------------ running a corpus through both verifiers

def py_verdict(kind: Kind, folder: Path) -> str:
    """"ok", "ErrorClass: one-line message", or "CRASH: ..." (anything but a one-line BundleError)."""
    import traceback
    from runtime_py.verify import BundleError
    try:
        kind.verify(folder)
        return "ok"
    except BundleError as e:
        msg = str(e)
        return f"{type(e).__name__}: {msg}" if msg and "\n" not in msg else f"CRASH: not one line: {msg!r}"
    except Exception:                                      # a traceback: what the corpus is there to find
        return "CRASH: " + traceback.format_exc()[-1500:]


def js_verdicts(kind: Kind, folders: list[str]) -> dict:
    out = {}
    for i in range(0, len(folders), 1000):
        chunk = folders[i:i + 1000]
        r = subprocess.run(["node", str(ROOT / "tests" / kind.node)], input=json.dumps([kind.arg(f) for f in chunk]),
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        out.update(json.loads(r.stdout))
    return out


def run_corpus(kind_name: str, good: Path, tmp: Path, cases: int) -> dict:
    """`cases` tampered folders of a kind through both verifiers -> {"rows": [(folder, family, py, js)], "families":
    {family: [cases, rejected]}, "disagree", "py_crash", "js_crash": [rows], "rejected": n}."""
    kind = KINDS[kind_name]
    rows: list[list[str]] = []
    counter = iter(range(10 ** 9))

    @settings(max_examples=cases, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        folder = tmp / f"{kind_name}{next(counter)}"
        family = damage(kind, data, good, folder)
        rows.append([str(folder), family, py_verdict(kind, folder)])

    one()
    js = js_verdicts(kind, [r[0] for r in rows])
    rows = [(f, fam, py, js[f]) for f, fam, py in rows]
    families: dict[str, list[int]] = {}
    for _, fam, py, _ in rows:
        families.setdefault(fam, [0, 0])
        families[fam][0] += 1
        families[fam][1] += py != "ok"
    return {"rows": rows, "families": dict(sorted(families.items())),
            "disagree": [r for r in rows if (r[2] == "ok") != (r[3] == "ok")],
            "py_crash": [r for r in rows if r[2].startswith("CRASH")],
            "js_crash": [r for r in rows if not (r[3] == "ok" or r[3].startswith("BundleError: ")) or "\n" in r[3]],
            "rejected": sum(r[2] != "ok" for r in rows)}
