"""Time to the first favicon as a visitor meets it: the page `ditweb site` writes, served from a local server, opened
in headless Chromium with `?runtime=wasm&autorun&steps=25`, from navigation to the last step's favicon, as the page's
own line says (`window.ditwebFirstFavicon`: page, bundle = fetch + sha256 + set-up, steps, and the fine breakdown:
consecutive phases that sum to the total, and what ran alongside them). Cold: a fresh browser profile; warm: a second
page of the same profile (the Cache API holds the verified files). Served plain (one thread) and cross-origin isolated
(COOP + COEP, as `ditweb serve`: the thread pool). Not a test: the machine is shared, so the table carries the load
average; time it with nothing else running.

The server runs in a process of its own (webserve/server.py, as `ditweb serve` runs it): in the process that drives
the browser it shares one interpreter lock with the browser's driver, and its answers waited on that, which no static
host does.

    .venv/bin/python bench/web/first_favicon.py [--bundle bundles/named-int8] [--reps 3] [--steps 25]
        [--plain-only] [--before DIR]

--before DIR: the page of another checkout (DIR/web, e.g. a `git worktree` of an older commit) timed alongside, its
visits alternating with this page's so that the machine's load falls on both alike; the same bundle, and the
WebAssembly kernels and their worker modules taken from this checkout (`KERNEL_FILES`), so the difference is the
page's own and its server's: each page is served by its own checkout's webserve/server.py.

Writes bench/results/first-favicon.md.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dit_model.bench import RESULTS, format_table, publish, shown_path  # noqa: E402
from webserve.browser import chromium, wait_state  # noqa: E402
from webserve.files import PAGE_SUFFIXES, WEB_DIR  # noqa: E402
from webserve.site import CARD, first_visit, page_html, page_label, sizes, write_site  # noqa: E402

ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
PARTS = ("totalMs", "pageMs", "bundleMs", "waitMs", "stepsMs")
KEY_COLUMNS = ["serving", "cache", "page"]
# what ran alongside the phases (window.ditwebFirstFavicon.detail), each a span [start, end] in ms since navigation
SPANS = (("kernels", "kernels fetch + compile"), ("worker", "worker up"), ("manifest", "manifest fetch"),
         ("verifyManifest", "manifest checks"), ("verifyFiles", "files checked"), ("init", "worker init"),
         ("unpack", "weights unpacked"))


# the kernels and the modules that run them: this checkout's in both pages of a --before comparison
KERNEL_FILES = ("ditweb-kernels.wasm", "ditweb-kernels-relaxed.wasm", "ditweb-kernels-mt.wasm",
                "ditweb-kernels-mt-relaxed.wasm", "wasm-runtime.js", "wasm-threads.js", "ditweb-thread.js")


def write_before(site: Path, before_web: Path, out: Path) -> None:
    """A copy of the site with the page files of before_web (its index.html written as `ditweb site` writes it, the
    attribution footer and the default prompt's label in), this checkout's KERNEL_FILES."""
    shutil.copytree(site, out)
    for f in out.iterdir():
        if f.is_file() and f.suffix in PAGE_SUFFIXES:
            f.unlink()
    for f in before_web.iterdir():
        if f.is_file() and f.suffix in PAGE_SUFFIXES and f.name != "index.html":
            shutil.copyfile(f, out / f.name)
    for name in KERNEL_FILES:
        shutil.copyfile(WEB_DIR / name, out / name)
    card = (site / "bundle" / CARD).read_text("utf-8") if (site / "bundle" / CARD).is_file() else None
    # the default prompt's label written in as in this checkout's page, where that page reads it (app.js presetLabel)
    reads = "dataset.label" in (before_web / "app.js").read_text("utf-8")
    label = page_label(site / "bundle", web_dir=before_web) if reads else None
    (out / "index.html").write_bytes(page_html(None, card, web_dir=before_web, label=label))


def commit_of(checkout: Path) -> str:
    """The short commit a checkout is at ('unknown' outside git)."""
    import subprocess
    r = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"


def _serve(site: str, headers: dict | None, port, server_py: str | None = None) -> None:
    if server_py is None:
        from webserve.server import make_server
    else:                                                # another checkout's server module
        import importlib.util
        spec = importlib.util.spec_from_file_location("ditweb_other_server", server_py)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        make_server = module.make_server
    server = make_server({"/": Path(site)}, 0, headers=headers)
    port.put(server.server_port)
    server.serve_forever()


@contextlib.contextmanager
def server_process(site: Path, headers: dict | None, server_py: Path | None = None):
    """The site served by webserve/server.py (or server_py, another checkout's) in a process of its own; yields its
    base URL."""
    ctx = multiprocessing.get_context("spawn")
    port = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(str(site), headers, port, server_py and str(server_py)), daemon=True)
    proc.start()
    try:
        yield f"http://127.0.0.1:{port.get(timeout=60)}/"
    finally:
        proc.terminate()
        proc.join(10)


def visit(url: str, query: str) -> list[dict]:
    """One fresh profile: the cold visit, then the warm one."""
    out = []
    with chromium() as ctx:
        for cache in ("cold", "warm"):
            page = ctx.new_page()
            page.goto(url + "?" + query)
            state = wait_state(page, ("done", "error", "bundle-error", "unsupported"), 300)
            if state != "done":
                raise SystemExit(f"the page ended in state {state!r}: {page.text_content('#message')}")
            out.append({"cache": cache, **page.evaluate("window.ditwebFirstFavicon")})
            page.close()
    return out


def med(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def phase_table(runs: dict) -> str:
    """Medians of the consecutive phases (each run's phases sum to its total; the medians need not)."""
    names: list[str] = []
    for rs in runs.values():
        for r in rs:
            for name, _ in r.get("phases", []):
                if name not in names:
                    names.append(name)
    if not names:
        return "(this page reports no phases)"
    rows = []
    for key, rs in runs.items():
        by = [dict(r.get("phases", [])) for r in rs]
        if any(by):
            rows.append(list(key) + [round(med(b.get(n) for b in by)) for n in names])
    return format_table(KEY_COLUMNS[:len(next(iter(runs)))] + [f"{n} ms" for n in names], rows)


def detail_table(runs: dict) -> str:
    """Medians of what ran alongside: spans (start-end, ms since navigation) and per-step costs."""
    rows = []
    for key, rs in runs.items():
        ds = [r.get("detail") for r in rs if r.get("detail")]
        if not ds:
            continue
        row = list(key) + [f"{med(d['htmlMs'] for d in ds):.0f}",
               f"{med(d['modulesStartMs'] for d in ds):.0f}-{med(d['modulesEndMs'] for d in ds):.0f} "
               f"({ds[0]['modules']})", f"{med(d['appStartMs'] for d in ds):.0f}"]
        for key, _ in SPANS:
            spans = [d[key] for d in ds if d.get(key)]
            row.append(f"{med(s['start'] for s in spans):.0f}-{med(s['end'] for s in spans):.0f}" if spans else "-")
        row += [f"{med(d['sha256Ms'] for d in ds):.1f}", f"{med(d['batchMs'] for d in ds):.0f}",
                f"{med(d['kernelFirstMs'] for d in ds):.1f}", f"{med(d['stepMs'] for d in ds):.1f}",
                f"{med(d['kernelMs'] for d in ds):.1f}", f"{med(d['hostMs'] for d in ds):.1f}",
                f"{med(d['icons'] for d in ds):.0f} / {med(d['iconMs'] for d in ds):.0f}"]
        rows.append(row)
    if not rows:
        return "(this page reports no detail)"
    return format_table(KEY_COLUMNS[:len(next(iter(runs)))] + ["HTML in", "modules (files)", "app.js runs"]
                        + [s for _, s in SPANS] + ["sha256 ms", "batch ms", "1st step kernels ms", "ms a step",
                                                   "kernels ms a step", "page ms a step", "icons / ms"], rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(REPO / "bundles" / "named-int8"))
    ap.add_argument("--reps", type=int, default=3, help="fresh profiles per serving (each: a cold and a warm visit)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--plain-only", action="store_true", help="only the plain serving (one thread)")
    ap.add_argument("--before", metavar="DIR", help="another checkout whose page (DIR/web) is timed alongside")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{args.bundle}: not a bundle folder (no manifest.json)")
    if args.reps < 1 or args.steps < 1:
        raise SystemExit("need --reps >= 1 and --steps >= 1")
    servings = (("plain", None),) if args.plain_only else (("plain", None), ("isolated", ISOLATED))
    before = Path(args.before) / "web" if args.before else None
    if before is not None and not (before / "index.html").is_file():
        raise SystemExit(f"--before {args.before}: no web/index.html there")
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ditweb-first-") as tmp:
        site = Path(tmp) / "site"
        write_site(bundle, site)
        visit_files = first_visit(site)
        raw, gz = sizes(site, visit_files["wasm"])
        query = f"runtime=wasm&autorun&steps={args.steps}"
        pages = {"now": site}
        if before is not None:
            pages = {"before": Path(tmp) / "before", "now": site}
            write_before(site, before, pages["before"])
        runs: dict[tuple, list[dict]] = {}
        with contextlib.ExitStack() as stack:
            servers = {"before": before.parent / "webserve" / "server.py"} if before is not None else {}
            urls = {(name, page): stack.enter_context(server_process(root, headers, servers.get(page)))
                    for name, headers in servings for page, root in pages.items()}
            for _ in range(args.reps):                       # servings (and pages) in turns: load hits all alike
                for serving, _ in servings:
                    for page in pages:
                        for r in visit(urls[serving, page], query):
                            key = (serving, r["cache"], page) if before is not None else (serving, r["cache"])
                            runs.setdefault(key, []).append(r)
    load1 = os.getloadavg()[0]
    rows = []
    for key, rs in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2:] != ("before",))):
        m = {k: statistics.median(r[k] for r in rs) for k in PARTS}
        rows.append([key[0], rs[0]["threads"], key[1]] + list(key[2:]) + [
                     len(rs), round(m["totalMs"]), round(m["pageMs"]), round(m["bundleMs"]), round(m["waitMs"]),
                     round(m["stepsMs"]), round(m["stepsMs"] / args.steps, 1),
                     " ".join(str(round(r["totalMs"])) for r in rs)])
    runs = dict(sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2:] != ("before",))))
    flags = (" --plain-only" if args.plain_only else "") + (" --before DIR" if before is not None else "")
    compared = (f"\n\npage: before = the page at commit {commit_of(Path(args.before))} (`--before`, with the same "
                "kernels and bundle, served by its own webserve/server.py), now = this checkout's; their visits "
                "alternate." if before is not None else "")
    notes = (f"Bundle {shown_path(bundle)} through `ditweb site`; a first visit on the WebAssembly path downloads "
             f"{len(visit_files['wasm'])} files, {raw / 1e6:.2f} MB ({gz / 1e6:.2f} MB gzipped). Load average "
             f"{load0:.2f} at the start, {load1:.2f} at the end.\n"
             f"Command: `.venv/bin/python bench/web/first_favicon.py --bundle {shown_path(bundle)} --reps {args.reps} "
             f"--steps {args.steps}{flags}`\n\nMedians over the fresh profiles (ms): total = navigation to the last "
             "step's favicon; page = navigation until the page starts loading the bundle (HTML, CSS, the module graph); "
             "bundle = fetch, sha256 and set-up (worker, kernels, weights) until ready; wait = ready until the run "
             "starts (the page's own work); steps = the sampling run with its live previews. plain: no COOP/COEP, one "
             "thread; isolated: COOP + COEP (`ditweb serve`, hosts that send them): the thread pool, one thread per "
             f"core the browser reports. The local server (its own process) adds no network latency.{compared}\n\n"
             "## The phases\n\nThe page's breakdown line (`#first`, web/app.js firstFaviconPhases): consecutive "
             "phases, each ending at a moment of the load and lasting from the latest moment before it, so that a run's "
             "phases sum to its total (work that ran alongside an earlier phase adds nothing). Medians (ms):\n\n"
             f"{phase_table(runs)}\n\nHTML: the document's bytes in; modules: CSS and the module graph loaded and "
             "run; start: until the bundle is asked for; manifest: manifest.json fetched and its files asked for "
             "(the manifest is verified while they download); download: the last file's bytes in; verify: "
             "its sha256, every file's size and header; set-up: the kernels compiled, the worker's init (weights "
             "unpacked); wait: until the run starts; first step: the run's set-up (labels, batch, init program) and "
             "its first step; steps: the others with their live previews; finish: the final picture set as the "
             "favicon.\n\n## What ran alongside\n\nMedians; spans are start-end in ms since navigation:\n\n"
             f"{detail_table(runs)}\n\nmodules: the JavaScript files in the page's resource timeline before app.js runs "
             "(early.js, the module graph (app.bundle.js: in one file; before it, modulepreload) and, where the page "
             "starts the worker early, files of the worker's); "
             "worker up: from `new Worker` until its modules have loaded; batch: the run's batch buffers and "
             "its init program; 1st step kernels: the first step's kernel time in the worker (the later steps': "
             "kernels ms a step); page ms a step: the page's own work after each step (NaN check, preview, icon), "
             "which overlaps the next step; icons: the live tab icons drawn and their ms in all.")
    publish("first-favicon", f"Time to the first favicon ({args.steps} steps, WebAssembly path, the `ditweb site` page)",
            ["serving", "threads", "cache"] + (["page"] if before is not None else [])
            + ["runs", "total ms", "page ms", "bundle ms", "wait ms", "steps ms", "ms a step", "every total ms"],
            rows, notes, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
