"""A latent bundle (export --vae) in headless Chromium (SwiftShader WebGPU): web/decode.js verifies decoder/
and decodes after sampling; the pixels match runtime_py's decoded images (PSNR >= 40 dB, docs/vae.md)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from webserve.browser import WEB_DIR, chromium, local_server, psnr, to_unit, wait_state
from conftest import randomize

PSNR_MIN = 40.0
CLASS_ID, SEED, STEPS = 1, 7, 3


@pytest.fixture(scope="module")
def latent(tmp_path_factory):
    import torch
    from dit_model.model import DiT, DiTConfig
    from dit_model.vae import VAEConfig, VAEDecoder
    from export.bundle import export_bundle
    from export.decode import write_decoder
    root = tmp_path_factory.mktemp("latent-browser")
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3)
    model = randomize(DiT(cfg), seed=5).eval()
    vae = randomize(VAEDecoder(VAEConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)).eval(), 1)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    bundle = export_bundle(model, root / "lat", "f16", ["a", "b", "c"])
    write_decoder(bundle, vae, "f16", 8)
    lat32 = export_bundle(model, root / "lat32", "f32", ["a", "b", "c"])       # f32 DiT and decoder
    write_decoder(lat32, vae, "f32", 8)
    lat8all = export_bundle(model, root / "lat8all", "int8", ["a", "b", "c"])  # int8 DiT and decoder
    write_decoder(lat8all, vae, "int8", 8)
    bad = root / "bad"
    shutil.copytree(bundle, bad)
    data = bytearray((bad / "decoder" / "weights-00.safetensors").read_bytes())
    data[-3] ^= 0x10
    (bad / "decoder" / "weights-00.safetensors").write_bytes(bytes(data))
    return {"lat": bundle, "bad": bad, "lat32": lat32, "lat8all": lat8all}


@pytest.fixture(scope="module")
def site(latent):
    with local_server({"/": WEB_DIR, **{f"/{k}/": v for k, v in latent.items()}}) as url, \
            chromium() as ctx:
        yield {"url": url, "ctx": ctx}


def open_page(site, query, states=("ready",)):
    page = site["ctx"].new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site["url"] + query)
    state = wait_state(page, states + ("no-webgpu", "no-adapter", "error", "bundle-error", "unsupported"), 120)
    assert state in states, f"page state {state}: {page.text_content('#message')} {errors}"
    return page


def test_browser_decodes_like_runtime_py(site, latent):
    from runtime_py.bundle import Bundle
    from runtime_py.decode import load_decoder
    page = open_page(site, "?bundle=lat/")                 # auto: SwiftShader would pick wasm; this decoder's attention needs WebGPU
    got = page.evaluate("""async (o) => { const r = await window.ditwebBundle.sample(o);
        return {image: Array.from(r.image), w: r.width, h: r.height, rt: r.runtime, n: r.rgba.length, len: r.rgba[0].length}; }""",
                        {"classId": CLASS_ID, "seed": SEED, "steps": STEPS})
    page.close()
    assert (got["rt"], got["w"], got["h"], got["n"], got["len"]) == ("webgpu", 16, 16, 1, 16 * 16 * 4)
    bundle = Bundle.load(latent["lat"], verbose=False)
    x = bundle.sample(CLASS_ID, seed=SEED, steps=STEPS)              # a latent bundle: no x0 clipping by default
    assert np.array_equal(x, bundle.sample(CLASS_ID, seed=SEED, steps=STEPS, clip_x0=False))
    want = load_decoder(bundle).decode(x).reshape(-1)
    img = np.asarray(got["image"], np.float32)
    value = psnr(to_unit(img), to_unit(want))
    print(f"\n[latent bundle] PSNR browser vs runtime_py (decoded 16x16): {value:.1f} dB, max abs {np.abs(img - want).max():.2e}")
    assert value >= PSNR_MIN


def test_corrupted_decoder_shard_is_a_bundle_error(site):
    page = open_page(site, "?bundle=bad/&runtime=webgpu", states=("bundle-error",))
    assert "decoder/weights-00.safetensors" in page.text_content("#message") and "sha256" in page.text_content("#message")
    page.close()


def test_without_webgpu_a_latent_bundle_with_attention_is_unsupported(site):
    """The WebAssembly kernels have no attention (bmm, softmax_rows; web/wasm-decode.js): without WebGPU the page says
    so in one line, before the worker starts, and keeps its favicon (tests/test_latent_browser.py: a decoder
    without attention runs on WebAssembly)."""
    page = site["ctx"].new_page()
    page.add_init_script("delete Navigator.prototype.gpu;")      # this page's visitor has no WebGPU
    page.goto(site["url"] + "?bundle=lat/&runtime=wasm")
    state = wait_state(page, ("unsupported", "ready", "error", "bundle-error", "no-webgpu"), 60)
    assert state == "unsupported", page.text_content("#message")
    message = page.text_content("#message")
    assert "(op bmm) has no WebAssembly version" in message and "there is no WebGPU" in message, message
    page.close()


def test_several_images_decode_one_after_the_other(site, latent):
    """n = 2 (different classes) through one image's buffers: the same images as runtime_py decodes."""
    from runtime_py.bundle import Bundle
    from runtime_py.decode import load_decoder
    page = open_page(site, "?bundle=lat/&runtime=webgpu")
    got = page.evaluate("""async () => Array.from((await window.ditwebBundle.sample({classIds: [0, 2], seed: 3, steps: 2})).image)""")
    page.close()
    bundle = Bundle.load(latent["lat"], verbose=False)
    want = load_decoder(bundle).decode(bundle.sample([0, 2], seed=3, steps=2)).reshape(-1)
    assert psnr(to_unit(np.asarray(got, np.float32)), to_unit(want)) >= PSNR_MIN


@pytest.mark.parametrize("name", ["lat32", "lat8all"])
def test_f32_and_int8_bundles_in_the_browser_match_runtime_py(site, latent, name):
    """lat32: f32 throughout; lat8all: int8 DiT + int8 decoder (f16 throughout is above; the int8 decoder's kernels
    are lat8all's whatever DiT feeds them, so an f16 DiT + int8 decoder bundle adds no kernel)."""
    from runtime_py.bundle import Bundle
    from runtime_py.decode import load_decoder
    page = open_page(site, f"?bundle={name}/&runtime=webgpu")
    got = page.evaluate("""async () => Array.from((await window.ditwebBundle.sample({classId: 2, seed: 5, steps: 2})).image)""")
    page.close()
    bundle = Bundle.load(latent[name], verbose=False)
    want = load_decoder(bundle).decode(bundle.sample(2, seed=5, steps=2)).reshape(-1)
    assert psnr(to_unit(np.asarray(got, np.float32)), to_unit(want)) >= PSNR_MIN
