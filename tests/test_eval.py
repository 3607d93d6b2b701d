"""`ditweb eval`: the Frechet distance, the class-balanced reference and its floor, the committed
judge, near copies, --weights and --json."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize
from dit_model import evaluate as ev
from dit_model.checkpoint import atomic_save, save_weights
try:
    from ditweb.cli import main
except ImportError:                                      # before the console script moved to ditweb/
    from dit_model.cli import main
from dit_model.data import TWEMOJI
from dit_model.model import DiT, DiTConfig


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (200000, 3))
    b = rng.normal([1, 0, 0], [1, 2, 3], (200000, 3))
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = 1 + 0 + 1 + 4
    assert ev.frechet_distance(a, b) == pytest.approx(6.0, rel=0.02)
    assert ev.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_nearest_rmse_finds_copies_and_flips_and_can_leave_one_out():
    train = torch.rand(5, 4, 8, 8) * 2 - 1
    samples = torch.stack([train[2], train[4].flip(2), torch.zeros(4, 8, 8)])
    d = ev.nearest_rmse(samples, train)
    assert d[0] == pytest.approx(0, abs=1e-6) and d[1] == pytest.approx(0, abs=1e-6) and d[2] > 0.1
    train[3] = train[1].flip(2)                          # a real image whose mirror image is also in the set
    loo = ev.nearest_rmse(train, train, skip=np.arange(5))
    assert loo[1] == pytest.approx(0, abs=1e-6) and loo[3] == pytest.approx(0, abs=1e-6)
    assert loo[0] > 0.1 and loo[2] > 0.1                 # itself and its own flip do not count


def test_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(3), [10, 20, 5])
    tr, te = ev.split(labels)
    assert not set(tr) & set(te) and len(tr) + len(te) == 35
    assert np.bincount(labels[te]).tolist() == [2, 4, 1]


def test_shift_moves_images_and_fills_with_transparent():
    x = torch.rand(2, 4, 6, 6) * 2 - 1
    s = ev.shift(x, torch.tensor([1, -2]), torch.tensor([0, 1]))    # right by 1; left by 2 and down by 1
    assert torch.equal(s[0, :, :, 1:], x[0, :, :, :-1]) and (s[0, :, :, 0] == -1).all()
    assert torch.equal(s[1, :, 1:, :-2], x[1, :, :-1, 2:]) and (s[1, :, 0] == -1).all() and (s[1, :, :, -2:] == -1).all()


def test_balanced_accuracy_weighs_every_class_once():
    labels = np.array([0] * 8 + [1] * 2)
    pred = np.zeros(10, int)                             # always class 0: 80% plain accuracy
    assert ev.balanced_accuracy(pred, labels) == pytest.approx(0.5)


def test_balanced_pairs_have_equal_counts_and_disjoint_halves():
    labels = np.repeat(np.arange(3), [10, 20, 7])
    pairs = ev.balanced_pairs(labels, 3, 4, seed=1, exclude=np.array([0, 1, 2]))
    assert len(pairs) == 4
    for a, b in pairs:
        assert np.bincount(labels[a]).tolist() == [3, 3, 3] == np.bincount(labels[b]).tolist()
        assert not set(a) & set(b) and not {0, 1, 2} & (set(a) | set(b))
    with pytest.raises(ev.EvalError, match="class 'c' has 7 real images.*lower --n-per-class to 3"):
        ev.balanced_pairs(labels, 4, 2, class_names=["a", "b", "c"])


@pytest.mark.skipif(not (TWEMOJI / "emoji.json").is_file() or not ev.JUDGE.is_file(),
                    reason="needs the Twemoji data (make run) and the committed judge")
def test_real_images_drawn_like_the_generated_set_score_near_the_floor():
    """The point of the balanced reference: real images the judge never saw, drawn with the
    generated set's per-class counts, score within the floor's spread, while the same number of
    real images in other class proportions score clearly worse."""
    from dit_model.data import load_data
    real = load_data(None, size=32)
    clf, _ = ev.load_judge(ev.JUDGE, real.class_names, 32, 4)
    _, feats = ev.predict(clf, real.tensor())
    y, k, n = real.labels, len(real.class_names), 16   # 16 per class: the held-out split has >= 17 of each
    tr, te = ev.split(y)
    rng = np.random.default_rng(3)
    # three draws of each kind, averaged: one draw's own luck is as large as the floor's spread
    held = [np.concatenate([rng.permutation(te[y[te] == c])[:n] for c in range(k)]) for _ in range(3)]
    # the data's own class proportions, same total (people 29, activities 6, ...)
    share = np.bincount(y) / len(y)
    counts = np.floor(share * n * k).astype(int)
    counts[np.argsort(share * n * k - counts)[::-1][:n * k - counts.sum()]] += 1
    natural = [np.concatenate([rng.permutation(tr[y[tr] == c])[:m] for c, m in enumerate(counts)]) for _ in range(3)]
    old = te[:n * k]                                     # the old reference: held-out images in index order
    ref = ev.Reference(feats, y, n, exclude=np.unique(np.concatenate(held + natural + [old])))
    assert ref.spread < 0.3 * ref.floor                  # a floor stable enough to judge by
    score = lambda sets: np.mean([ref.score(feats[i])[0] for i in sets])
    assert ref.floor - 2 * ref.spread <= score(held) <= ref.floor + 2 * ref.spread
    assert score(natural) > ref.floor + 2 * ref.spread
    assert score([old]) > 5 * ref.floor


def _tiny_folder(root):
    rng = np.random.default_rng(0)
    names = ["blue", "green", "red"]         # folder classes come sorted
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(10):
            img = np.zeros((16, 16, 4), np.uint8)
            img[..., c] = 200 + rng.integers(0, 50)
            img[..., 3] = 255
            img[rng.integers(0, 16), rng.integers(0, 16)] = 0
            Image.fromarray(img).save(root / name / f"{i}.png")
    return names


@pytest.fixture
def tiny(tmp_path):
    cfg = DiTConfig(input_size=16, patch_size=4, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    names = _tiny_folder(tmp_path / "data")
    raw, ema = randomize(DiT(cfg), seed=1), randomize(DiT(cfg), seed=2)
    ckpt = tmp_path / "ckpt.pt"                          # what `ditweb train` writes (less the optimiser)
    atomic_save({"model": raw.state_dict(), "ema": ema.state_dict(), "config": cfg.to_dict(), "class_names": names,
                 "step": 3}, ckpt)
    return tmp_path, ckpt, names


def test_eval_end_to_end_on_a_tiny_folder(tiny):
    tmp_path, ckpt, names = tiny
    judge = tmp_path / "judge.safetensors"
    kw = dict(data=str(tmp_path / "data"), n_per_class=2, steps=2, scales=(1.0, 3.0), judge=str(judge),
              floor_pairs=3, log=lambda *a: None)
    with pytest.raises(ev.EvalError, match="no judge weights; train one for this data with --retrain-judge"):
        ev.evaluate(str(ckpt), **kw)
    r = ev.evaluate(str(ckpt), retrain_judge=True, **kw)
    assert judge.is_file() and r["judge_same_data"] and r["weights"] == "EMA"
    assert r["ceiling"] == 100.0                         # colours are trivially separable: the ceiling is exact
    assert r["floor"]["pairs"] == 3 and r["floor"]["n"] == 6 and r["floor"]["std"] > 0
    assert [w["scale"] for w in r["rows"]] == [1.0, 3.0] and all(w["n"] == 6 for w in r["rows"])
    title, header, rows, notes = ev.table(r)
    assert len(rows) == 4 and rows[0][0].startswith("real held-out") and "2 samples per class" in notes
    # the judge is loaded, not retrained: the same numbers again, and the file is unchanged
    before = judge.read_bytes()
    again = ev.evaluate(str(ckpt), **kw)
    untimed = lambda rows: [{k: v for k, v in w.items() if k != "seconds"} for w in rows]   # noqa: E731
    assert judge.read_bytes() == before and untimed(again["rows"]) == untimed(r["rows"])
    raw = ev.evaluate(str(ckpt), weights="raw", **kw)
    assert raw["weights"] == "raw" and raw["rows"][0]["fd"] != r["rows"][0]["fd"]


def test_raw_weights_are_the_models(tiny):
    _, ckpt, _ = tiny
    obj = torch.load(ckpt, weights_only=True)
    model, meta = ev.load_eval_model(ckpt, "raw")
    assert meta["weights"] == "raw" and meta["step"] == 3
    assert all(torch.equal(v, obj["model"][k]) for k, v in model.state_dict().items())
    model, meta = ev.load_eval_model(ckpt, "ema")
    assert all(torch.equal(v, obj["ema"][k]) for k, v in model.state_dict().items())


def test_cli_json_and_one_line_errors(tiny, capsys):
    tmp_path, ckpt, names = tiny
    judge, data = tmp_path / "judge.safetensors", str(tmp_path / "data")
    common = ["--data", data, "--n-per-class", "2", "--steps", "1", "--scales", "1,2", "--judge", str(judge),
              "--floor-pairs", "2", "--out", str(tmp_path / "res")]
    out = tmp_path / "r.json"
    assert main(["eval", str(ckpt), *common, "--retrain-judge", "--weights", "raw", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["weights"] == "raw" and [w["scale"] for w in r["rows"]] == [1.0, 2.0]
    assert set(r["rows"][0]) >= {"scale", "balanced_accuracy", "of_ceiling", "fd", "fd_over_floor", "near_copy"}
    assert (tmp_path / "res" / "eval.md").is_file()
    capsys.readouterr()

    single = tmp_path / "ema.safetensors"
    model, _ = ev.load_eval_model(ckpt)
    save_weights(model, single, names, 3)
    assert main(["eval", str(single), *common, "--weights", "raw"]) == 2
    assert "holds one set of weights" in capsys.readouterr().err
    # a judge made for other classes: one line naming both class lists
    other = tmp_path / "other.safetensors"
    ev.save_judge(ev.Classifier(4, 2), other, ["a", "b"], 16, "x", 1, "none")
    assert main(["eval", str(ckpt), *common, "--judge", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained on 2 classes (a, b)" in err and "3 classes (blue, green, red)" in err
    (tmp_path / "bad.safetensors").write_bytes(b"not a judge")
    assert main(["eval", str(ckpt), *common, "--judge", str(tmp_path / "bad.safetensors")]) == 2
    assert "not a readable judge" in capsys.readouterr().err
    assert main(["eval", str(ckpt), *common, "--n-per-class", "6"]) == 2
    assert "lower --n-per-class to 5" in capsys.readouterr().err


def test_interval_guidance_in_eval(tiny, capsys):
    """--interval LO:HI guides only where the model's t lies in LO..HI: the whole range is plain guidance
    (up to the rounding of combining the branches per step),
    a range no step reaches is no guidance at all."""
    tmp_path, ckpt, names = tiny
    judge = tmp_path / "judge.safetensors"
    kw = dict(data=str(tmp_path / "data"), n_per_class=2, steps=2, judge=str(judge), floor_pairs=2, log=lambda *a: None)
    plain = ev.evaluate(str(ckpt), retrain_judge=True, scales=(1.0, 3.0), **kw)
    whole = ev.evaluate(str(ckpt), scales=(3.0,), interval=(0, 999), **kw)
    assert whole["rows"][0]["fd"] == pytest.approx(plain["rows"][1]["fd"], rel=1e-5) and whole["interval"] == [0, 999]
    # 2 DDIM steps call the model at t = 999 and 0: 1..998 reaches neither, so scale 3 acts as 1
    none = ev.evaluate(str(ckpt), scales=(3.0,), interval=(1, 998), **kw)
    assert none["rows"][0]["fd"] == pytest.approx(plain["rows"][0]["fd"], rel=1e-5) and "guidance only at t in 1..998" in ev.table(none)[3]
    common = ["--data", kw["data"], "--n-per-class", "2", "--steps", "1", "--judge", str(judge), "--floor-pairs", "2"]
    for bad in ("5", "9:3", "0:1000", "a:b"):
        assert main(["eval", str(ckpt), *common, "--interval", bad]) == 2
        assert "bad --interval" in capsys.readouterr().err
