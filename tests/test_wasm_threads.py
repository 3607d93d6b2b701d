"""Threads on the WebAssembly path (web/wasm-threads.js, web/ditweb-kernels-mt.wasm) in headless Chromium: on a
cross-origin isolated page (COOP same-origin + COEP require-corp, as `ditweb serve` sends) loadBundle(url,
{runtime: "wasm", threads: N}) runs N threads and says so, and the image is the same bits for 1, 2 and 3 threads
(matmul split by blocks of 4 output rows, attention by query rows: every output's sum in the same order), for an
f32 and an int8 bundle; the single-thread module (no shared memory) gives the same bits too. Without isolation the
page runs one thread whatever it asks for. No timing is asserted (the machine is shared)."""
from __future__ import annotations

import numpy as np
import pytest

ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
RUN = """async ([threadCounts, bundles]) => {
    const { loadBundle } = await import("/web/ditweb.js");
    const out = { isolated: self.crossOriginIsolated, runs: [] };
    for (const url of bundles) {
        for (const threads of threadCounts) {
            const b = await loadBundle(url, { runtime: "wasm", threads, useCache: false });
            const r = await b.sample({ classIds: [0, 2], seed: 5, steps: 3, cfg: 3.0 });
            out.runs.push({ url, asked: threads, threads: r.threads, B: r.B, describe: b.adapterDescription,
                            bits: Array.from(new Uint32Array(r.x.buffer, r.x.byteOffset, r.x.length)) });
            b.dispose();
        }
    }
    return out;
}"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A small random-weight model (head dim 32: the vector attention), exported f32 and int8."""
    import torch
    from dit_model.model import DiT
    from export.bundle import export_bundle
    torch.manual_seed(0)
    model = DiT.from_preset("Favicon-N/2", num_heads=2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    root = tmp_path_factory.mktemp("threads")
    page = root / "page"
    page.mkdir()
    (page / "index.html").write_text("<!doctype html><title>threads</title>")
    for dtype in ("f32", "int8"):
        export_bundle(model, root / dtype, dtype, ["hippo", "flag", "rocket"])
    return root


def run_page(root, headers, threads, dtypes=("f32", "int8")):
    from webserve.browser import WEB_DIR, chromium, local_server
    routes = {"/": root / "page", "/web/": WEB_DIR, **{f"/{d}/": root / d for d in dtypes}}
    with local_server(routes, headers=headers) as url, chromium(gpu=False) as ctx:
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "index.html")
        got = page.evaluate(RUN, [threads, [url + f"{d}/" for d in dtypes]])
        assert not errors, errors
        return got


def test_any_number_of_threads_gives_the_same_bits(bundles):
    got = run_page(bundles, ISOLATED, [1, 2, 3])
    assert got["isolated"] is True
    for dtype in ("f32", "int8"):
        runs = [r for r in got["runs"] if r["url"].endswith(f"/{dtype}/")]
        assert [r["threads"] for r in runs] == [1, 2, 3], [(r["asked"], r["threads"], r["describe"]) for r in runs]
        assert all(r["B"] == 4 for r in runs)                     # 2 images x (cond, uncond): M splits unevenly
        ref = np.asarray(runs[0]["bits"], np.uint32)
        assert np.isfinite(ref.view(np.float32)).all()
        for r in runs[1:]:
            same = np.asarray(r["bits"], np.uint32) == ref
            assert same.all(), f"{dtype}, {r['threads']} threads: {int((~same).sum())} of {len(ref)} values differ from 1 thread"
    f32 = np.asarray(got["runs"][0]["bits"], np.uint32)
    int8 = np.asarray(got["runs"][3]["bits"], np.uint32)
    assert (f32 != int8).any()                                   # the int8 bundle really ran its own weights


def test_without_isolation_one_thread_runs(bundles):
    got = run_page(bundles, {}, [4], dtypes=("f32",))
    assert got["isolated"] is False
    assert got["runs"][0]["threads"] == 1 and "1 thread" in got["runs"][0]["describe"]


def test_ditweb_serve_isolates_the_page_and_the_page_runs_threads(tmp_path):
    """`ditweb serve` sends COOP + COEP, so the favicon page itself (web/index.html, app.js) is cross-origin
    isolated and its WebAssembly runtime starts the pool (headless Chromium reports 2 or more cores here) and
    shows the count in its adapter line."""
    import re
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path
    from webserve.browser import chromium, wait_state
    repo = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-c", "import sys; from ditweb.cli import main; sys.exit(main())",
           "serve", str(repo / "bundles" / "default"), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline()).group(0)
        with urllib.request.urlopen(url) as r:
            assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with chromium(gpu=False) as ctx:
            page = ctx.new_page()
            page.goto(url + "?runtime=wasm")
            state = wait_state(page, ("ready", "error", "bundle-error", "no-webgpu"), 90)
            assert state == "ready", page.text_content("#message")
            got = page.evaluate("""async () => {
                const b = window.ditwebBundle;
                const r = await b.sample({ classId: 0, seed: 1, steps: 2, cfg: 4.0 });
                return { isolated: self.crossOriginIsolated, cores: navigator.hardwareConcurrency, threads: r.threads,
                         runtime: r.runtime, adapter: document.getElementById("adapter").textContent };
            }""")
    finally:
        proc.terminate()
        proc.wait(10)
    assert got["isolated"] is True and got["runtime"] == "wasm"
    assert got["threads"] == got["cores"] >= 2 or got["cores"] < 2, got
    assert f"{got['threads']} thread" in got["adapter"], got
