"""The page in a headless browser, for the browser tests (tests/test_browser.py, tests/test_vae_browser.py,
tests/test_wasm.py) and the browser benchmark (bench/web/run.py): a local server for web/ + bundles, and
Debian's headless Chromium driven by Python playwright (imported on use; never `playwright install`: the
system browser is the one we test), plus the PSNR the pixel comparisons are stated in.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from webserve.files import WEB_DIR
from webserve.server import make_server, serve_in_thread

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",                       # containers/CI run as root
    "--enable-unsafe-webgpu",             # WebGPU on SwiftShader, the CPU adapter available headless
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic",
]


@contextlib.contextmanager
def local_server(routes: dict[str, Path], requested: list[str] | None = None, headers: dict[str, str] | None = None):
    """Yields the base URL 'http://127.0.0.1:PORT/' serving routes (e.g. {'/': web, '/b/': bundle}); headers are
    sent with every file (e.g. a Content-Security-Policy)."""
    server = make_server(routes, 0, requested=requested, headers=headers)
    serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium(gpu: bool = True):
    """A fresh headless Chromium (its own --user-data-dir, so no cache leaks between runs).
    gpu=False removes navigator.gpu before any page script runs (the no-WebGPU visitor)."""
    from playwright.sync_api import sync_playwright
    profile = tempfile.mkdtemp(prefix="ditweb-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                       args=CHROMIUM_ARGS)
            if not gpu:
                ctx.add_init_script("delete Navigator.prototype.gpu;")
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def wait_state(page, states: tuple[str, ...], timeout_s: float = 60.0) -> str:
    """Wait until body[data-state] is one of states; return it."""
    sel = ", ".join(f'body[data-state="{s}"]' for s in states)
    page.wait_for_selector(sel, state="attached", timeout=timeout_s * 1000)
    return page.evaluate("document.body.dataset.state")


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def to_unit(x: np.ndarray) -> np.ndarray:
    """Model-space [-1, 1] -> RGBA in [0, 1] (clipped), the space the PSNR is stated in."""
    return np.clip((np.asarray(x, np.float64) + 1.0) / 2.0, 0.0, 1.0)


__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "WEB_DIR", "chromium", "local_server", "wait_state", "psnr", "to_unit"]
