"""A bundle whose buffer fits every batch the verifiers try (ditformat/reach.json "batches") but not the batch a
run asks for: both runtimes check every dispatch's reach at the real batch before anything is dispatched, and
refuse in one BundleError line (runtime_py: BatchState.run_of; web/webgpu-bundle.js: checkBatchReach)."""
from __future__ import annotations

import json
import shutil

import pytest

from _gpu_helpers import gpu  # noqa: F401  (fixture)
from conftest import randomize
from webserve.browser import WEB_DIR, chromium, local_server


@pytest.fixture(scope="module")
def short_sample_buffer(tmp_path_factory):
    """x_sample (need: r elements per image, elements [0, r, 0]) rewritten to r B / 4 + 2 r elements: at the verifiers'
    batches (B, N) = (1, 1), (2, 1), (2, 2), (6, 3), (48, 8) it holds r N or more, at B = N = 3 (three images, no
    guidance) 2.75 r < 3 r. Returns (good bundle, short bundle)."""
    from dit_model.model import DiT, DiTConfig
    from export.bundle import export_bundle
    from runtime_py.verify import verify_bundle
    root = tmp_path_factory.mktemp("reach")
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    good = export_bundle(randomize(DiT(cfg), seed=3).eval(), root / "good", "f32", ["a", "b", "c"])
    short = root / "short"
    shutil.copytree(good, short)
    m = json.loads((short / "manifest.json").read_text())
    name = m["io"]["sample"]
    b, r, c = m["buffers"][name]["elements"]
    assert (b, c) == (0, 0) and r % 4 == 0
    m["buffers"][name]["elements"] = [r // 4, 0, 2 * r]
    (short / "manifest.json").write_text(json.dumps(m))
    verify_bundle(short)                           # the verifier's batches all fit
    return good, short


@pytest.fixture(scope="module")
def site(short_sample_buffer):
    """One server and one Chromium for the module's two browser tests."""
    good, short = short_sample_buffer
    with local_server({"/": WEB_DIR, "/good/": good, "/short/": short}) as url, chromium() as ctx:
        yield url, ctx


def test_runtime_py_refuses_a_batch_its_buffers_do_not_hold(short_sample_buffer, gpu):  # noqa: F811
    from runtime_py.bundle import Bundle
    from runtime_py.verify import BundleError
    _, short = short_sample_buffer
    bundle = Bundle.load(short, gpu=gpu, plan="default")
    assert bundle.sample(0, steps=1, cfg=1.0, n=1).shape[0] == 1
    with pytest.raises(BundleError) as e:
        bundle.sample(0, steps=1, cfg=1.0, n=3)
    msg = str(e.value)
    assert "\n" not in msg and "x_sample" in msg and "B = 3, N = 3" in msg, msg


def test_webgpu_refuses_a_batch_its_buffers_do_not_hold_before_dispatching(site):
    """One image runs; three are refused in one line naming the buffer and the batch, with no dispatch encoded and
    nothing submitted on the way; the good bundle runs three."""
    url, ctx = site
    page = ctx.new_page()
    page.goto(url + "favicon.svg")
    got = page.evaluate("""async () => {
        const { loadBundle } = await import('/ditweb.js');
        const count = { dispatch: 0, submit: 0 };
        const dispatch = GPUComputePassEncoder.prototype.dispatchWorkgroups;
        GPUComputePassEncoder.prototype.dispatchWorkgroups = function (...a) { count.dispatch++; return dispatch.apply(this, a); };
        const submit = GPUQueue.prototype.submit;
        GPUQueue.prototype.submit = function (...a) { count.submit++; return submit.apply(this, a); };
        const out = {};
        for (const name of ['good', 'short']) {
          const b = await loadBundle(`/${name}/`, { runtime: 'webgpu', useCache: false, plan: 'default' });
          out[name + ':one'] = (await b.sample({ classId: 0, steps: 1, cfg: 1 })).B;
          count.dispatch = count.submit = 0;
          try { const r = await b.sample({ classIds: [0, 1, 2], steps: 1, cfg: 1 }); out[name] = `ran at B = ${r.B}`; }
          catch (e) { out[name] = `${e.name}: ${e.message}`; }
          out[name + ':gpu'] = { ...count };
          out[name + ':uncaptured'] = b.lastGPUError;
          b.dispose();
        }
        return out;
    }""")
    page.close()
    assert got["good:one"] == 1 and got["short:one"] == 1
    assert got["good"] == "ran at B = 3" and got["good:gpu"]["submit"] > 0
    msg = got["short"]
    assert msg.startswith("BundleError: manifest.json") and "\n" not in msg, msg
    assert "x_sample" in msg and "B = 3, N = 3" in msg, msg
    assert got["short:gpu"] == {"dispatch": 0, "submit": 0}, got["short:gpu"]
    assert got["short:uncaptured"] is None


def test_webassembly_refuses_the_same_batch_in_the_same_line(site):
    """The WebAssembly path checks the batch on the page, before its worker runs anything: the same BundleError
    line as WebGPU for three images; one image runs, and the good bundle runs three."""
    url, ctx = site
    page = ctx.new_page()
    page.goto(url + "favicon.svg")
    got = page.evaluate("""async () => {
        const { loadBundle } = await import('/ditweb.js');
        const out = {};
        for (const name of ['good', 'short']) {
          const b = await loadBundle(`/${name}/`, { runtime: 'wasm', useCache: false, threads: 1 });
          out[name + ':one'] = (await b.sample({ classId: 0, steps: 1, cfg: 1 })).B;
          try { const r = await b.sample({ classIds: [0, 1, 2], steps: 1, cfg: 1 }); out[name] = `ran at B = ${r.B}`; }
          catch (e) { out[name] = `${e.name}: ${e.message}`; }
          b.dispose();
        }
        return out;
    }""")
    page.close()
    assert got["good:one"] == 1 and got["short:one"] == 1 and got["good"] == "ran at B = 3"
    msg = got["short"]
    assert msg.startswith("BundleError: manifest.json") and "\n" not in msg, msg
    assert "x_sample" in msg and "B = 3, N = 3" in msg, msg
