"""int4 bundles (`ditweb export --dtype int4`, docs/bundle-format.md "int4 bundles"): the transformer blocks' Linear
weights stored as 4-bit values q in -7..7 times a step k in 1..18 per group of 32 inputs of a row (encoding q4k,
ditformat/packed.py), unpacked at load into the int8 values the int8 kernels read. The quantiser's properties, the
export, `ditweb validate` against torch (wgpu-py on lavapipe), the WebAssembly path against an int8 bundle holding
the same int8 values (the same bits), the stored weights bench/int8_eval.py evaluates, and bad packed files refused in
one line by both verifiers."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ditformat.packed import (GROUP, K_MAX, K_MIN, Q_MAX, UnpackError, choose_steps, pack_q4k, steps_tensor,
                              unpack_q4k)

ROOT = Path(__file__).resolve().parent.parent
PACKED = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1")   # a block's Linears


def group_errors(g: np.ndarray) -> np.ndarray:
    """(N, K/32, 18): the squared error of every step k = 1..18 for every group, by brute force."""
    N, K = g.shape
    groups = g.reshape(N, K // GROUP, GROUP)[..., None]
    k = np.arange(K_MIN, K_MAX + 1, dtype=np.float64)
    return ((np.clip(np.rint(groups / k), -Q_MAX, Q_MAX) * k - groups) ** 2).sum(axis=2)


def test_steps_are_the_least_squares_choice_and_unpack_exactly():
    """For w / scale of int8 rows (|g| <= 127, the row's maximum exactly 127): each group's step is the exact
    least-squares choice among 1..18 (the smallest on a tie), so no worse than the step that just covers the group's
    largest value (plain absmax rounding, ceil(max |g| / 7)); q in -7..7, k in 1..18, and unpack(pack(q, k)) is q k
    exactly, within int8 (|q k| <= 126)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((24, 256)) * np.exp(rng.standard_normal((24, 1)))
    w[3, 32:64] = 0.0                                          # an all-zero group
    w[5, 7] *= 50.0                                            # an outlier: its row's other groups get small steps
    w[9] = 0.0                                                 # an all-zero row (int8 scale 1)
    m = np.abs(w).max(axis=1, keepdims=True)
    g = w / np.where(m > 0, m / 127.0, 1.0)
    q, k = choose_steps(g)
    assert q.dtype == np.int8 and k.dtype == np.uint8 and k.shape == (24, 256 // GROUP)
    assert np.abs(q).max() <= Q_MAX and k.min() >= K_MIN and k.max() <= K_MAX
    err = group_errors(g)
    assert np.array_equal(k, err.argmin(axis=2) + K_MIN)      # argmin: the first (smallest k) of equal errors
    chosen = ((q.astype(np.float64) * np.repeat(k, GROUP, axis=1) - g) ** 2).reshape(24, -1, GROUP).sum(axis=2)
    assert np.allclose(chosen, err.min(axis=2), rtol=0, atol=1e-9)
    absmax = np.clip(np.ceil(np.abs(g).reshape(24, -1, GROUP).max(axis=2) / Q_MAX), K_MIN, K_MAX).astype(int)
    plain = np.take_along_axis(err, (absmax - K_MIN)[..., None], axis=2)[..., 0]
    assert (chosen <= plain + 1e-9).all() and (chosen < plain - 1e-9).any()
    assert k[3, 1] == K_MIN and not q[3, 32:64].any() and not q[9].any()
    nibbles, steps = pack_q4k(q, k)
    assert nibbles.shape == (24, 128) and nibbles.dtype == np.uint8
    values = unpack_q4k(nibbles, steps, "w")
    assert values.dtype == np.int8 and np.array_equal(values, q.astype(np.int16) * np.repeat(k, GROUP, axis=1))
    assert np.abs(values.astype(int)).max() <= Q_MAX * K_MAX <= 127


@pytest.mark.parametrize("how,needle", [("nibble", "tensor w: value -8 at row 1, column 3"),
                                        ("step0", "tensor w.k: step 0 at row 2, group 1 is outside 1..18"),
                                        ("step19", "tensor w.k: step 19 at row 0, group 0 is outside 1..18")])
def test_unpack_refuses_values_outside_the_encoding_in_python_and_js(tmp_path, how, needle):
    """A nibble of -8 (0x8) and a step outside 1..18 are refused, naming the tensor and the place; the page's
    unpackQ4k (web/bundle.js) gives the same values on a good tensor and the same message on a bad one."""
    rng = np.random.default_rng(1)
    q = rng.integers(-Q_MAX, Q_MAX + 1, (3, 64)).astype(np.int8)
    k = rng.integers(K_MIN, K_MAX + 1, (3, 2)).astype(np.uint8)
    nibbles, steps = pack_q4k(q, k)
    good = unpack_q4k(nibbles, steps, "w")
    bad_n, bad_k = nibbles.copy(), steps.copy()
    if how == "nibble":
        bad_n[1, 1] = (bad_n[1, 1] & 0x0F) | 0x80              # column 3 (the high nibble of byte 1)
        bad_n[2, 0] = 0x88                                     # a later one: the first in row order is named
    else:
        bad_k[(2, 1) if how == "step0" else (0, 0)] = 0 if how == "step0" else 19
    with pytest.raises(UnpackError, match="^" + needle.replace(".", r"\.")):
        unpack_q4k(bad_n, bad_k, "w")
    script = tmp_path / "unpack.mjs"
    script.write_text(f"""
import {{ unpackQ4k }} from "{ROOT / 'web' / 'bundle.js'}";
const run = (n, k) => {{ try {{ return Array.from(unpackQ4k(Uint8Array.from(n), Uint8Array.from(k), 3, 64, "w")); }}
                        catch (e) {{ return e.name + ": " + e.message; }} }};
console.log(JSON.stringify([run({nibbles.ravel().tolist()}, {steps.ravel().tolist()}),
                            run({bad_n.ravel().tolist()}, {bad_k.ravel().tolist()})]));
""")
    r = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    js_good, js_bad = json.loads(r.stdout)
    assert js_good == good.ravel().tolist()
    assert js_bad.startswith("RangeError: " + needle), js_bad


@pytest.fixture(scope="module")
def model():
    from _gpu_helpers import random_model
    from dit_model.model import preset_config
    return random_model(preset_config("Favicon-N/2", hidden_size=64, num_heads=4), seed=4)


@pytest.fixture(scope="module")
def bundles(model, tmp_path_factory):
    from export.bundle import export_bundle
    tmp = tmp_path_factory.mktemp("int4")
    names = ["hippo", "flag", "rocket"]
    return {d: export_bundle(model, tmp / d, d, names) for d in ("int4", "int8")}


def shard_header(path: Path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def test_export_packs_the_block_linears_only(model, bundles):
    """int4: dtype "int4"; every block Linear weight an i8 buffer with encoding q4k over a U8 nibble tensor [N, K/2]
    and its steps [N, K/32] in the same shard; the other Linears, the label table int8 as in an int8 bundle, with the
    same scales and biases; the kernels and programs of the int8 bundle. The weights file shrinks by the block
    weights' 1 - 17/32."""
    m4 = json.loads((bundles["int4"] / "manifest.json").read_text())
    m8 = json.loads((bundles["int8"] / "manifest.json").read_text())
    assert m4["dtype"] == "int4" and m8["dtype"] == "int8"
    assert m4["programs"] == m8["programs"] and m4["kernels"] == m8["kernels"]
    packed = sorted(n for n, b in m4["buffers"].items() if b.get("encoding"))
    want = sorted(f"blocks.{i}.{x}.weight" for i in range(model.cfg.depth) for x in PACKED)
    assert packed == want
    assert {n: {k: v for k, v in b.items() if k != "encoding"} for n, b in m4["buffers"].items()} == m8["buffers"]
    header = shard_header(bundles["int4"] / "weights.safetensors")
    for name in packed:
        N, K = m4["buffers"][name]["shape"]
        assert header[name]["dtype"] == "U8" and header[name]["shape"] == [N, K // 2]
        assert header[steps_tensor(name)]["dtype"] == "U8" and header[steps_tensor(name)]["shape"] == [N, K // GROUP]
    assert header["y_embedder.embedding_table.weight"]["dtype"] == "I8" and header["x_embedder.proj.weight"]["dtype"] == "I8"
    block = sum(np.prod(m4["buffers"][n]["shape"]) for n in packed)
    saved = (bundles["int8"] / "weights.safetensors").stat().st_size - (bundles["int4"] / "weights.safetensors").stat().st_size
    assert abs(saved - block * (1 - 17 / 32)) < 1024, (saved, block)
    from safetensors.numpy import load_file
    w4, w8 = load_file(bundles["int4"] / "weights.safetensors"), load_file(bundles["int8"] / "weights.safetensors")
    for name in packed:
        x = name[: -len(".weight")]
        assert np.array_equal(w4[x + ".scale"], w8[x + ".scale"]) and np.array_equal(w4[x + ".bias"], w8[x + ".bias"])
        q = unpack_q4k(w4[name], w4[steps_tensor(name)], name).astype(int)
        assert np.abs(q - w8[name]).mean() < K_MAX / 4            # near the int8 values (q4 k: 4 bits of them)


def test_small_shards_keep_steps_beside_their_nibbles(model, tmp_path):
    """--shard-mb small enough for one tensor a shard: a packed buffer's steps still share its nibbles' shard, and
    the page's verifier (node) and runtime_py accept the bundle."""
    from export.bundle import export_bundle
    from runtime_py.verify import verify_bundle
    out = export_bundle(model, tmp_path / "b", "int4", ["a", "b", "c"], shard_bytes=1024)
    m = verify_bundle(out)
    files = {b["file"] for b in m["buffers"].values() if b["kind"] == "weight"}
    assert len(files) > 10
    for name, b in m["buffers"].items():
        if b.get("encoding"):
            assert steps_tensor(b["tensor"]) in shard_header(out / b["file"])
    r = subprocess.run(["node", str(ROOT / "tests" / "_verify_node.mjs")], input=json.dumps([str(out)]),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout) == {str(out): "ok"}, r.stdout + r.stderr


def test_stored_weights_are_the_bundles_unpacked_values(model, bundles):
    """bench/int8_eval.py evaluates stored_weights(model, "int4"): exactly q4 k scale of the bundle's own tensors
    (float32 of the float64 product) for the packed Linears, as `ditweb validate` rebuilds its torch model."""
    sys.path.insert(0, str(ROOT / "bench"))
    from int8_eval import stored_weights
    from runtime_py.bundle import Bundle
    from runtime_py.validate import bundle_weights
    sd = stored_weights(model, "int4")
    b = Bundle.__new__(Bundle)                                 # bundle_weights needs the path and the manifest only
    from runtime_py.verify import verify_bundle
    b.path, b.manifest = bundles["int4"], verify_bundle(bundles["int4"])
    w = bundle_weights(b)
    for i in range(model.cfg.depth):
        for x in PACKED:
            name = f"blocks.{i}.{x}.weight"
            assert w[name].dtype == np.int8
            want = (w[name].astype(np.float64) * w[f"blocks.{i}.{x}.scale"].astype(np.float64)[:, None]).astype(np.float32)
            assert np.array_equal(sd[name].numpy(), want), name


def test_validate_against_torch_on_lavapipe(model, bundles, tmp_path):
    """`ditweb validate BUNDLE --ckpt CKPT`: every kernel at its real shapes and the whole model against float64 torch
    at the bundle's unpacked weights (wgpu-py on lavapipe; --ckpt is not used for a quantised bundle)."""
    from dit_model.checkpoint import save_weights
    ckpt = tmp_path / "m.safetensors"
    save_weights(model, ckpt, ["hippo", "flag", "rocket"], 0)
    r = subprocess.run([sys.executable, "-m", "ditweb", "validate", str(bundles["int4"]), "--ckpt", str(ckpt),
                        "--summary"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "whole model forward" in r.stdout and "checks passed" in r.stdout, r.stdout[-2000:]


def int8_twin(int4: Path, out: Path) -> Path:
    """The int8 bundle holding exactly the int4 bundle's unpacked values: its packed tensors written as I8 and the
    manifest's entries and dtype those of an int8 bundle (everything else the same files)."""
    from ditformat.shards import DEFAULT_FILE, write_shards
    from export.bundle import sha256
    from safetensors.numpy import load_file
    import shutil
    shutil.copytree(int4, out)
    m = json.loads((out / "manifest.json").read_text())
    tensors = load_file(out / DEFAULT_FILE)
    for b in m["buffers"].values():
        if b.pop("encoding", None):
            tensors[b["tensor"]] = unpack_q4k(tensors[b["tensor"]], tensors.pop(steps_tensor(b["tensor"])), b["tensor"])
    tensors = {k: v for k, v in tensors.items() if not k.startswith("_ditweb.pad.")}
    (out / DEFAULT_FILE).unlink()
    write_shards(tensors, out, single=DEFAULT_FILE)
    m["dtype"] = "int8"
    m["files"][DEFAULT_FILE] = {"size": (out / DEFAULT_FILE).stat().st_size, "sha256": sha256(out / DEFAULT_FILE)}
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def test_wasm_path_draws_the_int8_twins_image(bundles, tmp_path):
    """The WebAssembly engine (node: web/bundle.js verifies and unpacks, web/wasm-runtime.js runs op_matmul_q8) on the
    int4 bundle and on the int8 bundle with the same int8 values: the same bits, image and forward pass."""
    twin = int8_twin(bundles["int4"], tmp_path / "twin")
    from runtime_py.verify import verify_bundle
    verify_bundle(twin)

    def node(req):
        r = subprocess.run(["node", str(ROOT / "tests" / "_wasm_node.mjs")], input=json.dumps(req), capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert "error" not in out, out
        return out
    opts = {"classIds": [1, 2], "seed": 5, "steps": 6, "cfg": 3.0, "sampler": "ddim"}
    a = node({"cmd": "sample", "bundle": str(bundles["int4"]), "opts": opts})["x"]
    b = node({"cmd": "sample", "bundle": str(twin), "opts": opts})["x"]
    assert a == b and len(a) == 2 * 4 * 8 * 8
    rng = np.random.default_rng(2)
    fw = {"cmd": "forward", "x": rng.standard_normal(2 * 4 * 64).tolist(), "t": [10, 900], "y": [0, 3]}
    assert node({**fw, "bundle": str(bundles["int4"])})["out"] == node({**fw, "bundle": str(twin)})["out"]
    # the int8 bundle exported from the same checkpoint differs: the test is not vacuous
    c = node({"cmd": "sample", "bundle": str(bundles["int8"]), "opts": opts})["x"]
    assert c != a


def test_bad_packed_files_are_one_line_errors_in_both_verifiers(bundles, tmp_path):
    """Named damage to the packed buffers, through runtime_py/verify.py and web/bundle.js (node): both refuse in one
    line naming the tensor (None: both accept)."""
    from _fuzz_corpus import rehash
    from test_fuzz_bundles import check_named_corpus, edit
    name = "blocks.1.mlp.fc2.weight"

    def data(tensor, fn):
        def run(folder):
            raw = bytearray((folder / "weights.safetensors").read_bytes())
            (n,) = struct.unpack("<Q", raw[:8])
            a, _ = json.loads(raw[8:8 + n])[tensor]["data_offsets"]
            fn(raw, 8 + n + a)
            (folder / "weights.safetensors").write_bytes(bytes(raw))
            rehash(folder, "weights.safetensors")
        return run

    def header(fn):
        def run(folder):
            raw = (folder / "weights.safetensors").read_bytes()
            (n,) = struct.unpack("<Q", raw[:8])
            h = json.loads(raw[8:8 + n])
            fn(h)
            text = json.dumps(h, separators=(",", ":")).encode()
            text += b" " * (-(8 + len(text)) % 8)
            (folder / "weights.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
            rehash(folder, "weights.safetensors")
        return run

    def set_byte(i, v):
        return lambda raw, at: raw.__setitem__(at + i, v)
    corpus = {
        "untouched": (lambda f: None, None),
        "a nibble of -8": (data(name, set_byte(129, 0x8F)), f"tensor {name}: value -8 at row 1, column 3"),
        "a step of 0": (data(steps_tensor(name), set_byte(9, 0)), f"tensor {name}.k: step 0 at row 1, group 1"),
        "a step of 19": (data(steps_tensor(name), set_byte(0, 19)), "step 19 at row 0, group 0 is outside 1..18"),
        "steps missing": (header(lambda h: h.__setitem__(name + ".x", h.pop(steps_tensor(name)))),
                          steps_tensor(name)),
        "steps as I8": (header(lambda h: h[steps_tensor(name)].update(dtype="I8")), "(q4k) needs U8"),
        "nibbles of another shape": (header(lambda h: h[name].update(shape=[128, 64])), "(q4k) needs U8"),
        "K not a multiple of 32": (edit(lambda m: m["buffers"][name].update(shape=[1024, 16])),
                                   "K a multiple of 32"),
        "bytes not N K": (edit(lambda m: m["buffers"][name].update(bytes=64 * 256 + 4)), "q4k encodes an i8 [N, K]"),
        "encoding on an f16 buffer": (edit(lambda m: m["buffers"]["pos_embed"].update(encoding="q4k")), "q4k encodes"),
        "encoding dropped": (edit(lambda m: m["buffers"][name].pop("encoding")), "is U8"),
        "unknown encoding": (edit(lambda m: m["buffers"][name].update(encoding="q3k")), "is not one of q4k"),
        "dtype int5": (edit(lambda m: m.update(dtype="int5")), "is not one of f32, f16, int8, int4"),
    }
    check_named_corpus(bundles["int4"], tmp_path, corpus)
