"""Broken checkpoints: every `ditweb sample | export | train --resume` of a truncated, pickled,
wrong-shape or otherwise damaged file is one line naming the file, never a traceback; and a
hypothesis fuzz (fixed seed) of the safetensors header, its metadata config and the bytes of both
checkpoint formats through load_model."""
from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dit_model.checkpoint import CheckpointError, atomic_save, load_model, save_weights
from dit_model.model import DiT, DiTConfig, preset_config
from ditweb.cli import main

CFG = preset_config("Favicon-N/2")


class Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    model = DiT(CFG).eval()
    good_pt, good_st = d / "good.pt", d / "good.safetensors"
    atomic_save({"model": model.state_dict(), "config": CFG.to_dict(), "class_names": ["a", "b", "c"]}, good_pt)
    save_weights(model, good_st, ["a", "b", "c"], 1)
    out = {"good.pt": good_pt, "good.safetensors": good_st}
    raw_pt, raw_st = good_pt.read_bytes(), good_st.read_bytes()
    broken = {
        "truncated.pt": raw_pt[: len(raw_pt) // 2],
        "truncated.safetensors": raw_st[: len(raw_st) // 2],
        "empty.pt": b"",
        "pickled.pt": pickle.dumps({"model": Evil()}),
        "text.safetensors": b"not a safetensors file at all",
    }
    for name, raw in broken.items():
        (d / name).write_bytes(raw)
        out[name] = d / name
    other = DiT(DiTConfig(**{**CFG.to_dict(), "hidden_size": 48, "num_heads": 2})).state_dict()
    torch.save({"model": other, "config": CFG.to_dict()}, d / "wrong-shape.pt")        # config says 32 wide
    torch.save({"model": {"x": torch.zeros(3)}, "config": {**CFG.to_dict(), "hidden_size": 10 ** 9}}, d / "huge.pt")
    torch.save({"model": model.state_dict(), "config": {**CFG.to_dict(), "depth": "two"}}, d / "bad-config.pt")
    big = {**CFG.to_dict(), "hidden_size": 16384, "num_heads": 64, "depth": 256, "input_size": 1024, "patch_size": 1}
    torch.save({"model": model.state_dict(), "config": big}, d / "big-config.pt")      # in range, but not this file
    torch.save([1, 2, 3], d / "list.pt")
    for name in ("wrong-shape.pt", "huge.pt", "bad-config.pt", "big-config.pt", "list.pt"):
        out[name] = d / name
    return out


BROKEN = ["truncated.pt", "truncated.safetensors", "empty.pt", "pickled.pt", "text.safetensors", "wrong-shape.pt",
          "huge.pt", "bad-config.pt", "big-config.pt", "list.pt"]


@pytest.mark.parametrize("name", BROKEN)
def test_broken_checkpoint_is_one_line_for_every_verb(files, name, tmp_path, capsys):
    path = files[name]
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt.pt").write_bytes(path.read_bytes())
    for argv in (["sample", str(path), "--n", "1", "--steps", "2", "--out", str(tmp_path / "s")],
                 ["export", str(path), str(tmp_path / "b")],
                 ["train", "--resume", str(run)]):
        assert main(argv) == 2, (name, argv)
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if "error:" in l]
        assert "Traceback" not in err and len(lines) == 1, (name, argv[0], err[-500:])
        assert "pickle code ran" not in err
        assert ("ckpt.pt" if argv[0] == "train" else name) in lines[0], (name, argv[0], lines[0])
    assert not (tmp_path / "s").exists() and not (tmp_path / "b").exists()


def test_the_good_ones_load(files):
    for name in ("good.pt", "good.safetensors"):
        model, meta = load_model(files[name])
        assert meta["config"] == CFG


json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40), st.floats(allow_nan=False),
                                    st.text(max_size=8)),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                          max_leaves=5)


def test_fuzzed_checkpoints_fail_with_checkpoint_errors(files, tmp_path):
    raw_st, raw_pt = files["good.safetensors"].read_bytes(), files["good.pt"].read_bytes()
    (n,) = struct.unpack("<Q", raw_st[:8])
    header, body = json.loads(raw_st[8:8 + n]), raw_st[8 + n:]
    names = sorted(k for k in header if k != "__metadata__")
    counter = iter(range(10 ** 9))
    outcomes = {"loaded": 0, "rejected": 0}

    @settings(max_examples=300, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        kind = data.draw(st.sampled_from(["config", "tensor", "offsets", "bytes-st", "bytes-pt"]))
        h = json.loads(json.dumps(header))
        if kind == "config":
            cfg = json.loads(h["__metadata__"]["config"])
            cfg[data.draw(st.sampled_from(sorted(cfg)))] = data.draw(json_value)
            h["__metadata__"]["config"] = json.dumps(cfg)
        elif kind == "tensor":
            t = h[data.draw(st.sampled_from(names))]
            t[data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = data.draw(json_value)
        elif kind == "offsets":
            t = h[data.draw(st.sampled_from(names))]
            i = data.draw(st.integers(0, 1))
            t["data_offsets"][i] += data.draw(st.sampled_from([-4, -2, 2, 4, 2 ** 32]))
        if kind == "bytes-pt":
            raw = bytearray(raw_pt)
        elif kind == "bytes-st":
            raw = bytearray(raw_st)
        else:
            text = json.dumps(h).encode()
            raw = bytearray(struct.pack("<Q", len(text)) + text + body)
        if kind.startswith("bytes"):
            i = data.draw(st.integers(0, len(raw) - 1))
            if data.draw(st.booleans()):
                raw = raw[:i]
            else:
                raw[i] ^= data.draw(st.integers(1, 255))
        path = tmp_path / f"c{next(counter)}{'.pt' if kind == 'bytes-pt' else '.safetensors'}"
        path.write_bytes(bytes(raw))
        try:
            load_model(path)
            outcomes["loaded"] += 1
        except CheckpointError as e:
            assert "\n" not in str(e) and path.name in str(e)
            outcomes["rejected"] += 1
        # anything else propagates: a traceback is a failure

    one()
    print(f"fuzzed checkpoints: {outcomes}")
    assert outcomes["rejected"] >= 100
