"""Loading on the WebAssembly path in headless Chromium (web/ditweb.js loadBundle, web/wasm-bundle.js): the kernels
are fetched and compiled and the worker started while the bundle downloads, yet the worker gets no message with
the bundle's bytes when a file fails verification (a one-line BundleError, the early worker gone); the relaxed or
plain SIMD kernels are chosen by opts.simd ("auto": relaxed where Chromium validates it) and the bundle says which
ran; a bad simd value is a one-line error before any download. No timing is asserted (the machine is shared)."""
from __future__ import annotations

import hashlib
import json

import pytest

# every message a page's worker is sent, by command, and every Worker made and terminated
SPY = """window.workerLog = { made: 0, terminated: 0, cmds: [] };
const OrigWorker = window.Worker;
window.Worker = class extends OrigWorker {
  constructor(...a) { super(...a); window.workerLog.made++; }
  postMessage(m, ...r) { window.workerLog.cmds.push(m && m.cmd); return super.postMessage(m, ...r); }
  terminate() { window.workerLog.terminated++; return super.terminate(); }
};"""

RUN = """async ([url, opts]) => {
    const { loadBundle } = await import("/web/ditweb.js");
    const fetched = performance.getEntriesByType("resource").length;
    try {
        const b = await loadBundle(url, { useCache: false, ...opts });
        const r = await b.sample({ classIds: [1], seed: 3, steps: 2, cfg: 3.0 });
        const out = { simd: b.simd, r: r.simd, describe: b.adapterDescription, timings: b.timings,
                      finite: Array.from(r.x).every(Number.isFinite) };
        b.dispose();
        return { ...out, log: window.workerLog };
    } catch (e) {
        const later = performance.getEntriesByType("resource").slice(fetched).map((x) => x.name);
        return { error: `${e.name}: ${e.message}`, log: window.workerLog, fetched: later };
    }
}"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A small random-weight bundle, and a copy whose weights fail their sha256 (one byte changed)."""
    from conftest import randomize
    from dit_model.model import DiT
    from export.bundle import export_bundle
    model = randomize(DiT.from_preset("Favicon-N/2", num_heads=2).eval())
    root = tmp_path_factory.mktemp("load")
    (root / "page").mkdir()
    (root / "page" / "index.html").write_text("<!doctype html><title>load</title>")
    good = export_bundle(model, root / "good", "f32", ["hippo", "flag", "rocket"])
    bad = export_bundle(model, root / "bad", "f32", ["hippo", "flag", "rocket"])
    m = json.loads((bad / "manifest.json").read_text())
    weights = next(f for f in m["files"] if f.endswith(".safetensors"))
    data = bytearray((bad / weights).read_bytes())
    data[-1] ^= 1
    (bad / weights).write_bytes(bytes(data))
    assert hashlib.sha256(data).hexdigest() != m["files"][weights]["sha256"]
    return root


def run(root, bundle: str, opts: dict) -> dict:
    from webserve.browser import WEB_DIR, chromium, local_server
    routes = {"/": root / "page", "/web/": WEB_DIR, "/good/": root / "good", "/bad/": root / "bad"}
    with local_server(routes) as url, chromium(gpu=False) as ctx:
        ctx.add_init_script(SPY)
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "index.html")
        got = page.evaluate(RUN, [url + bundle, opts])
        assert not errors, errors
        return got


def test_a_bundle_that_fails_verification_never_reaches_the_early_worker(root):
    got = run(root, "bad/", {"runtime": "wasm"})
    assert got.get("error", "").startswith("BundleError: ") and "sha256" in got["error"], got
    assert "\n" not in got["error"]
    log = got["log"]
    assert log["made"] == 1 and log["terminated"] == 1, log          # started early, then ended
    assert "init" not in log["cmds"], log                            # nothing of the bundle was sent


@pytest.mark.parametrize("simd", ["auto", "relaxed", "plain"])
def test_the_kernels_asked_for_run_and_say_so(root, simd):
    got = run(root, "good/", {"runtime": "wasm", "simd": simd})
    assert "error" not in got, got
    want = "plain" if simd == "plain" else "relaxed"                # Chromium validates relaxed SIMD
    assert got["simd"] == got["r"] == want and got["finite"], got
    assert ("relaxed SIMD" in got["describe"]) == (want == "relaxed"), got["describe"]
    assert got["timings"]["kernelsMs"] > 0 and got["log"]["cmds"][:1] == ["init"], got
    assert got["log"]["made"] == 1, got["log"]                      # the early worker is the one that ran


def test_a_bad_simd_value_is_one_line_before_any_download(root):
    got = run(root, "good/", {"runtime": "wasm", "simd": "fast"})
    assert got["error"].startswith("RangeError: ") and "relaxed" in got["error"] and "\n" not in got["error"], got
    assert not [u for u in got["fetched"] if "/good/" in u], got["fetched"]
    assert got["log"]["made"] == 0
