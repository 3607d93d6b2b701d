"""A latent DiT + VAE through `ditweb export --vae`, `ditweb validate` and `ditweb sample --runtime wgpu`
(docs/vae.md, "Bundles with a decoder"): decoded RGB PNGs with no --vae, the same pixels as torch, sharded
decoder weights, a tampered decoder refused in one line, the adapter's limits checked before allocating."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from _gpu_helpers import gpu  # noqa: F401  (fixture)
from conftest import randomize
from dit_model.vae import VAEConfig, VAEDecoder, load_vae, save_vae_folder

VAE = VAEConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)   # 8x8 latent -> 16x16


def write_vae_folder(path, cfg: VAEConfig, seed=0):
    """A diffusers-style VAE folder (config.json + diffusion_pytorch_model.safetensors) of the decoder half."""
    vae = randomize(VAEDecoder(cfg).eval(), seed)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return save_vae_folder(vae, path)


@pytest.fixture(scope="module")
def latent_bundle(tmp_path_factory):
    from dit_model.checkpoint import atomic_save
    from dit_model.model import DiT, DiTConfig
    from ditweb.cli import main
    tmp = tmp_path_factory.mktemp("latent")
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3)
    model = randomize(DiT(cfg), seed=5).eval()
    atomic_save({"ema": model.state_dict(), "config": cfg.to_dict()}, tmp / "dit.pt")
    write_vae_folder(tmp / "vae", VAE)
    assert main(["export", str(tmp / "dit.pt"), str(tmp / "bundle"), "--vae", str(tmp / "vae")]) == 0
    return tmp, model


def test_export_writes_the_decoder(latent_bundle):
    tmp, _ = latent_bundle
    m = json.loads((tmp / "bundle" / "decoder" / "manifest.json").read_text())
    assert m["latent_shape"] == [4, 8, 8] and m["image_shape"] == [3, 16, 16]
    assert {k["op"] for k in m["kernels"].values()} == {"conv2d", "groupnorm", "upsample_nearest", "bmm", "softmax_rows"}
    assert all((tmp / "bundle" / "decoder" / f).is_file() for f in m["files"])
    files = json.loads((tmp / "bundle" / "manifest.json").read_text())["files"]
    assert {f"decoder/{f}" for f in m["files"]} | {"decoder/manifest.json"} <= set(files)
    from webserve.site import write_site                       # ditweb site publishes the decoder too
    write_site(tmp / "bundle", tmp / "site")
    assert all((tmp / "site" / "bundle" / f).is_file() for f in files if f.startswith("decoder/"))


def test_validate_checks_the_decoder(latent_bundle, capsys):
    from ditweb.cli import main
    tmp, _ = latent_bundle
    assert main(["validate", str(tmp / "bundle"), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "whole decoder" in out and "conv2d_f32_3_vec4" in out and "softmax_rows" in out
    assert main(["validate", str(tmp / "bundle"), "--summary", "--no-decoder"]) == 0
    assert "whole decoder" not in capsys.readouterr().out


def test_sample_wgpu_writes_decoded_pngs_like_torch(latent_bundle, capsys):
    from dit_model.sample import sample_images
    from ditweb.cli import main
    tmp, model = latent_bundle
    args = ["sample", str(tmp / "bundle"), "--runtime", "wgpu", "--n", "2", "--steps", "3", "--seed", "4", "--class", "1"]
    assert main(args + ["--out", str(tmp / "out")]) == 0
    assert "decoded by the bundle's VAE decoder" in capsys.readouterr().out
    png = np.asarray(Image.open(tmp / "out" / "sample_001.png")).astype(np.int64)
    assert png.shape == (16, 16, 3)
    x = sample_images(model, in_channels=4, input_size=8, num_classes=3, class_ids=[1, 1], steps=3, seed=4, clip_x0=False)
    with torch.no_grad():
        img = load_vae(tmp / "vae").decode(x)[1].permute(1, 2, 0).numpy()
    want = np.clip((img + 1) * 127.5 + 0.5, 0, 255).astype(np.int64)
    assert np.abs(png - want).max() <= 1                       # a float32 rounding may cross a level boundary


@pytest.mark.parametrize("dtype", ["f16", "int8"])
def test_same_seed_same_image_as_the_torch_twin(latent_bundle, tmp_path, dtype):
    """A bundle whose DiT and decoder are both f16 (or both int8): wgpu-py's decoded images against float64 torch
    holding the bundle's very weights (f16-rounded; int8: q * scale per output channel, dequantised), the same
    seed and sampler: PSNR >= 40 dB (f32 bundles: the PNG test above, within one level)."""
    from dit_model.sample import sample_images
    from ditweb.cli import main
    from runtime_py.bundle import Bundle
    from runtime_py.decode import load_decoder
    from runtime_py.validate import decoder_twin, torch_model
    tmp, model = latent_bundle
    out = tmp_path / dtype
    assert main(["export", str(tmp / "dit.pt"), str(out), "--dtype", dtype, "--vae", str(tmp / "vae")]) == 0
    bundle = Bundle.load(out, verbose=False)
    runner = load_decoder(bundle)
    assert runner.manifest["dtype"] == dtype and bundle.manifest["dtype"] == dtype
    got = runner.decode(bundle.sample([1, 2], seed=4, steps=3))
    dit64 = torch_model(bundle)                                  # float64, the bundle's weights
    x = sample_images(lambda x, t, y: dit64(x.double(), t, y).float(), in_channels=4, input_size=8, num_classes=3,
                      class_ids=[1, 2], steps=3, seed=4, clip_x0=False)
    with torch.no_grad():
        want = decoder_twin(bundle, runner)(x.double()).numpy()
        x32 = sample_images(model, in_channels=4, input_size=8, num_classes=3, class_ids=[1, 2], steps=3, seed=4,
                            clip_x0=False)
        full = load_vae(tmp / "vae").double().decode(x32.double()).numpy()   # the checkpoints' own f32 weights

    def psnr(u, v):
        u, v = (np.clip(np.asarray(u, np.float64), -1, 1) + 1) / 2, (np.clip(v, -1, 1) + 1) / 2
        return 10 * np.log10(1.0 / max(float(np.mean((u - v) ** 2)), 1e-20))
    value, rounding = psnr(got, want), psnr(got, full)
    print(f"\n[{dtype} latent bundle] PSNR wgpu-py vs torch twin: {value:.1f} dB (vs the f32 weights: {rounding:.1f} dB)")
    assert got.shape == want.shape and value >= 40.0
    assert value >= rounding + 20                                 # the twin's weights are what the bundle holds


def test_decoder_weights_are_sharded(tmp_path):
    from export.decode import write_decoder
    from runtime_py.verify import verify_decoder
    vae = load_vae(write_vae_folder(tmp_path / "vae", VAE))
    dec = write_decoder(tmp_path, vae, "f32", 8, shard_bytes=2 ** 20)
    m = verify_decoder(dec, [4, 8, 8])
    shards = sorted({b["file"] for b in m["buffers"].values() if b["kind"] == "weight"})
    assert len(shards) >= 2 and all((dec / s).stat().st_size <= 2 ** 20 + 4096 for s in shards)


def test_tampered_decoder_is_refused_in_one_line(latent_bundle, tmp_path, capsys):
    import shutil
    from ditweb.cli import main
    tmp, _ = latent_bundle
    bad = tmp_path / "bundle"
    shutil.copytree(tmp / "bundle", bad)
    shard = bad / "decoder" / "weights-00.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4])
    assert main(["sample", str(bad), "--runtime", "wgpu", "--n", "1", "--steps", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights-00.safetensors" in err[0] and "bytes" in err[0]
    from runtime_py.verify import verify_decoder
    from runtime_py.verify import BundleError
    shutil.copy(tmp / "bundle" / "decoder" / "weights-00.safetensors", shard)
    with pytest.raises(BundleError, match=r"latent_shape \[4, 8, 8\] differs from the model's x_shape \[4, 16, 16\]"):
        verify_decoder(bad / "decoder", [4, 16, 16])
    m = json.loads((bad / "decoder" / "manifest.json").read_text())
    m["program"][0]["bindings"][-1] = m["program"][0]["bindings"][1]             # write into a weight
    (bad / "decoder" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"would write weight buffer"):
        verify_decoder(bad / "decoder")
    assert main(["sample", str(bad), "--runtime", "wgpu", "--n", "1", "--steps", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()          # the bundle's own manifest lists the decoder's files
    assert len(err) == 1 and "decoder/manifest.json" in err[0] and "manifest.json files says" in err[0]


def test_limits_are_checked_before_allocating(latent_bundle):
    from runtime_py.bundle import Bundle
    from runtime_py.decode import load_decoder
    from runtime_py.gpu import DeviceLimitError
    tmp, _ = latent_bundle
    bundle = Bundle.load(tmp / "bundle", verbose=False)

    class SmallGPU:                         # an adapter that binds at most 16 KiB: nothing may be allocated
        name = "small"

        def limit(self, name):
            return 16384

        def __getattr__(self, name):
            raise AssertionError(f"GPU used ({name}) before the limits were checked")

    bundle.gpu = SmallGPU()
    with pytest.raises(DeviceLimitError, match=r"binds at most"):
        load_decoder(bundle)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["program"][3]["params"].pop(), r"program\[3\] .*params"),
    (lambda m: m["program"][0].update(kernel="nope"), r"unknown kernel 'nope'"),
    (lambda m: next(iter(m["kernels"].values())).update(op="matmul"), r"op 'matmul' is not a decoder kernel"),
    (lambda m: m["files"].update({"../x": {"size": 1, "sha256": "0" * 64}}), r"unsafe path '../x'"),
    (lambda m: m["buffers"]["dec.0"].update(elements=[0, "big", 0]), r"buffers.dec.0.elements"),
    (lambda m: m.update(format_version=2), r"is not ditweb-decoder version 1"),
    (lambda m: m["io"].update(image="vae.post_quant_conv.weight"), r"io.image: .* names no activation buffer"),
])
def test_bad_decoder_manifests_fail_in_one_line(latent_bundle, tmp_path, edit, match):
    import shutil
    from runtime_py.verify import verify_decoder
    from runtime_py.verify import BundleError
    tmp, _ = latent_bundle
    dec = tmp_path / "decoder"
    shutil.copytree(tmp / "bundle" / "decoder", dec)
    m = json.loads((dec / "manifest.json").read_text())
    edit(m)
    (dec / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=match) as e:
        verify_decoder(dec, [4, 8, 8])
    assert "\n" not in str(e.value)


def test_int8_decoder_bundle(latent_bundle, tmp_path, capsys):
    """export --vae-dtype int8: I8 shards (half the f16 bytes of the convolutions), validate passes (int8 judged
    against torch on the dequantised weights), sample writes decoded PNGs close to the f32 decoder's."""
    from ditweb.cli import main
    tmp, _ = latent_bundle
    out = tmp_path / "b8"
    assert main(["export", str(tmp / "dit.pt"), str(out), "--vae", str(tmp / "vae"), "--vae-dtype", "int8"]) == 0
    m = json.loads((out / "decoder" / "manifest.json").read_text())
    assert m["dtype"] == "int8" and {b["dtype"] for b in m["buffers"].values() if b["kind"] == "weight"} == {"i8", "f32"}
    assert main(["validate", str(out), "--summary"]) == 0
    assert "conv2d_q8" in capsys.readouterr().out
    args = ["sample", "--runtime", "wgpu", "--n", "1", "--steps", "3", "--seed", "4", "--class", "1"]
    assert main([args[0], str(out), *args[1:], "--out", str(tmp_path / "o8")]) == 0
    assert main([args[0], str(tmp / "bundle"), *args[1:], "--out", str(tmp_path / "o32")]) == 0
    a = np.asarray(Image.open(tmp_path / "o8" / "sample_000.png"), np.float64)
    b = np.asarray(Image.open(tmp_path / "o32" / "sample_000.png"), np.float64)
    assert 10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-12)) >= 30.0
    assert main(["export", str(tmp / "dit.pt"), str(tmp_path / "x"), "--vae-dtype", "int8"]) == 2
    assert "--vae-dtype needs --vae" in capsys.readouterr().err
