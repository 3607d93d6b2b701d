"""The multi-style emoji set (dit_model/emoji.py): metadata, the three default styles, skin tones,
Fluent rasterisation, packs, the cache, missing sources and `ditweb data --styles`.
Needs the npm packages that scripts/setup.sh installs into data/npm/ (CI runs set-up first);
the loads here pick a few identities (`only=`), so nothing waits for the full set."""
from __future__ import annotations

import numpy as np
import pytest

from dit_model import emoji as E
from dit_model.data import DataError
from ditweb.cli import main

HIPPO, WAVE, POINT_LEFT, POINT_RIGHT = "1F99B", "1F44B", "1F448", "1F449"


@pytest.fixture(scope="module")
def few():
    return E.load_emoji(only=[HIPPO, WAVE, POINT_LEFT, POINT_RIGHT], cache=False)


def _images(es, unified, style, variant=""):
    i = [e.unified for e in es.identities].index(unified)
    s = es.styles.index(style)
    return es.images[(es.emoji == i) & (es.style == s) & (np.asarray(es.variant) == variant)]


def test_identities_and_hippopotamus_metadata(few):
    assert few.styles == list(E.STYLES) == ["twemoji", "noto", "fluent"]
    assert len(few.identities) == 1906                                  # every non-Component entry
    assert "Component" not in few.categories and few.categories[0] == "Smileys & Emotion"
    assert all(e.subcategory in few.subcategories and e.category in few.categories for e in few.identities)
    hippo = next(e for e in few.identities if e.unified == HIPPO)
    assert hippo.name == "hippopotamus" and "hippo" in hippo.keywords
    assert hippo.short_names == ["hippopotamus"]
    assert (hippo.subcategory, hippo.category) == ("animal-mammal", "Animals & Nature")
    for style in E.STYLES:                                              # one image in each style
        im = _images(few, HIPPO, style)
        assert im.shape == (1, 32, 32, 4) and im.dtype == np.uint8 and im[..., 3].max() == 255, style


def test_fluent_rasterised_with_transparent_corners_and_flipped_aliases(few):
    im = _images(few, HIPPO, "fluent")[0]
    alpha = im[..., 3]
    assert (alpha > 0).mean() > 0.3                                     # an emoji, not an empty canvas
    assert (alpha[[0, 0, -1, -1], [0, -1, 0, -1]] == 0).all()           # transparent corners
    assert (im[alpha == 0] == 0).all()                                  # transparent = (0, 0, 0, 0)
    # "pointing right" exists in Fluent only as an alias: "pointing left" flipped horizontally
    left, right = _images(few, POINT_LEFT, "fluent")[0], _images(few, POINT_RIGHT, "fluent")[0]
    diff = np.abs(right.astype(int) - left[:, ::-1].astype(int))        # equal up to anti-aliasing
    assert diff.max() <= 16 and diff.mean() < 0.5
    assert np.abs(right.astype(int) - left.astype(int)).mean() > 10      # and really mirrored


def test_skin_tones_are_more_images_of_the_same_identity(few):
    wave = [e.unified for e in few.identities].index(WAVE)
    for s, style in enumerate(few.styles):
        mine = (few.emoji == wave) & (few.style == s)
        assert [v for v, m in zip(few.variant, mine) if m] == ["", "1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"], style
    tones = _images(few, WAVE, "twemoji", "1F3FF")[0].astype(int)
    assert np.abs(tones - _images(few, WAVE, "twemoji")[0].astype(int)).max() > 50   # really another image
    base = E.load_emoji(("twemoji",), only=[WAVE], skin_tones=False, cache=False)
    assert base.variant == [""] and base.emoji.tolist() == [wave]


def test_pack_round_trip_keeps_every_field(few, tmp_path):
    path = E.save_emoji_pack(few, tmp_path / "emoji.npz")
    back = E.load_emoji_pack(path)
    assert np.array_equal(back.images, few.images)
    assert back.emoji.dtype == back.style.dtype == np.int64
    assert back.emoji.tolist() == few.emoji.tolist() and back.style.tolist() == few.style.tolist()
    assert back.variant == few.variant and back.identities == few.identities
    assert (back.styles, back.categories, back.subcategories, back.source) == \
           (few.styles, few.categories, few.subcategories, few.source)
    (tmp_path / "bad.npz").write_bytes(b"not a pack")
    with pytest.raises(DataError, match="not an emoji pack"):
        E.load_emoji_pack(tmp_path / "bad.npz")


def test_cache_is_used_on_the_second_load(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "CACHE_DIR", tmp_path)
    first = E.load_emoji(("noto",), only=[HIPPO, WAVE])
    assert len(list(tmp_path.glob("emoji-noto-32-*.npz"))) == 1

    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt although cached")
    monkeypatch.setitem(E._LOADERS, "noto", no_rebuild)
    again = E.load_emoji(("noto",), only=[HIPPO, WAVE])
    assert np.array_equal(again.images, first.images) and again.variant == first.variant


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_sources_and_unknown_styles_are_one_line_errors(tmp_path):
    with pytest.raises(DataError) as e:
        E.load_emoji(root=tmp_path)
    msg = _one_line(e)
    assert "emoji-datasource-twitter" in msg and "emoji.json" in msg and "setup.sh" in msg
    root = tmp_path / "some"                                            # Twemoji + keywords, no Noto
    root.mkdir()
    for pkg in ("emoji-datasource-twitter", "emojibase-data"):
        (root / pkg).symlink_to(E.NODE_MODULES / pkg)
    with pytest.raises(DataError) as e:
        E.load_emoji(("noto",), root=root, only=[HIPPO], cache=False)
    msg = _one_line(e)
    assert "emoji-datasource-google" in msg and "setup.sh" in msg
    with pytest.raises(DataError) as e:
        E.load_emoji(("openmoji",), root=root, only=[HIPPO], cache=False)
    assert "npm install --prefix data/npm openmoji@17.0.0" in _one_line(e)
    with pytest.raises(DataError) as e:
        E.load_emoji(("twemoji", "apple"), only=[HIPPO])
    msg = _one_line(e)
    assert "apple" in msg and all(s in msg for s in E.KNOWN_STYLES)


def test_data_verb_with_styles(tmp_path, monkeypatch, capsys):
    real = E.load_emoji
    monkeypatch.setattr(E, "load_emoji", lambda styles, size, skin_tones: real(
        styles, size, skin_tones=skin_tones, only=[HIPPO, WAVE], cache=False))
    sheet, pack = tmp_path / "sheet.png", tmp_path / "emoji.npz"
    main(["data", "--styles", "twemoji,noto,fluent", "--skin-tones", "--sheet", str(sheet), "--pack", str(pack)])
    out = capsys.readouterr().out
    assert "twemoji" in out and "fluent" in out and "Animals & Nature" in out and "skin tones" in out
    for style in E.STYLES:
        assert (tmp_path / f"sheet_{style}.png").is_file()
    back = E.load_emoji_pack(pack)
    assert back.styles == list(E.STYLES) and len(back.images) == 3 * 7 and "1F3FB" in back.variant
    assert main(["data", "--styles", "twemoji,apple"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown emoji style apple" in err and "fluent" in err
