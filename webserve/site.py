"""`ditweb site BUNDLE OUT_DIR`: the page and a bundle as a static folder, written atomically.

Layout (what `ditweb serve` serves too):  OUT_DIR/index.html, OUT_DIR/*.js|css,
OUT_DIR/bundle/manifest.json, OUT_DIR/bundle/<every file the manifest lists>.
All URLs in the page are relative, so the folder works under any path of any static host; `base_path`
(`--base-path /icons/`) adds a <base href> so that it also works at any URL the host maps to index.html
(`/icons`, a rewrite). The page has no inline script and no eval: it runs under the strict
Content-Security-Policy CSP below (docs/hosting.md). `first_visit` says what a first visit downloads.
"""
from __future__ import annotations

import gzip
import html
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ditformat.shards import buffer_file
from runtime_py.verify import VOCABULARY_FILE

from .files import MANIFEST, WEB_DIR, SiteError, check_bundle, web_files

CARD = "README.md"          # the bundle's model card (export/card.py CARD_FILE)
MARKER = ".ditweb-site"     # lets a re-run replace a folder this verb wrote, and only such a folder
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
       "img-src 'self' data: blob:")
BASE_PATH = re.compile(r"^/(?:[A-Za-z0-9._~!$&'()*+,;=:@%-]+/)*$")   # '/', '/icons/', '/a/b/': URL path characters


def check_base_path(base_path: str | None) -> str | None:
    if base_path is None:
        return None
    if not BASE_PATH.match(base_path) or "/../" in base_path or "/./" in base_path or "'" in base_path:
        raise SiteError(f"--base-path {base_path!r}: give the URL path the site is served under, starting and "
                        "ending with '/', e.g. /icons/")
    return base_path


def attribution_lines(card: str) -> list[str]:
    """The bullets of the card's "**Attribution**" list (export/card.py; web/app.js attributionLines is the twin)."""
    lines = card.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("**Attribution**")), None)
    out: list[str] = []
    for line in lines[start + 1:] if start is not None else []:
        if line.startswith("- "):
            out.append(line[2:].strip())
        elif line.strip() or out:
            break
    return out


def attribution_html(lines: list[str]) -> str:
    """The footer the page's script writes (web/app.js showAttribution), as static HTML: shown without script too."""
    def item(text: str) -> str:
        parts, last = [], 0
        for m in re.finditer(r"https?://[^\s)]+", text):
            url = html.escape(m.group(0))
            parts += [html.escape(text[last:m.start()]), f'<a href="{url}" rel="license noopener">{url}</a>']
            last = m.end()
        return "<li>" + "".join(parts) + html.escape(text[last:]) + "</li>"
    return ('<footer id="attribution" data-attribution="%d"><p>Training data of this model (<a href="bundle/README.md">'
            'model card</a>):</p><ul>%s</ul></footer>' % (len(lines), "".join(item(t) for t in lines)))


PROMPT_INPUT = re.compile(r'<input id="prompt" [^>]*?value="([^"]*)"')
STYLE_DEFAULT = re.compile(r'<select id="style" data-default="([^"]*)"')


def page_label(bundle: Path, web_dir: Path = WEB_DIR) -> dict | None:
    """A named bundle's label for the page's default prompt and style (index.html: #prompt's value, #style's
    data-default where the vocabulary has that style, as web/app.js setUpPrompt picks it), resolved by
    ditformat/labels.py (web/labels.js is its twin): {vocabulary: the sha256 of the vocabulary.json it was resolved
    with, prompt, style, ids}. The page takes it for its first favicon in place of downloading, parsing and indexing
    the vocabulary first, where its verified manifest lists that sha256 (web/app.js presetFits). None for a one-level
    bundle, a page without those fields, or a prompt the vocabulary does not resolve."""
    from ditformat.labels import Vocabulary, VocabularyError
    m = json.loads((bundle / MANIFEST).read_text("utf-8"))
    entry = m.get("files", {}).get(VOCABULARY_FILE)
    page = (web_dir / "index.html").read_text("utf-8")
    prompt, style = PROMPT_INPUT.search(page), STYLE_DEFAULT.search(page)
    if "label_levels" not in m.get("model", {}) or not entry or not prompt:
        return None
    try:
        vocab = Vocabulary.loads((bundle / VOCABULARY_FILE).read_text("utf-8"), VOCABULARY_FILE)
        default = html.unescape(style.group(1)) if style else ""
        chosen = default if len(vocab.levels) > vocab.nested and default in vocab.names[-1] else None
        text = html.unescape(prompt.group(1))
        label = vocab.resolve(text, chosen)
    except (VocabularyError, ValueError):
        return None
    return {"vocabulary": entry["sha256"], "prompt": text, "style": chosen, "ids": list(label.ids)}


def page_html(base_path: str | None, card: str | None = None, web_dir: Path = WEB_DIR,
              label: dict | None = None) -> bytes:
    """web_dir's index.html with the <base href> (base_path), the attribution footer from the bundle's card and the
    default prompt's label (page_label) written in."""
    index = web_dir / "index.html"
    page = index.read_text("utf-8")
    if label is not None:
        attr = html.escape(json.dumps(label, separators=(",", ":")), quote=True)
        page, n = re.subn(r'<input id="prompt" ', lambda _: f'<input id="prompt" data-label="{attr}" ', page, count=1)
        if n != 1:
            raise SiteError(f"{index}: no <input id=\"prompt\"> to write the default prompt's label into")
    if base_path:
        page = page.replace('<meta charset="utf-8">\n', f'<meta charset="utf-8">\n<base href="{base_path}">\n', 1)
        if f'<base href="{base_path}">' not in page:
            raise SiteError(f"{index}: no <meta charset=\"utf-8\"> line to put the <base href> after")
    lines = attribution_lines(card) if card else []
    if lines:
        page, n = re.subn(r'<footer id="attribution">.*?</footer>', lambda _: attribution_html(lines), page,
                          count=1, flags=re.S)
        if n != 1:
            raise SiteError(f"{index}: no <footer id=\"attribution\"> to write the attribution into")
    return page.encode("utf-8")


def write_site(bundle: Path, out_dir: Path, base_path: str | None = None) -> list[Path]:
    """Returns the files written (relative to out_dir)."""
    bundle, out_dir = Path(bundle), Path(out_dir)
    base_path = check_base_path(base_path)
    bundle_files = check_bundle(bundle)
    page_files = web_files()
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MARKER).exists())):
        raise SiteError(f"{out_dir} exists and is not a folder written by `ditweb site`; choose a new or empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target, then swap: a failed or interrupted run never leaves a half-written site
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        written = []
        for rel in page_files:
            if rel == Path("index.html"):
                card = (bundle / CARD).read_text("utf-8") if CARD in bundle_files else None
                (tmp / rel).write_bytes(page_html(base_path, card, label=page_label(bundle)))
            else:
                shutil.copyfile(WEB_DIR / rel, tmp / rel)
            written.append(rel)
        for rel in bundle_files:
            dst = tmp / "bundle" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / rel, dst)
            written.append(Path("bundle") / rel)
        (tmp / MARKER).write_text("written by `ditweb site`; safe to replace with a new run\n")
        os.chmod(tmp, 0o755)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return written
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------ what a first visit downloads

STATIC_IMPORT = re.compile(r"""(?:\bfrom|^import)\s*["']\./([^"']+)["']""", re.M)     # import / export ... from "./x.js"
ON_DEMAND_IMPORT = re.compile(r"""\bawait\s+import\(\s*["']\./([^"']+)["']\s*\)""")  # await import("./x.js")
# modules a page imports on demand, and the one runtime that loads each (web/ditweb.js loadBundle: the WebGPU bundle
# on the WebGPU path only); a module imported on demand that is not named here counts on every path
RUNTIME_MODULES = {"webgpu-bundle.js": "webgpu"}


def module_graph(root: Path, entry: str, runtime: str | None = None) -> list[str]:
    """entry and every module it imports from the folder root (`./x.js`): static imports, and the modules imported on
    demand (`await import(...)`) that `runtime` loads (RUNTIME_MODULES; runtime None: none of those)."""
    seen, todo = [], [entry]
    while todo:
        name = todo.pop()
        if name in seen or not (root / name).is_file():
            continue
        seen.append(name)
        text = (root / name).read_text("utf-8")
        todo += STATIC_IMPORT.findall(text)
        todo += [m for m in ON_DEMAND_IMPORT.findall(text) if RUNTIME_MODULES.get(m, runtime) == runtime]
    return seen


PAGE_SCRIPT = re.compile(r'<script type="module" src="([^"]+)"></script>')


def page_entry(out_dir: Path) -> str:
    """The module index.html runs: app.bundle.js, the page's module graph in one file (webserve/pagebundle.py), or
    app.js in a page that loads the graph itself."""
    m = PAGE_SCRIPT.search((Path(out_dir) / "index.html").read_text("utf-8"))
    return m.group(1) if m else "app.js"


def kernels_file(threads: bool, relaxed: bool) -> str:
    """The WebAssembly kernels a visitor fetches (web/wasm-bundle.js, kernelsUrl)."""
    return f"ditweb-kernels{'-mt' if threads else ''}{'-relaxed' if relaxed else ''}.wasm"


# the decoder ops the WebAssembly kernels run, with their variants (web/wasm-decode.js OPS, wasmDecoderProblem: the twin)
WASM_DECODER_OPS = {"conv2d": lambda v: v.get("k") in (1, 3), "conv2d_q8": lambda v: v.get("k") in (1, 3),
                    "groupnorm": lambda v: v.get("act", "none") in ("none", "silu"), "upsample_nearest": lambda v: True}


def wasm_runs_decoder(dm: dict) -> bool:
    """Whether the WebAssembly kernels run every kernel of decoder manifest dm (then the page fetches no WGSL of it)."""
    return all(k.get("op") in WASM_DECODER_OPS and WASM_DECODER_OPS[k["op"]](k.get("variant") or {})
               for k in dm["kernels"].values())


def bundle_files(out_dir: Path, runtime: str) -> list[str]:
    """The bundle's files a first visit on `runtime` fetches (relative to out_dir): manifest.json, then what the page's
    loadBundle verifies for that runtime (web/bundle.js bundleFiles is the twin): WebGPU every listed file, WebAssembly
    the weight shards and a named model's vocabulary.json only; a latent bundle's decoder/ on both (web/decode.js
    fetchDecoder), on WebAssembly without its kernels' WGSL where the WebAssembly kernels run them all. The model card README.md too where the page reads it for its footer: an index.html without the
    attribution written in (page_html: a card without an attribution list)."""
    out_dir = Path(out_dir)
    m = json.loads((out_dir / "bundle" / MANIFEST).read_text("utf-8"))
    listed = set(m["files"])
    if runtime == "webgpu":
        names = listed
    else:
        names = {buffer_file(b) for b in m["buffers"].values() if b["kind"] == "weight"}
        names |= {VOCABULARY_FILE} & listed if "label_levels" in m["model"] else set()
        names |= {f for f in listed if f.startswith("decoder/")}
        if "decoder/manifest.json" in listed:               # its WGSL: not where the WebAssembly kernels run it all
            dm = json.loads((out_dir / "bundle" / "decoder" / MANIFEST).read_text("utf-8"))
            if wasm_runs_decoder(dm):
                names -= {f"decoder/{k['file']}" for k in dm["kernels"].values()}
        if CARD in listed and "data-attribution=" not in (out_dir / "index.html").read_text("utf-8"):
            names.add(CARD)
    return [f"bundle/{MANIFEST}"] + [f"bundle/{f}" for f in sorted(names)]


def first_visit(out_dir: Path, relaxed: bool = True) -> dict[str, list[str]]:
    """The files (relative to out_dir) a first visit downloads, per runtime: the HTML, CSS, static favicon, the
    page's first script (early.js: it asks for the manifest before the modules have loaded), the page's module graph
    (app.bundle.js: all of it in one file, the WebGPU bundle's modules too; a page that loads app.js, its modules,
    the WebGPU bundle's on the WebGPU path only: web/ditweb.js imports them on demand),
    the bundle's files that runtime reads (bundle_files); WebAssembly adds the kernels and the worker's module graph;
    on a cross-origin isolated page (COOP + COEP headers) the threaded kernels and the thread workers' modules instead
    of the one-thread kernels. `relaxed`: a browser with relaxed WebAssembly SIMD fetches the kernels built for it
    (web/wasm-bundle.js, chooseSimd), another the plain ones. Each file once (a later request is answered by the HTTP
    cache or revalidated)."""
    out_dir = Path(out_dir)
    html = ["index.html", "style.css", "favicon.svg"] + (["early.js"] if (out_dir / "early.js").is_file() else [])
    page = {rt: html + module_graph(out_dir, page_entry(out_dir), rt) for rt in ("webgpu", "wasm")}
    worker = [m for m in module_graph(out_dir, "ditweb-worker.js", "wasm") if m not in page["wasm"]]
    thread = [m for m in module_graph(out_dir, "ditweb-thread.js", "wasm") if m not in page["wasm"] + worker]
    wasm = page["wasm"] + bundle_files(out_dir, "wasm")
    return {"webgpu": page["webgpu"] + bundle_files(out_dir, "webgpu"),
            "wasm": wasm + [kernels_file(False, relaxed)] + worker,
            "wasm-threads": wasm + [kernels_file(True, relaxed)] + worker + thread}


def sizes(out_dir: Path, files: list[str]) -> tuple[int, int]:
    """(bytes, gzip bytes at level 9: what a host that compresses sends) of files."""
    raw = gz = 0
    for rel in files:
        data = (Path(out_dir) / rel).read_bytes()
        raw += len(data)
        gz += len(gzip.compress(data, 9, mtime=0))
    return raw, gz


def first_visit_report(out_dir: Path) -> str:
    visit = first_visit(out_dir)
    lines = ["a first visit downloads:"]
    for runtime, label in (("webgpu", "WebGPU"), ("wasm", "WebAssembly"), ("wasm-threads", "WebAssembly, threads")):
        files = visit[runtime]
        raw, gz = sizes(out_dir, files)
        in_bundle = [f for f in files if f.startswith("bundle/")]
        b_raw, b_gz = sizes(out_dir, in_bundle)
        lines.append(f"  {label:<20} {len(files):3d} files, {raw / 1e6:6.2f} MB, gzip {gz / 1e6:6.2f} MB "
                     f"(page {len(files) - len(in_bundle)} files {(raw - b_raw) / 1e3:.0f} kB, gzip "
                     f"{(gz - b_gz) / 1e3:.0f} kB; bundle {len(in_bundle)} files {b_raw / 1e6:.2f} MB, gzip "
                     f"{b_gz / 1e6:.2f} MB)")
    plain = (Path(out_dir) / kernels_file(False, relaxed=False)).stat().st_size
    lines.append(f"  (WebAssembly: the kernels for relaxed SIMD, what current Chromium fetches; a browser without it "
                 f"fetches the plain ones, {plain / 1e3:.1f} kB)")
    lines.append("  (threads: only where the host sends Cross-Origin-Opener-Policy: same-origin and "
                 "Cross-Origin-Embedder-Policy: require-corp)")
    vocab = f"bundle/{VOCABULARY_FILE}"
    if vocab in visit["wasm"] and 'data-label="' in (Path(out_dir) / "index.html").read_text("utf-8"):
        v_raw, v_gz = sizes(out_dir, [vocab])
        lines.append(f"  ({VOCABULARY_FILE}, {v_raw / 1e3:.0f} kB, gzip {v_gz / 1e3:.0f} kB: after the first favicon, "
                     "whose label index.html holds (page_label))")
    lines.append("  later visits: the bundle's files come from the browser's Cache API (checked by sha256)")
    return "\n".join(lines)
