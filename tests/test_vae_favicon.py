"""The favicon autoencoder (dit_model/favicon_vae.py): its layout is diffusers' AutoencoderKL (oracle: diffusers,
encode and decode in float64), `load_vae` reads its decoder from the file's own config, bad files are one-line
errors, and `ditweb train-vae` trains, resumes exactly and writes the file with the latents' measured scale."""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from _train_helpers import emoji_like
from dit_model.favicon_vae import (FAVICON_VAE, FaviconVAE, finalize, load_favicon_vae, save_favicon_vae,
                                   split_identities)
from dit_model.vae import VAEError, load_vae
from ditweb.cli import main

TINY = replace(FAVICON_VAE, latent_channels=4, block_out_channels=(8, 8, 16), norm_num_groups=4)


def random_vae(cfg=TINY, seed=0) -> FaviconVAE:
    torch.manual_seed(seed)
    vae = FaviconVAE(cfg).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():             # norms off their identity init too
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
    return vae


def test_the_layout_is_diffusers_autoencoderkl():
    """Our tensors load into diffusers' AutoencoderKL of the same config unchanged (strict), and its encoder's
    posterior mean / log-variance and its decoder match ours in float64."""
    diffusers = pytest.importorskip("diffusers")
    for cfg in (TINY, FAVICON_VAE):
        ours = random_vae(cfg).double()
        n = len(cfg.block_out_channels)
        theirs = diffusers.AutoencoderKL(
            in_channels=cfg.out_channels, out_channels=cfg.out_channels, latent_channels=cfg.latent_channels,
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
            norm_num_groups=cfg.norm_num_groups, mid_block_add_attention=cfg.mid_block_add_attention,
            sample_size=32).double().eval()
        theirs.load_state_dict(ours.state_dict_diffusers(), strict=True)
        x = torch.rand(2, 4, 32, 32, dtype=torch.float64) * 2 - 1
        with torch.no_grad():
            mean, logvar = ours.moments(x)
            post = theirs.encode(x).latent_dist
            assert torch.allclose(mean, post.mean, rtol=0, atol=1e-12)
            assert torch.allclose(logvar, post.logvar, rtol=0, atol=1e-12)
            assert mean.shape == (2, cfg.latent_channels, 8, 8)
            assert torch.allclose(ours.dec(mean), theirs.decode(mean).sample, rtol=0, atol=1e-12)


def test_load_vae_reads_the_file_with_its_own_config(tmp_path):
    vae = random_vae()
    images = np.stack([emoji_like(i, 32) for i in range(6)])
    path = finalize(vae, images, tmp_path / "v.safetensors", {"step": 0})
    cfg = load_vae(path).cfg
    assert cfg.out_channels == 4 and cfg.norm_num_groups == 4 and cfg.block_out_channels == (8, 8, 16)
    back = load_favicon_vae(path)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = back.encode(x)
    assert abs(z.std().item() - 1.0) < 1e-3 and abs(z.mean().item()) < 1e-3    # the stored scale and shift
    assert torch.equal(load_vae(path).decode(z), back.decode(z))


def test_bad_files_are_one_line_errors(tmp_path):
    from safetensors.torch import save_file
    vae = random_vae()
    good = save_favicon_vae(vae, tmp_path / "good.safetensors")
    sd = {k: v.contiguous() for k, v in vae.state_dict_diffusers().items()}
    conf = json.dumps({**TINY.to_dict(), "block_out_channels": list(TINY.block_out_channels)})
    cases = {
        "groups": ({**sd}, {"ditweb": "favicon-vae", "config": conf.replace('"norm_num_groups": 4', '"norm_num_groups": 3')}),
        "notjson": (sd, {"ditweb": "favicon-vae", "config": "{nope"}),
        "shape": ({**sd, "decoder.conv_out.weight": torch.zeros(3, 8, 3, 3)}, {"ditweb": "favicon-vae", "config": conf}),
        "extra": ({**sd, "decoder.extra": torch.zeros(1)}, {"ditweb": "favicon-vae", "config": conf}),
        "nan": ({**sd, "encoder.conv_in.bias": torch.full((8,), float("nan"))}, {"ditweb": "favicon-vae", "config": conf}),
    }
    for name, (tensors, meta) in cases.items():
        p = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(p), metadata=meta)
        with pytest.raises(VAEError) as e:
            load_favicon_vae(p)
        assert "\n" not in str(e.value) and str(p) in str(e.value), (name, e.value)
    plain = tmp_path / "plain.safetensors"
    save_file(sd, str(plain))
    with pytest.raises(VAEError, match="not a favicon autoencoder"):
        load_favicon_vae(plain)
    assert load_favicon_vae(good).cfg == TINY


def make_pack(path: Path, n_identities=6, styles=("twemoji", "noto")) -> Path:
    from dit_model.emoji import Emoji, EmojiSet, save_emoji_pack
    cats = ["Smileys & Emotion", "Animals & Nature"]
    ids = [Emoji(f"1F60{i}", f"e{i}", [f"e{i}"], [], "sub", cats[i % 2]) for i in range(n_identities)]
    images, emoji, style = [], [], []
    for s in range(len(styles)):
        for i in range(n_identities):
            images.append(emoji_like(100 * s + i, 32))
            emoji.append(i)
            style.append(s)
    es = EmojiSet(np.stack(images), np.asarray(emoji), np.asarray(style), [""] * len(images), ids, list(styles),
                  cats, ["sub"], source="test")
    return save_emoji_pack(es, path)


def test_train_vae_runs_resumes_exactly_and_writes_the_file(tmp_path):
    pack = make_pack(tmp_path / "pack.npz")
    common = ["--data", str(pack), "--channels", "8,8,16", "--groups", "4", "--latent-channels", "4",
              "--batch-size", "4", "--log-every", "2", "--eval-every", "4", "--ckpt-every", "2", "--warmup", "2"]
    assert main(["train-vae", *common, "--run-dir", str(tmp_path / "full"), "--max-steps", "6"]) == 0
    assert main(["train-vae", *common, "--run-dir", str(tmp_path / "cut"), "--max-steps", "6", "--time-limit", "0"]) == 0
    assert main(["train-vae", "--resume", str(tmp_path / "cut")]) == 0
    a = torch.load(tmp_path / "full" / "ckpt.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "ckpt.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    rows = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    assert [r["step"] for r in rows] == ["2", "4", "6"] and rows[-1]["heldout_psnr"]
    vae = load_favicon_vae(tmp_path / "full" / "vae.safetensors")
    assert vae.cfg.block_out_channels == (8, 8, 16) and vae.cfg.scaling_factor != 1.0
    assert main(["train-vae", *common, "--run-dir", str(tmp_path / "full")]) == 2   # exists: one line, no overwrite


def test_held_out_identities_are_fixed():
    ids = np.arange(2000)
    held = split_identities(ids)
    assert 0.03 < held.mean() < 0.07
    assert np.array_equal(held, split_identities(ids))


def test_decoder_fine_tune_keeps_the_latent_space(tmp_path):
    """`train-vae --init FILE --decoder-only --latent-noise S` changes the decoder alone: the encoder's tensors,
    the latent shift and scale are FILE's bit for bit, the file names FILE's hash in `encoder_of`, and a latent
    model that names FILE accepts it (`vae_for_model`); an edited encoder, an unrelated file, or the options
    without --init / --decoder-only are refused with one line."""
    from safetensors.torch import save_file
    from dit_model.favicon_vae import encoder_fingerprint, encoder_lineage, file_sha256, shares_latents
    from dit_model.latent import AutoencoderMismatch, vae_for_model
    pack = make_pack(tmp_path / "pack.npz")
    start = random_vae()
    start.cfg = replace(start.cfg, shift_factor=0.125, scaling_factor=0.75)
    start.dec.cfg = start.cfg
    first = save_favicon_vae(start, tmp_path / "start.safetensors")
    common = ["--data", str(pack), "--batch-size", "4", "--log-every", "2", "--eval-every", "4", "--ckpt-every", "2",
              "--warmup", "2", "--max-steps", "4", "--lr", "1e-2", "--ema", "0.5"]
    assert main(["train-vae", *common, "--init", str(first), "--decoder-only", "--latent-noise", "0.5",
                 "--run-dir", str(tmp_path / "dec")]) == 0
    tuned_path = tmp_path / "dec" / "vae.safetensors"
    tuned = load_favicon_vae(tuned_path)
    assert (tuned.cfg.shift_factor, tuned.cfg.scaling_factor) == (0.125, 0.75)
    assert encoder_fingerprint(tuned) == encoder_fingerprint(start)
    assert not torch.equal(tuned.dec.state_dict()["post_quant_conv.weight"], start.dec.state_dict()["post_quant_conv.weight"])
    sha = file_sha256(first)
    assert encoder_lineage(tuned_path) == [sha] and shares_latents(tuned_path, sha)
    assert not shares_latents(first, file_sha256(tuned_path))            # the other way round: not a fine-tune of it
    # a latent model naming the start file decodes with the fine-tune in its place
    model = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(1)}, str(model), metadata={"autoencoder": json.dumps({"path": str(first), "sha256": sha})})
    assert vae_for_model(model, str(tuned_path))[1] == tuned_path
    # the fine-tune's encoder edited afterwards: its recorded fingerprint no longer holds
    edited = load_favicon_vae(tuned_path)
    with torch.no_grad():
        next(edited.encoder.parameters()).add_(1e-3)
    from dit_model.vae import safetensors_metadata
    save_favicon_vae(edited, tmp_path / "edited.safetensors", {k: v for k, v in safetensors_metadata(tuned_path).items()
                                                               if k not in ("ditweb", "config")})
    assert not shares_latents(tmp_path / "edited.safetensors", sha)
    with pytest.raises(AutoencoderMismatch, match="neither that file nor a decoder fine-tune"):
        vae_for_model(model, str(tmp_path / "edited.safetensors"))
    with pytest.raises(AutoencoderMismatch, match="neither that file nor a decoder fine-tune"):
        vae_for_model(model, str(save_favicon_vae(random_vae(seed=3), tmp_path / "other.safetensors")))
    # options that need one another
    assert main(["train-vae", *common, "--decoder-only", "--run-dir", str(tmp_path / "x")]) == 2
    assert main(["train-vae", *common, "--latent-noise", "0.3", "--run-dir", str(tmp_path / "y")]) == 2
    assert main(["train-vae", *common, "--init", str(tmp_path / "missing.safetensors"), "--decoder-only",
                 "--run-dir", str(tmp_path / "z")]) == 2
