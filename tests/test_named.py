"""Named models: the label vocabulary, labels at every level in the DiT, their dropout, warm starts onto
the levels, and `ditweb train --styles` / `ditweb sample --prompt` end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from ditformat.labels import Vocabulary, VocabularyError
from dit_model.model import DiT, DiTConfig, preset_config
from dit_model.named import named_data
from dit_model.randomness import batch_plan
from dit_model.trainer import Trainer, level_table
from dit_model.randomness import make_batch

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def tiny_set():
    E = lambda u, n, short, kw, c, s: NS(unified=u, name=n, short_names=short, keywords=kw, subcategory=s, category=c)
    ids = [E("1F99B", "hippopotamus", ["hippopotamus"], ["animal", "hippo"], "Animals & Nature", "animal-mammal"),
           E("1F436", "dog face", ["dog"], ["dog", "face", "pet"], "Animals & Nature", "animal-mammal"),
           E("1F415", "dog", ["dog2"], ["dog", "pet"], "Animals & Nature", "animal-mammal"),
           E("1F34E", "red apple", ["apple"], ["apple", "fruit", "red"], "Food & Drink", "food-fruit"),
           E("1F468-200D-1F466", "family: man, boy", ["man-boy"], ["family"], "People & Body", "family")]
    rng = np.random.default_rng(0)
    n = len(ids) * 2
    return NS(images=rng.integers(0, 255, (n, 8, 8, 4), dtype=np.uint8), emoji=np.arange(n) % len(ids),
              style=np.arange(n) // len(ids), variant=[""] * n, identities=ids, styles=["twemoji", "noto"],
              categories=["Animals & Nature", "Food & Drink", "People & Body"],
              subcategories=["animal-mammal", "food-fruit", "family"], source="synthetic")


@pytest.fixture(scope="module")
def vocab():
    return named_data(tiny_set()).vocab


# ---------------------------------------------------------------- the vocabulary and prompts

def test_prompts_resolve_exact_before_prefix_before_keyword(vocab):
    d = lambda p, style=None: vocab.describe(vocab.resolve(p, style))
    assert d("hippo") == "hippopotamus < animal-mammal < Animals & Nature, style (any)"          # name prefix
    assert d("dog") == "dog < animal-mammal < Animals & Nature, style (any)"                     # exact name beats short name
    assert d("DOG_FACE") == "dog face < animal-mammal < Animals & Nature, style (any)"           # case, _ and - ignored
    assert d("apple") == "red apple < food-fruit < Food & Drink, style (any)"                    # exact short name
    assert d("fruit") == "red apple < food-fruit < Food & Drink, style (any)"                    # keyword
    assert d("Animals & Nature") == "Animals & Nature, style (any)"                              # a category
    assert d("animal-mammal", "noto") == "animal-mammal < Animals & Nature, style noto"
    assert d("noto") == "(any), style noto"
    assert d("family: man, boy") == "family: man, boy < family < People & Body, style (any)"   # ", " and ":" in a name
    assert d("category:Animals & Nature") == "Animals & Nature, style (any)"                    # LEVEL:NAME
    assert d("1F99B") == "hippopotamus < animal-mammal < Animals & Nature, style (any)"         # the code point
    assert vocab.resolve("hippo", "noto").ids == (0, 0, 0, 1)
    assert vocab.null.ids == vocab.sizes == (5, 3, 3, 2)


def test_bad_prompts_are_one_line_errors_with_the_closest_labels(vocab):
    with pytest.raises(VocabularyError, match=r"unknown prompt 'hipo'; closest labels: 'hippopotamus'"):
        vocab.resolve("hipo")
    with pytest.raises(VocabularyError, match="ambiguous: 'dog face', 'dog'"):
        vocab.resolve("pet")
    with pytest.raises(VocabularyError, match="unknown style 'apple'"):
        vocab.resolve("hippo", "apple")
    with pytest.raises(VocabularyError, match="empty prompt"):
        vocab.resolve("  ")
    assert vocab.suggest("do")[:2] == ["dog", "dog face"]


def test_vocabulary_file_round_trip_and_bad_files(vocab):
    again = Vocabulary.loads(vocab.dumps())
    assert again.to_json() == vocab.to_json()
    good = vocab.to_json()
    bad = [({"format": "other"}, "format"), ({"names": good["names"][:3]}, "one list per level"),
           ({"parents": [[0, 0, 0, 1, 9], good["parents"][1]]}, "parents of level 'emoji'"),
           ({"names": [["a", "a"]] + good["names"][1:]}, "names 'a' twice"),
           ({"nested": 7}, "nested must be"), ({"keywords": [["x"]]}, "keywords must be"),
           ({"levels": ["emoji", 3, "category", "style"]}, "levels must be")]
    for change, msg in bad:
        with pytest.raises(VocabularyError, match=msg) as e:
            Vocabulary.from_json({**good, **change}, "vocabulary.json")
        assert "\n" not in str(e.value)
    with pytest.raises(VocabularyError, match="not valid JSON"):
        Vocabulary.loads("{", "vocabulary.json")


def test_every_label_of_the_emoji_vocabulary_resolves_to_itself():
    from dit_model.emoji import load_emoji
    from dit_model.named import emoji_vocabulary
    es = load_emoji(skin_tones=False, only=["1F99B"])              # metadata of all 1,906; images of one
    vocab = emoji_vocabulary(es)
    assert vocab.sizes[0] == 1906 and vocab.levels == ["emoji", "subcategory", "category", "style"]
    for l, names in enumerate(vocab.names):
        for i, name in enumerate(names):
            got = vocab.resolve(f"{vocab.levels[l]}:{name}")
            assert got.ids[l] == i, name
    hippo = vocab.resolve("hippo", "fluent")
    assert vocab.describe(hippo) == "hippopotamus < animal-mammal < Animals & Nature, style fluent"


# ---------------------------------------------------------------- the model

def test_one_level_models_are_unchanged():
    torch.manual_seed(0)
    model = DiT(preset_config("Favicon-N/2")).eval()
    assert "y_embedder.starts" not in model.state_dict()              # files keep their tensors
    assert "label_levels" not in model.cfg.to_dict()                  # and their config
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([1, 500, 999]), torch.tensor([0, 2, 3])
    assert torch.equal(model(x, t, y), model(x, t, y[:, None]))


def test_label_levels_sum_their_embeddings(vocab):
    cfg = preset_config("Favicon-N/2", num_classes=sum(vocab.sizes), label_levels=vocab.sizes, label_nested=3)
    assert DiTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    model = DiT(cfg)
    table = model.y_embedder.embedding_table.weight
    assert table.shape[0] == sum(vocab.sizes) + 4
    got = model.y_embedder(torch.tensor([[0, 0, 0, 1]]))[0]
    # rows: each level's labels, then its null row: emoji 0-5, subcategory 6-9, category 10-13, style 14-16
    assert torch.allclose(got, table[0] + table[6] + table[10] + table[15])
    for bad in (dict(label_levels=(5, 3)), dict(label_levels=(5, 0, 3, 2)), dict(label_nested=5)):
        with pytest.raises(ValueError):
            preset_config("Favicon-N/2", num_classes=sum(vocab.sizes), **{**dict(label_levels=vocab.sizes), **bad})


def test_label_dropout_levels():
    p, n = 0.1, 40000
    _, _, legacy, _ = batch_plan(3, 7, n, 0, n, 100, p, True)
    _, _, drop, _ = batch_plan(3, 7, n, 0, n, 100, p, True, levels=(1, 1, 0.5))
    assert np.array_equal(drop[:, 0], legacy)                         # one level: the paper's dropout, same draws
    _, _, drop, _ = batch_plan(3, 7, n, 0, n, 100, p, True, levels=(4, 3, 0.5))
    rates = drop.mean(0)
    assert np.allclose(rates, [3 * p, 2 * p, p, 0.5], atol=0.01)     # finest level dropped most
    assert not (drop[:, 1] & ~drop[:, 0]).any() and not (drop[:, 2] & ~drop[:, 1]).any()   # nested
    assert abs(drop.all(1).mean() - p * 0.5) < 0.005                  # the unconditional label


def test_warm_start_onto_levels_keeps_what_the_model_drew(vocab):
    old = torch.randn(3 + 1, 16)                                      # 3 subcategory classes + null
    table, how = level_table(old, ["animal-mammal", "food-fruit", "family"], vocab)
    assert "3 of the 3 classes found as subcategory labels" in how
    emb = torch.nn.Embedding.from_pretrained(table)
    from dit_model.model import LabelEmbedder
    le = LabelEmbedder(sum(vocab.sizes), 16, vocab.sizes)
    le.embedding_table = emb
    for prompt, row in (("hippo", 0), ("animal-mammal", 0), ("apple", 1), ("family: man, boy", 2)):
        for style in (None, "noto"):
            assert torch.allclose(le(torch.tensor([vocab.resolve(prompt, style).ids]))[0], old[row], atol=1e-6)
    assert torch.allclose(le(torch.tensor([vocab.null.ids]))[0], old[3])
    cat = le(torch.tensor([vocab.resolve("Animals & Nature").ids]))[0]
    assert torch.allclose(cat, old[0], atol=1e-6)                     # the mean of its one subcategory
    with pytest.raises(ValueError, match="none of the weights' class names"):
        level_table(old, ["x", "y", "z"], vocab)


def test_training_steps_on_named_data(vocab):
    data = named_data(tiny_set(), [("Animals & Nature", 3)])
    assert len(data.images) == 10 + 2 * 6                             # animals (3 x 2 styles) shown 3 times
    cfg = preset_config("Favicon-N/2", num_classes=sum(vocab.sizes), label_levels=vocab.sizes, label_nested=3)
    tr = Trainer(cfg, lr=1e-3, weight_decay=0.0, ema_decay=0.9, seed=0, device="cpu")
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    x0, y, t, eps = make_batch(images, labels, cfg, 0, 0, 8, 0, 8, True, "cpu")
    assert y.shape == (8, 4) and (y <= torch.tensor(vocab.sizes)).all()
    loss = [tr.train_step(*make_batch(images, labels, cfg, 0, s, 8, 0, 8, True, "cpu"))["loss"].item() for s in range(3)]
    assert all(np.isfinite(loss))


# ---------------------------------------------------------------- the command line

def ditweb(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "ditweb", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    if check and r.returncode:
        raise AssertionError(r.stderr[-2000:])
    return r


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("named") / "run"
    ditweb("train", "Favicon-T/4", "--styles", "twemoji,noto,fluent", "--init", "models/subcategories.safetensors",
           "--prediction", "v", "--batch-size", "4", "--max-steps", "2", "--sample-every", "0", "--run-dir", str(run))
    return run


def test_train_named_resumes_exactly(named_run, tmp_path):
    obj = torch.load(named_run / "ckpt.pt", weights_only=True)
    assert obj["step"] == 2 and Vocabulary.loads(obj["vocabulary"]).sizes == (1906, 98, 9, 3)
    assert obj["config"]["label_levels"] == [1906, 98, 9, 3]
    straight = tmp_path / "straight"
    ditweb("train", "Favicon-T/4", "--styles", "twemoji,noto,fluent", "--init", "models/subcategories.safetensors",
           "--prediction", "v", "--batch-size", "4", "--max-steps", "3", "--sample-every", "0", "--run-dir", str(straight))
    resumed = tmp_path / "resumed"
    __import__("shutil").copytree(named_run, resumed)
    ditweb("train", "--resume", str(resumed), "--max-steps", "3")
    a = torch.load(straight / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(resumed / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def ditweb_here(capsys, *args):
    """`ditweb ARGS` in this process: (exit status, stderr)."""
    from ditweb.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def test_sample_prompt_style_and_compose(named_run, tmp_path, capsys):
    """In this process (no interpreter and torch start-up per command); `ditweb` in a subprocess is
    test_train_named_resumes_exactly's and test_eval_named_model's."""
    ckpt = str(named_run / "ckpt.pt")

    def ditweb(*args):
        capsys.readouterr()
        from ditweb.cli import main
        rc = main([str(a) for a in args])
        r = NS(returncode=rc, **dict(zip(("stdout", "stderr"), capsys.readouterr())))
        assert rc == 0, r.stderr[-2000:]
        return r

    r = ditweb("sample", ckpt, "--prompt", "hippo", "--style", "noto", "--n", "2", "--steps", "2", "--out", str(tmp_path / "a"))
    assert "prompt 'hippo' -> hippopotamus < animal-mammal < Animals & Nature, style noto" in r.stderr
    assert (tmp_path / "a" / "grid.png").is_file()
    r = ditweb("sample", ckpt, "--compose", "family: man, boy=1", "--compose", "Flags=-0.5", "--n", "1", "--steps", "2",
               "--out", str(tmp_path / "b"))
    assert "composition family: man, boy=1, Flags=-0.5" in r.stdout
    r = ditweb("sample", ckpt, "--class", "Animals & Nature", "--n", "1", "--steps", "2", "--out", str(tmp_path / "c"))
    assert r.returncode == 0
    for args, msg in ((["--prompt", "hipo"], "unknown prompt 'hipo'; closest labels: 'hippopotamus'"),
                      (["--prompt", "hippo", "--style", "comic"], "unknown style 'comic'"),
                      (["--prompt", "hippo", "--cfg", "nan"], "--cfg must be a finite number"),
                      (["--compose", "Flags=nan"], "the weight must be a finite number"),
                      ([], "needs --prompt")):
        rc, err = ditweb_here(capsys, "sample", ckpt, *args, "--n", "1", "--steps", "1", "--out", tmp_path / "x")
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    rc, err = ditweb_here(capsys, "sample", "models/default.safetensors", "--prompt", "hippo", "--n", "1", "--steps", "1",
                          "--out", tmp_path / "x")
    assert rc == 2 and "need a named model" in err
    ditweb("export", ckpt, str(tmp_path / "bundle"))                 # named bundles carry vocabulary.json
    assert (tmp_path / "bundle" / "vocabulary.json").is_file()
    r = ditweb("sample", str(tmp_path / "bundle"), "--runtime", "wgpu", "--prompt", "hippo", "--style", "noto",
               "--n", "1", "--steps", "2", "--out", str(tmp_path / "w"))
    assert "prompt 'hippo' -> hippopotamus < animal-mammal < Animals & Nature, style noto" in r.stderr
    assert (tmp_path / "w" / "grid.png").is_file()
    rc, err = ditweb_here(capsys, "sample", tmp_path / "bundle", "--runtime", "wgpu", "--prompt", "hipo", "--n", "1",
                          "--steps", "1", "--out", tmp_path / "x")
    assert rc == 2 and "unknown prompt 'hipo'" in err and len(err.strip().splitlines()) == 1, err


def test_a_vocabulary_that_disagrees_with_the_weights_is_refused(named_run, tmp_path):
    from dit_model.checkpoint import CheckpointError, load_model
    obj = torch.load(named_run / "ckpt.pt", weights_only=True)
    v = json.loads(obj["vocabulary"])
    v["names"][3] = v["names"][3][:2]                                 # two styles, the weights have three
    obj["vocabulary"] = json.dumps(v)
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="vocabulary .* disagrees with the weights"):
        load_model(tmp_path / "bad.pt")
    del obj["vocabulary"]
    torch.save(obj, tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="no vocabulary"):
        load_model(tmp_path / "none.pt")


def test_eval_named_model(named_run, tmp_path, capsys):
    """In this process, as test_sample_prompt_style_and_compose."""
    rc, err = ditweb_here(capsys, "eval", named_run / "ckpt.pt", "--styles", "noto", "--seeds", "2", "--steps", "1",
                          "--hippo-seeds", "2", "--floor-pairs", "2", "--scales", "2", "--out", tmp_path,
                          "--json", tmp_path / "r.json")
    assert rc == 0, err[-2000:]
    table = (tmp_path / "eval-named.md").read_text()
    assert "real noto (ceiling, floor, reference)" in table and "| cfg 2" in table
    assert "The hippo (the aim: hippopotamus in the judge's top 5 for at least 8 of 16 seeds): cfg 2 noto: " in table
    result = json.loads((tmp_path / "r.json").read_text())
    rows = [w for w in result["rows"] if w["style"] == "noto"]
    assert rows and rows[0]["n"] == 200 and 0.0 <= rows[0]["top5"] <= 100.0   # 100 emoji x 2 seeds
    rc, err = ditweb_here(capsys, "eval", named_run / "ckpt.pt", "--styles", "comic", "--steps", "1")
    assert rc == 2 and "unknown style 'comic'" in err
    rc, err = ditweb_here(capsys, "eval", named_run / "ckpt.pt", "--interval", "900:100", "--steps", "1")
    assert rc == 2 and "bad --interval '900:100'" in err
