"""The VAE decoder as a WGSL program (export/decode.py, runtime_py/decode.py) in wgpu-py: every dispatch within
its derived bound at its real shapes, and the whole decoder against dit_model/vae.py in float64 on a small
random-weight config (docs/vae.md, "The decoder in WGSL")."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _gpu_helpers import gpu  # noqa: F401  (fixture)
from conftest import randomize
from dit_model.vae import VAEConfig, VAEDecoder
from export.decode import build_decode, decoder_from_tensors, decoder_tensors, image_shape
from export.program import ProgramBuilder
from runtime_py.decode import DecodeRunner, to_rgb
from runtime_py.parity import weight_bytes
from runtime_py.validate import WHOLE_MODEL_TOL, check_decode, whole_decode
from wgsl.ops import OPS

# two up blocks (one upsample, a channel change with its 1x1 shortcut), the mid attention over 16 tokens
SMALL = VAEConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
DEEPER = VAEConfig(block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=4, scaling_factor=0.5,
                   shift_factor=0.1)


def random_vae(cfg, seed=0):
    vae = randomize(VAEDecoder(cfg).eval(), seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():                                  # GroupNorm scales near 1, as in trained models
        for name, p in vae.named_parameters():
            if ("norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
    return vae


DTYPE_NAME = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.int8): "i8"}


def make_runner(gpu, vae, latent_size, dtype):
    """The decode program of `vae` in wgpu-py, as write_decoder would lay it out (int8: conv2d_q8, the rest f32)."""
    cfg = vae.cfg
    tensors = decoder_tensors(vae, dtype)
    kdtype = "f32" if dtype == "int8" else dtype
    pb = ProgramBuilder(None, kdtype, {k: v.shape for k, v in tensors.items()})
    pb.programs = {"decode": []}
    pb.current = pb.programs["decode"]
    latent = pb.act("dec.latent", 0, cfg.latent_channels * latent_size ** 2)
    image = build_decode(pb, cfg, latent_size, latent, q8=dtype == "int8")
    pipes = {n: gpu.pipeline(OPS[k["op"]].render(k["variant"], kdtype), n, k["entry"]["bindings"])
             for n, k in pb.kernels.items()}
    raw = {n: a.tobytes() if a.dtype == np.int8 else weight_bytes(a, kdtype) for n, a in tensors.items()}
    weights = {n: gpu.buffer(len(r), n, r) for n, r in raw.items()}
    table = {n: {"kind": "weight", "dtype": DTYPE_NAME[a.dtype], "shape": list(a.shape), "bytes": a.nbytes}
             for n, a in tensors.items()}
    table.update(pb.buffers)
    entries = {n: k["entry"] for n, k in pb.kernels.items()}          # the kernels as a manifest lists them
    runner = DecodeRunner(gpu, pipes, entries, weights, table, pb.programs["decode"], latent, image,
                          (cfg.latent_channels, latent_size, latent_size), image_shape(cfg, latent_size))
    return runner, tensors, table, pb.kernels


def latents(cfg, n, side, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, cfg.latent_channels, side, side, generator=g) * cfg.scaling_factor).numpy()


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_whole_decoder_matches_float64_torch(gpu, dtype):
    vae = random_vae(SMALL)
    runner, tensors, _, _ = make_runner(gpu, vae, 4, dtype)
    z = latents(SMALL, 2, 4)
    row = whole_decode(runner, decoder_from_tensors(SMALL, tensors), z)
    assert row.passed, f"{row.max_abs:.3e} > {row.tol:.3e}"
    assert row.max_abs <= 0.05 * row.tol                   # seen 4e-7 of the scale against the 1e-4 budget
    if dtype == "f32":                                     # the folded scaling: the same decoder as vae.decode
        ref = vae.double()(torch.from_numpy(z).double() / SMALL.scaling_factor).detach().numpy()
        assert np.abs(runner.decode(z) - ref).max() <= WHOLE_MODEL_TOL * np.abs(ref).max()
        rgb = to_rgb(runner.decode(z))
        assert rgb.shape == (2, 8, 8, 3) and rgb.dtype == np.uint8


def test_every_decode_dispatch_within_its_bound(gpu):
    vae = random_vae(DEEPER, seed=3)
    runner, tensors, table, kernels = make_runner(gpu, vae, 3, "f16")
    rows = check_decode(runner, kernels, table, "f16", latents(DEEPER, 1, 3))
    bad = [r for r in rows if not r.passed]
    assert not bad, "; ".join(f"{r.kernel}: {r.ratio:.3g} x bound at {r.where}" for r in bad)
    used = {kernels[d["kernel"]]["op"] for d in runner.program}
    assert used == {"conv2d", "groupnorm", "upsample_nearest", "bmm", "softmax_rows"} and len(rows) == len(runner.program)
    row = whole_decode(runner, decoder_from_tensors(DEEPER, tensors), latents(DEEPER, 2, 3, seed=2))
    assert row.passed, f"{row.max_abs:.3e} > {row.tol:.3e}"


def test_decode_refuses_wrong_latents(gpu):
    from ditformat.errors import UsageError
    runner, _, _, _ = make_runner(gpu, random_vae(SMALL), 4, "f32")
    with pytest.raises(UsageError, match=r"latents must be \(N >= 1, 4, 4, 4\)"):
        runner.decode(np.zeros((1, 4, 5, 5), np.float32))


def test_real_size_decoder_on_a_2x2_latent(gpu):
    """The SD config (512 channels, 32 groups, four up blocks: every weight at its real shape), f16 weights, a
    2x2 latent (a 16x16 image; bench/vae.py runs 8x8, ~40 s on lavapipe): the whole decoder within the budget."""
    from dit_model.vae import SD_VAE
    vae = random_vae(SD_VAE, seed=7)
    runner, tensors, _, _ = make_runner(gpu, vae, 2, "f16")
    row = whole_decode(runner, decoder_from_tensors(SD_VAE, tensors), latents(SD_VAE, 1, 2))
    assert row.passed, f"{row.max_abs:.3e} > {row.tol:.3e}"


def test_int8_decoder_matches_its_dequantised_twin_and_costs_little(gpu):
    """int8 convolutions (per-output-channel scales): every dispatch within its bound, the whole decoder against
    float64 torch running the same dequantised weights; the quantisation's own cost measured against f16."""
    vae = random_vae(DEEPER, seed=4)
    runner, tensors, table, kernels = make_runner(gpu, vae, 3, "int8")
    rows = check_decode(runner, kernels, table, "f32", latents(DEEPER, 1, 3))
    bad = [r for r in rows if not r.passed]
    assert not bad, "; ".join(f"{r.kernel}: {r.ratio:.3g} x bound at {r.where}" for r in bad)
    assert "conv2d_q8" in {kernels[d["kernel"]]["op"] for d in runner.program}
    z = latents(DEEPER, 2, 3, seed=2)
    row = whole_decode(runner, decoder_from_tensors(DEEPER, tensors), z)
    assert row.passed, f"{row.max_abs:.3e} > {row.tol:.3e}"
    f16, _, _, _ = make_runner(gpu, vae, 3, "f16")
    a, b = np.clip(runner.decode(z), -1, 1), np.clip(f16.decode(z), -1, 1)
    psnr = 10 * np.log10(4.0 / np.mean((a - b) ** 2))                    # peak-to-peak 2 in [-1, 1]
    print(f"\nint8 vs f16 decoder (random weights, {DEEPER.block_out_channels}): PSNR {psnr:.1f} dB")
    assert psnr >= 30.0
