"""A latent favicon bundle (a favicon autoencoder's decoder: RGBA, no attention) in headless Chromium on both paths:
the WebAssembly worker runs the decoder after the last step (web/wasm-decode.js) and gives the image WebGPU
(SwiftShader) gives, and runtime_py's; the previews of every step are x_t through the bundle's preview map
(web/decode.js previewPictures), the final image the real decoder's (docs/vae.md, "Live previews")."""
from __future__ import annotations

import numpy as np
import pytest

from webserve.browser import WEB_DIR, chromium, local_server, wait_state
from test_wasm_latent import PSNR_MIN, make_latent_bundle, psnr

CLASS_ID, SEED, STEPS = 2, 11, 4
SAMPLE = """async (o) => {
  const steps = [];
  const r = await window.ditwebBundle.sample({ ...o, preview: true,
    onStep: (i) => { if (i.rgba) steps.push({ x: Array.from(i.x), rgba: Array.from(i.rgba[0]), w: i.width, h: i.height }); } });
  return { image: Array.from(r.image), rt: r.runtime, w: r.width, h: r.height, steps, decodeMs: r.decodeMs ?? null };
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    fav = make_latent_bundle(tmp_path_factory.mktemp("latent-browser"), "fav")
    with local_server({"/": WEB_DIR, "/fav/": fav}) as url, chromium() as ctx:
        yield {"url": url, "ctx": ctx, "fav": fav}


def run_page(site, query, init_script=None):
    page = site["ctx"].new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if init_script:
        page.add_init_script(init_script)
    page.goto(site["url"] + query)
    state = wait_state(page, ("ready", "no-webgpu", "no-adapter", "error", "bundle-error", "unsupported"), 120)
    assert state == "ready", f"page state {state}: {page.text_content('#message')} {errors}"
    got = page.evaluate(SAMPLE, {"classId": CLASS_ID, "seed": SEED, "steps": STEPS})
    page.close()
    return got


@pytest.fixture(scope="module")
def runs(site):
    return {rt: run_page(site, f"?bundle=fav/&runtime={rt}") for rt in ("wasm", "webgpu", "auto")}


def test_wasm_and_webgpu_decode_the_same_favicon_as_runtime_py(site, runs):
    from runtime_py.bundle import Bundle
    from runtime_py.decode import load_decoder
    bundle = Bundle.load(site["fav"], verbose=False)
    want = load_decoder(bundle).decode(bundle.sample(CLASS_ID, seed=SEED, steps=STEPS))
    wasm, gpu = runs["wasm"], runs["webgpu"]
    assert (wasm["rt"], gpu["rt"]) == ("wasm", "webgpu")
    assert (wasm["w"], wasm["h"], gpu["w"]) == (32, 32, 32) and wasm["decodeMs"] is not None
    a, b = np.asarray(wasm["image"]).reshape(want.shape), np.asarray(gpu["image"]).reshape(want.shape)
    print(f"\n[latent favicon] uint8 PSNR (148 dB: the same bytes) wasm vs WebGPU {psnr(a, b):.1f} dB, wasm vs "
          f"runtime_py {psnr(a, want):.1f} dB, WebGPU vs runtime_py {psnr(b, want):.1f} dB; max |difference| before "
          f"rounding {np.abs(a - b).max():.1e} (wasm - WebGPU), {np.abs(a - want).max():.1e} (wasm - runtime_py)")
    for x in (a, b):
        assert psnr(x, want) >= PSNR_MIN
    assert psnr(a, b) >= PSNR_MIN


def test_every_step_previews_x_t_through_the_preview_map(site, runs):
    """Steps 1..STEPS-1 show a 32 x 32 picture (not the 8 x 8 latent): the preview map of that step's x_t, as numpy
    computes it (export/preview.py), to within one level of the uint8 rounding."""
    from export.preview import apply_preview_map
    from safetensors.numpy import load_file
    M = load_file(site["fav"] / "decoder" / "preview.safetensors")["preview.map"]
    for rt in ("wasm", "webgpu"):
        steps = runs[rt]["steps"]
        assert len(steps) == STEPS - 1 and all((s["w"], s["h"]) == (32, 32) for s in steps), rt
        for s in steps:
            img = apply_preview_map(M, np.asarray(s["x"], np.float32).reshape(1, 4, 8, 8), 3, 4)[0]
            want = np.clip(np.floor((img + 1) * 127.5 + 0.5), 0, 255).transpose(1, 2, 0).reshape(-1)
            assert np.abs(np.asarray(s["rgba"], np.float64) - want).max() <= 1, rt


def test_auto_and_a_visitor_without_webgpu_take_webassembly(site, runs):
    """A decoder of conv2d / GroupNorm / upsample runs on WebAssembly: `auto` on SwiftShader (a software adapter)
    picks it, and a visitor without WebGPU gets the same latent favicon."""
    assert runs["auto"]["rt"] == "wasm"
    nogpu = run_page(site, "?bundle=fav/", init_script="delete Navigator.prototype.gpu;")
    assert nogpu["rt"] == "wasm" and nogpu["image"] == runs["wasm"]["image"]
