import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import randomize
from dit_model.checkpoint import CheckpointError, infer_config, load_model
from dit_model.model import (CONDITIONINGS, PRESETS, DiT, DiTConfig, build_meta, count_params, forward_gflops,
                             preset_config, sincos_2d, timestep_frequencies)

PAPER = {  # Table 1 at 32x32x4 latents, 1000 classes, learned sigma: (params, Gflops p=2)
    "DiT-S/2": (32.96e6, 6.06), "DiT-B/2": (130.51e6, 23.01), "DiT-L/2": (458.10e6, 80.71), "DiT-XL/2": (675.13e6, 118.64)}
PAPER_GFLOPS = {"DiT-S/8": 0.36, "DiT-S/4": 1.41, "DiT-B/8": 1.42, "DiT-L/8": 5.01, "DiT-L/4": 19.70,
                "DiT-XL/8": 7.39, "DiT-XL/4": 29.05}


def imagenet(name, **kw):
    return preset_config(name, input_size=32, in_channels=4, num_classes=1000, **kw)


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_params_and_gflops(name):
    cfg = imagenet(name)
    params, gflops = PAPER[name]
    assert round(count_params(build_meta(cfg)) / 1e6, 2) == round(params / 1e6, 2)
    assert round(forward_gflops(cfg), 2) == gflops


@pytest.mark.parametrize("name,gflops", list(PAPER_GFLOPS.items()))
def test_paper_gflops_other_patches(name, gflops):
    assert round(forward_gflops(imagenet(name)), 2) == gflops


def test_cross_attention_costs_about_15_percent_more():
    ratio = forward_gflops(imagenet("DiT-XL/2", conditioning="cross-attn")) / forward_gflops(imagenet("DiT-XL/2"))
    assert 1.10 < ratio < 1.20


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("name", list(PRESETS))
def test_shapes_every_preset_and_design(name, conditioning):
    p = PRESETS[name]["patch_size"]
    cfg = preset_config(name, input_size=2 * p, conditioning=conditioning)
    with torch.device("meta"):            # the big presets: shapes without allocating
        model = DiT(cfg)
        out = model(torch.zeros(2, cfg.in_channels, cfg.input_size, cfg.input_size), torch.zeros(2, dtype=torch.long),
                    torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, cfg.out_channels, cfg.input_size, cfg.input_size)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_small_forward_every_design_is_finite(tiny_cfg, conditioning):
    from dataclasses import replace
    model = randomize(DiT(replace(tiny_cfg, conditioning=conditioning)))
    out = model(torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999]), torch.tensor([0, 2, 3]))
    assert out.shape == (3, 8, 8, 8) and torch.isfinite(out).all() and out.std() > 0.1


def test_fresh_adaln_zero_is_exactly_zero(tiny_cfg):
    torch.manual_seed(0)
    out = DiT(tiny_cfg)(torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 3]))
    assert torch.equal(out, torch.zeros_like(out))


def test_bad_configs():
    with pytest.raises(ValueError, match="not divisible by patch"):
        preset_config("DiT-S/8", input_size=12)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("DiT-M/2")
    with pytest.raises(ValueError, match="unknown conditioning"):
        preset_config("DiT-S/2", conditioning="film")


def test_positional_embedding_formula():
    D, G = 16, 3
    table = sincos_2d(D, G)
    for row in range(G):
        for col in range(G):
            tok = table[row * G + col]
            for half, pos in ((0, col), (1, row)):     # first half: column, second half: row
                for i in range(D // 4):
                    omega = 1.0 / 10000 ** (i / (D / 4))
                    assert tok[half * D // 2 + i] == pytest.approx(math.sin(pos * omega), abs=1e-12)
                    assert tok[half * D // 2 + D // 4 + i] == pytest.approx(math.cos(pos * omega), abs=1e-12)


def test_timestep_embedding_formula():
    t = torch.tensor([0, 1, 17, 999])
    emb = timestep_frequencies(t, 256).double()
    for n, tv in enumerate(t.tolist()):
        for i in (0, 5, 127):
            f = math.exp(-math.log(10000) * i / 128)
            assert emb[n, i] == pytest.approx(math.cos(tv * f), abs=2e-4)       # [cos | sin]
            assert emb[n, 128 + i] == pytest.approx(math.sin(tv * f), abs=2e-4)


# ---------------------------------------------------------------- published checkpoints

def published_state_dict(cfg: DiTConfig, seed=0) -> dict:
    """A state dict built by the published names and shapes only (not by our module)."""
    g = torch.Generator().manual_seed(seed)
    D, C, p, T = cfg.hidden_size, cfg.in_channels, cfg.patch_size, cfg.num_patches
    r = lambda *s: torch.randn(*s, generator=g) / math.sqrt(s[-1])
    sd = {"pos_embed": torch.from_numpy(sincos_2d(D, int(T ** 0.5))).float()[None],
          "x_embedder.proj.weight": r(D, C, p, p) * p, "x_embedder.proj.bias": r(D) * 0.1,
          "t_embedder.mlp.0.weight": r(D, 256), "t_embedder.mlp.0.bias": r(D) * 0.1,
          "t_embedder.mlp.2.weight": r(D, D), "t_embedder.mlp.2.bias": r(D) * 0.1,
          "y_embedder.embedding_table.weight": torch.randn(cfg.num_classes + 1, D, generator=g),
          "final_layer.adaLN_modulation.1.weight": r(2 * D, D), "final_layer.adaLN_modulation.1.bias": r(2 * D) * 0.1,
          "final_layer.linear.weight": r(p * p * 2 * C, D), "final_layer.linear.bias": r(p * p * 2 * C) * 0.1}
    for i in range(cfg.depth):
        for name, shape in (("attn.qkv", (3 * D, D)), ("attn.proj", (D, D)), ("mlp.fc1", (4 * D, D)),
                            ("mlp.fc2", (D, 4 * D)), ("adaLN_modulation.1", (6 * D, D))):
            sd[f"blocks.{i}.{name}.weight"] = r(*shape)
            sd[f"blocks.{i}.{name}.bias"] = r(shape[0]) * 0.1
    return sd


def functional_dit(sd, cfg, x, t, y):
    """An independent forward pass with torch.nn.functional only, read off the paper."""
    D, p, H, C = cfg.hidden_size, cfg.patch_size, cfg.num_heads, cfg.in_channels
    N = x.shape[0]
    h = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=p).flatten(2).transpose(1, 2)
    h = h + sd["pos_embed"]
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float64) / 128)
    ang = t.double()[:, None] * freqs[None]
    tf = torch.cat([torch.cos(ang), torch.sin(ang)], 1).float()
    te = F.linear(F.silu(F.linear(tf, sd["t_embedder.mlp.0.weight"], sd["t_embedder.mlp.0.bias"])),
                  sd["t_embedder.mlp.2.weight"], sd["t_embedder.mlp.2.bias"])
    c = te + sd["y_embedder.embedding_table.weight"][y]
    ln = lambda v: F.layer_norm(v, (D,), eps=1e-6)
    for i in range(cfg.depth):
        w = lambda n: (sd[f"blocks.{i}.{n}.weight"], sd[f"blocks.{i}.{n}.bias"])
        mod = F.linear(F.silu(c), *w("adaLN_modulation.1"))
        sh1, sc1, g1, sh2, sc2, g2 = [m[:, None] for m in mod.split(D, 1)]
        a = ln(h) * (1 + sc1) + sh1
        q, k, v = F.linear(a, *w("attn.qkv")).reshape(N, -1, 3, H, D // H).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), -1) @ v
        h = h + g1 * F.linear(att.transpose(1, 2).reshape(N, -1, D), *w("attn.proj"))
        m = ln(h) * (1 + sc2) + sh2
        h = h + g2 * F.linear(F.gelu(F.linear(m, *w("mlp.fc1")), approximate="tanh"), *w("mlp.fc2"))
    sh, sc = F.linear(F.silu(c), sd["final_layer.adaLN_modulation.1.weight"], sd["final_layer.adaLN_modulation.1.bias"]).split(D, 1)
    o = F.linear(ln(h) * (1 + sc[:, None]) + sh[:, None], sd["final_layer.linear.weight"], sd["final_layer.linear.bias"])
    g = int(h.shape[1] ** 0.5)
    o = o.reshape(N, g, g, p, p, 2 * C).permute(0, 5, 1, 3, 2, 4)          # n h w p q c -> n c (h p) (w q)
    return o.reshape(N, 2 * C, g * p, g * p)


def test_published_names_load_strict_and_match_functional():
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=48, depth=2, num_heads=3, num_classes=5)
    sd = published_state_dict(cfg)
    model = DiT(cfg)
    model.load_state_dict(sd, strict=True)
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 321, 999]), torch.tensor([0, 4, 5])
    ours = model(x, t, y)
    ref = functional_dit(sd, cfg, x, t, y)
    assert ours.std() > 0.1
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_published_xl2_names_and_shapes():
    cfg = preset_config("DiT-XL/2", input_size=32, num_classes=1000)
    ours = {k: tuple(v.shape) for k, v in build_meta(cfg).state_dict().items()}
    D = 1152
    assert ours["pos_embed"] == (1, 256, D)
    assert ours["x_embedder.proj.weight"] == (D, 4, 2, 2)
    assert ours["y_embedder.embedding_table.weight"] == (1001, D)
    assert ours["blocks.27.adaLN_modulation.1.weight"] == (6 * D, D)
    assert ours["final_layer.linear.weight"] == (2 * 2 * 8, D)
    assert len(ours) == 1 + 2 + 4 + 1 + 28 * 10 + 4


def test_reference_training_checkpoint_loads_with_weights_only(tmp_path):
    cfg = preset_config("DiT-S/8", input_size=16, num_classes=10)
    sd = published_state_dict(cfg)
    path = tmp_path / "0001000.pt"
    torch.save({"model": sd, "ema": sd, "opt": {}, "args": argparse.Namespace(model="DiT-S/8", image_size=128)}, path)
    model, meta = load_model(path)
    assert meta["config"].depth == 12 and meta["config"].hidden_size == 384 and meta["config"].num_heads == 6
    bare = tmp_path / "bare.pt"
    torch.save(sd, bare)
    model2, _ = load_model(bare)
    x, t, y = torch.randn(1, 4, 16, 16), torch.tensor([5]), torch.tensor([2])
    torch.testing.assert_close(model(x, t, y), model2(x, t, y))


def test_unknown_shapes_name_what_they_saw(tmp_path):
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=40, depth=3, num_heads=2, num_classes=3)
    path = tmp_path / "odd.pt"
    torch.save(DiT(cfg).state_dict(), path)
    with pytest.raises(CheckpointError, match="matches no preset .*depth 3, hidden 40"):
        load_model(path)


class Payload:
    """Stands for arbitrary pickled code: weights_only loading must refuse it."""


def test_pickle_payload_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"ema": {}, "thing": Payload()}, path)
    with pytest.raises(CheckpointError, match="its pickle names code") as e:
        load_model(path)
    assert "weights_only" not in str(e.value)                       # never the advice to load it unsafely


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_model(path)


def test_safetensors_weights_carry_config_and_class_names(tmp_path, tiny_cfg):
    from conftest import randomize
    from dit_model.checkpoint import save_weights
    model = randomize(DiT(tiny_cfg), seed=2)
    path = tmp_path / "m.safetensors"
    save_weights(model, path, ["a", "b", "c"], step=12)
    loaded, meta = load_model(path)
    assert meta["class_names"] == ["a", "b", "c"] and meta["step"] == 12 and meta["config"] == tiny_cfg
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 900]), torch.tensor([0, 3])
    torch.testing.assert_close(loaded(x, t, y), model(x, t, y))
