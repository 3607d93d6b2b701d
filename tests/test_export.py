"""The exporter: bundle layout, safetensors alignment, hashes, checkpoint formats, ONNX parity."""
from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import torch

from _gpu_helpers import random_model, small_cfg
from dit_model.checkpoint import atomic_save
from ditformat import FORMAT_VERSION
from ditweb.cli import main
from dit_model.model import DiTConfig, preset_config
from export.bundle import export_bundle
from runtime_py.verify import read_safetensors_header, verify_bundle
from wgsl.ops import OPS


def test_bundle_layout_and_hashes(tmp_path):
    model = random_model(small_cfg("cross-attn"))
    out = export_bundle(model, tmp_path / "b", "f32", [f"c{i}" for i in range(5)])
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "ditweb-bundle" and m["format_version"] == FORMAT_VERSION and m["class_names"][4] == "c4"
    for rel, info in m["files"].items():                    # every file hashed, nothing unlisted
        raw = (out / rel).read_bytes()
        assert len(raw) == info["size"] and hashlib.sha256(raw).hexdigest() == info["sha256"]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == set(m["files"])
    for k in m["kernels"].values():                         # rendered WGSL: no Jinja left
        text = (out / k["file"]).read_text()
        assert "{{" not in text and "{%" not in text and "fn main" in text
        assert k["op"] in OPS
    used = {d["kernel"] for prog in m["programs"].values() for d in prog}
    offered = {c for names in m["candidates"].values() for c in names}
    assert used | offered == set(m["kernels"])              # every kernel runs in a program or may replace one
    assert set(m["candidates"]) <= used
    assert {m["kernels"][c]["op"] for c in offered} == {"matmul", "matmul_8x4", "matmul_8x8", "matmul_shared", "matmul_shared64",
                                                         "layernorm_mod", "layernorm_rows", "attention", "attention_direct",
                                                         "attention_q4"}
    assert "sampler_tables" not in m and m["sampler"]["schedule"] == "linear"
    assert "\n" not in (out / "manifest.json").read_text()       # compact JSON
    assert verify_bundle(out)["model"] == model.cfg.to_dict()
    # no stale temporary folders, and re-export replaces atomically
    export_bundle(model, out, "f16")
    assert json.loads((out / "manifest.json").read_text())["dtype"] == "f16"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    bare = json.loads((export_bundle(model, tmp_path / "b", "f32", candidates=False) / "manifest.json").read_text())
    assert bare["candidates"] == {} and set(bare["kernels"]) == used


def test_safetensors_is_standard_and_4_byte_aligned(tmp_path):
    """p = 1, C = 1, no learned sigma: the final bias has 1 element, so an f16 tensor has odd length."""
    from safetensors.numpy import load_file
    cfg = DiTConfig(input_size=4, patch_size=1, in_channels=1, hidden_size=16, depth=1, num_heads=2, num_classes=2,
                    learn_sigma=False)
    model = random_model(cfg)
    out = export_bundle(model, tmp_path / "b", "f16")
    header, start = read_safetensors_header(out / "weights.safetensors")
    assert start % 8 == 0
    for name, info in header.items():
        if name != "__metadata__" and not name.startswith("_ditweb.pad."):
            assert (start + info["data_offsets"][0]) % 4 == 0, name
    assert any(n.startswith("_ditweb.pad.") for n in header)
    loaded = load_file(str(out / "weights.safetensors"))     # the reference reader accepts it
    for k, v in model.state_dict().items():
        assert loaded[k].dtype == np.float16
        np.testing.assert_array_equal(loaded[k], v.numpy().astype(np.float16))
    (n,) = struct.unpack("<Q", (out / "weights.safetensors").read_bytes()[:8])
    assert n == start - 8


@pytest.mark.parametrize("layout", ["ours", "reference", "bare", "safetensors"])
def test_export_cli_reads_checkpoint_layouts(tmp_path, layout):
    cfg = preset_config("Favicon-N/2")
    model = random_model(cfg, seed=1)
    sd = model.state_dict()
    path = tmp_path / ("m.safetensors" if layout == "safetensors" else "m.pt")
    if layout == "ours":
        atomic_save({"model": sd, "config": cfg.to_dict(), "class_names": ["x", "y", "z"]}, path)
    elif layout == "reference":
        atomic_save({"model": sd, "ema": sd, "args": None}, path)
    elif layout == "bare":
        atomic_save(sd, path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    assert main(["export", str(path), str(tmp_path / "b"), "--dtype", "f16"]) == 0
    m = verify_bundle(tmp_path / "b")
    assert DiTConfig.from_dict(m["model"]) == cfg
    assert m["class_names"] == (["x", "y", "z"] if layout == "ours" else ["0", "1", "2"])


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    cfg = DiTConfig(input_size=8, patch_size=2, hidden_size=48, depth=3, num_heads=3, num_classes=2)
    atomic_save(random_model(cfg).state_dict(), tmp_path / "odd.pt")
    assert main(["export", str(tmp_path / "odd.pt"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert "matches no preset" in err and "depth 3, hidden 48" in err and err.count("\n") == 0
    assert main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b").exists()
    # never replace a folder that is not a bundle
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    assert main(["export", "Favicon-N/2", str(tmp_path / "docs")]) == 2
    assert "not a bundle" in capsys.readouterr().err and (tmp_path / "docs" / "notes.txt").read_text() == "mine"


def test_shards_and_int8_export(tmp_path, capsys):
    """ditformat/shards.py: shards in file order (f32 first), each at most the bound unless one tensor is larger;
    --shard-mb below 1 refused; int8 stores every Linear as I8 (N, K) + f32 scale and bias, the label table as I8
    (rows, D) + an f32 scale per row, and a Linear with K % 4 != 0 is refused in one line."""
    from ditformat.shards import plan_shards
    t = {"a": np.zeros(300, np.float16), "b": np.zeros(10, np.float32), "c": np.zeros(2000, np.float16),
         "d": np.zeros(100, np.float16)}
    assert plan_shards(t, 1024) == [["b", "a"], ["c"], ["d"]]          # c (4000 bytes) alone, larger than the bound
    model = random_model(small_cfg(), seed=2)
    out = export_bundle(model, tmp_path / "b", "f16", shard_bytes=8192)
    m = json.loads((out / "manifest.json").read_text())
    for f in (f for f in m["files"] if f.startswith("weights-")):
        header, start = read_safetensors_header(out / f)
        big = max(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")
        assert m["files"][f]["size"] - start <= max(8192, big + 2)
    assert verify_bundle(out)
    assert main(["export", "Favicon-N/2", str(tmp_path / "c"), "--shard-mb", "0.5"]) == 2
    assert "below 1 MiB" in capsys.readouterr().err
    q = export_bundle(model, tmp_path / "q", "int8")
    m = json.loads((q / "manifest.json").read_text())
    qkv = m["buffers"]["blocks.0.attn.qkv.weight"]
    assert qkv["dtype"] == "i8" and qkv["shape"] == [3 * 64, 64] and qkv["bytes"] == 3 * 64 * 64
    assert m["buffers"]["blocks.0.attn.qkv.scale"]["dtype"] == m["buffers"]["blocks.0.attn.qkv.bias"]["dtype"] == "f32"
    assert m["buffers"]["x_embedder.proj.weight"]["shape"] == [64, 4 * 2 * 2]
    table, rows = m["buffers"]["y_embedder.embedding_table.weight"], model.cfg.num_classes + 1
    assert table["dtype"] == "i8" and table["shape"] == [rows, 64] and table["bytes"] == rows * 64   # int8 too, per row
    assert m["buffers"]["y_embedder.embedding_table.scale"]["dtype"] == "f32"
    assert m["buffers"]["y_embedder.embedding_table.scale"]["shape"] == [rows]
    assert m["buffers"]["pos_embed"]["dtype"] == "f16"                                             # the rest f16
    cfg = DiTConfig(input_size=4, patch_size=1, in_channels=3, hidden_size=16, depth=1, num_heads=2, num_classes=2,
                    learn_sigma=False)
    atomic_save({"model": random_model(cfg).state_dict(), "config": cfg.to_dict()}, tmp_path / "k3.pt")
    assert main(["export", str(tmp_path / "k3.pt"), str(tmp_path / "k3"), "--dtype", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "K % 4 == 0" in err and err.count("\n") == 0


def test_onnx_parity(tmp_path):
    import onnxruntime as ort
    model = random_model(small_cfg("adaln-zero"), seed=4)
    out = export_bundle(model, tmp_path / "b", "f32", onnx=True)
    assert "model.onnx" not in json.loads((out / "manifest.json").read_text())["files"]   # no runtime reads it
    verify_bundle(out)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for B in (1, 3):                                          # dynamic batch axis
        g = torch.Generator().manual_seed(B)
        x = torch.randn(B, 4, 8, 8, generator=g)
        t = torch.randint(0, 1000, (B,), generator=g)
        y = torch.randint(0, 6, (B,), generator=g)
        got = sess.run(None, {"x": x.numpy(), "t": t.numpy(), "y": y.numpy()})[0]
        with torch.no_grad():
            want = random_model(small_cfg("adaln-zero"), seed=4).double()(x.double(), t, y).numpy()
        assert want.std() > 0.1
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_export_refuses_diffusers_numerics(tmp_path):
    """The kernels bake the reference timestep frequencies and LayerNorm eps: a converted diffusers DiT is refused."""
    import pytest
    from dit_model.model import DiT, DiTConfig
    from export.bundle import ExportError, export_bundle
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=3,
                    freq_shift=1.0)
    with pytest.raises(ExportError, match="freq_shift 1"):
        export_bundle(DiT(cfg), tmp_path / "b")
    assert not (tmp_path / "b").exists()
