"""Model cards (dit_model/card.py, export/card.py): checkpoints record data sources, recipe, steps, images seen and
compute; `ditweb eval --card` adds its tables to a card file; `ditweb export` writes README.md into the bundle,
listed and hashed in the manifest; every shipped bundle has its card with its data's licences and attribution."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _train_helpers import make_png_folder
from dit_model.card import SOURCES, add_eval, card_path_for, data_sources, read_card_file
from ditweb.cli import main

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--size", "16", "--batch-size", "8", "--sample-every", "0", "--log-every", "2"]


def load(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=True)


def card_of(bundle: Path) -> str:
    m = json.loads((bundle / "manifest.json").read_text())
    assert "README.md" in m["files"], "the card is listed in the manifest"
    return (bundle / "README.md").read_text("utf-8")


def test_data_sources_from_the_training_options():
    assert [s["key"] for s in data_sources({})["sources"]] == ["twemoji", "emoji-data"]
    assert "subcategory" in data_sources({"subcategories": True})["description"]
    named = data_sources({"styles": "twemoji,noto,fluent"})
    assert [s["key"] for s in named["sources"]] == ["twemoji", "noto", "fluent", "emoji-data", "emojibase"]
    own = data_sources({"data": "my_icons/"})
    assert own["sources"] == [] and "my_icons/" in own["description"]
    assert SOURCES["twemoji"]["licence"] == "CC-BY 4.0" and "Twitter" in SOURCES["twemoji"]["attribution"]


def test_training_records_the_card_and_export_writes_it(tmp_path, capsys):
    from runtime_py import verify
    folder = make_png_folder(tmp_path / "pngs")
    run = tmp_path / "run"
    args = ["train", "Favicon-N/2", "--data", str(folder), "--run-dir", str(run), *FAST]
    assert main([*args, "--max-steps", "3"]) == 0
    card = load(run / "ckpt.pt")["card"]
    assert card["steps"] == 3 and card["images_seen"] == 24 and card["recipe"]["preset"] == "Favicon-N/2"
    assert card["compute"]["sittings"] == 1 and card["compute"]["train_seconds"] > 0
    assert card["compute"]["processes"] == 1 and card["compute"]["device"].startswith("cpu")
    assert str(folder) in card["data"]["description"]                 # own data: its licence is not known
    assert main(["train", "--resume", str(run), "--max-steps", "5"]) == 0
    resumed = load(run / "ckpt.pt")["card"]
    assert resumed["steps"] == 5 and resumed["images_seen"] == 40 and resumed["compute"]["sittings"] == 2
    assert resumed["compute"]["train_seconds"] >= card["compute"]["train_seconds"]

    # a card file beside the checkpoint adds what the run could not know; eval tables add up by title
    add_eval(card_path_for(run / "ckpt.pt"), "Sample quality", ["cfg", "accuracy"], [[2, "64.9"]], "notes")
    add_eval(card_path_for(run / "ckpt.pt"), "Sample quality", ["cfg", "accuracy"], [[4, "79.2"]], "newer")
    (tmp_path / "extra.card.json").write_text(json.dumps({"limits": ["draws discs only"], "guidance_scale": 3}))
    assert main(["export", str(run / "ckpt.pt"), str(tmp_path / "b")]) == 0
    assert "model card README.md from the checkpoint and" in capsys.readouterr().out
    text = card_of(tmp_path / "b")
    assert "Favicon-N/2" in text and "steps: 5" in text and "images seen: 40" in text and "2 sitting(s)" in text
    assert "| 4 | 79.2 |" in text and "| 2 | 64.9 |" not in text and "Sources and licences: unknown" in text
    verify.verify_bundle(tmp_path / "b")                                  # listed, sized and hashed like every file
    assert main(["export", str(run / "ckpt.pt"), str(tmp_path / "b2"), "--card", str(tmp_path / "extra.card.json")]) == 0
    text2 = card_of(tmp_path / "b2")
    assert "draws discs only" in text2 and "guidance scale: **3**" in text2 and "79.2" not in text2

    # the card travels into .safetensors weights (what ship_bundle.sh makes of a run)
    from dit_model.trainer import export_weights
    from dit_model.checkpoint import load_model
    (ema, _) = export_weights(run, tmp_path / "w")
    assert load_model(ema)[1]["card"]["steps"] == 5


def test_a_tampered_card_fails_verification(tmp_path):
    from export.bundle import export_bundle
    from runtime_py import verify
    from _gpu_helpers import random_model, small_cfg
    b = export_bundle(random_model(small_cfg()), tmp_path / "b", "f32", card={"data": data_sources({})})
    assert "Twemoji graphics: Copyright 2020 Twitter" in card_of(b)
    (b / "README.md").write_text(card_of(b).replace("CC-BY 4.0", "public domain"))
    with pytest.raises(verify.BundleError, match="README.md"):
        verify.verify_bundle(b)


def test_old_checkpoints_say_what_is_unknown(tmp_path, capsys):
    from dit_model.checkpoint import save_weights
    from _gpu_helpers import random_model, small_cfg
    model = random_model(small_cfg())
    save_weights(model, tmp_path / "old.safetensors", [f"c{i}" for i in range(5)], step=7)
    assert main(["export", str(tmp_path / "old.safetensors"), str(tmp_path / "b")]) == 0
    assert "the checkpoint records none" not in capsys.readouterr().out     # its step is recorded
    text = card_of(tmp_path / "b")
    assert "steps: 7" in text and "Training data: unknown" in text and "Recipe: unknown" in text
    assert "compute: unknown" in text and "No evaluation recorded" in text and "guidance scale: **4**" in text


def test_bad_cards_are_one_line_errors(tmp_path, capsys):
    from dit_model.checkpoint import save_weights
    from _gpu_helpers import random_model, small_cfg
    model = random_model(small_cfg())
    save_weights(model, tmp_path / "m.safetensors", [f"c{i}" for i in range(5)], card=["not", "a", "dict"])
    assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model card must be a JSON object" in err[0]
    save_weights(model, tmp_path / "ok.safetensors", [f"c{i}" for i in range(5)])
    for text, want in (("{oops", "not a JSON card file"), ('{"steps": "many"}', "'steps' must be a int"),
                       ('{"eval": [{"rows": 1}]}', "eval[0] must hold a header and rows")):
        (tmp_path / "c.json").write_text(text)
        assert main(["export", str(tmp_path / "ok.safetensors"), str(tmp_path / "b"), "--card", str(tmp_path / "c.json")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and want in err[0], err
    assert main(["export", str(tmp_path / "ok.safetensors"), str(tmp_path / "b"), "--card", str(tmp_path / "no.json")]) == 2
    assert "no such card file" in capsys.readouterr().err
    # eval checks its --card target before sampling for minutes
    assert main(["eval", str(tmp_path / "ok.safetensors"), "--card", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["default", "subcategories", "named"])
def test_every_shipped_bundle_has_its_card(name):
    text = card_of(ROOT / "bundles" / name)
    card = read_card_file(ROOT / "models" / f"{name}.card.json")
    assert card["eval"] and card["data"]["sources"] and card["steps"] >= 1000
    for s in card["data"]["sources"]:
        assert s["licence"] in text and s["attribution"] in text
    assert "Twemoji graphics: Copyright 2020 Twitter" in text and "CC-BY 4.0" in text
    if name == "named":
        assert "Noto Emoji graphics" in text and "Fluent Emoji: Copyright (c) Microsoft" in text
    for section in ("## Model", "## Labels", "## Training data", "## Training recipe", "## Compute",
                    "## Evaluation", "Default guidance scale", "Intended use", "## Limits"):
        assert section in text, section
    assert f"steps: {card['steps']:,}" in text and "unknown" not in text.split("## Evaluation")[0]


def test_eval_adds_its_table_and_export_shows_it(tmp_path, capsys):
    folder = make_png_folder(tmp_path / "pngs", per_class=(6, 6, 6))
    run = tmp_path / "run"
    assert main(["train", "Favicon-N/2", "--data", str(folder), "--run-dir", str(run), *FAST, "--max-steps", "2"]) == 0
    assert main(["eval", str(run / "ckpt.pt"), "--data", str(folder), "--n-per-class", "2", "--steps", "2",
                 "--scales", "2", "--retrain-judge", "--judge", str(tmp_path / "judge.safetensors"), "--floor-pairs",
                 "2", "--card", "--out", str(tmp_path / "out")]) == 0
    card = read_card_file(run / "ckpt.card.json")
    (table,) = card["eval"]
    assert table["title"] == "Sample quality (ditweb eval)" and table["rows"][-1][0] == "generated cfg 2"
    assert main(["export", str(run / "ckpt.pt"), str(tmp_path / "b")]) == 0
    text = card_of(tmp_path / "b")
    assert "**Sample quality (ditweb eval)**" in text and "| generated cfg 2 |" in text and "steps: 2" in text
