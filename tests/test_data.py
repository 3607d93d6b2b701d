"""The favicon data: loader shapes, ranges, class mapping, alpha, --data DIR, --pack, `ditweb data`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from _train_helpers import emoji_like, make_fake_twemoji, make_png_folder
from dit_model import data as D
from ditweb.cli import main


@pytest.fixture
def twemoji(tmp_path):
    return make_fake_twemoji(tmp_path / "emoji-datasource-twitter")


def test_premultiplied_resize_has_no_fringe():
    # Each 2x2 block: one opaque red pixel, three transparent *green* ones. A straight-alpha
    # average would give a greenish-brown fringe pixel; premultiplied gives pure red at alpha 1/4.
    img = np.zeros((4, 4, 4), np.uint8)
    img[..., 1] = 255                                   # hidden green under alpha 0
    img[::2, ::2] = (255, 0, 0, 255)
    out = D.resize_rgba(img, 2)
    assert out.shape == (2, 2, 4)
    assert (out[..., :3] == (255, 0, 0)).all() and (out[..., 3] == 64).all()


def test_transparent_pixels_get_one_defined_colour():
    out = D.resize_rgba(emoji_like(3), 32)
    clear = out[..., 3] == 0
    assert clear.any() and (out[clear] == 0).all()      # (0, 0, 0, 0) -> -1 in every channel
    same = D.resize_rgba(emoji_like(3), 64)             # no resize: still cleaned
    assert (same[same[..., 3] == 0] == 0).all()


def test_palette_and_la_images_become_rgba(tmp_path):
    rgba = emoji_like(5)
    Image.fromarray(rgba).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(rgba).quantize(16).save(tmp_path / "p.png", transparency=0)
    for name in ("la.png", "p.png"):
        out = D.load_png(tmp_path / name, 64)
        assert out.shape == (64, 64, 4) and out.dtype == np.uint8
        assert (out[..., 3] == 0).any() and (out[..., 3] == 255).any(), name


def test_twemoji_loader_shapes_ranges_classes(twemoji):
    d = D.load_twemoji(twemoji)
    assert d.class_names == ["Smileys & Emotion", "People & Body", "Animals & Nature"]   # package order, no Component
    assert d.names == ["a1.png", "a2.png", "b1.png", "d1.png", "d2.png", "d3.png"]     # by sort_order
    assert d.labels.tolist() == [0, 0, 1, 2, 2, 2]
    assert d.images.shape == (6, 32, 32, 4) and d.images.dtype == np.uint8
    x = d.tensor()
    assert x.shape == (6, 4, 32, 32) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() <= 1.0
    alpha = x[:, 3]
    assert (alpha == -1).any() and (alpha == 1).any() and ((alpha > -1) & (alpha < 1)).any()  # soft edges kept
    assert d.counts() == [2, 1, 3]


def test_twemoji_options(twemoji):
    tones = D.load_twemoji(twemoji, skin_tones=True)
    assert len(tones.images) == 8 and tones.labels.tolist().count(1) == 3
    sub = D.load_twemoji(twemoji, subcategories=True)
    assert all(sub.parents[c] in D.load_twemoji(twemoji).class_names for c in sub.class_names)   # -> its category
    assert sub.class_names == ["face-smiling", "face-affection", "hand-fingers-open", "animal-mammal", "animal-bird"]
    assert sub.labels.tolist() == [0, 1, 2, 3, 3, 4]
    for size in (16, 64):
        assert D.load_twemoji(twemoji, size=size).images.shape[1:] == (size, size, 4)
    with pytest.raises(D.DataError, match="size 24"):
        D.load_twemoji(twemoji, size=24)


def test_missing_package_names_the_setup_command(tmp_path, monkeypatch, capsys):
    with pytest.raises(D.DataError, match=r"make run.*scripts/setup\.sh"):
        D.load_twemoji(tmp_path / "nothing")
    monkeypatch.setattr(D, "TWEMOJI", tmp_path / "nothing")
    assert main(["data", "--sheet", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make run" in err[0]


def test_folder_data(tmp_path):
    root = make_png_folder(tmp_path / "mine", classes=("zebra", "apple"), per_class=(2, 3))
    d = D.load_data(str(root), size=16)
    assert d.class_names == ["apple", "zebra"] and d.labels.tolist() == [0, 0, 0, 1, 1]
    assert d.images.shape == (5, 16, 16, 4)
    (root / "empty").mkdir()
    with pytest.raises(D.DataError, match="empty"):
        D.load_folder(root)
    with pytest.raises(D.DataError, match="no such data folder"):
        D.load_data(str(tmp_path / "missing"))


def test_pack_round_trip_and_errors(tmp_path, twemoji):
    d = D.load_twemoji(twemoji, subcategories=True)
    path = D.save_pack(d, tmp_path / "set.npz")
    back = D.load_data(str(path))
    assert np.array_equal(back.images, d.images) and np.array_equal(back.labels, d.labels)
    assert back.class_names == d.class_names and back.names == d.names
    with pytest.raises(D.DataError, match="re-pack with --size 16"):
        D.load_data(str(path), size=16)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(D.DataError, match="not a data pack"):
        D.load_data(str(bad))
    assert not list(tmp_path.glob(".*.tmp"))


def test_pack_write_failure_keeps_the_old_file(tmp_path, twemoji, monkeypatch):
    d = D.load_twemoji(twemoji)
    path = D.save_pack(d, tmp_path / "set.npz")
    before = path.read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(D.DataError, match="No space left"):
        D.save_pack(d, path)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_data_verb_counts_sheet_and_pack(tmp_path, capsys):
    root = make_png_folder(tmp_path / "mine")
    sheet, pack = tmp_path / "sheet.png", tmp_path / "p.npz"
    assert main(["data", "--data", str(root), "--sheet", str(sheet), "--pack", str(pack), "--per-class", "3"]) == 0
    out = capsys.readouterr().out
    assert "9 images" in out and "3 classes" in out
    assert [line.split()[1:] for line in out.splitlines()[1:4]] == [["cats", "3"], ["dogs", "2"], ["fish", "4"]]
    img = Image.open(sheet)
    assert img.size == (2 * (3 * 34 + 2), 2 * (3 * 34 + 2))            # 3 rows x 3 columns of 32 + padding, x2
    assert D.load_pack(pack).class_names == ["cats", "dogs", "fish"]
