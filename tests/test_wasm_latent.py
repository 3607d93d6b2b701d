"""A latent bundle's decoder on the WebAssembly kernels (web/wasm-decode.js, run by node through tests/_wasm_node.mjs),
and its preview map (export/preview.py, web/decode.js previewPictures): the decoded images equal runtime_py's
(wgpu-py) and torch's in float64 at the bundle's own weights, the preview map is what numpy computes, the exporter's
map is a least-squares fit, and bad decoders are one-line errors in Python and in JS (docs/vae.md)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomize
from test_vae_favicon import TINY, random_vae

REPO = Path(__file__).resolve().parent.parent
NODE = REPO / "tests" / "_wasm_node.mjs"
VERIFY = REPO / "tests" / "_verify_decoder_node.mjs"
U32 = float(np.finfo(np.float32).eps) / 2          # f32 unit roundoff
BUDGET = 1e-4          # the whole decoder against float64: the budget tests/test_vae_decode.py holds WGSL to
PSNR_MIN = 40.0


def node(request: dict) -> dict:
    r = subprocess.run(["node", str(NODE)], input=json.dumps(request), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def make_latent_bundle(root: Path, name: str, dit_dtype: str = "f16", vae_dtype: str = "f16", vae=None) -> Path:
    """A tiny latent bundle as `export --vae` writes one: a random DiT on 4 x 8 x 8 latents and the decoder of a
    random favicon autoencoder (RGBA, no attention), with its preview map."""
    from dit_model.model import DiT, DiTConfig
    from export.bundle import export_bundle
    from export.decode import write_decoder
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3)
    model = randomize(DiT(cfg), seed=5).eval()
    out = export_bundle(model, root / name, dit_dtype, ["a", "b", "c"])
    write_decoder(out, vae if vae is not None else random_vae(TINY).dec, vae_dtype, 8)
    return out


def psnr(a, b) -> float:
    from export.preview import psnr_u8
    return psnr_u8(np.asarray(a).reshape(np.shape(b)), b)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("wasm-latent")
    return {d: make_latent_bundle(root, d, vae_dtype=d) for d in ("f16", "f32", "int8")}


def latents(n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 4, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["f16", "f32", "int8"])
def test_wasm_decoder_matches_runtime_py_and_float64_torch(bundles, dtype):
    from export.decode import decoder_from_tensors
    from runtime_py.bundle import Bundle
    from runtime_py.decode import load_decoder
    from safetensors.numpy import load_file
    from dit_model.vae import VAEConfig
    z = latents()
    got = node({"cmd": "decode", "bundle": str(bundles[dtype]), "latents": z.ravel().tolist(), "n": 2})
    assert "error" not in got, got
    img = np.asarray(got["image"], np.float64).reshape(2, 4, 32, 32)
    gpu = load_decoder(Bundle.load(bundles[dtype], verbose=False)).decode(z)
    m = json.loads((bundles[dtype] / "decoder" / "manifest.json").read_text())
    tensors = {}
    for f in {b["file"] for b in m["buffers"].values() if b["kind"] == "weight"}:
        tensors.update(load_file(bundles[dtype] / "decoder" / f))
    cfg = VAEConfig(**{**m["vae"], "block_out_channels": tuple(m["vae"]["block_out_channels"])})
    with torch.no_grad():
        ref = decoder_from_tensors(cfg, tensors)(torch.from_numpy(z).double()).numpy()
    rel = np.abs(img - ref).max() / np.abs(ref).max()
    print(f"\n[{dtype} decoder] wasm vs float64 torch: {rel:.2e} of max |out|; vs wgpu-py {psnr(img, gpu):.1f} dB")
    assert rel <= BUDGET
    assert psnr(img, gpu) >= PSNR_MIN


def test_preview_map_in_js_is_numpys(bundles):
    """web/decode.js previewPictures against export/preview.py apply_preview_map: within the f32 summation bound
    of each output (rows terms: |error| <= rows u sum |feature * weight|, plus the store's rounding)."""
    from export.preview import apply_preview_map, features
    from safetensors.numpy import load_file
    M = load_file(bundles["f16"] / "decoder" / "preview.safetensors")["preview.map"].astype(np.float64)
    z = latents(3, seed=4)
    got = node({"cmd": "decode", "bundle": str(bundles["f16"]), "latents": z.ravel().tolist(), "n": 3})["preview"]
    want = apply_preview_map(M, z, 3, 4)
    A = np.abs(features(z, 3))
    sums = (A @ np.abs(M)).reshape(3, 8, 8, 4, 4, 4).transpose(0, 3, 1, 4, 2, 5).reshape(want.shape)
    bound = (M.shape[0] + 1) * U32 * sums + U32 * np.abs(want)
    err = np.abs(np.asarray(got).reshape(want.shape) - want)
    assert (err <= bound).all(), float((err / bound).max())


def test_the_fit_recovers_a_linear_decoder():
    """On a decoder that is itself such a map, the least-squares fit (no ridge) finds it: error at float64's level."""
    from export.preview import apply_preview_map, fit_preview_map
    rng = np.random.default_rng(1)
    M = rng.standard_normal((3 * 3 * 4 + 1, 4 * 16))
    z = rng.standard_normal((40, 4, 8, 8))
    got = fit_preview_map(z, apply_preview_map(M, z, 3, 4), 3, ridge=0.0)
    assert np.abs(got - M).max() <= 1e-5 * np.abs(M).max()        # got is float32: its rounding, 6e-8 relative


def test_the_exporters_map_beats_one_colour_per_cell():
    """fit_for_decoder (k = 3) against the decoder on held-out latents of the prior is better than the best flat
    colour of each cell (the k = 1 map with its 16 pixel positions tied), fitted on the same data."""
    from export.preview import apply_preview_map, decode_prior, fit_for_decoder, fit_preview_map, psnr_u8
    vae = random_vae(TINY).dec
    M, db = fit_for_decoder(vae, (4, 8, 8))
    z, d = decode_prior(vae, (4, 8, 8), n=600, seed=3)
    flat = fit_preview_map(z[:500], np.repeat(np.repeat(d[:500].reshape(500, 4, 8, 4, 8, 4).mean(axis=(3, 5)), 4, 2), 4, 3), 1)
    db_flat = psnr_u8(apply_preview_map(flat, z[500:], 1, 4), d[500:])
    assert M.shape == (37, 64) and db > db_flat, (db, db_flat)


# ------------------------------------------------------------------ bad decoders: one line, Python and JS

def verify_both(folder: Path, x_shape) -> tuple[str, str]:
    from runtime_py.verify import BundleError, verify_decoder
    try:
        verify_decoder(folder, x_shape)
        py = "ok"
    except BundleError as e:
        py = str(e)
    r = subprocess.run(["node", str(VERIFY)], input=json.dumps([[str(folder), x_shape]]), capture_output=True,
                       text=True, timeout=60)
    return py, json.loads(r.stdout)[str(folder)]


def retouch(src: Path, dst: Path, edit) -> Path:
    """A copy of decoder/ with its manifest edited."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize("case,want", [
    ("latent", "differs from the model's x_shape"),
    ("preview-size", "a k = 3 map of these latents and images is [37, 64]"),
    ("preview-k", "a k = 1 map of these latents and images is [5, 64]"),
    ("preview-buffer", "names no f32 weight buffer"),
])
def test_bad_decoders_are_one_line_errors_in_python_and_js(bundles, tmp_path, case, want):
    src = bundles["f16"] / "decoder"
    x_shape = [4, 8, 8]
    if case == "latent":
        folder, x_shape = src, [4, 4, 4]
    else:
        def edit(m):
            if case == "preview-size":
                m["buffers"]["preview.map"]["shape"] = [36, 64]     # bytes unchanged would fail later: the shape first
            elif case == "preview-k":
                m["preview"]["k"] = 1
            else:
                m["preview"]["buffer"] = "vae.decoder.conv_in.bias"
        folder = retouch(src, tmp_path / case, edit)
    py, js = verify_both(folder, x_shape)
    for verdict in (py, js):
        assert want in verdict and "\n" not in verdict, verdict
    assert js.startswith("BundleError")


def test_an_unknown_decoder_kernel_is_refused_before_any_allocation(bundles, tmp_path):
    """A decoder kernel the WebAssembly module has no version of (bmm: a mid-block attention; a conv2d of k = 5):
    wasmDecoderProblem names it in one line, and WasmDecoder.create throws it before allocating anything."""
    for kernel in ({"op": "bmm", "variant": {}}, {"op": "conv2d", "variant": {"k": 5, "vec4": "vec4"}}):
        got = node({"cmd": "decoder-problem", "bundle": str(bundles["f16"]), "kernel": kernel})
        assert "has no WebAssembly version" in got["problem"] and "\n" not in got["problem"], got
        assert got["error"] == got["problem"] and got["topBefore"] == got["topAfter"], got
