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


# ------------------------------------------------------------------ issue 24: NaN, views, budgets, metadata types

def _families(d, model) -> dict:
    """name -> (path, the words the one-line error must hold): >= 150 broken checkpoints in families."""
    sd = model.state_dict()
    names = sorted(sd)
    out = {}

    def save(name, obj, want):
        p = d / name
        torch.save(obj, p)
        out[name] = (p, want)

    # non-finite weights, in both formats: the line names the tensor
    for i, k in enumerate(names):
        for bad in (float("nan"), float("inf"), float("-inf")):
            w = {n: v.clone() for n, v in sd.items()}
            w[k].view(-1)[w[k].numel() // 2] = bad
            m = DiT(CFG)
            m.load_state_dict(w)
            tag = {1: "nan", 0: "inf"}[int(bad != bad)] + ("-neg" if bad == float("-inf") else "")
            if i % 4 == 0:
                p = d / f"nonfinite-{tag}-{k}.safetensors"
                save_weights(m, p, ["a", "b", "c"], 1)
                out[p.name] = (p, k)
            else:
                save(f"nonfinite-{tag}-{k}.pt", {"ema": w, "config": CFG.to_dict()}, k)
    # views that do not own their storage: stride 0, overlapping rows, two tensors over the same bytes
    for i, k in enumerate(names):
        shape = sd[k].shape
        w = dict(sd)
        if i % 3 == 0:
            w[k] = torch.zeros(1).expand(shape) if len(shape) else torch.zeros(())
            if not len(shape) or sd[k].numel() < 2:
                continue
        elif i % 3 == 1:
            if sd[k].numel() < 4 or len(shape) < 2:
                continue
            base = torch.randn(sd[k].numel())
            w[k] = base.as_strided(shape, (1,) * len(shape))             # rows overlap
        else:
            if sd[k].numel() < 2:
                continue
            base = torch.randn(sd[k].numel() + 1)
            w[k] = base[: sd[k].numel()].view(shape)
            other = next(n for n in names if n != k and sd[n].numel() <= sd[k].numel() and sd[n].numel() > 1)
            w[other] = base[1: 1 + sd[other].numel()].view(sd[other].shape)  # the same bytes, shifted by one
        save(f"view-{i}-{k}.pt", {"ema": w, "config": CFG.to_dict()}, "own")
    # metadata of the wrong type: class_names, vocabulary, in both formats
    for j, bad in enumerate(["abc", [1, 2, 3], [None, "b", "c"], {"a": 1}, 5, ["a\nb", "c", "d"], [["a"], "b", "c"],
                             [1.5, 2.5, 3.5], "a,b,c", [True, False, True]]):
        save(f"names-{j}.pt", {"ema": sd, "config": CFG.to_dict(), "class_names": bad}, "class_names")
        p = d / f"names-{j}.safetensors"
        save_weights(model, p, ["a", "b", "c"], 1)
        raw = p.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        h = json.loads(raw[8:8 + n])
        h["__metadata__"]["class_names"] = json.dumps(bad)
        text = json.dumps(h).encode()
        p.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
        out[p.name] = (p, "class_names")
    for j, bad in enumerate([5, ["x"], {"levels": []}, 1.5]):
        save(f"vocab-{j}.pt", {"ema": sd, "config": CFG.to_dict(), "vocabulary": bad}, "vocabulary")
    # pickles that name code: our own words, never torch's advice
    for j, (mod, fn) in enumerate([("os", "system"), ("builtins", "eval"), ("subprocess", "Popen"), ("builtins", "exec"),
                                   ("posix", "system"), ("shutil", "rmtree")]):
        raw = b"\x80\x02c" + f"{mod}\n{fn}\n".encode() + b"X\x04\x00\x00\x00echo\x85R."
        p = d / f"pickle-{j}.pt"
        p.write_bytes(raw)
        out[p.name] = (p, "nothing in the file was run")
        with __import__("zipfile").ZipFile(d / f"pickle-zip-{j}.pt", "w") as z:   # torch's zip layout
            z.writestr(f"pickle-zip-{j}/data.pkl", raw)
            z.writestr(f"pickle-zip-{j}/version", "3\n")
        out[f"pickle-zip-{j}.pt"] = (d / f"pickle-zip-{j}.pt", "nothing in the file was run")
    return out


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    d = tmp_path_factory.mktemp("families")
    torch.manual_seed(1)
    return _families(d, DiT(CFG).eval())


def test_broken_checkpoint_families_are_one_line_checkpoint_errors(families, capsys):
    """>= 150 broken checkpoints (non-finite weights, views, wrong metadata types, code-naming pickles): every one a
    one-line CheckpointError holding the expected words, and the pickle message never advises weights_only=False."""
    counts = {}
    for name, (path, want) in families.items():
        with pytest.raises(CheckpointError) as e:
            load_model(path)
        msg = str(e.value)
        assert "\n" not in msg and path.name in msg and want in msg, (name, msg)
        assert "weights_only" not in msg and "pickle code ran" not in capsys.readouterr().out
        fam = name.split("-")[0]
        counts[fam] = counts.get(fam, 0) + 1
    print(f"broken checkpoints by family: {counts}")
    assert sum(counts.values()) >= 150 and len(counts) == 5, counts


@pytest.mark.parametrize("name", ["nonfinite-nan-blocks.0.attn.qkv.weight.pt", "view-0-blocks.0.adaLN_modulation.1.bias.pt",
                                  "names-1.pt", "pickle-zip-0.pt"])
def test_broken_families_through_every_verb(families, name, tmp_path, capsys):
    path, want = families[name]
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt.pt").write_bytes(path.read_bytes())
    for argv in (["sample", str(path), "--n", "1", "--steps", "2", "--out", str(tmp_path / "s")],
                 ["export", str(path), str(tmp_path / "b")], ["train", "--resume", str(run)]):
        assert main(argv) == 2, (name, argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err and len([l for l in err.splitlines() if "error:" in l]) == 1, err[-400:]
    assert not (tmp_path / "s").exists() and not (tmp_path / "b").exists()


def test_stride0_views_of_a_huge_config_allocate_nothing(tmp_path):
    """A ~10 kB file of stride-0 views in the shapes of a 675M-parameter DiT-XL/2: refused from strides alone."""
    import resource
    from dit_model.model import build_meta
    cfg = preset_config("DiT-XL/2", input_size=32, num_classes=1000)
    one = torch.zeros(1)
    sd = {k: one.expand(v.shape) if v.dim() else torch.zeros(()) for k, v in build_meta(cfg).state_dict().items()}
    path = tmp_path / "xl-views.pt"
    torch.save({"ema": sd, "config": cfg.to_dict()}, path)
    assert path.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="does not own its storage"):
        load_model(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300_000   # kB: nothing near 2.7 GB


def test_the_memory_budget_is_checked_before_allocating(files, monkeypatch):
    monkeypatch.setenv("DITWEB_MEMORY_BUDGET", "64K")
    with pytest.raises(CheckpointError, match=r"parameters \(.* GiB of float32 weights\), over the memory budget of "
                                              r"0\.00 GiB") as e:
        load_model(files["good.pt"])
    assert "DITWEB_MEMORY_BUDGET" in str(e.value)
    monkeypatch.setenv("DITWEB_MEMORY_BUDGET", "1G")
    load_model(files["good.pt"])


def test_train_stops_on_a_non_finite_loss_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """A loss that turns NaN: non-zero exit, one line naming the step, ckpt.pt still the last good (finite) one."""
    from _train_helpers import make_png_folder
    from dit_model.trainer import Trainer
    data = make_png_folder(tmp_path / "data")
    run = tmp_path / "run"
    base = ["train", "Favicon-N/2", "--data", str(data), "--run-dir", str(run), "--batch-size", "4", "--sample-every", "0",
            "--ckpt-every", "2", "--log-every", "1"]
    real = Trainer.train_step

    def poisoned(self, *a):
        terms = real(self, *a)
        if self.step >= 3:                                  # the 3rd step's update made the weights NaN
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
            terms = {k: v * float("nan") for k, v in terms.items()}
        return terms
    monkeypatch.setattr(Trainer, "train_step", poisoned)
    assert main(base + ["--max-steps", "6"]) == 2
    err = capsys.readouterr().err
    line = [l for l in err.splitlines() if "error:" in l]
    assert len(line) == 1 and "Traceback" not in err, err[-600:]
    assert "non-finite" in line[0] and "step 3" in line[0] and "keeps step 2, the last good checkpoint" in line[0]
    saved = torch.load(run / "ckpt.pt", weights_only=True)
    assert saved["step"] == 2 and all(torch.isfinite(v).all() for v in saved["model"].values())
    # a resume onto NaN weights is refused
    monkeypatch.setattr(Trainer, "train_step", real)
    for v in saved["model"].values():
        v.fill_(float("nan"))
    torch.save(saved, run / "ckpt.pt")
    assert main(["train", "--resume", str(run), "--max-steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "non-finite weights" in err and "refusing to resume" in err and "Traceback" not in err


def test_sampling_names_the_step_and_the_runtime_when_it_turns_non_finite():
    from dit_model.sample import sample_images
    from ditformat.errors import NonFiniteError
    torch.manual_seed(0)
    model = DiT(CFG).eval()
    calls = {"n": 0}

    def overflowing(x, t, y):
        calls["n"] += 1
        out = model(x, t, y)
        return out * (float("inf") if calls["n"] >= 3 else 1.0)
    with pytest.raises(NonFiniteError, match=r"sampling \(torch runtime\): the latents became non-finite .* at step 3 of 5"):
        sample_images(overflowing, in_channels=CFG.in_channels, input_size=CFG.input_size, num_classes=CFG.num_classes,
                      class_ids=[0], steps=5)
