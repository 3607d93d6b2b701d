"""The npm package is the browser runtime (web/package.json): `npm pack` of web/ gives a tarball that holds the LICENSE
and .d.ts declarations (both generated at pack time by web/prepack.mjs, so never stale), whose imports all resolve
inside it, whose types check a TypeScript consumer, and which draws the favicon of the shipped bundle in headless
Chromium on WebGPU and on WebAssembly two ways: unpacked and imported from a plain ESM page with an import map, and
bundled by esbuild (data/npm-esbuild, scripts/setup.sh) into one file whose worker and wasm still load next to it.
Versions agree: the wheel, the npm package and the format's exporter; a bundle of another format is refused by both
runtimes with the ditweb version to use.

The pack runs in a copy of web/ (the shared working tree is never written)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import numpy as np
import pytest

from webserve.browser import chromium, local_server, psnr

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"
TSC = REPO / "data" / "npm-ts" / "node_modules" / ".bin" / "tsc"
ESBUILD = REPO / "data" / "npm-esbuild" / "node_modules" / ".bin" / "esbuild"
BUNDLE = REPO / "bundles" / "default"
STEPS = 2
PACK_FILES = ("package.json", "prepack.mjs", "tsconfig.json", "tsconfig.types.json")


def need(tool: Path):
    if not tool.exists():
        pytest.fail(f"{tool} is missing: run scripts/setup.sh")


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """`npm pack` of a copy of web/ (prepack: LICENSE + tsc declarations), unpacked as node_modules/ditweb of an app
    folder. Returns the app folder; the tarball is app/../ditweb-*.tgz."""
    need(TSC)
    root = tmp_path_factory.mktemp("npm")
    src = root / "repo" / "web"
    src.mkdir(parents=True)
    pkg = json.loads((WEB / "package.json").read_text())
    checked = json.loads((WEB / "tsconfig.json").read_text())["files"]           # tsc reads these (app.js too)
    for name in set(PACK_FILES + tuple(f for f in pkg["files"] + checked if (WEB / f).is_file())):
        shutil.copy2(WEB / name, src / name)
    shutil.copy2(REPO / "LICENSE", root / "repo" / "LICENSE")
    (root / "repo" / "data").symlink_to(REPO / "data")          # tsc and the WebGPU typings (tsconfig.json)
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    r = subprocess.run(["npm", "pack", "--pack-destination", str(root)], cwd=src, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (src / "LICENSE").exists() and not list(src.glob("*.d.ts")), "postpack leaves the folder as it was"
    (tarball,) = root.glob("ditweb-*.tgz")
    app = root / "app"
    dest = app / "node_modules" / "ditweb"
    dest.mkdir(parents=True)
    with tarfile.open(tarball) as t:
        for m in t.getmembers():
            assert m.name.startswith("package/") and m.isfile(), m.name
            m.name = m.name[len("package/"):]
            t.extract(m, dest, filter="data")
    return app


def test_tarball_holds_license_types_and_every_import(package):
    dest = package / "node_modules" / "ditweb"
    assert (dest / "LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes()
    pkg = json.loads((dest / "package.json").read_text())
    assert pkg["license"] == "MIT" and (dest / pkg["types"]).is_file()
    modules = sorted(p.name for p in dest.glob("*.js"))
    assert modules and all((dest / m.replace(".js", ".d.ts")).is_file() for m in modules), "a .d.ts for each module"
    for m in modules:
        for rel in re.findall(r"""(?:\bfrom|\bimport\(?|new URL\()\s*["']\./([^"']+)["']""", (dest / m).read_text()):
            assert (dest / rel).is_file(), f"{m} uses ./{rel}, which the tarball lacks"
    for target in pkg["exports"].values():
        assert (dest / target).is_file(), target
    tracked = subprocess.run(["git", "ls-files", "web/*.d.ts", "web/LICENSE"], cwd=REPO, capture_output=True,
                             text=True).stdout
    assert not tracked, f"generated at pack time, never committed (a committed copy goes stale): {tracked}"


def test_types_check_a_typescript_consumer(package):
    """The declarations are real types: a consumer type-checks, and a wrong call is an error."""
    (package / "consumer.ts").write_text(
        'import { loadBundle, diffuseFavicon, FORMAT_VERSION, BundleError } from "ditweb";\n'
        'const b = await loadBundle("bundle/", { runtime: "wasm" });\n'
        'const r = await diffuseFavicon(b, { classId: 0, seed: 7, steps: 2 });\n'
        'const v: number = FORMAT_VERSION;\n'
        'export const out = [b.runtime, r, v, BundleError];\n'
        '// @ts-expect-error: loadBundle needs the bundle URL\n'
        'await loadBundle();\n')
    (package / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"target": "es2022", "module": "es2022", "moduleResolution": "bundler", "noEmit": True,
                            "lib": ["es2022", "dom"], "types": ["types"], "skipLibCheck": False,
                            "typeRoots": [str(REPO / "data" / "npm-ts" / "node_modules" / "@webgpu")]},
        "files": ["consumer.ts"]}))
    r = subprocess.run([str(TSC), "-p", str(package / "tsconfig.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]


def test_versions_agree_and_another_format_names_the_version_to_use(tmp_path):
    from ditformat.version import EXPORTER_VERSION, FORMAT_VERSION
    from runtime_py.verify import FormatVersionError, verify_manifest
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    npm = json.loads((WEB / "package.json").read_text())["version"]
    assert wheel == npm == EXPORTER_VERSION, (wheel, npm, EXPORTER_VERSION)
    js_format = re.search(r'"format_version":\s*(\d+)', (WEB / "bundle-schema.js").read_text()).group(1)
    assert int(js_format) == FORMAT_VERSION
    assert json.loads((BUNDLE / "manifest.json").read_text())["format_version"] == FORMAT_VERSION
    other = {"format": "ditweb-bundle", "format_version": FORMAT_VERSION + 1, "exporter": "ditweb 9.0.0"}
    with pytest.raises(FormatVersionError) as e:
        verify_manifest(other)
    assert f"ditweb {EXPORTER_VERSION}" in str(e.value) and "9.0.0" in str(e.value), e.value
    script = ("import { verifyManifest } from './bundle.js';\n"
              f"try {{ verifyManifest({json.dumps(other)}); }} catch (e) {{ console.log(e.message); }}\n")
    r = subprocess.run(["node", "--input-type=module", "-e", script], cwd=WEB, capture_output=True, text=True,
                       timeout=60)
    assert f"ditweb {EXPORTER_VERSION}" in r.stdout and "9.0.0" in r.stdout, r.stdout + r.stderr


# ------------------------------------------------------------------ in Chromium, on both runtimes

MAIN_JS = """import { loadBundle, diffuseFavicon } from "ditweb";
const runtime = new URLSearchParams(location.search).get("runtime");
window.ditwebRun = (async () => {
  const b = await loadBundle(new URL("bundle/", location.href), { runtime, plan: "default", useCache: false });
  const r = await diffuseFavicon(b, { classId: 2, seed: 7, steps: %d, remember: false });
  const link = document.querySelector('link[rel~="icon"]');
  return { runtime: b.runtime, threads: r.threads ?? 1, simd: b.simd ?? null, href: link.href, rgba: Array.from(r.rgba[0]) };
})();
""" % STEPS


def draw_both(page_url: str) -> dict:
    """Open page_url?runtime=... for both runtimes; the favicon each drew (pixels) and the WebAssembly threads."""
    out = {}
    with chromium() as ctx:
        for runtime in ("webgpu", "wasm"):
            page = ctx.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{page_url}?runtime={runtime}")
            page.wait_for_function("window.ditwebRun !== undefined", timeout=30_000)
            r = page.evaluate("window.ditwebRun")
            assert not errors, errors
            assert r["runtime"] == runtime and r["href"].startswith("data:image/png;base64,"), r["href"][:40]
            out[runtime] = np.asarray(r["rgba"], np.float64) / 255.0
            out[f"{runtime}-threads"] = r["threads"]
            out[f"{runtime}-simd"] = r["simd"]
            page.close()
    assert out["wasm"].std() > 0.01, "a drawn favicon, not a blank one"
    assert psnr(out["webgpu"], out["wasm"]) >= 40.0, "the same seed draws the same favicon on both runtimes"
    return out


def test_unpacked_tarball_imports_from_a_plain_esm_page(package):
    (package / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">\n'
        '<script type="importmap">{"imports": {"ditweb": "./node_modules/ditweb/ditweb.js"}}</script>\n'
        '<script type="module" src="main.js"></script>\n')
    (package / "main.js").write_text(MAIN_JS)
    requested: list[str] = []
    with local_server({"/": package, "/bundle/": BUNDLE}, requested=requested) as url:
        drawn = draw_both(url)
    kernels = KERNELS[drawn["wasm-simd"]][0]   # one thread: the page is not cross-origin isolated
    assert "/node_modules/ditweb/ditweb-worker.js" in requested and f"/node_modules/ditweb/{kernels}" in requested


ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
# the kernels (one thread, a pool) each SIMD flavour loads: relaxed where Chromium validates relaxed SIMD
KERNELS = {"plain": ("ditweb-kernels.wasm", "ditweb-kernels-mt.wasm"),
           "relaxed": ("ditweb-kernels-relaxed.wasm", "ditweb-kernels-mt-relaxed.wasm")}


def test_esbuild_bundle_loads_its_workers_and_wasm(package, tmp_path):
    """esbuild bundles the app into one file (dist/main.js) and each worker (the runtime's, the thread pool's) into
    another beside it; the four wasm files are copied beside them: the runtime finds all of them with
    new URL(..., import.meta.url). Served cross-origin isolated, so the WebAssembly path runs its thread pool
    (with the relaxed SIMD kernels where Chromium has relaxed SIMD). Nothing is fetched from node_modules."""
    need(ESBUILD)
    (package / "main.js").write_text(MAIN_JS)
    dist = tmp_path / "dist"
    r = subprocess.run([str(ESBUILD), "main.js", "node_modules/ditweb/ditweb-worker.js",
                        "node_modules/ditweb/ditweb-thread.js", "--bundle", "--format=esm",
                        "--entry-names=[name]", f"--outdir={dist}", "--log-level=warning"],
                       cwd=package, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    wasm_files = KERNELS["plain"] + KERNELS["relaxed"]
    for wasm in wasm_files:
        shutil.copy2(package / "node_modules" / "ditweb" / wasm, dist)
    assert sorted(p.name for p in dist.iterdir()) == sorted(wasm_files + ("ditweb-thread.js", "ditweb-worker.js",
                                                                          "main.js"))
    assert "from \"./" not in (dist / "main.js").read_text(), "one file: no imports left"
    (dist / "index.html").write_text('<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">\n'
                                     '<script type="module" src="main.js"></script>\n')
    requested: list[str] = []
    with local_server({"/": dist, "/bundle/": BUNDLE}, requested=requested, headers=ISOLATED) as url:
        drawn = draw_both(url)
    page_files = {p for p in requested if not p.startswith("/bundle/")}
    one, pool = KERNELS[drawn["wasm-simd"]]
    assert page_files <= {"/", "/main.js", "/ditweb-worker.js", "/ditweb-thread.js", f"/{one}", f"/{pool}"}, page_files
    if (os.cpu_count() or 1) > 1:                   # a pool only where the browser sees more than one core
        assert drawn["wasm-threads"] > 1
        assert {"/ditweb-worker.js", "/ditweb-thread.js", f"/{pool}"} <= page_files
    else:
        assert {"/ditweb-worker.js", f"/{one}"} <= page_files
