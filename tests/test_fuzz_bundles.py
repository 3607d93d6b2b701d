"""One corpus of tampered bundles against both verifiers: runtime_py/verify.py and the page's
web/bundle.js (run by node, file for file what loadBundle checks before its first GPU call); and one of
tampered decoder/ folders of latent bundles against runtime_py/verify.py verify_decoder and web/decode.js.

Hypothesis (fixed seed, no database) draws damage to the manifest (any field deleted or replaced by
any JSON value, numbers nudged, raw bytes cut or flipped), to the safetensors header and its offsets,
and to the WGSL sources; edited files are re-hashed in the manifest half of the time so the damage
gets past the sha256 check to the checks behind it. Every case must end in a named one-line
BundleError or a clean accept, never a traceback, a hang or a GPU call, and the two runtimes must
agree on accept / reject."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime_py.verify import BundleError, verify_bundle

ROOT = Path(__file__).resolve().parent.parent
CASES = int(os.environ.get("DITWEB_FUZZ_CASES", "1000"))

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 64, 2 ** 64),
                      st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 53 + 1, 10 ** 30]),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                      st.sampled_from(["uniform", "storage", "bogus", "f16", "F16", "weights.safetensors", "../x",
                                       "/etc/passwd", "step", "weight", "activation", "v", "eps"]))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                          max_leaves=6)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    from _gpu_helpers import random_model
    from dit_model.model import preset_config
    from export.bundle import export_bundle
    return export_bundle(random_model(preset_config("Favicon-N/2"), seed=1), tmp_path_factory.mktemp("good") / "b", "f16")


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


def damage(data, good: Path, folder: Path) -> str:
    """Copy the good bundle (links for files left alone) and damage one file. Returns what was done."""
    folder.mkdir()
    (folder / "kernels").mkdir()
    for f in good.rglob("*"):
        if f.is_file() and f.name != "manifest.json":
            os.link(f, folder / f.relative_to(good))
    shutil.copy(good / "manifest.json", folder / "manifest.json")
    target = data.draw(st.sampled_from(["manifest", "manifest", "manifest", "manifest-bytes", "header", "header-bytes",
                                        "weights-cut", "wgsl"]))
    m = json.loads((good / "manifest.json").read_text())

    def replace(rel, raw: bytes):
        (folder / rel).unlink()
        (folder / rel).write_bytes(raw)
        if data.draw(st.booleans()):
            rehash(folder, rel)

    if target == "manifest":
        section = data.draw(st.sampled_from(["model", "io", "files", "kernels", "buffers", "programs", "sampler",
                                             "class_names", "guidance", None]))
        if section is None:
            mutate_json(data, m)
        else:
            m[section] = mutate_json(data, m[section])
        (folder / "manifest.json").write_text(json.dumps(m))
    elif target == "manifest-bytes":
        raw = bytearray((good / "manifest.json").read_bytes())
        i = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw = raw[:i]
        else:
            raw[i] = data.draw(st.integers(0, 255))
        (folder / "manifest.json").write_bytes(bytes(raw))
    elif target in ("header", "header-bytes", "weights-cut"):
        raw = (good / "weights.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header, body = json.loads(raw[8:8 + n]), raw[8 + n:]
        if target == "header":
            mutate_json(data, header)
            text = json.dumps(header, separators=(",", ":")).encode()
            text += b" " * (-(8 + len(text)) % 8)
            new = struct.pack("<Q", len(text)) + text + body
        elif target == "header-bytes":
            new = struct.pack("<Q", data.draw(st.sampled_from([0, 1, n - 1, n + 1, len(raw), 2 ** 63, 2 ** 64 - 1])))
            new += raw[8:]
        else:
            new = raw[:data.draw(st.integers(0, len(raw) - 1))]
        replace("weights.safetensors", new)
    else:
        rel = data.draw(st.sampled_from(sorted(k["file"] for k in m["kernels"].values())))
        code = (good / rel).read_text()
        edits = [("var<storage, read>", "var<storage, read_write>"), ("var<storage, read_write>", "var<storage, read>"),
                 ("@binding(1)", "@binding(7)"), ("@binding(0) var<uniform>", "@binding(0) var<storage, read>"),
                 ("@workgroup_size(", "@workgroup_size(2, "), ("@workgroup_size(", "@workgroup_size(N, "),
                 ("@group(0) @binding(", "// @group(0) @binding(")]
        a, b = data.draw(st.sampled_from(edits))
        replace(rel, code.replace(a, b, 1).encode())
    return target


def test_tampered_bundles_fail_alike_in_both_runtimes(good, tmp_path, monkeypatch):
    import runtime_py.bundle as rb

    def no_gpu(*a, **k):
        raise AssertionError("a GPU call was made before verification finished")
    monkeypatch.setattr(rb, "get_gpu", no_gpu)
    py: dict[str, str] = {}
    counter = iter(range(10 ** 9))

    @settings(max_examples=CASES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        folder = tmp_path / f"case{next(counter)}"
        what = damage(data, good, folder)
        try:
            verify_bundle(folder)
            py[str(folder)] = "ok"
        except BundleError as e:
            msg = str(e)
            assert "\n" not in msg and msg, (what, msg)
            py[str(folder)] = f"{type(e).__name__}: {msg}"
        # anything else (KeyError, TypeError, ...) propagates: a traceback is a failure

    one()
    assert len(py) >= CASES
    r = subprocess.run(["node", str(ROOT / "tests" / "_verify_node.mjs")], input=json.dumps(list(py)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    crashes = {k: v for k, v in js.items() if not (v == "ok" or v.startswith("BundleError: "))}
    assert not crashes, f"{len(crashes)} JS crashes, e.g. {next(iter(crashes.values()))}"
    assert all("\n" not in v for v in js.values())
    disagree = {k: (py[k], js[k]) for k in py if (py[k] == "ok") != (js[k] == "ok")}
    assert not disagree, f"{len(disagree)} verdicts differ, e.g. {list(disagree.values())[:3]}"
    rejected = sum(v != "ok" for v in py.values())
    print(f"{len(py)} tampered bundles: {rejected} rejected by both runtimes, {len(py) - rejected} accepted by both")
    assert rejected >= 0.5 * len(py)


def test_corpus_of_named_damage(good, tmp_path):
    """The issue's cases, by name, against both runtimes."""
    def edit(fn):
        def run(folder):
            m = json.loads((folder / "manifest.json").read_text())
            fn(m)
            (folder / "manifest.json").write_text(json.dumps(m))
        return run
    corpus = {
        "bogus binding type": (edit(lambda m: m["kernels"]["sampler_step"]["bindings"][2].update(type="bogus")), "bogus"),
        "workgroup_size 100000": (edit(lambda m: m["kernels"]["sampler_step"].update(workgroup_size=[100000, 1, 1])), "workgroup_size"),
        "workgroup_size vs shader": (edit(lambda m: m["kernels"]["sampler_step"].update(workgroup_size=[64, 1, 1])), "@workgroup_size"),
        "binding 0 not uniform": (edit(lambda m: m["kernels"]["sampler_step"]["bindings"][0].update(type="storage")), "binding 0"),
        "binding numbers": (edit(lambda m: m["kernels"]["sampler_step"]["bindings"][2].update(binding=5)), "bindings"),
        "io name": (edit(lambda m: m["io"].update(out="nope")), "io.out"),
        "old version": (edit(lambda m: m.update(format_version=3, exporter="ditweb 0.3.0")), "re-export it with ditweb 0.4.0"),
        "newer version": (edit(lambda m: m.update(format_version=99, exporter="ditweb 9.0")), "re-export it with ditweb"),
        "prediction": (edit(lambda m: m["sampler"].update(prediction="x0")), "prediction"),
        "schedule": (edit(lambda m: m["sampler"].update(schedule="cosine")), "sampler.schedule"),
        "betas reversed": (edit(lambda m: m["sampler"].update(beta_start=0.03)), "beta_start"),
        "groups param": (edit(lambda m: m["kernels"]["sampler_step"].update(groups=["nope/1024", "1", "1"])), "groups"),
        "workgroups vs groups": (edit(lambda m: m["kernels"]["sampler_step"].update(groups=["count/256", "1", "1"])),
                                 "do not follow"),
        "candidate unknown": (edit(lambda m: m["candidates"].update(layernorm_mod=["layernorm_mod", "nope"])), "candidates"),
        "candidate params": (edit(lambda m: m["candidates"].update(layernorm_mod=["layernorm_mod", "gated_residual"])),
                             "differs in params"),
        "candidate of nothing": (edit(lambda m: m["candidates"].update(nope=["nope"])), "candidates.nope"),
    }
    folders = {}
    for name, (fn, _) in corpus.items():
        folder = tmp_path / name.replace(" ", "_")
        shutil.copytree(good, folder)
        fn(folder)
        folders[name] = folder
        with pytest.raises(BundleError) as e:
            verify_bundle(folder)
        assert corpus[name][1] in str(e.value) and "\n" not in str(e.value), (name, str(e.value))
    r = subprocess.run(["node", str(ROOT / "tests" / "_verify_node.mjs")], input=json.dumps([str(f) for f in folders.values()]),
                       capture_output=True, text=True, timeout=60)
    js = json.loads(r.stdout)
    for name, folder in folders.items():
        msg = js[str(folder)]
        assert msg.startswith("BundleError: ") and corpus[name][1] in msg, (name, msg)


# ------------------------------------------------------------------ a named bundle's vocabulary.json

@pytest.fixture(scope="module")
def good_named(tmp_path_factory):
    from _gpu_helpers import random_model
    from test_named import tiny_set
    from dit_model.model import preset_config
    from dit_model.named import named_data
    from export.bundle import export_bundle
    vocab = named_data(tiny_set()).vocab
    cfg = preset_config("Favicon-N/2", num_classes=sum(vocab.sizes), label_levels=vocab.sizes, label_nested=vocab.nested)
    return export_bundle(random_model(cfg, seed=2), tmp_path_factory.mktemp("named") / "b", "f16", vocab=vocab)


def verdicts_js(folders) -> dict:
    r = subprocess.run(["node", str(ROOT / "tests" / "_verify_node.mjs")], input=json.dumps([str(f) for f in folders]),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def damage_named(data, good: Path, folder: Path) -> str:
    """Copy the good named bundle and damage its vocabulary (JSON edits, raw bytes) or the label fields of its manifest."""
    shutil.copytree(good, folder)
    target = data.draw(st.sampled_from(["vocab", "vocab", "vocab", "vocab-bytes", "model", "manifest-labels"]))
    if target == "vocab":
        v = json.loads((good / "vocabulary.json").read_text())
        section = data.draw(st.sampled_from(["levels", "names", "nested", "parents", "short_names", "keywords", "codes", None]))
        if section is None:
            mutate_json(data, v)
        else:
            v[section] = mutate_json(data, v[section])
        (folder / "vocabulary.json").write_text(json.dumps(v, ensure_ascii=data.draw(st.booleans())))
        if data.draw(st.integers(0, 3)):
            rehash(folder, "vocabulary.json")
    elif target == "vocab-bytes":
        raw = bytearray((good / "vocabulary.json").read_bytes())
        i = data.draw(st.integers(0, len(raw) - 1))
        choice = data.draw(st.sampled_from(["cut", "byte", "bom"]))
        raw = raw[:i] if choice == "cut" else b"\xef\xbb\xbf" + raw if choice == "bom" else raw
        if choice == "byte":
            raw[i] = data.draw(st.integers(0, 255))
        (folder / "vocabulary.json").write_bytes(bytes(raw))
        if data.draw(st.booleans()):
            rehash(folder, "vocabulary.json")
    else:
        m = json.loads((good / "manifest.json").read_text())
        if target == "model":
            key = data.draw(st.sampled_from(["label_levels", "label_nested", "num_classes"]))
            if data.draw(st.booleans()):
                m["model"].pop(key)
            else:
                m["model"][key] = data.draw(json_value | st.lists(st.integers(0, 12), max_size=5))
        else:
            key = data.draw(st.sampled_from(["class_names", "files", "y_in", "levels"]))
            if key == "class_names":
                m["class_names"] = data.draw(st.lists(st.text(max_size=4), max_size=3))
            elif key == "files":
                m["files"].pop("vocabulary.json")
            elif key == "y_in":
                m["buffers"]["y_in"]["elements"] = [data.draw(st.integers(0, 6)), 0, 0]
            else:
                d = next(d for d in m["programs"]["forward"] if d["label"] == "y_embedder")
                d["params"][3] = [0, 0, data.draw(st.integers(0, 6))]
        (folder / "manifest.json").write_text(json.dumps(m))
    return target


def test_tampered_named_bundles_fail_alike_in_both_runtimes(good_named, tmp_path):
    """vocabulary.json is verified like every bundle file, and against the model's label levels: the same verdict
    from runtime_py/verify.py and web/bundle.js (+ web/labels.js) on every case."""
    assert verify_bundle(good_named)["model"]["label_levels"] == [5, 3, 3, 2]
    py: dict[str, str] = {}
    counter = iter(range(10 ** 9))

    @settings(max_examples=max(CASES // 3, 50), derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        folder = tmp_path / f"case{next(counter)}"
        what = damage_named(data, good_named, folder)
        try:
            verify_bundle(folder)
            py[str(folder)] = "ok"
        except BundleError as e:
            assert "\n" not in str(e) and str(e), (what, str(e))
            py[str(folder)] = f"{type(e).__name__}: {e}"

    one()
    js = verdicts_js(list(py) + [good_named])
    assert js[str(good_named)] == "ok"
    crashes = {k: v for k, v in js.items() if not (v == "ok" or v.startswith("BundleError: "))}
    assert not crashes, f"{len(crashes)} JS crashes, e.g. {next(iter(crashes.values()))}"
    disagree = {k: (py[k], js[k]) for k in py if (py[k] == "ok") != (js[k] == "ok")}
    assert not disagree, f"{len(disagree)} verdicts differ, e.g. {list(disagree.values())[:3]}"
    rejected = sum(v != "ok" for v in py.values())
    print(f"{len(py)} tampered named bundles: {rejected} rejected by both runtimes")
    assert rejected >= 0.5 * len(py)


def test_named_vocabulary_damage_by_name(good_named, tmp_path):
    def vocab_edit(fn):
        def run(folder):
            v = json.loads((folder / "vocabulary.json").read_text())
            fn(v)
            (folder / "vocabulary.json").write_text(json.dumps(v))
            rehash(folder, "vocabulary.json")
        return run

    def manifest_edit(fn):
        def run(folder):
            m = json.loads((folder / "manifest.json").read_text())
            fn(m)
            (folder / "manifest.json").write_text(json.dumps(m))
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
        "not listed": (manifest_edit(lambda m: m["files"].pop("vocabulary.json")), "needs vocabulary.json"),
        "absent": (lambda f: (f / "vocabulary.json").unlink(), "vocabulary.json"),
        "levels sum": (manifest_edit(lambda m: m["model"].update(label_levels=[5, 3, 3, 3])), "summing to num_classes"),
        "nested out of range": (manifest_edit(lambda m: m["model"].update(label_nested=5)), "label_nested"),
        "class names listed": (manifest_edit(lambda m: m.update(class_names=["a"])), "class_names"),
        "y_in one row": (manifest_edit(lambda m: m["buffers"]["y_in"].update(elements=[1, 0, 0])), "label row"),
        "label_embed levels": (manifest_edit(lambda m: next(d for d in m["programs"]["forward"] if d["label"] == "y_embedder")
                                             ["params"].__setitem__(3, [0, 0, 1])), "label levels"),
        "one-level with a vocabulary": (manifest_edit(lambda m: m["model"].pop("label_levels")), "label_nested without"),
    }
    folders = {}
    for name, (fn, needle) in corpus.items():
        folder = tmp_path / name.replace(" ", "_").replace(",", "")
        shutil.copytree(good_named, folder)
        fn(folder)
        folders[name] = folder
        with pytest.raises(BundleError) as e:
            verify_bundle(folder)
        assert needle in str(e.value) and "\n" not in str(e.value), (name, str(e.value))
    js = verdicts_js(folders.values())
    for name, folder in folders.items():
        msg = js[str(folder)]
        assert msg.startswith("BundleError: ") and corpus[name][1] in msg, (name, msg)


# ------------------------------------------------------------------ decoder/ of a latent bundle

LATENT = [4, 8, 8]


@pytest.fixture(scope="module")
def good_decoder(tmp_path_factory):
    from dit_model.vae import load_vae
    from export.decode import write_decoder
    from test_vae_bundle import VAE, write_vae_folder
    tmp = tmp_path_factory.mktemp("decoder")
    vae = load_vae(write_vae_folder(tmp / "vae", VAE))
    return write_decoder(tmp / "bundle", vae, "f16", LATENT[1])


def damage_decoder(data, good: Path, folder: Path) -> str:
    """Copy the good decoder/ (links for files left alone) and damage one file. Returns what was done."""
    for f in good.rglob("*"):
        if f.is_file() and f.name != "manifest.json":
            (folder / f.relative_to(good)).parent.mkdir(parents=True, exist_ok=True)
            os.link(f, folder / f.relative_to(good))
    shutil.copy(good / "manifest.json", folder / "manifest.json")
    m = json.loads((good / "manifest.json").read_text())
    target = data.draw(st.sampled_from(["manifest", "manifest", "manifest", "manifest-bytes", "header", "header-bytes",
                                        "weights-cut", "wgsl"]))

    def replace(rel, raw: bytes):
        (folder / rel).unlink()
        (folder / rel).write_bytes(raw)
        if data.draw(st.booleans()):
            rehash(folder, rel)

    if target == "manifest":
        section = data.draw(st.sampled_from(["vae", "latent_shape", "image_shape", "io", "files", "kernels", "buffers",
                                             "program", "dtype", None]))
        if section is None:
            mutate_json(data, m)
        else:
            m[section] = mutate_json(data, m[section])
        (folder / "manifest.json").write_text(json.dumps(m))
    elif target == "manifest-bytes":
        raw = bytearray((good / "manifest.json").read_bytes())
        i = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw = raw[:i]
        else:
            raw[i] = data.draw(st.integers(0, 255))
        (folder / "manifest.json").write_bytes(bytes(raw))
    elif target in ("header", "header-bytes", "weights-cut"):
        shard = data.draw(st.sampled_from(sorted({b["file"] for b in m["buffers"].values() if b["kind"] == "weight"})))
        raw = (good / shard).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header, body = json.loads(raw[8:8 + n]), raw[8 + n:]
        if target == "header":
            mutate_json(data, header)
            text = json.dumps(header, separators=(",", ":")).encode()
            text += b" " * (-(8 + len(text)) % 8)
            new = struct.pack("<Q", len(text)) + text + body
        elif target == "header-bytes":
            new = struct.pack("<Q", data.draw(st.sampled_from([0, 1, n - 1, n + 1, len(raw), 2 ** 63, 2 ** 64 - 1])))
            new += raw[8:]
        else:
            new = raw[:data.draw(st.integers(0, len(raw) - 1))]
        replace(shard, new)
    else:
        rel = data.draw(st.sampled_from(sorted({k["file"] for k in m["kernels"].values()})))
        code = (good / rel).read_text()
        edits = [("var<storage, read>", "var<storage, read_write>"), ("var<storage, read_write>", "var<storage, read>"),
                 ("@binding(1)", "@binding(7)"), ("@binding(0) var<uniform>", "@binding(0) var<storage, read>"),
                 ("@workgroup_size(", "@workgroup_size(2, "), ("@workgroup_size(", "@workgroup_size(N, "),
                 ("@group(0) @binding(", "// @group(0) @binding(")]
        a, b = data.draw(st.sampled_from(edits))
        replace(rel, code.replace(a, b, 1).encode())
    return target


def test_tampered_decoders_fail_alike_in_both_runtimes(good_decoder, tmp_path):
    """The decoder/ of a latent bundle through the same kind of corpus: Python's verify_decoder and the page's
    verifyDecoderManifest + verifyDecoderFiles agree on every case, with no traceback on either side."""
    from runtime_py.verify import verify_decoder
    py: dict[str, str] = {}
    counter = iter(range(10 ** 9))

    @settings(max_examples=CASES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        folder = tmp_path / f"case{next(counter)}"
        what = damage_decoder(data, good_decoder, folder)
        try:
            verify_decoder(folder, LATENT)
            py[str(folder)] = "ok"
        except BundleError as e:
            msg = str(e)
            assert "\n" not in msg and msg, (what, msg)
            py[str(folder)] = f"{type(e).__name__}: {msg}"

    one()
    assert len(py) >= CASES
    r = subprocess.run(["node", str(ROOT / "tests" / "_verify_decoder_node.mjs")],
                       input=json.dumps([[k, LATENT] for k in py]), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    crashes = {k: v for k, v in js.items() if not (v == "ok" or v.startswith("BundleError: "))}
    assert not crashes, f"{len(crashes)} JS crashes, e.g. {next(iter(crashes.values()))}"
    assert all("\n" not in v for v in js.values())
    disagree = {k: (py[k], js[k]) for k in py if (py[k] == "ok") != (js[k] == "ok")}
    assert not disagree, f"{len(disagree)} verdicts differ, e.g. {list(disagree.values())[:3]}"
    rejected = sum(v != "ok" for v in py.values())
    print(f"{len(py)} tampered decoders: {rejected} rejected by both runtimes, {len(py) - rejected} accepted by both")
    assert rejected >= 0.5 * len(py)


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
