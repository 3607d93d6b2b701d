"""Training: per-sample randomness, overfitting, checkpoints, exact resume, DDP, bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _train_helpers import make_png_folder
from dit_model import bench as DB
from dit_model import precision as PR
from dit_model import randomness as R
from dit_model import train as T
from dit_model import trainer as TR
from ditweb.cli import main
from dit_model.model import DiTConfig

REPO = Path(__file__).resolve().parent.parent
FAST = ["--size", "16", "--batch-size", "8", "--sample-every", "0", "--log-every", "2"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_png_folder(tmp_path_factory.mktemp("data") / "pngs")


def train(folder, run_dir, *extra) -> int:
    return main(["train", "Favicon-N/2", "--data", str(folder), "--run-dir", str(run_dir), *FAST, *map(str, extra)])


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.startswith("ditweb train: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- randomness

def test_batches_do_not_depend_on_the_split(tiny_cfg):
    images = torch.randint(0, 256, (10, 8, 8, 4), dtype=torch.uint8)
    labels = torch.randint(0, 3, (10,))
    whole = R.make_batch(images, labels, tiny_cfg, 7, 3, 8, 0, 8, True, "cpu")
    parts = [R.make_batch(images, labels, tiny_cfg, 7, 3, 8, lo, hi, True, "cpu") for lo, hi in ((0, 3), (3, 8))]
    for a, b0, b1 in zip(whole, *parts):
        assert torch.equal(a, torch.cat([b0, b1]))
    other = R.make_batch(images, labels, tiny_cfg, 7, 4, 8, 0, 8, True, "cpu")
    assert not torch.equal(whole[3], other[3])                          # another step, other noise


def test_every_image_once_per_epoch():
    n, B = 10, 4
    idx = np.concatenate([R.batch_plan(0, s, B, 0, B, n, 0.1, True)[0] for s in range(5)])   # 20 samples = 2 epochs
    assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:]) == list(range(10))
    assert idx[:10].tolist() != idx[10:].tolist()                       # reshuffled each epoch
    _, t, drop, flip = R.batch_plan(0, 0, 20000, 0, 20000, n, 0.1, True)
    assert t.min() == 0 and t.max() == 999
    assert abs(drop.mean() - 0.1) < 0.01 and abs(flip.mean() - 0.5) < 0.02
    assert not R.batch_plan(0, 0, 100, 0, 100, n, 0.1, False)[3].any()  # --no-flip


def test_parse_duration():
    assert T.parse_duration("90m") == 5400 and T.parse_duration("1h30m") == 5400 and T.parse_duration("45") == 45
    with pytest.raises(ValueError):
        T.parse_duration("soon")


# ---------------------------------------------------------------- learning

def test_overfits_a_handful_of_images(tiny_cfg):
    """6 binary 8x8 images, 3 classes, 800 steps at lr 3e-3: the eps-MSE on a fixed evaluation
    set (all images, fixed t and noise) falls from ~1.0 to ~0.13 (measured); we assert >= 5x."""
    g = torch.Generator().manual_seed(0)
    images = (torch.randint(0, 2, (6, 8, 8, 4), generator=g) * 255).to(torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    tr = TR.Trainer(tiny_cfg, lr=3e-3, weight_decay=0.0, ema_decay=0.99, seed=0, device="cpu")
    k = torch.arange(96) % 6
    x0 = R.to_model(images)[k]
    _, _, t, eps = R.make_batch(images, labels, tiny_cfg, 123, 0, 96, 0, 96, False, "cpu")

    def eval_mse():
        with torch.no_grad():
            return tr.diffusion.training_losses(tr.model, x0, t, labels[k], eps)["mse"].mean().item()
    before = eval_mse()
    for step in range(800):
        tr.train_step(*R.make_batch(images, labels, tiny_cfg, 0, step, 24, 0, 24, False, "cpu"))
    after = eval_mse()
    print(f"overfit: eval MSE {before:.4f} -> {after:.4f} ({before / after:.1f}x)")
    assert before > 0.9 and before / after >= 5.0


# ---------------------------------------------------------------- checkpoints and resume

def test_checkpoint_is_plain_and_samples_are_written(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(folder, run, "--max-steps", 3, "--sample-every", 3, "--sample-steps", 2, "--sample-per-class", 2) == 0
    ck = load(run / "ckpt.pt")                                          # weights_only=True
    assert set(ck) == {"model", "ema", "opt", "step", "config", "class_names", "train_args", "card"}
    assert ck["step"] == 3 and ck["class_names"] == ["cats", "dogs", "fish"]
    cfg = DiTConfig.from_dict(ck["config"])
    assert (cfg.input_size, cfg.num_classes, cfg.hidden_size) == (16, 3, 32)
    assert ck["train_args"]["batch_size"] == 8 and ck["train_args"]["preset"] == "Favicon-N/2"
    assert (run / "samples" / "step_0000003.png").is_file()
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss") and [r.split(",")[0] for r in rows[1:]] == ["2", "3"]
    assert main(["sample", str(run / "ckpt.pt"), "--class", "dogs", "--n", "2", "--steps", "2", "--out", str(tmp_path / "s")]) == 0


def test_resume_is_bit_identical(folder, tmp_path):
    assert train(folder, tmp_path / "full", "--max-steps", 6) == 0
    assert train(folder, tmp_path / "cut", "--max-steps", 3) == 0
    assert main(["train", "--resume", str(tmp_path / "cut"), "--max-steps", "6"]) == 0
    a, b = load(tmp_path / "full" / "ckpt.pt"), load(tmp_path / "cut" / "ckpt.pt")
    assert b["step"] == 6
    for part in ("model", "ema"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    for i, s in a["opt"]["state"].items():
        for key in s:
            assert torch.equal(s[key], b["opt"]["state"][i][key]), (i, key)
    rows = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "3", "4", "6"]   # 3: the end of the first leg


def test_sigint_finishes_the_step_and_saves(folder, tmp_path):
    import signal
    import time
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "ditweb", "train", "Favicon-N/2", "--data", str(folder), "--run-dir", str(run),
           *FAST, "--log-every", "1"]                                   # no stopping rule: runs until told
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log, deadline = run / "log.csv", time.time() + 60
        while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 4):
            time.sleep(0.1)                                             # header + 3 steps logged
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "stopped (interrupted)" in err
    assert load(run / "ckpt.pt")["step"] >= 3


def test_resume_keeps_the_saved_options(tmp_path):
    from dit_model.checkpoint import atomic_save
    from ditweb.cli import build_parser
    saved = dict(T.DEFAULTS, skin_tones=True, subcategories=True, size=16, batch_size=4, lr=3e-4, max_steps=10)
    atomic_save({"model": {}, "ema": {}, "opt": {}, "step": 5, "config": {}, "class_names": [], "train_args": saved},
                tmp_path / "run" / "ckpt.pt")
    args = build_parser().parse_args(["train", "--resume", str(tmp_path / "run"), "--max-steps", "20"])
    opts, _, run_dir = T.resolve_args(args)
    assert run_dir == tmp_path / "run"
    assert opts == dict(saved, max_steps=20, run_dir=str(tmp_path / "run"))


# ---------------------------------------------------------------- data parallel

def test_two_processes_match_one(folder, tmp_path):
    assert train(folder, tmp_path / "one", "--max-steps", 4) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ditweb",
           "train", "Favicon-N/2", "--data", str(folder), "--run-dir", str(tmp_path / "two"), *FAST, "--max-steps", "4"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stderr
    a, b = load(tmp_path / "one" / "ckpt.pt"), load(tmp_path / "two" / "ckpt.pt")
    assert b["step"] == 4
    for part in ("model", "ema"):
        for name in a[part]:
            assert torch.allclose(a[part][name], b[part][name], rtol=1e-5, atol=1e-7), (part, name)


# ---------------------------------------------------------------- bad input

def test_missing_data_and_unknown_preset(tmp_path, capsys):
    assert main(["train", "Favicon-N/2", "--data", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "r")]) == 2
    assert "no such data folder" in one_error_line(capsys)
    assert main(["train", "Favicon-Q/3", "--run-dir", str(tmp_path / "r")]) == 2
    assert "unknown preset 'Favicon-Q/3'" in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_corrupt_and_incompatible_checkpoints(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(folder, run, "--max-steps", 2) == 0
    good = (run / "ckpt.pt").read_bytes()
    capsys.readouterr()
    assert train(folder, run, "--max-steps", 2) == 2                    # a fresh run never overwrites a checkpoint
    assert "--resume" in one_error_line(capsys)

    (run / "ckpt.pt").write_bytes(good[: len(good) // 2])               # truncated
    assert main(["train", "--resume", str(run)]) == 2
    assert "not a loadable checkpoint" in one_error_line(capsys)

    torch.save({"model": load_sd(good)}, run / "ckpt.pt")               # weights only, no optimiser
    assert main(["train", "--resume", str(run)]) == 2
    assert "not a training checkpoint" in one_error_line(capsys)

    (run / "ckpt.pt").write_bytes(good)
    other = make_png_folder(tmp_path / "other", classes=("a", "b", "c", "d"), per_class=(1, 1, 1, 1))
    assert main(["train", "--resume", str(run), "--data", str(other)]) == 2
    assert "incompatible" in one_error_line(capsys)
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "no checkpoint to resume" in one_error_line(capsys)
    assert (run / "ckpt.pt").read_bytes() == good


def load_sd(raw: bytes) -> dict:
    import io
    return torch.load(io.BytesIO(raw), weights_only=True)["model"]


def test_full_disk_keeps_the_last_good_checkpoint(folder, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *a, **k):
        calls.append(obj["step"])
        if len(calls) == 2:
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", save)
    assert train(folder, run, "--max-steps", 6, "--ckpt-every", 2) == 2
    line = one_error_line(capsys)
    assert "No space left on device" in line and "previous file is unchanged" in line
    assert calls == [2, 4] and load(run / "ckpt.pt")["step"] == 2
    assert sorted(p.name for p in run.iterdir()) == ["ckpt.pt", "log.csv", "samples"]   # no temporary left


# ---------------------------------------------------------------- precision

def test_auto_precision_by_capability(tmp_path):
    """auto decides from the detected capability (faked here), never from which machine runs the test."""
    t2, t4 = 0.54, 0.11                                                 # forward Gflops of Favicon-T/2, T/4
    amx = frozenset({"fpu", "avx512f", "amx_tile", "amx_bf16", "amx_int8", "avx512_bf16"})
    assert PR.auto_precision("cpu", t2, amx)[0] == "bf16"
    assert PR.auto_precision("cpu", t2, frozenset({"avx512f", "avx512_bf16"}))[0] == "bf16"   # no AMX, bf16 dot products
    assert PR.auto_precision("cpu", t2, frozenset({"avx2", "avx512f", "avx512_vnni"}))[0] == "f32"
    assert PR.auto_precision("cpu", t2, frozenset())[0] == "f32"        # flags unknown (not Linux)
    precision, why = PR.auto_precision("cpu", t4, amx)
    assert precision == "f32" and "too small" in why                    # bf16 does not pay for T/4
    assert PR.auto_precision("cuda", t4, frozenset(), cuda_bf16=True)[0] == "bf16"
    assert PR.auto_precision("cuda", t2, amx, cuda_bf16=False)[0] == "f32"
    assert PR.auto_precision("mps", t2, amx)[0] == "f32"
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16\nbogomips\t: 4000\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx512f amx_bf16\n")
    assert PR.cpu_flags(str(info)) == {"fpu", "sse2", "avx512f", "amx_bf16"}
    assert PR.cpu_flags(str(tmp_path / "none")) == frozenset()
    from dit_model.model import preset_config
    assert PR.resolve_precision("f32", "cpu", preset_config("Favicon-T/2")) == ("f32", "asked for")
    assert PR.resolve_precision("auto", "cpu", preset_config("Favicon-N/2"))[0] == "f32"   # too small anywhere
    with pytest.raises(ValueError, match="precision"):
        PR.resolve_precision("fp8", "cpu", preset_config("Favicon-N/2"))


def test_precision_is_recorded_and_old_bf16_flag_still_works(folder, tmp_path):
    from dit_model.checkpoint import atomic_save
    from ditweb.cli import build_parser
    assert train(folder, tmp_path / "a", "--max-steps", 2, "--precision", "bf16") == 0
    args = load(tmp_path / "a" / "ckpt.pt")["train_args"]
    assert args["precision"] == "bf16" and args["precision_used"] == "bf16"
    assert train(folder, tmp_path / "b", "--max-steps", 1) == 0        # auto: Favicon-N/2 is too small for bf16
    args = load(tmp_path / "b" / "ckpt.pt")["train_args"]
    assert args["precision"] == "auto" and args["precision_used"] == "f32"
    parsed = build_parser().parse_args(["train", "--bf16"])             # the old flag is an alias
    assert parsed.precision == "bf16"
    old = {k: v for k, v in T.DEFAULTS.items() if k != "precision"}
    atomic_save({"model": {}, "ema": {}, "opt": {}, "step": 5, "config": {}, "class_names": [],
                 "train_args": dict(old, bf16=True)}, tmp_path / "old" / "ckpt.pt")
    opts, _, _ = T.resolve_args(build_parser().parse_args(["train", "--resume", str(tmp_path / "old")]))
    assert opts["precision"] == "bf16"                                 # a run from before --precision keeps its choice
    atomic_save({"model": {}, "ema": {}, "opt": {}, "step": 5, "config": {}, "class_names": [],
                 "train_args": dict(T.DEFAULTS, time_limit="24m", lr=3e-4)}, tmp_path / "timed" / "ckpt.pt")
    opts, _, _ = T.resolve_args(build_parser().parse_args(["train", "--resume", str(tmp_path / "timed")]))
    assert opts["time_limit"] is None and opts["lr"] == 3e-4            # a sitting's time limit is not the run's


# ---------------------------------------------------------------- the torch twin of the noise

def _bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def test_torch_noise_twin_is_bit_identical():
    """noise.normal_torch repeats noise.normal op by op. The float part is a function of k and j
    alone (24 bits each), so checking every k and every j covers every possible input."""
    from dit_model import noise as N
    step = 1 << 22
    for lo in range(0, 1 << 24, step):                                  # every k in [1, 2^24], every j in [0, 2^24)
        k = np.arange(lo + 1, lo + step + 1, dtype=np.uint32)
        a = N._ln_u24(k)
        tk = torch.from_numpy(k.astype(np.int64))
        assert np.array_equal(_bits(a), _bits(N._ln_u24_torch(tk).numpy()))
        r = N._sqrt(np.float32(-2.0) * a)
        assert np.array_equal(_bits(r), _bits(N._sqrt_torch(-2.0 * torch.from_numpy(a)).numpy()))
        j = k - np.uint32(1)
        assert np.array_equal(_bits(N._cos_2pi_u24(j)), _bits(N._cos_2pi_u24_torch(tk - 1).numpy()))
    g = np.random.default_rng(0)
    words = [g.integers(0, 2 ** 32, 100_000, dtype=np.uint64).astype(np.uint32) for _ in range(4)]
    words[0][:4] = [0, 1, 2 ** 32 - 1, 2 ** 31]
    want = N.pcg4d(*words)
    got = N.pcg4d_torch(*(torch.from_numpy(w.astype(np.int64)) for w in words))
    for w, t in zip(want, got):
        assert np.array_equal(w, t.numpy().astype(np.uint32))
    for seed, stream, step_, start, count in [(0, 12, 0, 0, 5000), (2 ** 32 - 1, 12, 2 ** 31 + 5, 2 ** 32 - 100, 300)]:
        assert np.array_equal(_bits(N.normal(seed, stream, step_, count, start)),
                              _bits(N.normal_torch(seed, stream, step_, count, start).numpy()))
    assert R.device_noise_ok("cpu")


def test_make_batch_with_the_data_on_the_device(tiny_cfg, monkeypatch):
    """A GPU run keeps images and labels on the device and draws the noise there (the torch twin);
    here the same path runs on the CPU: the same batch as the host path, bit for bit."""
    images = torch.randint(0, 256, (10, 8, 8, 4), dtype=torch.uint8)
    labels = torch.randint(0, 3, (10,))
    host = R.make_batch(images, labels, tiny_cfg, 7, 3, 8, 2, 8, True, "cpu")
    monkeypatch.setattr(R, "normal", lambda *a, **k: pytest.fail("the device path must not use numpy noise"))
    twin = lambda seed, step, start, count, device: R.normal_torch(seed, R.STREAM_NOISE, step, count, start, device)
    monkeypatch.setattr(R, "batch_noise", twin)
    device = R.make_batch(images, labels, tiny_cfg, 7, 3, 8, 2, 8, True, "cpu")
    for a, b in zip(host, device):
        assert a.dtype == b.dtype and torch.equal(a, b)


# ---------------------------------------------------------------- small result files

def test_export_weights_in_small_files(folder, tmp_path):
    from dit_model.checkpoint import load_model
    run = tmp_path / "run"
    assert train(folder, run, "--max-steps", 2) == 0
    paths = TR.export_weights(run, tmp_path / "f32")
    assert [p.name for p in paths] == ["ema.safetensors", "model.safetensors"]
    ck = load(run / "ckpt.pt")
    model, meta = load_model(paths[0])
    assert meta["step"] == 2 and meta["class_names"] == ["cats", "dogs", "fish"]
    for name, v in model.state_dict().items():
        assert torch.equal(v, ck["ema"][name]), name                    # float32 fits: exact
    tiny = sum(v.numel() for v in ck["ema"].values()) * 3 / 2 ** 20 + 1 / 16   # room for bf16, not for f32
    paths = TR.export_weights(run, tmp_path / "bf16", max_mib=tiny)
    assert all(p.stat().st_size <= tiny * 2 ** 20 for p in paths)
    model, _ = load_model(paths[0])
    for name, v in model.state_dict().items():
        want = ck["ema"][name] if name == "pos_embed" else ck["ema"][name].to(torch.bfloat16).float()
        assert torch.equal(v, want), name                               # bf16 weights, the fixed table exact
    assert main(["sample", str(paths[0]), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s")]) == 0
    assert train(folder, tmp_path / "warm", "--max-steps", 1, "--init", paths[0]) == 0
    with pytest.raises(ValueError, match="exceed"):
        TR.export_weights(run, tmp_path / "none", max_mib=0.01)


def test_warm_start_onto_a_finer_label_set(folder, tmp_path, capsys):
    """--init from a 3-class model onto 4 classes: each label embedding from the class of the same name, else its
    parent's, else the mean of the old classes; the null label and every other weight as saved."""
    from dit_model.checkpoint import load_model
    run = tmp_path / "run"
    assert train(folder, run, "--max-steps", 2) == 0
    path = TR.export_weights(run, tmp_path / "w")[0]
    old, meta = load_model(path)
    cfg = DiTConfig.from_dict({**meta["config"].to_dict(), "num_classes": 4})
    tr = TR.Trainer(cfg, lr=1e-4, weight_decay=0.0, ema_decay=0.9, seed=0, device=torch.device("cpu"))
    note = tr.warm_start(path, ["dogs", "kitten", "tabby", "eel"], {"kitten": "cats", "tabby": "cats", "eel": "shark"})
    assert "4 classes from its 3" in note and "same name (1), the parent class (2), the mean (1)" in note
    t_old = old.y_embedder.embedding_table.weight.detach()
    for m in (tr.model, tr.ema):
        t = m.y_embedder.embedding_table.weight.detach()
        assert t.shape == (5, t_old.shape[1])
        for new, src in ((0, t_old[1]), (1, t_old[0]), (2, t_old[0]), (3, t_old[:3].mean(0)), (4, t_old[3])):
            assert torch.allclose(t[new], src), new
        assert torch.equal(m.final_layer.linear.weight, old.final_layer.linear.weight)
    cfg5 = DiTConfig.from_dict({**meta["config"].to_dict(), "num_classes": 4, "depth": 1})
    with pytest.raises(T.CheckpointError, match="depth"):
        TR.Trainer(cfg5, lr=1e-4, weight_decay=0.0, ema_decay=0.9, seed=0, device=torch.device("cpu")).warm_start(path)


def test_bench_train_quick_has_the_precision_columns():
    import argparse
    title, header, rows, notes = DB.bench_train(argparse.Namespace(quick=True, preset="Favicon-N/2"))
    assert header[4:7] == ["f32 img/s", "bf16 img/s", "bf16 + compile img/s"]
    assert len(rows) == 1 and rows[0][0] == "Favicon-N/2" and rows[0][6] == "-"   # --quick: no compiling
    assert float(rows[0][4]) > 0 and float(rows[0][5]) > 0 and rows[0][8] == "f32"
    assert "load average" in notes and "CPU time" in notes
