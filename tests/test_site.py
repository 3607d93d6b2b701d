"""`ditweb site` for real hosts (docs/hosting.md): the folder runs under the strict Content-Security-Policy
(webserve.site.CSP: no inline script, no eval) served as a header, under a sub-path (`--base-path /icons/`, also at a
URL a host rewrites to index.html), keeps the static favicon where neither runtime can run, prints what a first visit
downloads (and that list is what the browser fetched), and shows the attribution the data's licences require, read
from the bundle's card: all of a named model's sources."""
from __future__ import annotations

import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from webserve.browser import WEB_DIR, chromium, local_server, wait_state
from webserve.files import SiteError
from webserve.site import CSP, bundle_files, first_visit, write_site

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundles" / "default"
NAMED = REPO / "bundles" / "named"
NAMED_INT8 = REPO / "bundles" / "named-int8"
HEADERS = {"Content-Security-Policy": CSP}
ISOLATED = {**HEADERS, "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
WATCH_CSP = """window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));"""


def card_attribution(bundle: Path) -> list[str]:
    lines = (bundle / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("**Attribution**"))
    out = []
    for line in lines[start + 1:]:
        if line.startswith("- "):
            out.append(line[2:].strip())
        elif line.strip() or out:
            break
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "icons"
    write_site(BUNDLE, out, base_path="/icons/")
    return out


@pytest.fixture(scope="module")
def no_gpu_browser():
    """One Chromium without WebGPU for the module's tests of the page without a runtime (each with its own server)."""
    with chromium(gpu=False) as ctx:
        yield ctx


def watched_page(ctx, console: list[str]):
    page = ctx.new_page()
    page.add_init_script(WATCH_CSP)
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    return page


def test_site_cli_prints_first_visit_and_refuses_a_bad_base_path(tmp_path, capsys):
    from ditweb.cli import main
    assert main(["site", str(BUNDLE), str(tmp_path / "out"), "--base-path", "/icons/"]) == 0
    out = capsys.readouterr().out
    for runtime in ("WebGPU", "WebAssembly"):
        assert re.search(rf"{runtime} +\d+ files, +[\d.]+ MB, gzip +[\d.]+ MB", out), out
    assert CSP in out and '<base href="/icons/">' in (tmp_path / "out" / "index.html").read_text()
    assert main(["site", str(BUNDLE), str(tmp_path / "bad"), "--base-path", "icons"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--base-path 'icons'" in err, err
    for bad in ("icons/", "/icons", "/a/../b/", '/"x/', "/a b/"):
        with pytest.raises(SiteError, match="--base-path"):
            write_site(BUNDLE, tmp_path / "bad", base_path=bad)
    assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(not (NAMED_INT8 / "manifest.json").is_file(), reason="no int8 named bundle shipped")
def test_first_visit_fetches_what_each_runtime_reads(tmp_path):
    """The first-visit report per path, computed from the site: WebAssembly fetches the weights and the vocabulary, not
    the bundle's WGSL kernels, its model card (the footer is in the HTML) or the WebGPU bundle's modules; WebGPU
    fetches and verifies every listed file. The Python rule (webserve/site.py bundle_files) and the page's
    (web/bundle.js bundleFiles, run by node) name the same files for both runtimes."""
    import json
    import subprocess
    out = tmp_path / "s"
    write_site(NAMED_INT8, out)
    visit = first_visit(out)
    m = json.loads((NAMED_INT8 / "manifest.json").read_text())
    kernels = {f"bundle/{k['file']}" for k in m["kernels"].values()}
    for path in ("wasm", "wasm-threads"):
        files = set(visit[path])
        assert not files & (kernels | {"bundle/README.md", "webgpu-bundle.js", "tune.js"}), files & kernels
        assert {"bundle/manifest.json", "bundle/weights.safetensors", "bundle/vocabulary.json", "app.bundle.js",
                "ditweb-worker.js", "wasm-runtime.js"} <= files
    assert kernels | {"bundle/README.md", "app.bundle.js"} <= set(visit["webgpu"])   # its modules: in app.bundle.js
    assert {f"bundle/{f}" for f in m["files"]} <= set(visit["webgpu"])
    script = ("import { bundleFiles } from './web/bundle.js';\n"
              "const m = JSON.parse((await import('node:fs')).readFileSync(0, 'utf-8'));\n"
              "process.stdout.write(JSON.stringify({webgpu: bundleFiles(m), wasm: bundleFiles(m, 'wasm')}));\n")
    r = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(m), capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    decoder = [f for f in m["files"] if f.startswith("decoder/")]     # a latent bundle: web/decode.js fetchDecoder
    dm = json.loads((NAMED_INT8 / "decoder" / "manifest.json").read_text())   # fetches every decoder file, but on
    wgsl = {f"decoder/{k['file']}" for k in dm["kernels"].values()}           # WebAssembly not the kernels' WGSL
    for runtime, js in json.loads(r.stdout).items():
        want = ["bundle/manifest.json"] + [f"bundle/{f}" for f in sorted(js + [f for f in decoder
                                                                            if runtime == "webgpu" or f not in wgsl])]
        assert bundle_files(out, runtime) == want, runtime


def test_page_loads_its_module_graph_as_one_file(site):
    """index.html runs app.bundle.js (webserve/pagebundle.py: app.js and every module it imports, the WebGPU bundle's
    modules too, in one file: one request instead of ~16) and asks for no module of the graph itself, in the written
    site (under its <base href>) too; a first visit fetches that one file for the page on both paths."""
    from webserve.site import page_entry
    for root in (WEB_DIR, site):
        html = (root / "index.html").read_text()
        assert re.findall(r'<script type="module" src="([^"]+)">', html) == ["app.bundle.js"], html
        assert "modulepreload" not in html
        assert page_entry(root) == "app.bundle.js" and (root / "app.bundle.js").is_file()
    visit = first_visit(site)
    for path in ("webgpu", "wasm"):
        assert "app.bundle.js" in visit[path] and not {"app.js", "ditweb.js", "webgpu-bundle.js"} & set(visit[path])


def test_committed_page_bundle_is_a_fresh_build():
    """web/app.bundle.js is what esbuild (pinned) builds from the modules as they are, byte for byte: it never goes
    stale (edit a module, then run `python -m webserve.pagebundle` and commit both)."""
    from webserve.pagebundle import BUNDLE as NAME, ESBUILD, build, stale
    if not ESBUILD.exists():
        pytest.fail(f"{ESBUILD} is missing: run scripts/setup.sh")
    assert build() == (WEB_DIR / NAME).read_bytes(), \
        "web/app.bundle.js is stale: run `python -m webserve.pagebundle` and commit it"
    assert stale() is None


def test_a_stale_page_bundle_is_named(tmp_path, capsys):
    """Without esbuild: a module edited after the bundle was built, or no bundle, is found from the bundle's first
    line (the sha256 of the modules it was built from); `ditweb site` warns about it on stderr."""
    from webserve.cli import warn_stale_page
    from webserve.pagebundle import sources, stale
    web = tmp_path / "web"
    shutil.copytree(WEB_DIR, web, ignore=shutil.ignore_patterns("*.wasm"))
    assert stale(web) is None and "labels.js" in sources(web)
    (web / "labels.js").write_text((web / "labels.js").read_text() + "\n")
    assert "is stale" in stale(web)
    (web / "app.bundle.js").unlink()
    assert "is missing" in stale(web)
    warn_stale_page()
    assert capsys.readouterr().err == ""              # the checkout's own bundle is current


def test_site_draws_the_favicon_under_strict_csp_and_a_sub_path(site, tmp_path):
    """Served under /icons/ with the CSP header (and COOP + COEP: the WebAssembly thread pool's workers and shared
    memory run under it too): the favicon is drawn on WebAssembly at /icons/ and on WebGPU at /icons/app/ (a URL the
    host rewrites to index.html: only the <base href> makes its relative URLs work); no CSP violation; the files
    fetched are the ones the first-visit report lists; the footer holds the card's attribution."""
    rewrite = tmp_path / "rewrite"
    rewrite.mkdir()
    shutil.copy2(site / "index.html", rewrite / "index.html")
    requested: list[str] = []
    console: list[str] = []
    with local_server({"/icons/": site, "/icons/app/": rewrite}, requested=requested, headers=ISOLATED) as url, \
            chromium() as ctx:
        with urllib.request.urlopen(url + "icons/") as r:
            assert r.headers["Content-Security-Policy"] == CSP
        for path, runtime in (("icons/", "wasm"), ("icons/app/", "webgpu")):
            page = watched_page(ctx, console)
            page.goto(f"{url}{path}?runtime={runtime}&steps=2&autorun=1")
            state = wait_state(page, ("done", "error", "bundle-error", "unsupported", "no-webgpu", "no-adapter"), 120)
            assert state == "done", (runtime, state, page.text_content("#message"))
            assert page.get_attribute('link[rel~="icon"]', "href").startswith("data:image/png;base64,")
            assert page.evaluate("window.ditwebLast.runtime") == runtime
            page.evaluate("window.ditwebAttribution")
            items = page.eval_on_selector_all("#attribution li", "els => els.map((e) => e.textContent)")
            assert items == card_attribution(BUNDLE) and any("Twemoji" in i for i in items), items
            assert page.evaluate("window.cspViolations") == [], page.evaluate("window.cspViolations")
            if runtime == "wasm":
                # the page's breakdown of its first favicon: phases that sum to the total, shown in #first
                first = page.evaluate("window.ditwebFirstFavicon")
                assert abs(sum(ms for _, ms in first["phases"]) - first["totalMs"]) < 1e-6 * first["totalMs"] + 1e-3
                assert page.text_content("#first").startswith(f"{first['totalMs'] / 1000:.2f} s after navigation: HTML ")
                threads = page.evaluate("window.ditwebLast.threads ?? 1")
                fetched = {p[len("/icons/"):] for p in requested}
                relaxed = page.evaluate("window.ditwebBundle.simd") == "relaxed"
                listed = set(first_visit(site, relaxed)["wasm-threads" if threads > 1 else "wasm"])
                assert listed - fetched <= {"favicon.svg", "index.html"}, listed - fetched
                assert fetched - listed <= {""}, fetched - listed       # "" is /icons/ itself: index.html
            page.close()
    assert not console, console


def test_static_favicon_stays_and_attribution_shows_without_any_runtime(site, no_gpu_browser):
    """A browser with neither WebGPU nor WebAssembly SIMD, under the CSP at the sub-path: the static favicon stays
    (served from the sub-path) and the footer still shows the attribution."""
    console: list[str] = []
    with local_server({"/icons/": site}, headers=HEADERS) as url:
        page = watched_page(no_gpu_browser, console)
        page.add_init_script("WebAssembly.validate = () => false;")
        page.goto(url + "icons/")
        assert wait_state(page, ("unsupported", "ready", "error", "bundle-error"), 30) == "unsupported"
        assert page.get_attribute('link[rel~="icon"]', "href") == "favicon.svg"
        with urllib.request.urlopen(page.evaluate("new URL('favicon.svg', document.baseURI).href")) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/svg+xml"
        page.evaluate("window.ditwebAttribution")
        assert page.eval_on_selector_all("#attribution li", "els => els.length") == len(card_attribution(BUNDLE))
        assert page.evaluate("window.cspViolations") == []
        page.close()
    assert not console, console


@pytest.mark.skipif(not (NAMED / "README.md").is_file(), reason="no named bundle shipped")
def test_a_named_model_shows_every_source(no_gpu_browser):
    """The named model trains on Twemoji, Noto and Fluent: the footer names all three (and its metadata sources)."""
    expected = card_attribution(NAMED)
    assert len(expected) >= 3
    with local_server({"/": WEB_DIR, "/bundle/": NAMED}, headers=HEADERS) as url:
        page = no_gpu_browser.new_page()
        page.add_init_script("WebAssembly.validate = () => false;")
        page.goto(url)
        wait_state(page, ("unsupported",), 30)
        page.evaluate("window.ditwebAttribution")
        items = page.eval_on_selector_all("#attribution li", "els => els.map((e) => e.textContent)")
        links = page.eval_on_selector_all("#attribution li a", "els => els.map((e) => e.href)")
        page.close()
    assert items == expected
    for source in ("Twemoji", "Noto", "Fluent"):
        assert any(source in i for i in items), (source, items)
    assert "https://creativecommons.org/licenses/by/4.0/" in links


@pytest.mark.skipif(not (NAMED / "README.md").is_file(), reason="no named bundle shipped")
def test_site_writes_the_attribution_into_the_html(tmp_path):
    """`ditweb site` writes the footer into index.html too (seen without script, by crawlers, before the page runs):
    the same items, with the card's URLs as links, the text escaped."""
    import html
    write_site(NAMED, tmp_path / "s")
    page = (tmp_path / "s" / "index.html").read_text()
    footer = re.search(r'<footer id="attribution"[^>]*>(.*?)</footer>', page, re.S).group(1)
    items = [html.unescape(re.sub(r"<[^>]+>", "", li)) for li in re.findall(r"<li>(.*?)</li>", footer)]
    assert items == card_attribution(NAMED)
    assert '<a href="https://creativecommons.org/licenses/by/4.0/"' in footer


def test_early_script_probes_simd_with_the_same_module_as_the_library():
    """web/early.js is a classic script and cannot import web/ditweb.js, so it writes the WebAssembly SIMD probe out
    again: the two byte lists must stay the same (else the page could start a worker the library then refuses)."""
    probe = re.compile(r"const SIMD_PROBE = new Uint8Array\(\[([0-9, ]+)\]\);")
    early, library = (probe.findall((WEB_DIR / f).read_text("utf-8")) for f in ("early.js", "ditweb.js"))
    assert len(early) == 1 and len(library) == 1
    assert early == library


@pytest.mark.skipif(not (NAMED_INT8 / "vocabulary.json").is_file(), reason="no named int8 bundle shipped")
def test_the_default_prompt_is_resolved_when_the_site_is_built(tmp_path, no_gpu_browser):
    """`ditweb site` writes the default prompt's label into index.html (webserve/site.py page_label, resolved by
    ditformat/labels.py with the vocabulary's sha256), so the first favicon does not wait for vocabulary.json: the
    page draws it with those ids (labels "site"), the same image as the prompt resolved through the vocabulary, which
    is fetched and verified afterwards (the style picker and the suggestions then). A changed vocabulary.json is still
    a one-line verification error; a label resolved for another vocabulary is not used (the page resolves the prompt)."""
    import html
    import json
    from ditformat.labels import Vocabulary
    out = tmp_path / "s"
    write_site(NAMED_INT8, out)
    page_text = (out / "index.html").read_text()
    label = json.loads(html.unescape(re.search(r'<input id="prompt" data-label="([^"]*)"', page_text).group(1)))
    m = json.loads((NAMED_INT8 / "manifest.json").read_text())
    vocab = Vocabulary.loads((NAMED_INT8 / "vocabulary.json").read_text())
    assert label == {"vocabulary": m["files"]["vocabulary.json"]["sha256"], "prompt": "hippo", "style": "twemoji",
                     "ids": list(vocab.resolve("hippo", "twemoji").ids)}
    changed = tmp_path / "changed"                     # vocabulary.json edited after export, manifest.json kept
    shutil.copytree(out, changed)
    (changed / "bundle" / "vocabulary.json").write_text((out / "bundle" / "vocabulary.json").read_text() + " ")
    other = tmp_path / "other"                          # a label resolved with another vocabulary
    shutil.copytree(out, other)
    (other / "index.html").write_text(page_text.replace(label["vocabulary"], "0" * 64))
    query = "?runtime=wasm&steps=2&autorun=1"
    ctx = no_gpu_browser
    with local_server({"/": out, "/changed/": changed, "/other/": other}) as url:
        page = ctx.new_page()
        page.goto(url + query)
        assert wait_state(page, ("done", "error", "bundle-error"), 120) == "done", page.text_content("#message")
        assert page.evaluate("window.ditwebFirstFavicon.labels") == "site"
        same = page.evaluate("""async () => {
            const b = window.ditwebBundle, vocab = await b.loadVocabulary();
            const r = await b.sample({ prompt: "hippo", style: "twemoji", seed: 0, steps: 2, cfg: 4 });
            return { same: r.x.every((v, i) => Object.is(v, window.ditwebLast.x[i])), n: r.x.length, ids: vocab.resolve("hippo", "twemoji").ids };
        }""")
        assert same["same"] and same["n"] > 0 and same["ids"] == label["ids"], same
        page.wait_for_function("document.querySelector('#style').value === 'twemoji' && !document.querySelector('#style-label').hidden")
        page.close()
        page = ctx.new_page()
        page.goto(url + "changed/" + query)
        assert wait_state(page, ("bundle-error", "error"), 120) == "bundle-error"
        message = page.text_content("#message")
        assert "vocabulary.json" in message and "sha256" in message and "\n" not in message, message
        page.close()
        page = ctx.new_page()
        page.goto(url + "other/" + query)
        assert wait_state(page, ("done", "error", "bundle-error"), 120) == "done", page.text_content("#message")
        assert page.evaluate("window.ditwebFirstFavicon.labels") == "page"
        page.close()
