import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize
from dit_model import evaluate as ev
from dit_model.checkpoint import atomic_save
from dit_model.model import DiT


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (200000, 3))
    b = rng.normal([1, 0, 0], [1, 2, 3], (200000, 3))
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = 1 + 0 + 1 + 4
    assert ev.frechet_distance(a, b) == pytest.approx(6.0, rel=0.02)
    assert ev.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_nearest_rmse_finds_copies_and_flips():
    train = torch.rand(5, 4, 8, 8) * 2 - 1
    samples = torch.stack([train[2], train[4].flip(2), torch.zeros(4, 8, 8)])
    d = ev.nearest_rmse(samples, train)
    assert d[0] == pytest.approx(0, abs=1e-6) and d[1] == pytest.approx(0, abs=1e-6) and d[2] > 0.1


def test_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(3), [10, 20, 5])
    tr, te = ev.split(labels)
    assert not set(tr) & set(te) and len(tr) + len(te) == 35
    assert np.bincount(labels[te]).tolist() == [2, 4, 1]


def test_eval_end_to_end_on_a_tiny_folder(tmp_path, monkeypatch):
    from dit_model.model import DiTConfig
    cfg = DiTConfig(input_size=16, patch_size=4, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    monkeypatch.setattr(ev, "CACHE", tmp_path / "cache")
    rng = np.random.default_rng(0)
    names = ["blue", "green", "red"]         # folder classes come sorted
    for c, name in enumerate(names):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(10):
            img = np.zeros((16, 16, 4), np.uint8)
            img[..., c] = 200 + rng.integers(0, 50)
            img[..., 3] = 255
            img[rng.integers(0, 16), rng.integers(0, 16)] = 0
            Image.fromarray(img).save(tmp_path / "data" / name / f"{i}.png")
    model = randomize(DiT(cfg), seed=1)
    ckpt = tmp_path / "m.pt"
    atomic_save({"ema": model.state_dict(), "config": cfg.to_dict(), "class_names": names, "step": 3}, ckpt)
    title, header, rows, notes = ev.evaluate(str(ckpt), str(tmp_path / "data"), n_per_class=2, steps=2,
                                             scales=(1.0, 3.0), log=lambda *a: None)
    assert len(rows) == 3 and rows[0][0] == "real held-out"
    assert float(rows[0][2]) == 100.0                    # colours are trivially separable: the ceiling is exact
    assert "2 samples per class" in notes and "2 DDIM steps" in notes
    assert list((tmp_path / "cache").glob("classifier-*.pt"))
