"""The browser runtime (web/ditweb.js) and the favicon page in real headless Chromium (SwiftShader
WebGPU), plus `ditweb serve` / `ditweb site`.

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

from _browser import WEB_DIR, chromium, local_server, psnr, to_unit, wait_state

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
            "bundle/kernels/k.wgsl"} <= written
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
    cmd = [sys.executable, "-c", "import sys; from dit_model.cli import main; sys.exit(main())"]
    bad = subprocess.run(cmd + ["serve", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr, bad.stderr
    proc = subprocess.Popen(cmd + ["serve", str(bundle), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with urllib.request.urlopen(url) as r:
            assert b'<script type="module" src="app.js">' in r.read()
        with urllib.request.urlopen(url + "ditweb.js") as r:
            assert r.headers["Content-Type"].startswith("text/javascript")   # ES modules need a JS MIME type
        with urllib.request.urlopen(url + "bundle/kernels/k.wgsl") as r:
            assert r.read() == (bundle / "kernels/k.wgsl").read_bytes()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "bundle/../../../etc/passwd")
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------ in Chromium: no bundle needed

def test_no_webgpu_shows_fallback_and_keeps_static_favicon():
    with local_server({"/": WEB_DIR}) as url, chromium(gpu=False) as ctx:
        page = ctx.new_page()
        page.goto(url)
        assert wait_state(page, ("no-webgpu", "no-adapter", "ready", "error", "bundle-error"), 30) == "no-webgpu"
        assert "no WebGPU" in page.text_content("#message")
        assert page.is_visible("#message")
        assert page.get_attribute('link[rel~="icon"]', "href") == "favicon.svg"


def test_sampler_tables_match_python():
    """web/schedule.js computes respaced tables from base_betas exactly as dit_model/diffusion.py
    (steps 7 and 13 hit numpy's round-half-to-even in S_i)."""
    from dit_model.diffusion import Diffusion, linear_betas
    steps_list = [1, 2, 7, 13, 37]
    with local_server({"/": WEB_DIR}) as url, chromium() as ctx:
        page = ctx.new_page()
        page.goto(url + "favicon.svg")
        got = page.evaluate("""async ([base, stepsList]) => {
            const m = await import('/schedule.js');
            return stepsList.map((s) => m.samplerTables({ sampler_tables: { base_betas: base } }, s));
        }""", [linear_betas().tolist(), steps_list])
    for steps, js in zip(steps_list, got):
        d = Diffusion(steps)
        np.testing.assert_array_equal(js["t"], d.timestep_map)
        for key, ref in [("abar", d.abar), ("coef1", d.coef1), ("coef2", d.coef2), ("log_beta", d.log_betas),
                         ("log_post_var", d.posterior_log_variance_clipped), ("sqrt_1m_abar", d.sqrt_1m_abar)]:
            # float64 on both sides; only libm ulps may differ, far below the f32 the uniform stores
            np.testing.assert_allclose(js[key], ref, rtol=1e-13, atol=0, err_msg=f"{key} at {steps} steps")
