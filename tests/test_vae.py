"""The Stable Diffusion VAE decoder (dit_model/vae.py): parity with diffusers.AutoencoderKL.decode
(the oracle, random weights), the published file layouts, one-line errors for broken files, and
the multiply-accumulate count.

Tolerances. Both decoders run in float64 first: they then differ only by summation order, and a
length-K dot product rounds by at most K*u relative to sum |a||b| (u = 2^-53); a chain of L
such layers compounds to about L*K*u. With K = 9 * max channels (3x3 convs) and L = the number
of convolutions and matmuls on the longest path, that bound is still ~1e-11, far above what is
seen (~1e-15) but far below any real mistake (a wrong eps, order or scale is >= 1e-6). Our
float32 decoder is then held to the issue's aim against the float64 reference: norm-wise
relative error <= 1e-4 (seen: ~4e-7, the same as diffusers' own float32 error)."""
import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import randomize
from dit_model.vae import SD_VAE, VAEConfig, VAEDecoder, VAEError, build_meta, decode_gmacs, load_vae

try:
    import diffusers
except ImportError:
    diffusers = None
# only the tests that compare with diffusers need it; CI installs it with the dev extra
oracle = pytest.mark.skipif(diffusers is None, reason="diffusers (the test oracle, in the dev extra) is not installed")

SMALL = [VAEConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8),
         VAEConfig(latent_channels=3, block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=4)]
F32_AIM = 1e-4


def reference_vae(cfg: VAEConfig, seed: int = 0):
    """A diffusers AutoencoderKL of this config with every tensor random (norms included)."""
    n = len(cfg.block_out_channels)
    torch.manual_seed(seed)
    ref = diffusers.AutoencoderKL(latent_channels=cfg.latent_channels, out_channels=cfg.out_channels,
                                  block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
                                  norm_num_groups=cfg.norm_num_groups, scaling_factor=cfg.scaling_factor,
                                  down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n)
    return randomize(ref, seed).eval()


def rounding_bound(cfg: VAEConfig, u: float = 2.0 ** -53) -> float:
    convs = 2 + 2 * 2 + 2 + len(cfg.block_out_channels) * 2 * (cfg.layers_per_block + 1) + len(cfg.block_out_channels) + 1
    return convs * 9 * max(cfg.block_out_channels) * u


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def check_parity(ours: VAEDecoder, ref, cfg: VAEConfig, side: int, n: int = 2):
    z = torch.randn(n, cfg.latent_channels, side, side, generator=torch.Generator().manual_seed(1))   # (N, L, h, w)
    with torch.no_grad():
        want64 = ref.double().decode(z.double()).sample                                  # (N, 3, H, W)
        got64 = ours.double()(z.double())
        got32 = ours.float()(z)
        ref.float()
    assert got64.shape == want64.shape == (n, cfg.out_channels, side * 2 ** (len(cfg.block_out_channels) - 1),
                                           side * 2 ** (len(cfg.block_out_channels) - 1))
    err64, err32 = rel(got64, want64), rel(got32, want64)
    assert err64 <= rounding_bound(cfg), f"float64 parity: rel. error {err64:.2e} > bound {rounding_bound(cfg):.2e}"
    assert err32 <= F32_AIM, f"float32 vs float64 reference: rel. error {err32:.2e} > {F32_AIM}"


@oracle
@pytest.mark.parametrize("cfg", SMALL, ids=["2-blocks", "3-blocks-3-latent"])
def test_small_configs_match_diffusers_through_a_folder(cfg, tmp_path):
    ref = reference_vae(cfg)
    ref.save_pretrained(tmp_path / "vae")            # config.json + diffusion_pytorch_model.safetensors
    ours = load_vae(tmp_path / "vae")
    assert ours.cfg == cfg                            # groups from config.json, not guessed
    check_parity(ours, ref, cfg, side=5)


@oracle
def test_real_sd_config_matches_diffusers_on_an_8x8_latent():
    ref = reference_vae(SD_VAE)
    ours = VAEDecoder(SD_VAE)
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))})
    check_parity(ours, ref, SD_VAE, side=8, n=1)


def test_decode_divides_by_the_scaling_factor_and_clamps():
    cfg = SMALL[0]
    ours = randomize(VAEDecoder(cfg)).eval()
    with torch.no_grad():
        ours.decoder.conv_out.bias.fill_(0.8)        # pushes some pixels past 1, so the clamp is exercised
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2)) * 3
    img = ours.decode(latents)
    with torch.no_grad():
        raw = ours(latents / 0.18215)
    assert raw.max() > 1
    assert torch.equal(img, raw.clamp(-1, 1))


# ---------------------------------------------------------------- layouts

def _diffusers_to_ldm(sd: dict, n: int) -> dict:
    """The inverse renaming (written independently of vae.py's): diffusers -> latent-diffusion."""
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for k, v in sd.items():
        new = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        new = new.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
        for a, b in attn.items():
            if f"mid_block.attentions.0.{a}." in new:
                new = new.replace(f"mid_block.attentions.0.{a}.", f"mid.attn_1.{b}.")
                if a != "group_norm" and v.dim() == 2:
                    v = v[:, :, None, None]                               # stored as 1x1 convolutions
        parts = new.split(".")
        if parts[1] == "up_blocks":
            i = n - 1 - int(parts[2])
            rest = ".".join(parts[5:] if parts[3] == "upsamplers" else parts[3:])
            new = f"decoder.up.{i}." + (f"upsample.{rest}" if parts[3] == "upsamplers" else rest.replace("resnets", "block", 1))
        out[new] = v
    return out


@pytest.fixture(scope="module")
def small_ref():
    """32 GroupNorm groups (what a file without config.json is assumed to have), a shortcut, 3 latents."""
    cfg = VAEConfig(latent_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1)
    ref = reference_vae(cfg, seed=3)
    z = torch.randn(1, cfg.latent_channels, 4, 4, generator=torch.Generator().manual_seed(4))   # (1, 3, 4, 4)
    with torch.no_grad():
        want = ref.decode(z).sample                                                             # (1, 3, 16, 16)
    return cfg, ref.state_dict(), z, want


def _check_loaded(path, small_ref, **kw):
    cfg, _, z, want = small_ref
    ours = load_vae(path, **kw)
    assert ours.cfg == cfg
    with torch.no_grad():
        assert rel(ours(z), want) <= F32_AIM
    return ours


@oracle
def test_bare_safetensors_assumes_the_sd_config_and_says_so(small_ref, tmp_path, capsys):
    _, sd, _, _ = small_ref
    save_file(sd, tmp_path / "vae.safetensors")
    _check_loaded(tmp_path / "vae.safetensors", small_ref)
    err = capsys.readouterr().err
    assert "without config.json" in err and "32 groups" in err and "0.18215 assumed" in err


@oracle
def test_older_attention_names(small_ref, tmp_path):
    cfg, sd, _, _ = small_ref
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for k, v in sd.items():
        for a, b in old.items():
            k = k.replace(f"attentions.0.{a}.", f"attentions.0.{b}.")
        renamed[k] = v
    assert "decoder.mid_block.attentions.0.proj_attn.weight" in renamed
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 3,
                                                              "block_out_channels": [32, 64, 64], "layers_per_block": 1}))
    save_file(renamed, tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    _check_loaded(tmp_path, small_ref)               # a pipeline folder: its vae/ is found


@oracle
def test_latent_diffusion_ckpt(small_ref, tmp_path):
    cfg, sd, _, _ = small_ref
    ldm = _diffusers_to_ldm(sd, len(cfg.block_out_channels))
    assert "decoder.up.0.block.0.nin_shortcut.weight" in ldm and ldm["decoder.mid.attn_1.q.weight"].dim() == 4
    full = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    full["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(3)           # the UNet of a full checkpoint
    torch.save({"state_dict": full, "global_step": 7}, tmp_path / "sd.ckpt")
    _check_loaded(tmp_path / "sd.ckpt", small_ref, quiet=True)
    # a VAE-only latent-diffusion checkpoint: no prefix, training losses beside the weights
    torch.save({"state_dict": {**ldm, "loss.logvar": torch.zeros(())}}, tmp_path / "vae.ckpt")
    _check_loaded(tmp_path / "vae.ckpt", small_ref, quiet=True)


# ---------------------------------------------------------------- untrusted files

class Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


@oracle
def test_broken_files_fail_with_one_line(small_ref, tmp_path, capsys):
    cfg, sd, _, _ = small_ref
    folder = tmp_path / "vae"
    folder.mkdir()
    good_cfg = {"_class_name": "AutoencoderKL", "latent_channels": 3, "block_out_channels": [32, 64, 64],
                "layers_per_block": 1}
    (folder / "config.json").write_text(json.dumps(good_cfg))
    weights = folder / "diffusion_pytorch_model.safetensors"

    def fails(tensors, match, config=good_cfg):
        (folder / "config.json").write_text(json.dumps(config) if isinstance(config, dict) else config)
        save_file(tensors, weights)
        with pytest.raises(VAEError) as e:
            load_vae(folder)
        assert match in _one_line(e), str(e.value)

    missing = dict(sd)
    del missing["decoder.up_blocks.1.resnets.1.conv2.weight"]
    fails(missing, "missing tensor 'decoder.up_blocks.1.resnets.1.conv2.weight'")
    fails({**sd, "decoder.conv_out.weight": torch.zeros(3, 32, 5, 5)}, "tensor 'decoder.conv_out.weight' is [3, 32, 5, 5]")
    fails({**sd, "decoder.extra.weight": torch.zeros(1)}, "unexpected tensor 'decoder.extra.weight'")
    fails({"unet.conv.weight": torch.zeros(1)}, "unknown layout")
    fails(sd, "field 'norm_num_groups'", {**good_cfg, "norm_num_groups": "four"})
    fails(sd, "not divisible into 4 GroupNorm groups", {**good_cfg, "block_out_channels": [30, 64, 64], "norm_num_groups": 4})
    fails(sd, "field 'block_out_channels'", {**good_cfg, "block_out_channels": [16, -1]})
    fails(sd, "not an AutoencoderKL", {"_class_name": "DiTTransformer2DModel"})
    fails(sd, "not a readable JSON config", "{not json")
    fails(sd, "tensor 'decoder.conv_in.weight' is [64, 3, 3, 3]", {**good_cfg, "block_out_channels": [32, 64, 128]})
    (folder / "config.json").write_text(json.dumps({**good_cfg, "block_out_channels": [4096] * 8}))
    with pytest.raises(VAEError) as e:                     # a huge config with a small file: refused before allocating
        load_vae(folder)
    _one_line(e)

    save_file({**sd, "decoder.conv_in.weight": torch.zeros(3)}, tmp_path / "flat.safetensors")     # no config.json
    with pytest.raises(VAEError, match="flat.safetensors: tensor shapes that no VAE decoder has") as e:
        load_vae(tmp_path / "flat.safetensors", quiet=True)
    _one_line(e)
    save_file({k: v for k, v in sd.items() if "conv_out" not in k}, tmp_path / "cut.safetensors")
    with pytest.raises(VAEError, match="cut.safetensors: missing tensor 'decoder.conv_out.weight'"):
        load_vae(tmp_path / "cut.safetensors", quiet=True)
    cases = {"nothing": (None, "no such VAE file"), "garbage.safetensors": (b"\x00" * 40, "not a readable safetensors"),
             "garbage.ckpt": (b"not a zip", "not a loadable checkpoint"), "list.ckpt": ([torch.zeros(1)], "dict of named tensors")}
    for name, (content, match) in cases.items():
        p = tmp_path / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        elif content is not None:
            torch.save(content, p)
        with pytest.raises(VAEError) as e:
            load_vae(p)
        assert match in _one_line(e)
    torch.save({"state_dict": {"x": Evil()}}, tmp_path / "evil.ckpt")
    with pytest.raises(VAEError, match=r"weights_only load failed: it names code \(print\)") as e:
        load_vae(tmp_path / "evil.ckpt")
    _one_line(e)
    assert "pickle code ran" not in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    with pytest.raises(VAEError, match="without config.json"):
        load_vae(tmp_path / "empty")


# ---------------------------------------------------------------- counting

@pytest.mark.parametrize("side", [32, 64])
def test_decode_gmacs_counts_what_torch_counts(side):
    """Our closed form against torch's FlopCounterMode (2 flops per multiply-accumulate; it counts
    convolutions and matmuls, not norms, activations or the upsampling copy) on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    model = build_meta(SD_VAE)
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 4, side, side, device="meta"))
    assert decode_gmacs(SD_VAE, side) * 1e9 == counter.get_total_flops() / 2
    assert round(decode_gmacs(SD_VAE, 32)) == 311       # "roughly 310 GMAC for a 256x256 image"


# ---------------------------------------------------------------- the command line

@oracle
def test_sample_with_vae_writes_decoded_rgb_pngs(tmp_path, tiny_cfg, capsys):
    """A latent DiT + a VAE folder: PNGs of the decoded images, the latents sampled without clipping."""
    import numpy as np
    from PIL import Image
    from dit_model.checkpoint import atomic_save
    from dit_model.model import DiT
    from dit_model.sample import sample_images
    from ditweb.cli import main
    model = randomize(DiT(tiny_cfg), seed=5).eval()                       # 4x8x8 latents
    atomic_save({"ema": model.state_dict(), "config": tiny_cfg.to_dict()}, tmp_path / "dit.pt")
    reference_vae(SMALL[0]).save_pretrained(tmp_path / "vae")             # 8x8 latent -> 16x16 image
    args = ["sample", str(tmp_path / "dit.pt"), "--vae", str(tmp_path / "vae"), "--n", "2", "--steps", "3", "--seed", "4"]
    assert main(args + ["--out", str(tmp_path / "out")]) == 0
    png = np.asarray(Image.open(tmp_path / "out" / "sample_001.png"))
    assert png.shape == (16, 16, 3)
    x = sample_images(model, in_channels=4, input_size=8, num_classes=3, class_ids=[0, 0], steps=3, seed=4, clip_x0=False)
    want = np.clip((load_vae(tmp_path / "vae").decode(x)[1].permute(1, 2, 0).numpy() + 1) * 127.5 + 0.5, 0, 255)
    assert np.abs(png.astype(np.float64) - want.astype(np.uint8)).max() <= 1      # rounding of a float32 decode
    assert "decoded with" in capsys.readouterr().out

    assert main(args + ["--vae", str(tmp_path / "nothing"), "--out", str(tmp_path / "bad")]) == 2
    assert main(args + ["--runtime", "wgpu", "--out", str(tmp_path / "bad")]) == 2
    reference_vae(SMALL[1]).save_pretrained(tmp_path / "vae3")            # 3 latent channels
    assert main(args[:3] + [str(tmp_path / "vae3"), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "no such VAE file" in err and "a bundle carries its decoder" in err and "3-channel latents, the model makes 4" in err
    assert not (tmp_path / "bad").exists()


def test_info_shows_the_vae_gflops(capsys):
    from ditweb.cli import main
    assert main(["info", "DiT-XL/2"]) == 0
    out = capsys.readouterr().out
    assert "118.638" in out and f"{decode_gmacs(SD_VAE, 32):.1f}" in out and f"{decode_gmacs(SD_VAE, 64):.1f}" in out
