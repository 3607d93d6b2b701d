"""The WebAssembly SIMD runtime without a browser: the committed web/ditweb-kernels.wasm is what
wasm/build.sh makes from wasm/kernels.c (byte for byte), its noise is ditformat/noise.py bit for bit,
and its forward pass of an exported bundle matches torch in float64 (node runs web/wasm-runtime.js,
the same engine the page's Web Worker runs). Pixel parity in Chromium: tests/test_browser.py.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
NODE_SCRIPT = REPO / "tests" / "_wasm_node.mjs"


def node_flags(relaxed: bool) -> list[str]:
    """node's flags for the relaxed SIMD kernels: node 20's V8 has relaxed SIMD behind a flag (Chromium ships it)."""
    if not relaxed:
        return []
    v8 = subprocess.run(["node", "--v8-options"], capture_output=True, text=True, timeout=60).stdout
    return ["--experimental-wasm-relaxed-simd"] if "--experimental-wasm-relaxed-simd" in v8 else []


def node(request: dict, flags: list[str] | None = None) -> dict:
    if flags is None:
        flags = node_flags(request.get("simd") == "relaxed")
    r = subprocess.run(["node", *flags, str(NODE_SCRIPT)], input=json.dumps(request), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_committed_wasm_is_a_fresh_build(tmp_path):
    if shutil.which("clang") is None or shutil.which("wasm-ld") is None:
        pytest.fail("clang and lld are needed to rebuild the WebAssembly kernels: run scripts/setup.sh")
    r = subprocess.run([str(REPO / "wasm" / "build.sh"), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # one thread; a pool over shared memory; both with relaxed SIMD (all four by clang-19)
    for name in ("ditweb-kernels.wasm", "ditweb-kernels-mt.wasm", "ditweb-kernels-relaxed.wasm",
                 "ditweb-kernels-mt-relaxed.wasm"):
        committed = (REPO / "web" / name).read_bytes()
        assert (tmp_path / name).read_bytes() == committed, f"web/{name} is stale: run wasm/build.sh and commit it"


@pytest.mark.parametrize("simd", ["plain", "relaxed"])
@pytest.mark.parametrize("seed,stream,step", [(0, 0, 0), (7, 1, 3), (4294967295, 2, 999)])
def test_noise_is_bit_identical_to_python(seed, stream, step, simd):
    """In the relaxed SIMD kernels too: only the matmul, attention and conv inner loops fuse (madd4)."""
    from ditformat.noise import normal
    count = 4099                                              # not a multiple of anything the kernels group by
    got = np.asarray(node({"cmd": "noise", "seed": seed, "stream": stream, "step": step, "count": count,
                           "simd": simd})["x"], np.float32)
    ref = np.asarray(normal(seed, stream, step, count), np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("heads,conditioning,matmul,simd", [(2, "adaln-zero", "registers", "plain"),
                                                            (1, "adaln-zero", "registers", "plain"),
                                                            (2, "cross-attn", "registers", "plain"),
                                                            (2, "in-context", "registers", "plain"),
                                                            (2, "adaln", "shared", "plain"),
                                                            (2, "adaln-zero", "registers", "relaxed"),
                                                            (1, "cross-attn", "shared", "relaxed")])
def test_forward_matches_torch(tmp_path, heads, conditioning, matmul, simd):
    """A tiny random-weight bundle (every weight drawn, so nothing is trivially zero), f32 and f16, for
    every conditioning (each has its own program) and both matmul kernels. Head dim 16 takes the scalar attention, 32 the one
    with the head in vector registers. simd "relaxed": the relaxed SIMD kernels (fused multiply-add), same tolerance."""
    import torch
    from dit_model.model import DiT
    from export.bundle import export_bundle
    torch.manual_seed(0)
    model = DiT.from_preset("Favicon-N/2", num_heads=heads, conditioning=conditioning).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    cfg = model.cfg
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t, y = torch.tensor([0, 500, 999]), torch.tensor([0, 2, cfg.num_classes])   # the null class too
    with torch.no_grad():
        ref = model.double()(x.double(), t, y).numpy().reshape(-1)
    for dtype, tol in (("f32", 1e-4), ("f16", 5e-2)):
        bundle = export_bundle(model.float(), tmp_path / dtype, dtype, ["hippo", "flag", "rocket"], matmul=matmul)
        got = np.asarray(node({"cmd": "forward", "bundle": str(bundle), "x": x.reshape(-1).tolist(),
                               "t": t.tolist(), "y": y.tolist(), "simd": simd})["out"])
        err = np.abs(got - ref).max() / np.abs(ref).max()
        assert err < tol, f"{dtype} {simd}: max error {err:.2e} of the output's range"


def test_relaxed_simd_probe_agrees_with_the_relaxed_kernels():
    """wasm-bundle.js's feature test (a tiny module with f32x4.relaxed_madd) says yes exactly where the relaxed
    kernels validate: node 20 without its flag has no relaxed SIMD (the page then loads the plain kernels), with
    the flag it has; the plain kernels validate either way."""
    flags = node_flags(True)
    for f in ([], flags):
        got = node({"cmd": "simd"}, flags=f)
        assert got["plain"] is True and got["probe"] == got["relaxed"], (f, got)
    assert node({"cmd": "simd"}, flags=flags)["relaxed"] is True


def test_relaxed_and_plain_kernels_draw_the_same_favicon():
    """The shipped model, a full 25-step guided run: the relaxed SIMD kernels (fused multiply-add in matmul and
    attention) against the plain ones >= 40 dB, as across WebGPU kernel plans; the same seed gives the same bits
    twice on one machine with either."""
    from webserve.browser import psnr, to_unit
    opts = {"classIds": [0, 3], "seed": 11, "steps": 25, "cfg": 4.0, "sampler": "ddim"}
    req = {"cmd": "sample", "bundle": str(REPO / "bundles" / "default"), "opts": opts}
    plain = np.asarray(node({**req, "simd": "plain"})["x"], np.float32)
    relaxed = np.asarray(node({**req, "simd": "relaxed"})["x"], np.float32)
    again = np.asarray(node({**req, "simd": "relaxed"})["x"], np.float32)
    assert np.isfinite(relaxed).all()
    np.testing.assert_array_equal(relaxed.view(np.uint32), again.view(np.uint32))
    value = psnr(to_unit(relaxed), to_unit(plain))
    print(f"\nrelaxed vs plain SIMD kernels, 25 steps: PSNR {value:.1f} dB, identical: {(relaxed == plain).all()}")
    assert value >= 40.0, f"PSNR {value:.1f} dB between the relaxed and the plain kernels"


TSC = REPO / "data" / "npm-ts" / "node_modules" / ".bin" / "tsc"
# web/bundle.js belongs to the format module: its fetchVerified options ({signal, stats, useCache}) have
# no JSDoc type yet, so tsc infers {useCache} and flags the other two; every other file must be clean.
NOT_YET_TYPED: set[str] = set()


def test_web_package_types_check():
    """web/ is an ES module package (package.json exports) whose JSDoc types tsc --checkJs accepts."""
    pkg = json.loads((REPO / "web" / "package.json").read_text())
    assert pkg["type"] == "module" and pkg["exports"]["."] == "./ditweb.js"
    for target in pkg["exports"].values():
        assert (REPO / "web" / target).is_file(), target
    # every module a listed file imports (or starts as a worker / fetches next to itself) is listed too
    listed = set(pkg["files"])
    assert {Path(t).name for t in pkg["exports"].values()} <= listed
    for name in sorted(f for f in listed if f.endswith(".js")):
        text = (REPO / "web" / name).read_text()
        for rel in re.findall(r"""(?:\bfrom|\bimport\(?|new URL\()\s*["']\./([^"']+)["']""", text):
            assert rel in listed, f"web/{name} uses ./{rel}, which package.json files does not list"
    tsconfig = json.loads((REPO / "web" / "tsconfig.json").read_text())
    assert {f for f in listed if f.endswith(".js")} <= set(tsconfig["files"]), "tsconfig.json checks every listed module"
    if not TSC.exists():
        pytest.fail(f"{TSC} is missing: run scripts/setup.sh")
    r = subprocess.run([str(TSC), "-p", str(REPO / "web" / "tsconfig.json")], capture_output=True, text=True,
                       timeout=300)
    errors = [line for line in r.stdout.splitlines() if "error TS" in line]
    ours = [e for e in errors if Path(e.split("(")[0]).name not in NOT_YET_TYPED]
    assert not ours, "\n".join(ours)


def test_a_manifest_that_overruns_a_buffer_is_refused(tmp_path):
    """All buffers share the module's memory: params that reach past a buffer are a one-line error
    before anything runs (WebGPU would clamp the access; here it would read the neighbours)."""
    import torch
    from dit_model.model import DiT
    from export.bundle import export_bundle
    torch.manual_seed(0)
    bundle = export_bundle(DiT.from_preset("Favicon-N/2").eval(), tmp_path / "b", "f32", ["a", "b", "c"])
    m = json.loads((bundle / "manifest.json").read_text())
    i = next(i for i, d in enumerate(m["programs"]["forward"]) if m["kernels"][d["kernel"]]["op"] == "matmul")
    m["programs"]["forward"][i]["params"][0] = [0, 0, 4096]          # M: far more rows than the input holds
    m["programs"]["forward"][i]["workgroups"][1] = [0, 0, 4096, 32]  # (the workgroups follow the kernel's groups)
    (bundle / "manifest.json").write_text(json.dumps(m))
    x = [0.0] * int(np.prod(m["io"]["x_shape"]))
    r = node({"cmd": "forward", "bundle": str(bundle), "x": x, "t": [0], "y": [0]})
    assert "error" in r and "\n" not in r["error"], r
    assert f"programs.forward[{i}]" in r["error"] and "reaches" in r["error"], r["error"]


@pytest.mark.parametrize("prediction,dtype", [("eps", "f32"), ("v", "f32"), ("v", "int8")])
def test_sample_matches_runtime_py_for_eps_and_v_models(tmp_path, prediction, dtype):
    """A whole guided DDPM run with the page's step records: flag 8 (the model predicts v) reaches
    sampler_step as on WebGPU. runtime_py runs the same bundle's WGSL on lavapipe; int8: op_matmul_q8 against
    matmul_q8.wgsl.j2 at the same int8 weights."""
    import torch
    from ditformat.guidance import Guide
    from dit_model.model import DiT
    from export.bundle import export_bundle
    from runtime_py.bundle import Bundle
    torch.manual_seed(0)
    model = DiT.from_preset("Favicon-N/2", prediction=prediction).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    bundle = export_bundle(model, tmp_path / prediction, dtype, ["hippo", "flag", "rocket"])
    opts = {"classIds": [1, 2], "seed": 7, "steps": 5, "cfg": 3.0, "sampler": "ddpm"}
    got = np.asarray(node({"cmd": "sample", "bundle": str(bundle), "opts": opts})["x"], np.float32)
    ref = Bundle.load(bundle, verbose=False).sample([1, 2], seed=7, steps=5, guide=Guide(scale=3.0),
                                                    sampler="ddpm").reshape(-1)
    from webserve.browser import psnr, to_unit
    value = psnr(to_unit(got), to_unit(ref))
    print(f"\n[{prediction} {dtype}] wasm vs runtime_py: PSNR {value:.1f} dB")
    assert value >= 40.0, f"{prediction} {dtype}: PSNR {value:.1f} dB against runtime_py"


def dequantized_model(model, dtype: str):
    """The float64 model at the weights an exported bundle of `dtype` holds: int8 Linear weights q * scale per
    output channel (export's quantize_linear), every other tensor rounded as the bundle stores it."""
    import torch
    from export.bundle import bundle_tensors
    stored = bundle_tensors(model, dtype)
    sd = {}
    for k, v in model.state_dict().items():
        w = stored[k]
        scale = stored.get(k[: -len(".weight")] + ".scale") if k.endswith(".weight") else None
        if scale is not None:
            w = w.astype(np.float64) * scale.astype(np.float64)[:, None]
        sd[k] = torch.from_numpy(np.asarray(w, np.float64).reshape(tuple(v.shape)))
    ref = type(model)(model.cfg).double().eval()
    ref.load_state_dict(sd)
    return ref


@pytest.mark.parametrize("heads,conditioning,matmul", [(2, "adaln-zero", "registers"), (1, "cross-attn", "registers")])
def test_int8_forward_matches_float64_at_the_same_weights(tmp_path, heads, conditioning, matmul):
    """op_matmul_q8 (int8 weights, a scale per output channel, as matmul_q8.wgsl.j2): the forward pass of an int8
    bundle against torch in float64 at the dequantised weights. The kernel sums p q exactly in int32, p the input
    row quantised to int16 with its own step (max |x| / 32767): each element of every int8 matmul's input moves by
    up to 2^-16 of its row's largest value (where the f32 kernels' products move by 2^-24 of themselves), which
    through the network stays within 1e-3 of the output's range (measured: 1.2e-4 adaLN-zero, 7.5e-5 cross-attn;
    the f32 kernels: under 1e-5), and the error is still more than 100 times below the int8 weights' own quantisation (checked too, so the test would see a kernel that ignored the scales or read
    the bytes as unsigned). The kernel's own bound, derived: tests/test_wasm_q8.py."""
    import torch
    from dit_model.model import DiT
    from export.bundle import export_bundle
    torch.manual_seed(0)
    model = DiT.from_preset("Favicon-N/2", num_heads=heads, conditioning=conditioning).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    cfg = model.cfg
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t, y = torch.tensor([0, 500, 999]), torch.tensor([0, 2, cfg.num_classes])
    with torch.no_grad():
        ref = dequantized_model(model, "int8")(x.double(), t, y).numpy().reshape(-1)
        unquantized = model.double()(x.double(), t, y).numpy().reshape(-1)
    bundle = export_bundle(model.float(), tmp_path / "int8", "int8", ["hippo", "flag", "rocket"], matmul=matmul)
    m = json.loads((bundle / "manifest.json").read_text())
    assert any(k["op"] == "matmul_q8" for k in m["kernels"].values())
    got = np.asarray(node({"cmd": "forward", "bundle": str(bundle), "x": x.reshape(-1).tolist(),
                           "t": t.tolist(), "y": y.tolist()})["out"])
    scale = np.abs(ref).max()
    err, quant = np.abs(got - ref).max() / scale, np.abs(unquantized - ref).max() / scale
    print(f"\n[int8 {conditioning}] wasm vs float64 at the int8 weights: {err:.2e}; the quantisation itself: {quant:.2e}")
    assert err < 1e-3, f"max error {err:.2e} of the output's range"
    assert quant > 100 * err
