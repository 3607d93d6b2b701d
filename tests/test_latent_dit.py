"""Latent DiT training on a favicon autoencoder (dit_model/latent.py): `ditweb train --vae` encodes the data
(the image and its mirror image), trains a DiT on the scaled latents (a few hundred steps of a tiny model: the
loss falls), records the autoencoder's path and sha256 in ckpt.pt and in the exported weights, and `ditweb sample
MODEL` decodes with it without --vae; another autoencoder, or none where the model says, is a one-line error."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from _train_helpers import make_png_folder
from dit_model import trainer as TR
from dit_model.favicon_vae import file_sha256, finalize
from dit_model.latent import latent_batch, read_reference
from ditweb.cli import main
from test_vae_favicon import TINY, random_vae


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    folder = make_png_folder(root / "pngs", per_class=(4, 4, 4), size=32)
    from dit_model.data import load_folder
    vae_path = finalize(random_vae(TINY), load_folder(folder, 32).images, root / "vae.safetensors", {})
    run = root / "run"
    argv = ["train", "Favicon-N/2", "--data", str(folder), "--size", "32", "--vae", str(vae_path), "--run-dir", str(run),
            "--batch-size", "8", "--lr", "1e-3", "--ema", "0.99", "--log-every", "50", "--sample-every", "300",
            "--sample-steps", "2", "--sample-per-class", "2", "--max-steps", "300"]
    assert main(argv) == 0
    return root, folder, vae_path, run


def test_trains_on_latents_and_records_the_autoencoder(setup):
    root, folder, vae_path, run = setup
    ck = torch.load(run / "ckpt.pt", weights_only=True)
    assert (ck["config"]["input_size"], ck["config"]["in_channels"], ck["config"]["patch_size"]) == (8, 4, 2)
    ref = ck["train_args"]["vae_ref"]
    assert ref["sha256"] == file_sha256(vae_path) and ref["latent_shape"] == [4, 8, 8]
    rows = list(csv.DictReader(open(run / "log.csv")))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    print(f"\nlatent DiT smoke: loss {first:.3f} (step {rows[0]['step']}) -> {last:.3f} (step {rows[-1]['step']})")
    assert last < 0.8 * first
    grid = Image.open(run / "samples" / "step_0000300.png")              # decoded RGBA favicons, not latents
    assert grid.mode == "RGBA" and grid.size[0] >= 2 * 2 * 32                # 2 per row at scale 2: 32 px each


def test_sample_decodes_without_flags_and_refuses_another_autoencoder(setup, tmp_path, capsys):
    root, folder, vae_path, run = setup
    ema = TR.export_weights(run, tmp_path / "w")[0]
    assert read_reference(ema)["sha256"] == file_sha256(vae_path)
    for model in (run / "ckpt.pt", ema):
        out = tmp_path / f"s-{model.name}"
        assert main(["sample", str(model), "--class", "dogs", "--n", "2", "--steps", "2", "--out", str(out)]) == 0
        assert "decoded with" in capsys.readouterr().out
        png = Image.open(out / "sample_000.png")
        assert png.size == (32, 32) and png.mode == "RGBA"                # decoded 8x8 latents
    other = finalize(random_vae(TINY, seed=1), np.zeros((2, 32, 32, 4), np.uint8), tmp_path / "other.safetensors", {})
    cases = [(["--vae", str(other)], "another autoencoder")]
    moved = tmp_path / "moved.safetensors"
    shutil.copy(vae_path, moved)
    cases.append((["--vae", str(moved)], None))                          # the same bytes elsewhere: accepted
    for extra, want in cases:
        code = main(["sample", str(ema), "--n", "1", "--steps", "2", "--out", str(tmp_path / "x"), *extra])
        err = capsys.readouterr().err
        if want is None:
            assert code == 0, err
        else:
            assert code == 2 and want in err and len(err.strip().splitlines()) == 1, err
    vae_path.rename(root / "gone.safetensors")
    try:
        code = main(["sample", str(ema), "--n", "1", "--steps", "2", "--out", str(tmp_path / "y")])
        err = capsys.readouterr().err
        assert code == 2 and "not there" in err and "--vae" in err and len(err.strip().splitlines()) == 1, err
    finally:
        (root / "gone.safetensors").rename(vae_path)


def test_resume_with_another_autoencoder_is_refused(setup, tmp_path, capsys):
    root, folder, vae_path, run = setup
    other = finalize(random_vae(TINY, seed=2), np.zeros((2, 32, 32, 4), np.uint8), tmp_path / "o.safetensors", {})
    cut = tmp_path / "run"
    shutil.copytree(run, cut)
    assert main(["train", "--resume", str(cut), "--vae", str(other), "--max-steps", "301"]) == 2
    err = capsys.readouterr().err
    assert "not the autoencoder this run was trained with" in err and len(err.strip().splitlines()) == 1, err


def test_flipped_latents_are_the_mirror_images_own():
    lat = torch.arange(3 * 2 * 2 * 1 * 1, dtype=torch.float32).reshape(3, 2, 2, 1, 1)
    got = latent_batch(lat, torch.tensor([2, 0]), torch.tensor([True, False]))
    assert torch.equal(got, torch.stack([lat[2, 1], lat[0, 0]]))


def test_bundle_with_the_favicon_decoder_samples_rgba_like_torch(setup, tmp_path):
    """`ditweb export CKPT OUT --vae` takes the favicon autoencoder as it is (its config from the file: 4 output
    channels, 8 GroupNorm groups, no attention); wgpu-py's decoded RGBA favicons equal torch's for the same seed."""
    root, folder, vae_path, run = setup
    assert main(["export", str(run / "ckpt.pt"), str(tmp_path / "b"), "--vae", str(vae_path)]) == 0
    assert main(["sample", str(tmp_path / "b"), "--runtime", "wgpu", "--n", "2", "--steps", "3", "--out",
                 str(tmp_path / "gpu")]) == 0
    assert main(["sample", str(run / "ckpt.pt"), "--n", "2", "--steps", "3", "--out", str(tmp_path / "torch")]) == 0
    for i in range(2):
        a = np.asarray(Image.open(tmp_path / "gpu" / f"sample_00{i}.png"), np.float64)
        b = np.asarray(Image.open(tmp_path / "torch" / f"sample_00{i}.png"), np.float64)
        assert a.shape == (32, 32, 4)
        psnr = 10 * np.log10(255 ** 2 / max(((a - b) ** 2).mean(), 1e-10))
        assert psnr >= 40, psnr


def test_the_named_eval_decodes_a_latent_models_samples(setup):
    """ditweb eval (dit_model/named_eval.py) judges images, so a latent model's samples are drawn unclipped and
    decoded by the autoencoder the model names (found and checked by vae_for_model), RGBA at the data's size."""
    from types import SimpleNamespace
    from dit_model.evaluate import load_eval_model
    from dit_model.latent import vae_for_model
    from dit_model.named_eval import sample_requests
    root, folder, vae_path, run = setup
    model, meta = load_eval_model(run / "ckpt.pt")
    vae, found = vae_for_model(run / "ckpt.pt")
    assert file_sha256(found) == file_sha256(vae_path)
    one_level = SimpleNamespace(sizes=None)                      # a one-level model: the null label is num_classes
    x = sample_requests(model, meta["config"], one_level, [0, 1, 2], 2.0, 2, seed=0, vae=vae)
    assert x.shape == (3, 4, 32, 32) and float(x.abs().max()) <= 1.0
    latents = sample_requests(model, meta["config"], one_level, [0, 1, 2], 2.0, 2, seed=0)
    assert latents.shape == (3, 4, 8, 8)
    whole = sample_requests(model, meta["config"], one_level, [0, 1, 2], 2.0, 2, seed=0, interval=(0, 999))
    assert torch.equal(whole, latents)                           # ditweb eval --interval: the whole range is plain
    unguided = sample_requests(model, meta["config"], one_level, [0, 1, 2], 1.0, 2, seed=0)
    never = [(lo, lo) for lo in (1, 2, 3) if torch.equal(
        sample_requests(model, meta["config"], one_level, [0, 1, 2], 2.0, 2, seed=0, interval=(lo, lo)), unguided)]
    assert never                                                 # a t range no step visits: no guidance at all
