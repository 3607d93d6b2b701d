"""The browser runtime (web/ditweb.js) and the favicon page in real headless Chromium, on both
runtimes: WebGPU (SwiftShader) and WebAssembly SIMD (web/ditweb-kernels.wasm in a Web Worker), plus
`ditweb serve` / `ditweb site`. runtime=auto picks WebAssembly on SwiftShader (a software adapter), so
the WebGPU tests ask for webgpu by name.

SwiftShader computes at ~0.1-0.3 GFLOP/s, so the parity tests use a tiny random-weight
Favicon-N/2 bundle (8x8x4, hidden 32, depth 2, 3 classes) and few steps. Every weight is
randomised (gates and zero-initialised layers included): a fresh adaLN-Zero DiT outputs zero,
and a parity test on zeros proves nothing.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from webserve.browser import WEB_DIR, chromium, local_server, psnr, to_unit, wait_state

REPO = Path(__file__).resolve().parent.parent
PRESET = "Favicon-N/2"
STEPS = 6
PSNR_MIN = 40.0   # dB on RGBA in [0, 1], peak 1 (the bar)


# ------------------------------------------------------------------ serve / site (no browser)

def fake_bundle(root: Path) -> Path:
    """The smallest folder `serve`/`site` accept: a manifest whose files match their hashes."""
    root.mkdir(parents=True)
    (root / "kernels").mkdir()
    files = {"weights.safetensors": b"\x08" + bytes(7) + b"{}      ", "kernels/k.wgsl": b"@compute @workgroup_size(1) fn main() {}\n"}
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    manifest = {"format": "ditweb-bundle", "format_version": 1,
                "files": {rel: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for rel, d in files.items()}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_site_writes_a_static_folder_and_refuses_bad_input(tmp_path):
    from webserve.files import SiteError
    from webserve.site import MARKER, write_site
    bundle = fake_bundle(tmp_path / "b")
    out = tmp_path / "site"
    written = {str(p) for p in write_site(bundle, out)}
    assert {"index.html", "ditweb.js", "app.js", "bundle/manifest.json", "bundle/weights.safetensors",
            "bundle/kernels/k.wgsl", "ditweb-worker.js", "wasm-runtime.js", "ditweb-kernels.wasm"} <= written
    assert (out / "bundle/kernels/k.wgsl").read_bytes() == (bundle / "kernels/k.wgsl").read_bytes()
    assert (out / MARKER).exists() and not list(tmp_path.glob(".site.*")), "no temporary folder left behind"
    write_site(bundle, out)                                   # a re-run replaces its own folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(SiteError, match="not a folder written by `ditweb site`"):
        write_site(bundle, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    (bundle / "kernels/k.wgsl").write_bytes(b"// changed\n")
    with pytest.raises(SiteError, match=r"k\.wgsl: sha256 .* does not match"):
        write_site(bundle, tmp_path / "site2")
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(SiteError, match="manifest.json: not valid JSON"):
        write_site(bundle, tmp_path / "site3")
    assert not (tmp_path / "site2").exists() and not (tmp_path / "site3").exists()


def test_serve_verb_serves_page_and_bundle(tmp_path):
    bundle = fake_bundle(tmp_path / "b")
    cmd = [sys.executable, "-c", "import sys; from ditweb.cli import main; sys.exit(main())"]
    bad = subprocess.run(cmd + ["serve", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr, bad.stderr
    proc = subprocess.Popen(cmd + ["serve", str(bundle), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with urllib.request.urlopen(url) as r:
            assert b'<script type="module" src="app.bundle.js">' in r.read()
        with urllib.request.urlopen(url + "app.bundle.js") as r:
            assert r.headers["Content-Type"].startswith("text/javascript")   # ES modules need a JS MIME type
        with urllib.request.urlopen(url + "bundle/kernels/k.wgsl") as r:
            assert r.read() == (bundle / "kernels/k.wgsl").read_bytes()
        with urllib.request.urlopen(url + "bundles/default/manifest.json") as r:      # the model picker's bundles
            assert json.loads(r.read())["format"]
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "bundle/../../../etc/passwd")
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------ in Chromium: no bundle needed

def test_without_webgpu_or_wasm_simd_the_static_favicon_stays():
    with local_server({"/": WEB_DIR}) as url, chromium(gpu=False) as ctx:
        page = ctx.new_page()
        page.add_init_script("WebAssembly.validate = () => false;")   # an old browser: no SIMD either
        page.goto(url)
        assert wait_state(page, ("unsupported", "no-webgpu", "no-adapter", "ready", "error", "bundle-error"), 30) == "unsupported"
        msg = page.text_content("#message")
        assert "no WebGPU" in msg and "no WebAssembly SIMD" in msg and "static favicon" in msg, msg
        assert page.is_visible("#message")
        assert page.get_attribute('link[rel~="icon"]', "href") == "favicon.svg"
        page.goto(url + "?runtime=webgpu")                             # WebGPU asked for by name
        assert wait_state(page, ("unsupported", "no-webgpu", "no-adapter", "ready", "error", "bundle-error"), 30) == "no-webgpu"
        assert "no WebGPU" in page.text_content("#message")


def test_sampler_tables_match_python(site):
    """web/schedule.js computes the respaced tables from the manifest's schedule bit for bit as
    ditformat/schedule.py (steps 7 and 13 hit numpy's round-half-to-even in S_i); node checks every step
    count (tests/test_format.py), this the browser's engine (the module's Chromium, below)."""
    from ditformat.schedule import SCHEDULE, sampler_tables
    steps_list = [1, 2, 7, 13, 37, 250]
    page = site["ctx"].new_page()
    page.goto(site["url"] + "favicon.svg")
    got = page.evaluate("""async ([schedule, stepsList]) => {
        const m = await import('/schedule.js');
        return stepsList.map((s) => m.samplerTables({ sampler: schedule }, s));
    }""", [SCHEDULE, steps_list])
    page.close()
    for steps, js in zip(steps_list, got):
        assert js == sampler_tables(steps), steps


# ------------------------------------------------------------------ in Chromium: a tiny real bundle

CLASS_ID, SEED = 1, 7
CASES = {   # name -> (JS sample() options, the same settings for Python: Guide fields, sampler, eta)
    "cfg": ({"cfg": 4.0}, {"scale": 4.0}, "ddim", 0.0),
    "negative-class": ({"cfg": 3.0, "negativeClass": 2}, {"scale": 3.0, "negative_class": 2}, "ddim", 0.0),
    # the per-step noise (RNG stream 1) in DDPM and in DDIM with eta > 0
    "ddpm-cfg": ({"cfg": 2.0, "sampler": "ddpm"}, {"scale": 2.0}, "ddpm", 0.0),
    "ddim-eta": ({"cfg": 4.0, "eta": 0.7}, {"scale": 4.0}, "ddim", 0.7),
    # the other guides: composition with a negative weight on a linear schedule; batch-estimated
    # guidance (K = 2 perturbed copies, RNG stream 2) on an interval schedule
    "compose-linear": ({"cfg": 2.0, "compose": [["hippo", 1.0], ["rocket", -0.5]], "schedule": "linear", "cfgEnd": 1.0},
                       {"scale": 2.0, "compose": ((0, 1.0), (2, -0.5)), "schedule": "linear", "scale_end": 1.0}, "ddim", 0.0),
    "batch-estimate-interval": ({"cfg": 3.0, "batchEstimate": {"k": 2, "tau": 0.5}, "schedule": "interval", "interval": [300, 999]},
                                {"scale": 3.0, "batch_k": 2, "batch_tau": 0.5, "schedule": "interval", "interval": (300, 999)},
                                "ddim", 0.0),
}


def random_model():
    """Favicon-N/2 with every tensor drawn from N(0, 0.2^2) (gates and zero-initialised layers included):
    output std ~1.8, and ~60% of the final pixels stay inside (-1, 1) rather than clipping, so the
    pixel comparison has something to see."""
    import torch
    from dit_model.model import DiT
    torch.manual_seed(0)
    model = DiT.from_preset(PRESET).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from export.bundle import export_bundle
    root = tmp_path_factory.mktemp("bundles")
    model = random_model()
    out = {"model": model}
    for dtype in ("f32", "f16", "int8", "int4"):
        out[dtype] = export_bundle(model, root / dtype, dtype, ["hippo", "flag", "rocket"])
    out["sharded"] = export_bundle(model, root / "sharded", "f32", ["hippo", "flag", "rocket"], shard_bytes=4096)
    bad = root / "corrupted"
    shutil.copytree(out["f32"], bad)
    data = bytearray((bad / "weights.safetensors").read_bytes())
    data[-5] ^= 0x40                                         # one bit of the last weight
    (bad / "weights.safetensors").write_bytes(bytes(data))
    out["corrupted"] = bad
    return out


@pytest.fixture(scope="module")
def site(bundles):
    """One server and one Chromium for the module; `requested` logs every path served."""
    requested: list[str] = []
    routes = {"/": WEB_DIR, "/f32/": bundles["f32"], "/f16/": bundles["f16"], "/corrupted/": bundles["corrupted"],
              "/int8/": bundles["int8"], "/int4/": bundles["int4"], "/sharded/": bundles["sharded"]}
    with local_server(routes, requested=requested) as url, chromium() as ctx:
        yield {"url": url, "ctx": ctx, "requested": requested}


def open_page(site, query: str, states=("ready",), timeout_s=90):
    page = site["ctx"].new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site["url"] + query)
    state = wait_state(page, states + ("no-webgpu", "no-adapter", "error", "bundle-error"), timeout_s)
    assert state in states, f"page state {state}: {page.text_content('#message')} {errors}"
    return page


def browser_sample(page, opts: dict) -> np.ndarray:
    x = page.evaluate("async (o) => Array.from((await window.ditwebBundle.sample(o)).x)", opts)
    return np.asarray(x, np.float32)


def torch_sample(model, guide: dict, sampler: str, eta: float) -> np.ndarray:
    """dit_model.sample with the network in float64 (the loop's own arithmetic stays float32)."""
    import copy
    from ditformat.guidance import Guide
    from dit_model.sample import sample_images
    m64 = copy.deepcopy(model).double()
    cfg = model.cfg
    x = sample_images(lambda x, t, y: m64(x.double(), t, y).float(), in_channels=cfg.in_channels,
                      input_size=cfg.input_size, num_classes=cfg.num_classes, class_ids=[CLASS_ID],
                      guide=Guide(**guide), steps=STEPS, sampler=sampler, eta=eta, seed=SEED)
    return x.numpy().reshape(-1)


def test_page_loads_finds_adapter_and_lists_classes(site):
    page = open_page(site, "?bundle=f32/&runtime=webgpu")
    assert "swiftshader" in page.text_content("#adapter").lower()
    assert page.eval_on_selector_all("#class option", "os => os.map(o => o.textContent)") == ["hippo", "flag", "rocket"]
    assert page.is_hidden("#message")
    page.close()


@pytest.fixture(scope="module")
def runtime_py_bundle(bundles):
    from runtime_py.bundle import Bundle
    return Bundle.load(bundles["f32"], verbose=False)      # Mesa lavapipe in CI


@pytest.fixture(scope="module")
def f32_page(site):
    """One page on the f32 bundle for the parity cases (building pipelines in SwiftShader takes ~4 s)."""
    page = open_page(site, "?bundle=f32/&runtime=webgpu")
    yield page
    page.close()


@pytest.fixture(scope="module")
def wasm_page(site):
    """The same bundle on the WebAssembly runtime."""
    page = open_page(site, "?bundle=f32/&runtime=wasm")
    assert page.evaluate("window.ditwebBundle.runtime") == "wasm"
    yield page
    page.close()


RUNTIME_PAGES = {"webgpu": "f32_page", "wasm": "wasm_page"}


@pytest.mark.parametrize("runtime", list(RUNTIME_PAGES))
@pytest.mark.parametrize("case", list(CASES))
def test_browser_pixels_match_runtime_py_and_torch(request, bundles, runtime_py_bundle, case, runtime):
    """The same bundle, seed and settings: Chromium (SwiftShader WebGPU, or WebAssembly) vs runtime_py
    (wgpu-py) vs torch."""
    from ditformat.guidance import Guide
    js_opts, guide, sampler, eta = CASES[case]
    page = request.getfixturevalue(RUNTIME_PAGES[runtime])
    got = browser_sample(page, {"classId": CLASS_ID, "seed": SEED, "steps": STEPS, **js_opts})
    assert page.evaluate("window.ditwebBundle.runtime") == runtime
    py = runtime_py_bundle.sample(CLASS_ID, seed=SEED, steps=STEPS, guide=Guide(**guide), sampler=sampler,
                                  eta=eta).reshape(-1)
    ref = torch_sample(bundles["model"], guide, sampler, eta)
    inside = float(np.mean(np.abs(ref) < 0.999))
    assert inside > 0.3, f"only {inside:.0%} of reference pixels are unclipped: the comparison would be weak"
    vs_py, vs_torch = psnr(to_unit(got), to_unit(py)), psnr(to_unit(got), to_unit(ref))
    print(f"\n[{case}, {runtime}] PSNR browser vs runtime_py: {vs_py:.1f} dB, vs torch float64: {vs_torch:.1f} dB "
          f"(max |browser - runtime_py| {np.abs(got - py).max():.2e}, {inside:.0%} of pixels unclipped)")
    assert vs_py >= PSNR_MIN, f"{case}: browser vs runtime_py PSNR {vs_py:.1f} dB < {PSNR_MIN}"
    assert vs_torch >= PSNR_MIN, f"{case}: browser vs torch PSNR {vs_torch:.1f} dB < {PSNR_MIN}"


@pytest.mark.parametrize("runtime", list(RUNTIME_PAGES))
def test_several_images_in_one_batch_match_runtime_py(request, runtime_py_bundle, runtime):
    """N = 2 images of different classes in one CFG batch (B = 4 rows): the [k][j][n] layout."""
    got = request.getfixturevalue(RUNTIME_PAGES[runtime]).evaluate("""async () => {
        const r = await window.ditwebBundle.sample({ classIds: ["hippo", 2], seed: 3, steps: 4, cfg: 4.0 });
        return { x: Array.from(r.x), n: r.rgba.length, B: r.B, runtime: r.runtime };
    }""")
    py = runtime_py_bundle.sample([0, 2], seed=3, steps=4, cfg=4.0)
    assert got["n"] == 2 and got["B"] == 4 and got["runtime"] == runtime
    x = np.asarray(got["x"], np.float32).reshape(py.shape)
    for n in range(2):
        value = psnr(to_unit(x[n]), to_unit(py[n]))
        assert value >= PSNR_MIN, f"image {n}: PSNR {value:.1f} dB"
    assert psnr(to_unit(x[0]), to_unit(x[1])) < 30, "two classes gave (nearly) the same image"


@pytest.mark.parametrize("runtime", list(RUNTIME_PAGES))
def test_sample_stops_on_abort_and_rejects_bad_options(request, runtime):
    r = request.getfixturevalue(RUNTIME_PAGES[runtime]).evaluate("""async () => {
        const b = window.ditwebBundle, ac = new AbortController();
        let steps = 0, name = null;
        try { await b.sample({ classId: 0, steps: 50, signal: ac.signal, onStep: () => { if (++steps === 2) ac.abort(); } }); }
        catch (e) { name = e.name; }
        const errors = [];
        for (const o of [{ className: "unicorn" }, { classId: 3 }, { negativeClass: 0, compose: [[1, 1]] },
                         { sampler: "euler" }, { schedule: "linear" }, { seed: -1 }]) {
          try { await b.sample({ steps: 1, ...o }); errors.push(null); } catch (e) { errors.push(e.message); }
        }
        const after = await b.sample({ classId: 0, steps: 2 });   // still usable
        return { name, steps, errors, ok: after.rgba[0].length };
    }""")
    assert r["name"] == "AbortError" and r["steps"] == 2
    assert all(r["errors"]), r["errors"]
    assert "unknown class \"unicorn\"" in r["errors"][0] and "out of range [0, 3)" in r["errors"][1]
    assert r["ok"] == 8 * 8 * 4


def test_f16_bundle_matches_f32_bundle(site):
    """f16 weights are unpacked in the shader (SwiftShader has no shader-f16): the image moves only
    by the weights' rounding."""
    opts = {"classId": CLASS_ID, "seed": SEED, "steps": STEPS, "cfg": 4.0}
    for runtime in ("webgpu", "wasm"):   # WebAssembly unpacks f16 once at load
        page = open_page(site, f"?bundle=f16/&runtime={runtime}")
        assert page.evaluate("window.ditwebBundle.manifest.dtype") == "f16"
        assert not page.evaluate("async () => (await navigator.gpu.requestAdapter()).features.has('shader-f16')")
        got16 = browser_sample(page, opts)
        page.close()
        page = open_page(site, f"?bundle=f32/&runtime={runtime}")
        got32 = browser_sample(page, opts)
        page.close()
        value = psnr(to_unit(got16), to_unit(got32))
        print(f"\n[f16, {runtime}] PSNR f16 bundle vs f32 bundle (browser): {value:.1f} dB")
        assert value >= 30.0, f"{runtime}: f16 bundle drifted: PSNR {value:.1f} dB vs the f32 bundle"


def test_sharded_and_int8_bundles(site, bundles):
    """Weights in shards (here of 4 kB: ~15 files): each fetched, verified and reported on its own, the image
    bit-identical to the one-file bundle's. An int8 bundle runs on the WebAssembly runtime when asked for
    (op_matmul_q8) and matches runtime_py (matmul_q8.wgsl.j2) on the same bundle."""
    from runtime_py.bundle import Bundle
    m = json.loads((bundles["sharded"] / "manifest.json").read_text())
    shards = sorted(f for f in m["files"] if f.endswith(".safetensors"))
    assert len(shards) >= 5
    opts = {"classId": CLASS_ID, "seed": SEED, "steps": STEPS, "cfg": 4.0}
    page = open_page(site, "?bundle=f32/&runtime=webgpu")
    one = browser_sample(page, opts)
    page.close()
    site["requested"].clear()
    page = open_page(site, "?bundle=sharded/&runtime=webgpu")
    fetched = {p[len("/sharded/"):] for p in site["requested"] if p.startswith("/sharded/")}
    assert set(shards) <= fetched
    progress = page.evaluate("""async () => { const steps = [];
        const b = await (await import('./ditweb.js')).loadBundle('sharded/', { runtime: 'webgpu', useCache: false,
            onProgress: (p) => steps.push(p.file) });
        b.dispose(); return steps; }""")
    assert set(shards) <= set(progress)
    np.testing.assert_array_equal(browser_sample(page, opts), one)
    page.close()
    page = open_page(site, "?bundle=int8/&runtime=wasm")
    assert page.evaluate("window.ditwebBundle.runtime") == "wasm"
    assert page.evaluate("window.ditwebBundle.manifest.dtype") == "int8"
    got = browser_sample(page, opts)
    page.close()
    ref = Bundle.load(bundles["int8"], verbose=False).sample(CLASS_ID, seed=SEED, steps=STEPS, cfg=4.0).reshape(-1)
    value = psnr(to_unit(got), to_unit(ref))
    print(f"\n[int8] PSNR browser vs runtime_py (same int8 bundle): {value:.1f} dB; int8 vs f32 bundle: "
          f"{psnr(to_unit(got), to_unit(one)):.1f} dB")
    assert value >= 40.0


def test_int4_bundle_on_both_runtimes(site, bundles):
    """An int4 bundle (packed block weights, unpacked by web/bundle.js at load) on the WebGPU path (matmul_q8.wgsl) and
    the WebAssembly path (op_matmul_q8): both match runtime_py on the same bundle (its own unpacking, lavapipe)."""
    from runtime_py.bundle import Bundle
    opts = {"classId": CLASS_ID, "seed": SEED, "steps": STEPS, "cfg": 4.0}
    ref = Bundle.load(bundles["int4"], verbose=False).sample(CLASS_ID, seed=SEED, steps=STEPS, cfg=4.0).reshape(-1)
    for runtime in ("webgpu", "wasm"):
        page = open_page(site, f"?bundle=int4/&runtime={runtime}")
        assert page.evaluate("[window.ditwebBundle.runtime, window.ditwebBundle.manifest.dtype]") == [runtime, "int4"]
        got = browser_sample(page, opts)
        page.close()
        value = psnr(to_unit(got), to_unit(ref))
        print(f"\n[int4 {runtime}] PSNR browser vs runtime_py (same int4 bundle): {value:.1f} dB")
        assert value >= 40.0, (runtime, value)


@pytest.mark.parametrize("runtime", ["webgpu", "wasm"])
def test_favicon_link_animates_and_ends_on_the_image(site, runtime):
    page = open_page(site, f"?bundle=f32/&steps=4&seed={SEED}&class={CLASS_ID}&runtime={runtime}")
    page.evaluate("""() => { window.iconHrefs = [];
        new MutationObserver(() => window.iconHrefs.push(document.querySelector('link[rel~="icon"]').href))
          .observe(document.head, { subtree: true, attributes: true, attributeFilter: ['href'] }); }""")
    page.click("#go")
    assert wait_state(page, ("done", "error"), 90) == "done", page.text_content("#message")
    hrefs = page.evaluate("window.iconHrefs")
    final = page.get_attribute('link[rel~="icon"]', "href")
    assert final.startswith("data:image/png;base64,") and final != "favicon.svg"
    # the first step's x_t at once, then at most one icon per 100 ms (iconEveryMs), the final image last
    assert len(set(hrefs)) >= 2, f"the favicon changed {len(set(hrefs))} times over 4 steps"
    assert hrefs[-1] == final == page.evaluate("window.ditwebLast.dataURL")
    assert "ms" in page.text_content("#ms") and runtime in page.text_content("#ms")
    assert page.text_content("#step") == "4 / 4" and page.text_content("#runtime").startswith(runtime)
    assert page.evaluate("window.ditwebLast.runtime") == runtime
    # every step's icon with iconEveryMs 0; none between the first and the final one with a long interval
    counts = page.evaluate("""async () => {
        const { diffuseFavicon } = await import('/ditweb.js');
        const out = [];
        for (const iconEveryMs of [0, 1e9]) {
          let n = 0;
          const o = new MutationObserver((m) => { n += m.length; });
          o.observe(document.head, { subtree: true, attributes: true, attributeFilter: ['href'] });
          await diffuseFavicon(window.ditwebBundle, { classId: 0, seed: 1, steps: 4, iconEveryMs, remember: false });
          await new Promise((r) => setTimeout(r, 0));
          o.disconnect();
          out.push(n);
        }
        return out;
    }""")
    assert counts == [4, 2], counts      # 3 previews (the last step has none) + the final; the first + the final
    page.close()


def test_corrupted_bundle_shows_its_error(site):
    page = open_page(site, "?bundle=corrupted/", states=("bundle-error",))
    msg = page.text_content("#message")
    assert page.is_visible("#message") and "weights.safetensors" in msg and "sha256" in msg, msg
    assert page.get_attribute('link[rel~="icon"]', "href") == "favicon.svg"
    page.close()


def test_second_visit_downloads_only_the_manifest(site):
    page = open_page(site, "?bundle=f32/")          # earlier tests filled the cache, if they ran
    page.close()
    site["requested"].clear()
    page = open_page(site, "?bundle=f32/")
    fetched = [p for p in site["requested"] if p.startswith("/f32/")]
    assert fetched == ["/f32/manifest.json"], fetched
    assert "from the cache" in page.text_content("#bundle")
    assert page.evaluate("window.ditwebBundle.stats.downloaded") == 0
    page.close()


def test_the_cache_hint_is_only_a_hint(site):
    """localStorage says which files the Cache API holds (web/bundle.js cacheHint), so that a first visit asks the
    network at once. A hint whose entry is gone (the cache cleared alone) downloads the file again; a cached file
    without a hint (localStorage cleared alone) is downloaded again too; both load, and the next visit is cached."""
    def visit(then: str = "") -> int:
        page = open_page(site, "?bundle=f32/")
        downloaded = page.evaluate("window.ditwebBundle.stats.downloaded")
        if then:
            page.evaluate(then)
        page.close()
        return downloaded

    visit("caches.delete('ditweb-bundle-v1')")
    assert visit() > 0                                     # hinted, not cached: downloaded and checked again
    assert visit("localStorage.clear()") == 0              # cached again
    assert visit() > 0                                     # cached, not hinted: downloaded again
    assert visit() == 0


def test_device_loss_recreates_the_device_and_goes_on(site):
    page = open_page(site, "?bundle=f32/&runtime=webgpu")
    opts = {"classId": CLASS_ID, "seed": SEED, "steps": 3, "cfg": 4.0}
    before = browser_sample(page, opts)
    after = page.evaluate("""async (o) => {
        const b = window.ditwebBundle;
        let lostOnce = false;   // lose the device once, in the middle of the first attempt
        const r = await b.sample({ ...o, onStep: ({ step }) => { if (step === 1 && !lostOnce) { lostOnce = true; b.device.destroy(); } } });
        return { x: Array.from(r.x), losses: b.deviceLosses };
    }""", opts)
    assert after["losses"] == 1
    np.testing.assert_array_equal(np.asarray(after["x"], np.float32), before)   # restarted, same pure result
    assert "device was lost" in page.text_content("#message")
    page.close()


def test_no_adapter_draws_via_wasm(site):
    page = site["ctx"].new_page()
    page.add_init_script("navigator.gpu.requestAdapter = async () => null;")   # WebGPU present, GPU blocklisted
    page.goto(site["url"] + "?bundle=f32/&runtime=webgpu")
    assert wait_state(page, ("no-adapter", "no-webgpu", "ready", "error", "bundle-error"), 30) == "no-adapter"
    assert "no GPU adapter" in page.text_content("#message")
    assert page.get_attribute('link[rel~="icon"]', "href") == "favicon.svg"
    page.goto(site["url"] + "?bundle=f32/&steps=2&autorun=1")                 # auto: WebAssembly
    assert wait_state(page, ("done", "no-adapter", "no-webgpu", "error", "bundle-error"), 60) == "done"
    assert page.evaluate("window.ditwebBundle.runtime") == "wasm"
    assert page.get_attribute('link[rel~="icon"]', "href").startswith("data:image/png;base64,")
    page.close()


def test_no_webgpu_page_draws_the_favicon_via_wasm(site):
    page = site["ctx"].new_page()   # one browser per module: playwright's sync API cannot start a second
    page.add_init_script("delete Navigator.prototype.gpu;")   # what chromium(gpu=False) does
    page.goto(site["url"] + f"?bundle=f32/&steps=3&seed={SEED}&autorun=1")
    assert wait_state(page, ("done", "unsupported", "no-webgpu", "error", "bundle-error"), 60) == "done", \
        page.text_content("#message")
    assert page.text_content("#runtime").startswith("wasm") and "no WebGPU" in page.text_content("#runtime")
    assert page.get_attribute('link[rel~="icon"]', "href").startswith("data:image/png;base64,")
    # the first favicon's time from navigation, split into its parts (their sum is the total, to rounding)
    first = page.evaluate("window.ditwebFirstFavicon")
    assert first["steps"] == 3 and first["runtime"] == "wasm" and first["threads"] >= 1
    parts = first["pageMs"] + first["bundleMs"] + first["waitMs"] + first["stepsMs"]
    assert min(first["pageMs"], first["bundleMs"], first["waitMs"], first["stepsMs"]) >= 0
    assert abs(parts - first["totalMs"]) < 1e-6 * first["totalMs"] + 1e-3
    assert page.text_content("#first").startswith(f"{first['totalMs'] / 1000:.2f} s after navigation")
    # the fine breakdown: consecutive phases from navigation to the favicon, each >= 0, summing to the total, each
    # named in the line; the detail's spans lie between navigation and the end
    names = [name for name, _ in first["phases"]]
    assert names == ["HTML", "modules", "start", "manifest", "download", "verify", "set-up", "wait", "first step",
                     "2 steps", "finish"], names
    assert min(ms for _, ms in first["phases"]) >= 0
    assert abs(sum(ms for _, ms in first["phases"]) - first["totalMs"]) < 1e-6 * first["totalMs"] + 1e-3
    line = page.text_content("#first")
    assert all(f"{name} {ms / 1000:.2f}" in line for name, ms in first["phases"]), line
    detail = first["detail"]
    for key in ("manifest", "kernels", "worker", "init", "unpack"):
        span = detail[key]
        assert span and 0 <= span["start"] <= span["end"] <= first["totalMs"], (key, span)
    # the scripts before app.js ran: early.js, app.bundle.js (the page's modules in one file) and the worker's
    assert detail["modules"] >= 2 and len(detail["fetch"]) + len(detail["cache"]) >= 1, detail
    assert 0 < detail["kernelFirstMs"] and 0 < detail["stepMs"], detail
    # a repeat visit shows the remembered favicon at once, before any drawing
    page.goto(site["url"] + "?bundle=f32/")
    assert wait_state(page, ("ready", "error"), 60) == "ready"
    remembered = page.evaluate("""async () => {
        const { diffuseFavicon } = await import('/ditweb.js');
        const ac = new AbortController();
        ac.abort();
        try { await diffuseFavicon(window.ditwebBundle, { signal: ac.signal }); } catch (e) { /* stopped at once */ }
        return document.querySelector('link[rel~="icon"]').href;
    }""")
    assert remembered.startswith("data:image/png;base64,")
    page.close()


def test_auto_picks_wasm_on_swiftshader_and_the_time_budget_stops_a_run(site):
    page = open_page(site, "?bundle=f32/")
    assert page.evaluate("window.ditwebBundle.runtime") == "wasm"
    assert "software" in page.text_content("#runtime")
    r = page.evaluate("""async () => {
        const { diffuseFavicon } = await import('/ditweb.js');
        try { await diffuseFavicon(window.ditwebBundle, { steps: 1000, timeBudgetMs: 50, remember: false }); return 'finished'; }
        catch (e) { return `${e.name}: ${e.message}`; }
    }""")
    assert r.startswith("TimeoutError") and "time budget of 50 ms" in r, r
    page.close()


def test_static_site_folder_works_as_is(site, bundles, tmp_path):
    """`ditweb site` output served as plain files from one folder: the page finds bundle/ by itself."""
    from webserve.site import write_site
    out = tmp_path / "public"
    write_site(bundles["f32"], out)
    page = site["ctx"].new_page()
    with local_server({"/": out}) as url:
        page.goto(url)
        assert wait_state(page, ("ready", "no-webgpu", "no-adapter", "error", "bundle-error"), 90) == "ready", \
            page.text_content("#message")
        assert page.evaluate("window.ditwebBundle.url") == url + "bundle/"
        assert page.evaluate("window.ditwebBundle.runtime") == "wasm"      # the site's own .wasm and worker
    page.close()


def _rehash(bundle: Path, rel: str) -> None:
    """Refresh files[rel] after an edit, so the damage gets past the hash check to the check behind it."""
    m = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / rel).read_bytes()
    m["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (bundle / "manifest.json").write_text(json.dumps(m))


def _edit_manifest(bundle: Path, fn) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    fn(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def _truncate_weights(b: Path) -> None:
    data = (b / "weights.safetensors").read_bytes()
    (b / "weights.safetensors").write_bytes(data[: len(data) - 64])
    _rehash(b, "weights.safetensors")


def _first_dispatch_unknown_buffer(m):
    m["programs"]["forward"][0]["bindings"][0] = "no_such_buffer"


def _too_small_buffer(m):
    """An activation buffer a forward dispatch binds (not one the host reads or writes) shrunk to one element: only the
    reach check finds it, and loadBundle runs that check while the files download."""
    io = {v for v in m["io"].values() if isinstance(v, str)}
    d = next(d for d in m["programs"]["forward"] for b in d["bindings"]
             if m["buffers"][b]["kind"] == "activation" and b not in io)
    name = next(b for b in d["bindings"] if m["buffers"][b]["kind"] == "activation" and b not in io)
    m["buffers"][name]["elements"] = [1, 0, 0]


def _wrong_weight_shape(m):
    name = next(n for n, b in m["buffers"].items() if b["kind"] == "weight" and len(b["shape"]) == 2)
    m["buffers"][name]["shape"] = m["buffers"][name]["shape"][::-1] + [1]


BAD_BUNDLES = {   # name -> (damage, words the one-line error must contain)
    "version": (lambda b: _edit_manifest(b, lambda m: m.update(format_version=1)), ["manifest.json", "format_version 1", "re-export it with ditweb"]),
    "not-json": (lambda b: (b / "manifest.json").write_text('{"format": '), ["manifest.json", "not valid JSON"]),
    "missing-kernel": (lambda b: next((b / "kernels").glob("*.wgsl")).unlink(), ["kernels/", "HTTP 404"]),
    "truncated-weights": (_truncate_weights, ["weights.safetensors", "past the end"]),
    "unknown-buffer": (lambda b: _edit_manifest(b, _first_dispatch_unknown_buffer), ["programs.forward[0]", "no_such_buffer"]),
    "absurd-shape": (lambda b: _edit_manifest(b, _wrong_weight_shape), ["weights.safetensors", "manifest buffer"]),
    "reach": (lambda b: _edit_manifest(b, _too_small_buffer), ["manifest.json", "holds 1 elements", "reaches"]),
}


def test_bad_bundles_fail_with_one_named_error_before_any_gpu_call(site, bundles, tmp_path):
    for name, (damage, _) in BAD_BUNDLES.items():
        shutil.copytree(bundles["f32"], tmp_path / name)
        damage(tmp_path / name)
    page = site["ctx"].new_page()
    # count GPU use: any requestAdapter call would be a GPU touch before verification finished
    page.add_init_script("""window.adapterCalls = 0; const orig = GPU.prototype.requestAdapter;
        GPU.prototype.requestAdapter = function (...a) { window.adapterCalls++; return orig.apply(this, a); };""")
    with local_server({"/": WEB_DIR, "/bad/": tmp_path}) as url:
        page.goto(url + "favicon.svg")
        errors = page.evaluate("""async (names) => {
            const { loadBundle } = await import('/ditweb.js');
            const out = {};
            for (const n of names) {
              try { await loadBundle(`/bad/${n}/`, { useCache: false }); out[n] = 'loaded'; }
              catch (e) { out[n] = `${e.name}: ${e.message}`; }
            }
            return { out, adapterCalls: window.adapterCalls };
        }""", list(BAD_BUNDLES))
    page.close()
    for name, (_, words) in BAD_BUNDLES.items():
        msg = errors["out"][name]
        assert msg.startswith("BundleError: ") and "\n" not in msg, f"{name}: {msg}"
        assert all(w in msg for w in words), f"{name}: {msg!r} should name {words}"
    assert errors["adapterCalls"] == 0


def _gpu_kernel(m: dict, which: str) -> str:
    """A kernel the programs run ("used": the first gated_residual) or a candidate no program names ("candidate",
    compiled only while a plan is timed)."""
    used = {d["kernel"] for ds in m["programs"].values() for d in ds}
    if which == "used":
        return next(k for k in sorted(used) if m["kernels"][k]["op"] == "gated_residual")
    return next(k for ks in m["candidates"].values() for k in ks if k not in used)


def _edit_kernel(b: Path, which: str, edit) -> str:
    """Edit that kernel's WGSL, hashes refreshed; returns its name."""
    m = json.loads((b / "manifest.json").read_text())
    name = _gpu_kernel(m, which)
    rel = m["kernels"][name]["file"]
    (b / rel).write_text(edit((b / rel).read_text()))
    _rehash(b, rel)
    return name


def _type_error(src: str) -> str:
    return src.replace("\n@compute", "\nfn broken() -> u32 { return 1.5; }\n@compute", 1)


def _huge_workgroup(src: str) -> str:
    """1 MiB of workgroup memory, used by main: it compiles, and no device creates its pipeline."""
    src = src.replace("\n@compute", "\nvar<workgroup> huge: array<vec4<f32>, 65535>;\n@compute", 1)
    body = src.index("{\n", src.index("fn main(")) + 2
    return src[:body] + "  huge[0] = vec4<f32>(0.0);\n" + src[body:]


def _aliased_writes(b: Path) -> str:
    """gated_residual reads y from the buffer it writes h to: sizes and reach fit; WebGPU would refuse the aliasing, and
    the verifier refuses it first."""
    m = json.loads((b / "manifest.json").read_text())
    name = _gpu_kernel(m, "used")
    d = next(d for ds in m["programs"].values() for d in ds if d["kernel"] == name)
    d["bindings"][1] = d["bindings"][0]
    (b / "manifest.json").write_text(json.dumps(m))
    return name


GPU_REFUSALS = {   # name -> (damage returning the kernel's name, words of the one-line error besides that name)
    "does-not-compile": (lambda b: _edit_kernel(b, "used", _type_error), ["WGSL does not compile"]),
    "candidate-does-not-compile": (lambda b: _edit_kernel(b, "candidate", _type_error), ["WGSL does not compile"]),
    "workgroup-memory": (lambda b: _edit_kernel(b, "candidate", _huge_workgroup), ["pipeline could not be created"]),
}


def test_gpu_refusals_are_one_line_errors_naming_the_kernel(site, bundles, tmp_path):
    """What passes the verifier but not the GPU (a type error, in a kernel the programs run or in a candidate compiled
    only while a plan is timed; a candidate over the workgroup memory limit): one BundleError line naming the kernel,
    before anything runs, and nothing on the GPU's uncaptured-error channel. A dispatch that writes a buffer it also
    reads, which the device would refuse at dispatch, is refused by the verifier already (one line, no GPU call)."""
    names = {}
    for case, (damage, _) in GPU_REFUSALS.items():
        shutil.copytree(bundles["f32"], tmp_path / case)
        names[case] = damage(tmp_path / case)
    shutil.copytree(bundles["f32"], tmp_path / "aliased-writes")
    _aliased_writes(tmp_path / "aliased-writes")
    page = site["ctx"].new_page()
    with local_server({"/": WEB_DIR, "/bad/": tmp_path}) as url:
        page.goto(url + "favicon.svg")
        got = page.evaluate("""async (cases) => {
            const { loadBundle } = await import('/ditweb.js');
            const out = {};
            for (const c of cases) {
              let b = null;
              try {
                const plan = c.startsWith('candidate') || c === 'workgroup-memory' ? 'auto' : 'default';   // auto: tuning
                b = await loadBundle(`/bad/${c}/`, { runtime: 'webgpu', useCache: false, plan });
                await b.sample({ classId: 0, steps: 1 });
                out[c] = 'ran';
              } catch (e) { out[c] = `${e.name}: ${e.message}`; }
              out[c + ':uncaptured'] = b ? b.lastGPUError : null;
              if (b) b.dispose();
            }
            return out;
        }""", list(GPU_REFUSALS) + ["aliased-writes"])
    page.close()
    msg = got["aliased-writes"]
    assert msg.startswith("BundleError: ") and "\n" not in msg and "bound twice" in msg, msg
    for case, (_, words) in GPU_REFUSALS.items():
        msg = got[case]
        assert msg.startswith("BundleError: kernels/") and "\n" not in msg, f"{case}: {msg}"
        assert f"kernel {names[case]}" in msg and all(w in msg for w in words), f"{case}: {msg!r} should name {words}"
        assert got[case + ":uncaptured"] is None, f"{case}: {got[case + ':uncaptured']}"


def test_webgpu_plans_timed_cached_forced_and_checked(site):
    """web/tune.js: plan "auto" times the candidates on SwiftShader and caches the plan in localStorage
    (a second load times nothing); a forced plan runs its kernels; plans differ only within the
    kernels' bounds (>= 40 dB); a plan naming a non-candidate is refused."""
    page = site["ctx"].new_page()
    page.goto(site["url"] + "favicon.svg")
    r = page.evaluate("""async () => {
        const m = await import('/ditweb.js');
        localStorage.clear();
        const opts = { classId: 1, seed: 7, steps: 4, cfg: 3 };
        const auto = await m.loadBundle('/f32/', { runtime: 'webgpu', plan: 'auto' });
        const a = await auto.sample(opts);
        const plan = auto.plans['2,1'];
        const keys = Object.keys(localStorage).filter((k) => k.startsWith('ditweb-plan:'));
        const again = await m.loadBundle('/f32/', { runtime: 'webgpu', plan: 'auto' });
        await again.sample(opts);
        const man = auto.manifest;
        const alt = Object.fromEntries(Object.keys(plan).map((s) => [s, man.candidates[s.split('|')[0]].find((c) => c !== s.split('|')[0])]));
        const forced = await m.loadBundle('/f32/', { runtime: 'webgpu', plan: alt });
        const f = await forced.sample(opts);
        const plain = await m.loadBundle('/f32/', { runtime: 'webgpu', plan: 'default' });
        const d = await plain.sample(opts);
        let refused = '';
        try { await m.loadBundle('/f32/', { runtime: 'webgpu', plan: { [Object.keys(plan)[0]]: 'gated_residual' } }); }
        catch (e) { refused = e.message; }
        const used = forced.batch.programs.forward.map((x) => x.kernel.file);
        return { plan, tuned: auto.lastTune, again: again.lastTune, keys: keys.length, a: Array.from(a.x), f: Array.from(f.x),
                 d: Array.from(d.x), refused, usedAlt: Object.values(alt).every((k) => used.includes(`kernels/${k}.wgsl`)),
                 againPlan: again.plans['2,1'] };
    }""")
    page.close()
    assert r["tuned"] and r["tuned"]["timingMs"] > 0 and r["plan"] and r["keys"] == 1
    assert r["again"] is None and r["againPlan"] == r["plan"]          # from the cache: nothing timed
    assert r["usedAlt"] and "not a candidate" in r["refused"]
    for other in ("f", "d"):
        assert psnr(to_unit(r["a"]), to_unit(r[other])) >= PSNR_MIN, other


def test_model_picker_offers_the_served_bundles(site, bundles, tmp_path):
    """web/bundles.json lists bundle/, bundles/named/, bundles/default/ and bundles/subcategories/: the page
    offers those that answer (here three of them), and choosing the third reloads the page with that bundle and
    its classes; where none does (this module's server) the picker stays hidden."""
    from dit_model.model import DiT, DiTConfig
    from export.bundle import export_bundle
    five = DiT(DiTConfig(input_size=16, patch_size=4, in_channels=4, hidden_size=32, depth=1, num_heads=2,
                         num_classes=5)).eval()
    other = export_bundle(five, tmp_path / "sub", "f32", ["a", "b", "c", "d", "e"])
    page = open_page(site, "?bundle=f32/&runtime=webgpu")
    assert page.evaluate("() => window.ditwebModels") == 0 and page.is_hidden("#model-label")
    page.close()
    with local_server({"/": WEB_DIR, "/bundle/": bundles["f32"], "/bundles/default/": bundles["f32"],
                       "/bundles/subcategories/": other}) as url:
        page = site["ctx"].new_page()
        page.goto(url + "?runtime=webgpu")
        assert wait_state(page, ("ready", "error", "bundle-error"), 90) == "ready"
        assert page.evaluate("() => window.ditwebModels") == 3 and page.is_visible("#model-label")
        served = ("bundle/", "bundles/default/", "bundles/subcategories/")          # bundles/named/ is not
        assert page.eval_on_selector_all("#model option", "os => os.map(o => o.textContent)") == \
            [e["label"] for e in json.loads((WEB_DIR / "bundles.json").read_text()) if e["url"] in served]
        with page.expect_navigation():
            page.select_option("#model", "2")
        assert "bundle=%2Fbundles%2Fsubcategories%2F" in page.url
        assert wait_state(page, ("ready", "error", "bundle-error"), 90) == "ready"
        assert page.eval_on_selector_all("#class option", "os => os.map(o => o.textContent)") == list("abcde")
        assert page.eval_on_selector("#model", "s => s.value") == "2"
        page.close()
