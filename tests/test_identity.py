"""The named-emoji judges (dit_model/identity.py): the committed identity judges and the
all-styles category judge load and score real images, a wrong file is refused in one line, and the
pure metrics (diversity, near copies, evaluate_named) do what they say."""
import json

import numpy as np
import pytest
import torch

from dit_model import evaluate as ev
from dit_model import identity as idj
from dit_model.data import DataError, to_model
from ditformat.errors import DitwebError

STYLES = ("twemoji", "noto", "fluent")


@pytest.fixture(scope="module")
def data():
    try:
        from dit_model.emoji import load_emoji
        return load_emoji()
    except DataError as e:
        pytest.skip(f"emoji styles not installed: {e}")


@pytest.fixture(scope="module")
def small(data):
    """The hippo in every style plus a seeded 1,000 other images (metrics on the full set are slow)."""
    hippo = idj.unified_list(data).index(idj.HIPPO)
    keep = (np.random.default_rng(0).random(len(data.images)) < 1000 / len(data.images)) | (data.emoji == hippo)
    return data.select(keep), hippo


def _real(data, emoji, style):
    i = np.flatnonzero((data.emoji == emoji) & (data.style == data.styles.index(style)) & idj.is_base(data))[0]
    return to_model(torch.from_numpy(data.images[i:i + 1]))[0]


@pytest.mark.parametrize("style", STYLES)
def test_committed_identity_judge_loads_and_ranks_the_real_hippo(data, style):
    model, meta = idj.load_identity_judge(style, idj.unified_list(data), 32)
    assert meta["held_out_style"] == style and len(meta["identities"]) == len(data.identities)
    assert 0 < float(meta["ceiling_top1"]) <= float(meta["ceiling_top5"]) <= 100
    assert idj.style_path(style).stat().st_size < 3_000_000
    hippo = idj.unified_list(data).index(idj.HIPPO)
    x = _real(data, hippo, style)[None]
    logits = idj.identity_logits(model, x)
    assert logits.shape == (1, len(data.identities)) and torch.isfinite(logits).all()
    rank = int((logits[0] > logits[0, hippo]).sum())           # 0 = top-1
    assert rank < 200                                          # far better than chance (1906 identities)
    h1, h5 = idj.topk_hits(logits, [hippo])
    assert h1.dtype == bool and (not h1[0] or h5[0])


def test_identity_judge_refuses_another_file_in_one_line(data, tmp_path):
    uni = idj.unified_list(data)
    with pytest.raises(idj.IdentityError) as e:
        idj.load_identity_judge("noto", uni[:-1], 32)
    assert isinstance(e.value, DitwebError) and "\n" not in str(e.value) and "identities" in str(e.value)
    with pytest.raises(idj.IdentityError, match="64x64"):
        idj.load_identity_judge("noto", uni, 64)
    with pytest.raises(idj.IdentityError, match="held out style 'noto'"):
        idj.load_identity_judge("twemoji", uni, 32, path=idj.style_path("noto"))
    with pytest.raises(idj.IdentityError) as e:                # the 9-category judge is not an identity judge
        idj.load_identity_judge("noto", uni, 32, path=ev.JUDGE)
    assert "\n" not in str(e.value)
    with pytest.raises(idj.IdentityError, match="no identity judge"):
        idj.load_identity_judge("noto", uni, 32, path=tmp_path / "missing.safetensors")


def test_styles_judge_loads_for_the_nine_categories(data):
    clf, meta = idj.load_styles_judge(data)
    assert json.loads(meta["class_names"]) == list(data.categories) and len(data.categories) == 9
    assert meta["data_fingerprint"] == idj.fingerprint(data)


def test_eval_list_is_stratified_with_the_hippo_first(data):
    doc = json.loads(idj.EVAL_LIST.read_text())
    entries = doc["emoji"]
    assert len(entries) == 100 and entries[0]["unified"] == idj.HIPPO and "seed" in doc
    assert {e["category"] for e in entries} == set(data.categories)
    assert len({e["unified"] for e in entries}) == 100
    assert set(entries[0]) == {"unified", "name", "category", "subcategory"}
    assert idj.load_eval_list(data)[0] == idj.unified_list(data).index(idj.HIPPO)
    assert idj.make_eval_list(data) == doc                     # the fixed seed reproduces the file


def test_diversity_of_identical_images_is_zero():
    x = torch.rand(3, 4, 8, 8) * 2 - 1
    imgs = torch.cat([x[:1].expand(4, -1, -1, -1), x[1:]])
    d = idj.diversity(imgs, ["a"] * 4 + ["b", "b"])
    assert d["groups"] == 2
    same = idj.diversity(imgs[:4], ["a"] * 4)
    assert same["mean"] == pytest.approx(0.0, abs=1e-9)
    two = idj.diversity(imgs[4:], ["b", "b"])
    ref = float(((((x[1] + 1) / 2 - (x[2] + 1) / 2) ** 2).mean()).sqrt())
    assert two["mean"] == pytest.approx(ref, rel=1e-5)
    with pytest.raises(idj.IdentityError):
        idj.diversity(imgs, ["a"])


def test_near_copy_of_a_real_training_image_is_detected(small):
    data, hippo = small
    x = to_model(torch.from_numpy(data.images))
    real = _real(data, hippo, "noto")
    fresh = torch.rand(4, 32, 32) * 2 - 1
    out = idj.near_copies(torch.stack([real, real.flip(2), fresh]), "noto", data)
    assert out["rmse"][0] == pytest.approx(0, abs=1e-6) and out["rmse"][1] == pytest.approx(0, abs=1e-6)
    assert out["near_copy"] == pytest.approx(200 / 3) and out["rmse"][2] > ev.NEAR_RMSE
    assert 0 <= out["real_near_copy"] <= 100 and out["real_n"] == int((data.style == 1).sum())
    assert len(x) == len(data.images)


def test_evaluate_named_on_real_images(small):
    """Real base images fed back as 'generated' records: every code path runs, the table prints."""
    data, hippo = small
    x = to_model(torch.from_numpy(data.images))
    base = idj.is_base(data)
    recs = []
    for s in ("twemoji", "noto"):
        mine = base & (data.style == data.styles.index(s))
        cat = idj.category_labels(data)
        idx = [np.flatnonzero(mine & (cat == c))[0] for c in range(len(data.categories))]     # one per category
        idx.append(np.flatnonzero(mine & (data.emoji == hippo))[0])
        recs += [{"emoji": int(data.emoji[i]), "style": s, "seed": k % 2, "image": x[i].numpy()} for k, i in enumerate(idx)]
    r = idj.evaluate_named({"real as generated": recs}, data, floor_pairs=2, meta={"test": "yes"})
    rows = [w for w in r["rows"] if w["style"] != "all"]
    assert {w["style"] for w in rows} == {"twemoji", "noto"} and sum(w["n"] for w in rows) == len(recs)
    for w in rows:
        assert 0 <= w["top1"] <= w["top5"] <= 100 and w["near_copy"] == 100.0       # real images are their own copies
        assert np.isfinite(w["fd"]) and w["floor"] > 0
    assert set(r["real"]) == {"twemoji", "noto"} and r["real"]["noto"]["diversity"] > 0
    title, header, trs, notes = idj.table(r)
    assert len(trs) == 2 + 3 and all(len(t) == len(header) for t in trs)
    with pytest.raises(idj.IdentityError, match="unknown style"):
        idj.evaluate_named([dict(recs[0], style="openmoji")], data)
    with pytest.raises(idj.IdentityError, match="record"):
        idj.evaluate_named([{"emoji": 0}], data)
