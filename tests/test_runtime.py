"""The wgpu-py runtime: whole-model parity (every conditioning design, two presets, two batch sizes,
f32 and f16), sampling parity with torch, the CLI, and bad bundles failing before any GPU call."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from _gpu_helpers import gpu, random_model, small_cfg  # noqa: F401
from ditformat.guidance import Guide
from dit_model.model import CONDITIONINGS, DiT, preset_config
from dit_model.sample import sample_images
from export.bundle import export_bundle
from runtime_py import verify
from runtime_py.bundle import Bundle
from runtime_py.gpu import DeviceLimitError

F32_TOL = 1e-4       # issue target: max |wgpu - torch64| <= 1e-4 max |torch64|
F16_TOL = 2e-3       # vs torch with the same f16-rounded weights, of the output scale


def torch64(model: DiT, f16: bool) -> DiT:
    ref = DiT(model.cfg).double().eval()
    sd = model.state_dict()
    ref.load_state_dict({k: (v.half() if f16 else v).double() for k, v in sd.items()})
    return ref


def forward_error(bundle: Bundle, ref: DiT, B: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = ref.cfg
    x = torch.randn(B, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    y = torch.randint(0, cfg.num_classes + 1, (B,), generator=g)      # includes the null class
    got = bundle.forward(x.numpy(), t.numpy(), y.numpy())
    with torch.no_grad():
        want = ref(x.double(), t, y).numpy()
    return float(np.abs(got - want).max()), float(np.abs(want).max()), float(want.std())


# "p1-rgb": patch 1, 3 channels, no learned sigma (K = 3: the scalar matmul path, C_out = C)
CONFIGS = [(c, "small") for c in CONDITIONINGS] + [("adaln-zero", "Favicon-N/2"), ("adaln", "p1-rgb")]


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("conditioning,preset", CONFIGS, ids=[f"{c}-{p}" for c, p in CONFIGS])
def test_whole_model_parity(gpu, tmp_path, conditioning, preset, dtype):
    if preset == "p1-rgb":
        cfg = small_cfg(conditioning, patch_size=1, in_channels=3, learn_sigma=False, hidden_size=32, num_heads=2)
    else:
        cfg = small_cfg(conditioning) if preset == "small" else preset_config(preset)
    model = random_model(cfg, seed=7)
    bundle = Bundle.load(export_bundle(model, tmp_path / "b", dtype), gpu)
    ref = torch64(model, dtype == "f16")
    for B in (1, 3):
        err, scale, std = forward_error(bundle, ref, B, seed=B)
        assert std > 0.1, "random weights must give a non-trivial output"
        tol = (F16_TOL if dtype == "f16" else F32_TOL) * scale
        assert err <= tol, f"{conditioning} {preset} {dtype} B={B}: max abs err {err:.3e} > {tol:.3e}"


def test_f16_quantisation_error_is_reported_separately(gpu, tmp_path):
    """f16 bundle vs torch with the ORIGINAL f32 weights: the quantisation error, larger than the kernel error."""
    model = random_model(small_cfg(), seed=3)
    bundle = Bundle.load(export_bundle(model, tmp_path / "b", "f16"), gpu)
    err_q, scale, _ = forward_error(bundle, torch64(model, f16=False), 2)
    err_k, _, _ = forward_error(bundle, torch64(model, f16=True), 2)
    assert err_k < err_q < 2e-2 * scale
    print(f"f16 quantisation error {err_q / scale:.2e}, kernel error {err_k / scale:.2e} of the output scale")


def torch64_int8(model: DiT) -> DiT:
    """float64 torch with the weights an int8 bundle holds: every Linear dequantised (q * scale per output channel,
    export/bundle.py quantize_linear), the label table too (q * scale per row), the other tensors f16-rounded."""
    from export.bundle import LABEL_TABLE, linear_layers, quantize_linear
    ref = torch64(model, f16=True)
    sd = ref.state_dict()
    for x in linear_layers(model) + [LABEL_TABLE]:
        w = model.state_dict()[x + ".weight"]
        q, scale = quantize_linear(w.numpy())
        sd[x + ".weight"] = torch.from_numpy(q.astype(np.float64) * scale.astype(np.float64)[:, None]).reshape(w.shape)
        if x != LABEL_TABLE:
            sd[x + ".bias"] = model.state_dict()[x + ".bias"].double()
    ref.load_state_dict(sd)
    return ref


@pytest.mark.parametrize("conditioning", ["adaln-zero", "cross-attn", "in-context"])
def test_int8_whole_model_parity(gpu, tmp_path, conditioning):
    """--dtype int8: every Linear runs matmul_q8; judged against float64 torch running the same dequantised weights
    (the f16 tolerance: the other weights are f16). `ditweb validate` passes (every dispatch within its bound)."""
    from runtime_py.validate import validate
    model = random_model(small_cfg(conditioning), seed=7)
    out = export_bundle(model, tmp_path / "b", "int8")
    m = json.loads((out / "manifest.json").read_text())
    ops = {m["kernels"][d["kernel"]]["op"] for p in m["programs"].values() for d in p}
    assert {"matmul_q8", "label_embed_q8"} <= ops and not ops & {"matmul", "matmul_shared", "label_embed"}
    assert m["dtype"] == "int8"
    i8 = [b for b in m["buffers"].values() if b["kind"] == "weight" and b["dtype"] == "i8"]     # one per q8 dispatch
    assert len(i8) == len([d for p in m["programs"].values() for d in p if m["kernels"][d["kernel"]]["op"].endswith("_q8")])
    bundle = Bundle.load(out, gpu)
    ref = torch64_int8(model)
    for B in (1, 3):
        err, scale, std = forward_error(bundle, ref, B, seed=B)
        assert std > 0.1
        assert err <= F16_TOL * scale, f"int8 {conditioning} B={B}: max abs err {err:.3e} > {F16_TOL * scale:.3e}"
    rows = validate(bundle, None, 2)
    assert all(r.passed for r in rows), [r for r in rows if not r.passed][:3]
    # the quantisation itself costs more than the kernels' rounding: vs the f32 weights
    err_q, scale, _ = forward_error(bundle, torch64(model, f16=False), 2)
    assert err < err_q <= 5e-2 * scale


def psnr(a, b):
    a, b = np.clip((a + 1) / 2, 0, 1), np.clip((b + 1) / 2, 0, 1)        # RGBA in [0, 1], peak 1
    return 10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-30))


@pytest.mark.parametrize("guide,sampler,eta", [
    (Guide(scale=3.0, negative_class=2), "ddim", 0.0),                 # the test: CFG + a negative class
    (Guide(scale=2.0), "ddpm", 0.0),
    (Guide(scale=2.0, batch_k=3, batch_tau=0.5, schedule="linear", scale_end=4.0), "ddim", 0.5),
    (Guide(scale=1.5, compose=((0, 1.0), (1, -0.5)), schedule="interval", interval=(200, 800)), "ddim", 0.0),
], ids=["cfg-negative-ddim", "cfg-ddpm", "batch-estimate-linear-eta", "compose-interval"])
def test_sampling_parity(gpu, tmp_path, guide, sampler, eta):
    cfg = preset_config("Favicon-N/2")
    model = random_model(cfg, seed=11)
    bundle = Bundle.load(export_bundle(model, tmp_path / "b", "f32"), gpu)
    got = bundle.sample([0, 1], seed=5, steps=20, guide=guide, sampler=sampler, eta=eta)
    ref64 = torch64(model, False)
    want = sample_images(lambda x, t, y: ref64(x.double(), t, y).float(), in_channels=4, input_size=8, num_classes=3,
                         class_ids=[0, 1], guide=guide, steps=20, sampler=sampler, eta=eta, seed=5).numpy()
    assert want.std() > 0.3
    assert psnr(got, want) >= 40.0, f"PSNR {psnr(got, want):.1f} dB"


@pytest.mark.parametrize("guide,sampler,eta", [
    (Guide(scale=3.0), "ddim", 0.0),
    (Guide(scale=2.0), "ddpm", 0.0),
    (Guide(scale=2.0, batch_k=3, batch_tau=0.5), "ddim", 0.5),     # copies combined first, then converted at x_t
], ids=["cfg-ddim", "cfg-ddpm", "batch-estimate-eta"])
def test_v_prediction_sampling_parity(gpu, tmp_path, guide, sampler, eta):
    """A v-prediction model (sampler.prediction = "v", step flag 8): same seed, same image in torch and wgpu."""
    from dataclasses import replace
    cfg = replace(preset_config("Favicon-N/2"), prediction="v")
    model = random_model(cfg, seed=13)
    path = export_bundle(model, tmp_path / "b", "f32")
    assert json.loads((path / "manifest.json").read_text())["sampler"]["prediction"] == "v"
    bundle = Bundle.load(path, gpu)
    got = bundle.sample([0, 2], seed=9, steps=20, guide=guide, sampler=sampler, eta=eta)
    ref64 = torch64(model, False)
    run = lambda prediction: sample_images(lambda x, t, y: ref64(x.double(), t, y).float(), in_channels=4, input_size=8,
                                           num_classes=3, class_ids=[0, 2], guide=guide, steps=20, sampler=sampler,
                                           eta=eta, seed=9, prediction=prediction).numpy()
    want = run("v")
    assert want.std() > 0.3
    assert psnr(got, want) >= 40.0, f"PSNR {psnr(got, want):.1f} dB"
    assert psnr(got, run("eps")) < 30.0, "the bundle must not sample a v-model as if it predicted eps"


def test_cli_sample_wgpu_matches_torch(gpu, tmp_path):
    from PIL import Image
    from dit_model.checkpoint import atomic_save
    from ditweb.cli import main
    cfg = preset_config("Favicon-N/2")
    model = random_model(cfg, seed=2)
    ckpt = tmp_path / "m.pt"
    atomic_save({"model": model.state_dict(), "config": cfg.to_dict(), "class_names": ["a", "b", "c"]}, ckpt)
    assert main(["export", str(ckpt), str(tmp_path / "b")]) == 0
    common = ["--class", "b", "--n", "3", "--steps", "10", "--cfg", "3", "--negative-class", "c", "--seed", "4"]
    assert main(["sample", str(ckpt), *common, "--out", str(tmp_path / "torch")]) == 0
    assert main(["sample", str(tmp_path / "b"), *common, "--runtime", "wgpu", "--out", str(tmp_path / "wgpu")]) == 0
    a = np.asarray(Image.open(tmp_path / "torch" / "grid.png"), np.int16)
    b = np.asarray(Image.open(tmp_path / "wgpu" / "grid.png"), np.int16)
    assert a.shape == b.shape and a.std() > 10
    assert np.abs(a - b).max() <= 1                                     # uint8 rounding at most


def test_validate_cli(gpu, tmp_path, capsys):
    from dit_model.checkpoint import atomic_save
    from ditweb.cli import main
    model = random_model(small_cfg(), seed=5)
    export_bundle(model, tmp_path / "b", "f32")
    assert main(["validate", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "whole model forward" in out and "FAIL" not in out and "attention" in out
    # a checkpoint that is not the bundle's: the whole-model check fails, exit status non-zero
    other = random_model(small_cfg(), seed=6)
    atomic_save({"model": other.state_dict(), "config": other.cfg.to_dict()}, tmp_path / "other.pt")
    assert main(["validate", str(tmp_path / "b"), "--ckpt", str(tmp_path / "other.pt")]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_device_limits_split_or_fail_clearly(gpu, tmp_path, monkeypatch):
    model = random_model(small_cfg())
    bundle = Bundle.load(export_bundle(model, tmp_path / "b", "f32"), gpu)
    x = np.random.default_rng(0).standard_normal((5, 4, 8, 8)).astype(np.float32)
    whole = bundle.forward(x, [3, 50, 500, 900, 999], [0, 1, 2, 3, 5])
    real = gpu.limit
    # a device whose storage buffers hold 2 rows of the largest activation (mlp hidden: 16 x 256 floats)
    monkeypatch.setattr(gpu, "limit", lambda k: 2 * 16 * 256 * 4 + 64 if k == "max-storage-buffer-binding-size" else real(k))
    assert bundle.max_batch() == 2
    split = bundle.forward(x, [3, 50, 500, 900, 999], [0, 1, 2, 3, 5])       # 2 + 2 + 1 rows
    np.testing.assert_allclose(split, whole, rtol=0, atol=1e-6)
    with pytest.raises(DeviceLimitError, match="sample fewer images"):
        bundle.sample([0, 1], steps=2, cfg=4.0)                              # CFG: 4 rows > 2
    monkeypatch.setattr(gpu, "limit", lambda k: 1024 if k == "max-storage-buffer-binding-size" else real(k))
    with pytest.raises(DeviceLimitError, match="even one image"):
        bundle.forward(x, 0, 0)


def test_sharded_weights(gpu, tmp_path, monkeypatch):
    """Weights in shards of at most 1 MiB (ditformat/shards.py): the same outputs, bit for bit, as one file; a
    missing shard refused before any GPU call; the largest weight checked against the adapter before allocating."""
    from dit_model.model import DiTConfig
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=192, depth=2, num_heads=3, num_classes=5)
    model = random_model(cfg)
    one = export_bundle(model, tmp_path / "one", "f32")
    many = export_bundle(model, tmp_path / "many", "f32", shard_bytes=2 ** 20)
    m1, m = (json.loads((b / "manifest.json").read_text()) for b in (one, many))
    assert all("file" not in b for b in m1["buffers"].values() if b["kind"] == "weight")     # one shard: as before
    shards = sorted(f for f in m["files"] if f.endswith(".safetensors"))
    assert len(shards) >= 3 and shards[0] == "weights-00.safetensors" and "weights.safetensors" not in m["files"]
    for f in shards:
        header, start = verify.read_safetensors_header(many / f)
        assert m["files"][f]["size"] - start <= 2 ** 20
    assert {b["file"] for b in m["buffers"].values() if b["kind"] == "weight"} == set(shards)
    x = np.random.default_rng(0).standard_normal((3, 4, 8, 8)).astype(np.float32)
    a = Bundle.load(one, gpu).forward(x, [1, 500, 999], [0, 2, 5])
    b = Bundle.load(many, gpu).forward(x, [1, 500, 999], [0, 2, 5])
    np.testing.assert_array_equal(a, b)
    real = gpu.limit                  # an adapter whose buffers hold less than the largest weight (192 x 768 f32)
    monkeypatch.setattr(gpu, "limit", lambda k: 2 ** 19 if k == "max-buffer-size" else real(k))
    monkeypatch.setattr(gpu, "buffer", lambda *a, **k: pytest.fail("allocated before the limit check"))
    with pytest.raises(DeviceLimitError, match=r"the weights \(\d+ MiB\) include .* binds at most 0.5 MiB per buffer"):
        Bundle.load(many, gpu)
    (many / shards[1]).unlink()
    with pytest.raises(verify.MissingFileError, match=shards[1]):
        Bundle.load(many, gpu)


# ------------------------------------------------------------------ bad bundles: one named error each, no GPU

@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory):
    return export_bundle(random_model(small_cfg()), tmp_path_factory.mktemp("good") / "b", "f16")


def tamper_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def truncate_weights(p):
    w = p / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-100])


def flip_kernel_byte(p):
    k = sorted((p / "kernels").iterdir())[0]
    raw = bytearray(k.read_bytes())
    raw[-2] ^= 1
    k.write_bytes(bytes(raw))


def delete_kernel(p):
    (p / "kernels" / "attention_16.wgsl").unlink()


BAD = {
    "truncated weights": (truncate_weights, verify.SizeMismatchError, "weights.safetensors"),
    "wrong hash": (flip_kernel_byte, verify.HashMismatchError, "sha256"),
    "missing kernel": (delete_kernel, verify.MissingKernelError, "attention_16"),
    "unknown version": (lambda p: tamper_manifest(p, lambda m: m.update(format_version=99)),
                        verify.FormatVersionError, "format_version 99"),
    "absurd shapes": (lambda p: tamper_manifest(p, lambda m: m["model"].update(hidden_size=4 * 10 ** 9, num_heads=4)),
                      verify.ManifestError, "model.hidden_size: 4000000000 out of range"),
    "absurd buffer": (lambda p: tamper_manifest(p, lambda m: m["buffers"]["h"].update(elements=[2 ** 40, 0, 0])),
                      verify.ManifestError, "buffers.h.elements"),
    "bogus binding type": (lambda p: tamper_manifest(p, lambda m: m["kernels"]["sampler_step"]["bindings"][3].update(type="bogus")),
                           verify.ManifestError, "bindings.3..type: .bogus. is not one of"),
    "workgroup size": (lambda p: tamper_manifest(p, lambda m: m["kernels"]["sampler_step"].update(workgroup_size=[1000, 1, 1])),
                       verify.KernelError, r"@workgroup_size\(256, 1, 1\) but manifest.json kernels.sampler_step"),
    "binding type vs WGSL": (lambda p: tamper_manifest(p, lambda m: m["kernels"]["sampler_step"]["bindings"][3].update(type="read-only-storage")),
                             verify.KernelError, "the shader declares bindings"),
    "non-JSON manifest": (lambda p: (p / "manifest.json").write_text("{not json"), verify.ManifestError, "not JSON"),
    "unknown buffer": (lambda p: tamper_manifest(p, lambda m: m["programs"]["forward"][0]["bindings"].__setitem__(0, "nope")),
                       verify.ProgramError, "nope"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_bundle(tmp_path, good_bundle, monkeypatch, name):
    damage, error, text = BAD[name]
    path = tmp_path / "b"
    shutil.copytree(good_bundle, path)
    damage(path)
    import runtime_py.bundle as rb

    def no_gpu(*a, **k):
        raise AssertionError("a GPU call was made before verification finished")
    monkeypatch.setattr(rb, "get_gpu", no_gpu)
    with pytest.raises(error, match=text) as e:
        Bundle.load(path)
    assert isinstance(e.value, ValueError) and str(e.value).count("\n") == 0


def test_bad_bundle_cli_is_one_line(tmp_path, good_bundle, capsys):
    from ditweb.cli import main
    path = tmp_path / "b"
    shutil.copytree(good_bundle, path)
    truncate_weights(path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ditweb validate: error:") and "weights.safetensors" in err[-1]


def test_sample_refuses_bad_seeds_and_steps_in_one_line(gpu, good_bundle):
    """The noise takes a u32 seed: outside 0..2^32-1 seeds would alias silently, so Bundle.sample refuses them (as the
    command line and the page do) before any GPU work; likewise step counts outside 1..1000."""
    from ditformat.errors import UsageError
    bundle = Bundle.load(good_bundle, gpu)
    for seed in (-1, 2 ** 32, 10 ** 30, 1.5, True, "7"):
        with pytest.raises(UsageError, match="seed must be an integer in 0..4294967295"):
            bundle.sample(0, seed=seed, steps=1)
    for steps in (0, 1001):
        with pytest.raises(UsageError, match="steps must be in"):
            bundle.sample(0, steps=steps)
    assert bundle.sample(0, seed=2 ** 32 - 1, steps=1).shape[0] == 1
