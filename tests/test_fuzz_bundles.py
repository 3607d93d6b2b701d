"""One corpus of tampered folders against both verifiers: runtime_py/verify.py and the page's web/bundle.js
(web/decode.js for the decoder/ of a latent bundle), run by node, file for file what loadBundle checks before its
first GPU call. The corpus (tests/_fuzz_corpus.py: hypothesis with a fixed seed, no database) has three kinds of
folder (a bundle, a named bundle with its vocabulary.json, a decoder/) and the families of damage of issue 24:
manifest edits and bytes, safetensors headers, WGSL edits with updated hashes, numbers re-encoded, file names,
buffer reach, NaN bits, byte-order marks. Every case must end in a named one-line BundleError or a clean accept,
never a traceback, a hang or a GPU call, and the two runtimes must give the same verdict on every case (the
differential). CI runs a fixed subset (DITWEB_FUZZ_CASES scales it); `bench/fuzz.py` runs >= 2,000 cases per kind.
Below, the issue's cases by name, and the GPU errors that only a compile can find, as one-line errors."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from _fuzz_corpus import LATENT, build_good, rehash, run_corpus
from _gpu_helpers import gpu  # noqa: F401  (fixture)
from runtime_py.verify import BundleError, verify_bundle

ROOT = Path(__file__).resolve().parent.parent
CASES = int(os.environ.get("DITWEB_FUZZ_CASES", "1000"))
# the CI subset per kind, as fractions of CASES (bench/fuzz.py: >= 2,000 each)
SHARE = {"bundle": 0.6, "named": 0.2, "decoder": 0.4, "int4": 0.2}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return build_good("bundle", tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def good_named(tmp_path_factory):
    return build_good("named", tmp_path_factory.mktemp("named"))


@pytest.fixture(scope="module")
def good_decoder(tmp_path_factory):
    return build_good("decoder", tmp_path_factory.mktemp("decoder"))


@pytest.fixture(scope="module")
def good_int4(tmp_path_factory):
    return build_good("int4", tmp_path_factory.mktemp("int4"))


@pytest.mark.parametrize("kind", ["bundle", "named", "decoder", "int4"])
def test_tampered_folders_get_the_same_verdict_from_both_runtimes(kind, good, good_named, good_decoder, good_int4,
                                                                   tmp_path, monkeypatch):
    """The differential: every case through Python and JS; no traceback on either side, the same verdict."""
    import runtime_py.bundle as rb

    def no_gpu(*a, **k):
        raise AssertionError("a GPU call was made before verification finished")
    monkeypatch.setattr(rb, "get_gpu", no_gpu)
    folder = {"bundle": good, "named": good_named, "decoder": good_decoder, "int4": good_int4}[kind]
    r = run_corpus(kind, folder, tmp_path, max(int(CASES * SHARE[kind]), 50))
    n = len(r["rows"])
    assert n >= 0.9 * max(int(CASES * SHARE[kind]), 50)
    assert not r["py_crash"], f"{len(r['py_crash'])} Python tracebacks, e.g. {r['py_crash'][0]}"
    assert not r["js_crash"], f"{len(r['js_crash'])} JS crashes, e.g. {r['js_crash'][0]}"
    assert not r["disagree"], f"{len(r['disagree'])} verdicts differ, e.g. {r['disagree'][:3]}"
    print(f"{n} tampered {kind} folders: {r['rejected']} rejected by both runtimes, {n - r['rejected']} accepted by both; "
          f"families {r['families']}")
    assert r["rejected"] >= 0.5 * n
    assert n < 300 or set(r["families"]) >= {"manifest", "wgsl", "numbers", "names", "reach", "nan", "bom"}


def js_verdicts(folders, script="_verify_node.mjs", arg=lambda f: str(f)) -> dict:
    r = subprocess.run(["node", str(ROOT / "tests" / script)], input=json.dumps([arg(f) for f in folders]),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_named_corpus(good: Path, tmp_path: Path, corpus: dict, verify=verify_bundle, **js) -> None:
    """corpus: {name: (edit(folder), needle or None)}: None = both accept, else both reject naming the needle."""
    folders = {}
    for name, (fn, needle) in corpus.items():
        folder = tmp_path / "".join(c if c.isalnum() else "_" for c in name)
        shutil.copytree(good, folder)
        fn(folder)
        folders[name] = folder
        try:
            verify(folder)
            msg = "ok"
        except BundleError as e:
            msg = str(e)
        assert (msg == "ok") if needle is None else (needle in msg and "\n" not in msg), (name, msg)
    got = js_verdicts(folders.values(), **js)
    for name, folder in folders.items():
        msg, needle = got[str(folder)], corpus[name][1]
        assert (msg == "ok") if needle is None else (msg.startswith("BundleError: ") and needle in msg), (name, msg)


def edit(fn):
    def run(folder):
        m = json.loads((folder / "manifest.json").read_text())
        fn(m)
        (folder / "manifest.json").write_text(json.dumps(m))
    return run


def edit_text(rel, fn, rehashed=True):
    def run(folder):
        raw = fn((folder / rel).read_bytes())
        (folder / rel).unlink()
        (folder / rel).write_bytes(raw)
        if rehashed:
            rehash(folder, rel)
    return run


def wgsl(rel, a, b):
    return edit_text(rel, lambda raw: raw.decode().replace(a, b, 1).encode())


def first(m, label):
    return next(d for p in m["programs"].values() for d in p if d["label"] == label)


def test_issue_cases_by_name(good, tmp_path):
    """Issue 24's cases, by name, against both runtimes: None = both accept."""
    ss = "kernels/sampler_step.wgsl"

    def metadata_tensor(folder):
        raw = (folder / "weights.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        header["__metadata__"] = {"format": "pt"}
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-(8 + len(text)) % 8)
        (folder / "weights.safetensors").unlink()
        (folder / "weights.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
        rehash(folder, "weights.safetensors")
        edit(lambda m: m["buffers"]["pos_embed"].update(tensor="__metadata__"))(folder)

    def long_name(folder):
        edit(lambda m: (m["files"].__setitem__("k" * 300 + ".wgsl", m["files"].pop(ss)),
                        m["kernels"]["sampler_step"].update(file="k" * 300 + ".wgsl")))(folder)

    def readme(sha):
        def run(folder):
            (folder / "README.md").write_bytes(b"# card\n")
            edit(lambda m: m["files"].update({"README.md": {"size": 7, "sha256": sha}}))(folder)
        return run
    corpus = {
        "attributes in another order": (wgsl(ss, "@group(0) @binding(3)", "@binding(3) @group(0)"), None),
        "read_write, the original line in a comment": (
            wgsl(ss, "@group(0) @binding(2) var<storage, read>", "// @group(0) @binding(2) var<storage, read>\n"
                 "@binding(2) @group(0) var<storage, read_write>"), "declares bindings"),
        "@workgroup_size with a space": (wgsl(ss, "@workgroup_size(", "@workgroup_size ("), None),
        "Arabic-Indic digit": (wgsl(ss, "@binding(3)", "@binding(\u0663)"), "printable ASCII"),
        "2_56": (wgsl(ss, "@workgroup_size(256", "@workgroup_size(2_56"), "not a decimal integer literal"),
        "entry point renamed": (wgsl(ss, "fn main(", "fn run("), "fn main"),
        "byte-order mark in WGSL": (edit_text(ss, lambda r: b"\xef\xbb\xbf" + r), "printable ASCII"),
        "garbage appended": (edit_text(ss, lambda r: r + b"\n}}}"), "sampler_step"),
        "params struct grown": (wgsl(ss, "learn_sigma: u32,", "learn_sigma: u32, extra: u32,"), "params uniform"),
        "tensor __metadata__": (metadata_tensor, "no tensor"),
        "a second step buffer": (edit(lambda m: (m["buffers"].__setitem__("step2", {"kind": "step", "bytes": 128}),
                                                 first(m, "sampler_step")["bindings"].__setitem__(0, "step2"))), "step2"),
        "300-character file name": (long_name, "unsafe path"),
        "%2e%2e outside the bundle": (edit(lambda m: (m["files"].__setitem__("kernels/%2e%2e/%2e%2e/x.wgsl", m["files"].pop(ss)),
                                                      m["kernels"]["sampler_step"].update(file="kernels/%2e%2e/%2e%2e/x.wgsl"))),
                                      "unsafe path"),
        "out shrunk (fails when read back)": (edit(lambda m: m["buffers"]["out"].update(elements=[1, 0, 0])), "out"),
        "x_sample shrunk to one element": (edit(lambda m: m["buffers"]["x_sample"].update(elements=[0, 0, 1])), "x_sample"),
        "0 workgroups": (edit(lambda m: (first(m, "sampler_step")["params"].__setitem__(0, [0, 0, 0]),
                                         first(m, "sampler_step")["workgroups"].__setitem__(0, [0, 0, 0, 1024]))),
                         "0 workgroups"),
        "a matmul reaching past its weight": (edit(lambda m: first(m, "blocks.0.mlp.fc1")["params"].__setitem__(
            2, [0, 0, 2 * first(m, "blocks.0.mlp.fc1")["params"][2][2]])), "reaches"),
        "integer written 2.0": (edit_text("manifest.json", lambda r: re.sub(rb'("depth": ?)(\d+)', rb'\g<1>\g<2>.0', r), False), None),
        "integer written 2e0": (edit_text("manifest.json", lambda r: re.sub(rb'("depth": ?)(\d+)', rb'\g<1>\g<2>e0', r), False), None),
        "integer written x.5": (edit_text("manifest.json", lambda r: re.sub(rb'("depth": ?)(\d+)', rb'\g<1>\g<2>.5', r), False),
                                "model.depth"),
        "manifest with a byte-order mark": (edit_text("manifest.json", lambda r: b"\xef\xbb\xbf" + r, False), "byte-order mark"),
        "a model card listed": (readme(hashlib.sha256(b"# card\n").hexdigest()), None),
        "a model card with a wrong hash": (readme("0" * 64), "README.md"),
        "a written buffer bound twice": (edit(lambda m: first(m, "sampler_step")["bindings"].__setitem__(
            1, first(m, "sampler_step")["bindings"][2])), "bound twice"),
        "an unknown op": (edit(lambda m: m["kernels"]["sampler_step"].update(op="sampler_stepx")), "no reach rule"),
    }
    check_named_corpus(good, tmp_path, corpus)


def test_the_gpu_refuses_in_one_line(good, tmp_path, gpu):
    """What only a compile finds (a WGSL body the driver refuses, in a kernel or in a candidate that runs only while
    tuning) is a one-line GPURefusedError naming the kernel, from Bundle.load and from sampling."""
    from runtime_py.bundle import Bundle
    from runtime_py.gpu import GPURefusedError
    broken = {"kernel": "kernels/sampler_step.wgsl", "candidate": "kernels/layernorm_rows.wgsl"}
    for what, rel in broken.items():
        folder = tmp_path / what
        shutil.copytree(good, folder)
        edit_text(rel, lambda raw: raw + b"\nfn helper() -> u32 { return 1.5; }\n")(folder)
        verify_bundle(folder)                          # the interface is right: the verifiers accept it
        with pytest.raises(GPURefusedError) as e:
            Bundle.load(folder, gpu=gpu, plan="auto").sample(0, steps=1, n=1)
        msg = str(e.value)
        assert "\n" not in msg and rel.split("/")[1][:-5] in msg, msg


def test_named_vocabulary_damage_by_name(good_named, tmp_path):
    def vocab_edit(fn):
        def run(folder):
            v = json.loads((folder / "vocabulary.json").read_text())
            fn(v)
            (folder / "vocabulary.json").write_text(json.dumps(v))
            rehash(folder, "vocabulary.json")
        return run

    def raw(data):
        def run(folder):
            (folder / "vocabulary.json").write_bytes(data)
            rehash(folder, "vocabulary.json")
        return run
    corpus = {
        "fewer styles than the weights": (vocab_edit(lambda v: v["names"][3].pop()), "disagree with the weights"),
        "nested differs": (vocab_edit(lambda v: v.update(nested=2, parents=v["parents"][:1])), "disagree with the weights"),
        "parent out of range": (vocab_edit(lambda v: v["parents"][0].__setitem__(0, 9)), "parents of level 'emoji'"),
        "duplicate name": (vocab_edit(lambda v: v["names"][2].__setitem__(1, v["names"][2][0])), "twice"),
        "other format": (vocab_edit(lambda v: v.update(format="other/1")), "is not 'ditweb-vocabulary/1'"),
        "not JSON": (raw(b"{not json"), "not valid JSON"),
        "not UTF-8": (raw(b'{"format": "\xff"}'), "not UTF-8"),
        "edited, not re-hashed": (lambda f: (f / "vocabulary.json").write_bytes((f / "vocabulary.json").read_bytes()[:-1] + b" "),
                                  "sha256"),
        "not listed": (edit(lambda m: m["files"].pop("vocabulary.json")), "needs vocabulary.json"),
        "absent": (lambda f: (f / "vocabulary.json").unlink(), "vocabulary.json"),
        "levels sum": (edit(lambda m: m["model"].update(label_levels=[5, 3, 3, 3])), "summing to num_classes"),
        "nested out of range": (edit(lambda m: m["model"].update(label_nested=5)), "label_nested"),
        "class names listed": (edit(lambda m: m.update(class_names=["a"])), "class_names"),
        "y_in one row": (edit(lambda m: m["buffers"]["y_in"].update(elements=[1, 0, 0])), "label row"),
        "label_embed levels": (edit(lambda m: next(d for d in m["programs"]["forward"] if d["label"] == "y_embedder")
                                             ["params"].__setitem__(3, [0, 0, 1])), "label levels"),
        "one-level with a vocabulary": (edit(lambda m: m["model"].pop("label_levels")), "label_nested without"),
    }
    check_named_corpus(good_named, tmp_path, corpus)


def test_int8_label_table_damage_by_name(tmp_path):
    """An int8 named bundle (label_embed_q8: the table int8 with an f32 scale per row): the good one passes both
    verifiers; a scale of the wrong shape, a scale buffer shorter than the table's rows, the table read as fewer rows
    than the labels need and the wrong level count are one-line errors naming what is wrong, the same in both."""
    from _gpu_helpers import random_model
    from dit_model.model import preset_config
    from dit_model.named import named_data
    from export.bundle import export_bundle
    from test_named import tiny_set
    vocab = named_data(tiny_set()).vocab
    cfg = preset_config("Favicon-N/2", num_classes=sum(vocab.sizes), label_levels=vocab.sizes, label_nested=vocab.nested)
    good = export_bundle(random_model(cfg, seed=3), tmp_path / "good", "int8", vocab=vocab)
    table = "y_embedder.embedding_table"

    def label_dispatch(m):
        d = first(m, "y_embedder")
        assert m["kernels"][d["kernel"]]["op"] == "label_embed_q8" and d["bindings"][2] == table + ".scale"
        return d
    def short_scale(folder):                             # one scale fewer than the rows, in the shard and manifest
        from safetensors.numpy import load_file
        from ditformat.shards import write_shards, weight_entry
        tensors = load_file(str(folder / "weights.safetensors"))
        tensors[table + ".scale"] = tensors[table + ".scale"][:-1].copy()
        write_shards({k: v for k, v in tensors.items() if not k.startswith("_ditweb.pad")}, folder,
                     single="weights.safetensors")
        edit(lambda m: m["buffers"].update({table + ".scale": weight_entry(tensors[table + ".scale"],
                                                                           table + ".scale", None)}))(folder)
        rehash(folder, "weights.safetensors")
    corpus = {
        "the good int8 bundle": (lambda f: None, None),
        "scale shape differs from its tensor": (edit(lambda m: m["buffers"][table + ".scale"].update(
            shape=[m["buffers"][table + ".scale"]["shape"][0] - 1])), table + ".scale"),
        "one scale fewer than the rows": (short_scale, "reaches"),
        "rows past the table": (edit(lambda m: label_dispatch(m)["params"].__setitem__(
            2, [0, 0, label_dispatch(m)["params"][2][2] + 1])), "reaches"),
        "label_embed_q8 levels": (edit(lambda m: label_dispatch(m)["params"].__setitem__(3, [0, 0, 1])), "label levels"),
    }
    check_named_corpus(good, tmp_path / "cases", corpus)


def test_the_good_decoder_passes_both_and_the_schemas_agree(good_decoder):
    """The untampered decoder passes both verifiers; the latent_shape bound is the schema's in both (it was
    16384 in a hand-written JS copy and 1024 in the schema)."""
    from runtime_py.verify import verify_decoder
    verify_decoder(good_decoder, LATENT)
    r = subprocess.run(["node", str(ROOT / "tests" / "_verify_decoder_node.mjs")],
                       input=json.dumps([[str(good_decoder), LATENT]]), capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout) == {str(good_decoder): "ok"}, r.stdout + r.stderr
    web = (ROOT / "web" / "decode.js").read_text()
    assert "16384" not in web and "DECODER_SCHEMA" in web


def test_one_unsafe_path_function_per_language():
    """The path rule is written once in Python (ditformat.schema.unsafe_path) and once in JS (bundle.js unsafePath);
    the verifiers of the bundle and of its decoder both call it."""
    def count(rel, needle):
        return (ROOT / rel).read_text().count(needle)
    py_rule, js_rule = 'SCHEMA["file_name"]["segment"]', "SCHEMA.file_name.segment"
    assert count("ditformat/schema.py", py_rule) == 1
    assert count("runtime_py/verify.py", py_rule) == count("runtime_py/decode.py", py_rule) == 0
    assert count("web/bundle.js", js_rule) == 1 and count("web/decode.js", js_rule) == 0
    assert count("web/decode.js", "checkPaths(") == 1 and count("runtime_py/verify.py", "check_paths(") == 3


def test_web_schema_is_generated_from_the_python_schema():
    """(with the other generated files: tests/test_format.py test_generated_files_are_fresh)"""
    from ditformat.schema import js_module
    assert (ROOT / "web" / "bundle-schema.js").read_text() == js_module(), "run: python -m ditformat"
