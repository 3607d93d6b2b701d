"""The shipped models: models/named.safetensors (any emoji by name, in three styles; what `make run` and
`ditweb serve` use; its run continues), models/default.safetensors (9 Twemoji categories) and
models/subcategories.safetensors (98 subcategories), the last two offered by the page's model picker, each with its
f16 bundle under bundles/. They must load, agree with their bundle and fit the budget."""
from pathlib import Path

import numpy as np
import pytest
import torch

from dit_model.checkpoint import load_model
from dit_model.latent import read_reference, vae_for_model
from dit_model.sample import sample_images
from runtime_py.bundle import Bundle

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {"default": (9, "Animals & Nature"), "subcategories": (98, "animal-mammal"),
           "named": (1906 + 98 + 9 + 3, "hippopotamus")}


def paths(name):
    return ROOT / "models" / f"{name}.safetensors", ROOT / "bundles" / name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_exist_and_bundle_is_within_12_mb(name):
    model, bundle = paths(name)
    assert model.is_file() and (bundle / "manifest.json").is_file()
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size <= 12 * 2 ** 20, f"bundle is {size / 2 ** 20:.1f} MB"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_a_trained_favicon_model(name):
    classes, example = SHIPPED[name]
    model, meta = load_model(paths(name)[0])
    vae, _ = vae_for_model(paths(name)[0])          # a latent model: the autoencoder it names, checked by sha256
    if vae is None:
        assert meta["config"].input_size == 32 and meta["config"].in_channels == 4
    else:                                           # its latents decode to 32x32 RGBA favicons
        c, s = meta["config"].in_channels, meta["config"].input_size
        with torch.no_grad():
            assert tuple(vae.decode(torch.zeros(1, c, s, s)).shape) == (1, 4, 32, 32)
    assert len(meta["class_names"]) == classes and example in meta["class_names"]
    assert meta["step"] and meta["step"] >= 1000
    gate = model.blocks[0].adaLN_modulation[-1].weight
    assert gate.abs().max() > 0                      # trained: adaLN-Zero starts at exactly zero


def test_the_page_lists_the_shipped_bundles():
    import json
    listed = [e["url"] for e in json.loads((ROOT / "web" / "bundles.json").read_text())]
    assert listed == ["bundle/", "bundles/named/", "bundles/default/", "bundles/subcategories/"]
    assert all((paths(n)[1] / "manifest.json").is_file() for n in SHIPPED)


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_the_int8_bundle_is_the_shipped_named_weights(tmp_path, dtype):
    """bundles/named-int8 (offered by the page) is `export --dtype int8` of models/named.safetensors: a fresh
    export gives the same files byte for byte, so it cannot fall behind a newly shipped named model. The same for
    bundles/named-int4 (`--dtype int4`, the 4-bit block weights; not offered by the page), where it is shipped."""
    import subprocess
    import sys
    shipped = ROOT / "bundles" / f"named-{dtype}"
    if dtype == "int4" and not (shipped / "manifest.json").is_file():
        pytest.skip("no bundles/named-int4 shipped")
    fresh = tmp_path / f"named-{dtype}"
    model = ROOT / "models" / "named.safetensors"
    ref = read_reference(model)                     # a latent model's bundle carries its autoencoder's decoder
    vae = ["--vae", str(ROOT / ref["path"])] if ref else []
    subprocess.run([sys.executable, "-m", "ditweb", "export", str(model), str(fresh), "--dtype", dtype, *vae],
                   check=True, capture_output=True)
    names = sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file())
    stale = [n for n in names if (shipped / n).read_bytes() != (fresh / n).read_bytes()]
    assert not stale, (f"re-export bundles/named-{dtype} (ditweb export models/named.safetensors bundles/named-{dtype} "
                       f"--dtype {dtype}{' --vae ' + ref['path'] if ref else ''}): {stale}")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundle_samples_like_the_shipped_weights(name):
    """Same seed, same guide: the f16 bundle on the GPU vs the f32 weights in torch (PSNR on RGBA in [0, 1]; a
    latent model's latents, unclipped, both decoded by its autoencoder in torch: the bundle's decoder kernels have
    their own checks in `ditweb validate`)."""
    path, bundle_dir = paths(name)
    model, meta = load_model(path)
    vae, _ = vae_for_model(path)
    cfg = meta["config"]
    bundle = Bundle.load(bundle_dir)
    vocab = meta["vocab"]                           # a named model: the hippo in Noto, else class id 2
    label = vocab.resolve("hippo", "noto").ids if vocab is not None else 2
    ref = sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size, num_classes=cfg.num_classes,
                        class_ids=[label], steps=4, seed=3, prediction=cfg.prediction, clip_x0=vae is None,
                        null=vocab.sizes if vocab is not None else None)
    got = bundle.sample(label, seed=3, steps=4, cfg=4.0)
    if vae is not None:
        with torch.no_grad():
            ref, got = (vae.decode(torch.as_tensor(np.asarray(x), dtype=torch.float32)).clamp(-1, 1) for x in (ref, got))
    a, b = (np.asarray(ref) + 1) / 2, (np.asarray(got) + 1) / 2
    psnr = 10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-20))
    assert psnr >= 40, f"PSNR {psnr:.1f} dB"
