"""The wheel is the product (README, "Install from the wheel"): built from the repository's files alone, it holds
every file `serve`, `site`, `export` and `validate` load (the page, its JS and WebAssembly, the schemas, the WGSL
templates) and the LICENSE, and its base install needs no torch.

The fast test builds the wheel (seconds) and checks its file list and metadata; the slow one (`-m slow`, outside
the default suite: it installs numpy, wgpu, ... into a fresh venv) runs `ditweb site` and `ditweb sample
--runtime wgpu` with that install from a folder outside the checkout."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ditformat", "ditweb", "dit_model", "export", "wgsl", "runtime_py", "webserve")
WEB = ROOT / "web"


def source_files() -> list[str]:
    """What a clean clone holds (tracked files and new ones not ignored, as they are in the working tree):
    the packages, web/ and the build files."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode().split("\0")
    keep = tuple(p + "/" for p in PACKAGES + ("web",))
    return sorted(f for f in out if f and (f.startswith(keep) or f in ("pyproject.toml", "LICENSE", "README.md"))
                  and (ROOT / f).is_file())


def build_wheel(out: Path) -> Path:
    """`pip wheel` of a copy of the repository's files (no build/ or egg-info in the working tree)."""
    src = out / "src"
    for f in source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    try:                                            # setuptools >= 77 here: no isolated build env to download
        import setuptools
        isolated = int(setuptools.__version__.split(".")[0]) < 77
    except ImportError:
        isolated = True
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out / "dist"), str(src)]
    subprocess.run(cmd + ([] if isolated else ["--no-build-isolation"]), check=True, capture_output=True)
    (wheel,) = (out / "dist").glob("ditweb-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def page_files() -> set[str]:
    """Every file of web/ the page loads: `ditweb site` copies (webserve.files.web_files) and what the HTML and
    JS name by a relative URL (imports, workers, the .wasm, bundles.json)."""
    from webserve.files import web_files
    names = {p.as_posix() for p in web_files()}
    for f in WEB.iterdir():
        if f.suffix in (".html", ".js"):
            for ref in re.findall(r"""["'`](?:\./)?([\w.-]+\.(?:js|mjs|wasm|json|css|svg|png|ico))["'`]""", f.read_text()):
                if (WEB / ref).is_file() and ref not in ("package.json", "tsconfig.json"):
                    names.add(ref)
    return names


def wgsl_templates() -> set[str]:
    """The templates export renders: every op's template and whatever they include / import."""
    from wgsl.ops import ALL_OPS, TEMPLATES
    todo, seen = [op.template for op in ALL_OPS.values()], set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        todo += re.findall(r"""{%-?\s*(?:include|import|from|extends)\s+["']([^"']+)["']""", (TEMPLATES / t).read_text())
    return {f"wgsl/{t}" for t in seen}


def test_wheel_holds_every_file_the_verbs_load(wheel):
    from ditformat.schema import DECODER_SCHEMA_PATH, SCHEMA_PATH
    names = set(zipfile.ZipFile(wheel).namelist())
    need = {f"webserve/page/{f}" for f in page_files()} | wgsl_templates()
    need |= {f"ditformat/{SCHEMA_PATH.name}", f"ditformat/{DECODER_SCHEMA_PATH.name}"}
    need |= {f for f in source_files() if f.endswith(".py") and f.split("/")[0] in PACKAGES}
    assert "webserve/page/index.html" in need and "webserve/page/ditweb-kernels.wasm" in need
    assert "wgsl/matmul.wgsl.j2" in need and "wgsl/_rng.wgsl.j2" in need
    missing = sorted(need - names)
    assert not missing, f"the wheel lacks {missing[:10]}"
    dist = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{dist}/licenses/LICENSE" in names
    assert zipfile.ZipFile(wheel).read(f"{dist}/licenses/LICENSE").decode().startswith("MIT License")
    assert not [n for n in names if n.startswith(("tests/", "bundles/", "models/", "data/", "web/"))]


def test_wheel_metadata_keeps_torch_an_extra(wheel):
    from ditformat import EXPORTER_VERSION
    z = zipfile.ZipFile(wheel)
    meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())
    assert meta["Version"] == EXPORTER_VERSION and meta["License-Expression"] == "MIT"
    requires = meta.get_all("Requires-Dist")
    base = [r for r in requires if "extra ==" not in r]
    assert not [r for r in base if r.lower().startswith("torch")] and any(r.startswith("wgpu") for r in base)
    torch_reqs = [r for r in requires if r.startswith("torch") and 'extra == "torch"' in r]
    assert torch_reqs and all("==" in r.split(";")[0] for r in torch_reqs)    # pinned: never a bare CUDA build
    assert wheel.name == f"ditweb-{EXPORTER_VERSION}-py3-none-any.whl"


def test_version_flag(capsys):
    from ditformat import EXPORTER_VERSION, FORMAT_VERSION
    from ditweb.cli import main
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ditweb {EXPORTER_VERSION} (bundle format {FORMAT_VERSION})"


def draws_under_strict_csp(public: Path) -> None:
    """The folder `ditweb site` wrote, served with the strict Content-Security-Policy (and COOP + COEP): headless
    Chromium draws the favicon on both runtimes, with no CSP violation."""
    from test_site import ISOLATED, watched_page
    from webserve.browser import chromium, local_server, wait_state
    console: list[str] = []
    with local_server({"/": public}, headers=ISOLATED) as url, chromium() as ctx:
        for runtime in ("wasm", "webgpu"):
            page = watched_page(ctx, console)
            page.goto(f"{url}?runtime={runtime}&steps=2&autorun=1")
            state = wait_state(page, ("done", "error", "bundle-error", "unsupported", "no-webgpu", "no-adapter"), 120)
            assert state == "done", (runtime, state, page.text_content("#message"))
            assert page.get_attribute('link[rel~="icon"]', "href").startswith("data:image/png;base64,")
            assert page.evaluate("window.cspViolations") == []
            page.close()
    assert not console, console


@pytest.mark.slow
def test_wheel_without_torch_serves_and_samples_outside_the_checkout(wheel, tmp_path):
    """A fresh venv, the wheel without extras (no torch), a folder outside the checkout: `ditweb site` and
    `ditweb sample --runtime wgpu` on a copy of the shipped bundle; torch-only verbs say which extra to install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, ditweb = venv / "bin" / "python", venv / "bin" / "ditweb"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=900)
    work = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "bundles" / "default", work / "bundle")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), DITWEB_PLAN="default")

    def run(*args, ok=True):
        r = subprocess.run([str(ditweb), *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert (r.returncode == 0) == ok, r.stderr[-2000:]
        return r

    assert subprocess.run([str(py), "-c", "import torch"], cwd=work, env=env, capture_output=True).returncode != 0
    assert run("--version").stdout.startswith("ditweb ")
    run("site", "bundle", "public")
    assert (work / "public" / "index.html").is_file() and (work / "public" / "ditweb-kernels.wasm").is_file()
    assert (work / "public" / "bundle" / "manifest.json").is_file()
    from webserve.files import web_files
    assert sorted(p.name for p in (work / "public").iterdir() if p.is_file() and p.name != ".ditweb-site") == \
        sorted(p.as_posix() for p in web_files())                # the same page as from the checkout
    draws_under_strict_csp(work / "public")
    run("sample", "bundle", "--runtime", "wgpu", "--class", "Flags", "--n", "2", "--steps", "4", "--out", "s")
    assert list((work / "s").glob("*.png"))
    r = run("export", "bundle", "x", ok=False)
    assert r.returncode == 2 and "ditweb[torch]" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    installed = subprocess.run([str(py), "-c", "import webserve.files as f; print(f.WEB_DIR)"], cwd=work, env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
    assert installed.startswith(str(venv)) and installed.endswith("webserve/page")


@pytest.mark.slow
def test_wheel_with_the_torch_extra_exports_and_validates(wheel, tmp_path):
    """The wheel with `[torch]` in a fresh venv (torch pinned: the CPU build from the machine's wheel cache or index),
    outside the checkout: export a preset to a bundle with its card, validate it with a JUnit report."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, ditweb = venv / "bin" / "python", venv / "bin" / "ditweb"
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"ditweb[torch] @ {wheel.as_uri()}"], check=True, timeout=1500)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), DITWEB_PLAN="default", OMP_NUM_THREADS="1")
    run = lambda *a: subprocess.run([str(ditweb), *a], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    r = run("export", "Favicon-N/2", "b", "--no-candidates")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (work / "b" / "README.md").is_file() and (work / "b" / "manifest.json").is_file()
    r = run("validate", "b", "--junit", "v.xml")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "<testcase" in (work / "v.xml").read_text()
