"""The `serve` and `site` verbs (registered in ditweb/cli.py VERBS)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .files import WEB_DIR, SiteError, check_bundle

REPO = WEB_DIR.parent
# `ditweb serve` without BUNDLE: $DITWEB_BUNDLE, else the first of these that exists
DEFAULT_BUNDLES = [REPO / "bundles" / "named-int4", REPO / "bundles" / "named-int8", REPO / "bundles" / "named", REPO / "bundles" / "default", REPO / "bundle"]


def default_bundle() -> Path:
    if os.environ.get("DITWEB_BUNDLE"):
        return Path(os.environ["DITWEB_BUNDLE"])
    for p in DEFAULT_BUNDLES:
        if (p / "manifest.json").is_file():
            return p
    raise SiteError("no default bundle: pass BUNDLE, set DITWEB_BUNDLE, or export one to "
                    f"{DEFAULT_BUNDLES[0]} with `ditweb export CKPT {DEFAULT_BUNDLES[0]}`")


def register_serve(sub):
    p = sub.add_parser("serve", help="serve the favicon demo page with a bundle on 127.0.0.1")
    p.add_argument("bundle", nargs="?", help="bundle folder (default: $DITWEB_BUNDLE or bundles/named-int4, the named model with its block weights stored in 4 bits)")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0 = any free port)")
    p.add_argument("--log", action="store_true", help="print every request")
    p.add_argument("--csp", action="store_true", help="send the strict Content-Security-Policy a `ditweb site` folder "
                   "runs under (docs/hosting.md): try the page as a strict host serves it")
    p.set_defaults(func=cmd_serve)


def warn_stale_page() -> None:
    """A warning on stderr where web/app.bundle.js (what index.html runs) does not hold the page's modules as they
    are: a module edited and the bundle not rebuilt (`python -m webserve.pagebundle`)."""
    from .pagebundle import stale
    problem = stale()
    if problem:
        print(f"warning: {problem}; the page runs the modules as they were", file=sys.stderr, flush=True)


def cmd_serve(args):
    from .server import make_server
    if not 0 <= args.port <= 65535:
        raise SiteError(f"--port {args.port} is not a TCP port (0..65535)")
    bundle = Path(args.bundle) if args.bundle else default_bundle()
    files = check_bundle(bundle)
    routes = {"/": WEB_DIR, "/bundle/": bundle}
    if (REPO / "bundles").is_dir():
        routes["/bundles/"] = REPO / "bundles"        # the page's model picker (web/bundles.json) offers these too
    # cross-origin isolated (COOP + COEP): SharedArrayBuffer, so the WebAssembly path runs a pool of threads
    isolated = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
    if args.csp:
        from .site import CSP
        isolated["Content-Security-Policy"] = CSP
    server = make_server(routes, args.port, log=args.log, headers=isolated)
    warn_stale_page()
    print(f"serving {WEB_DIR} with bundle {bundle} ({len(files)} files) at http://127.0.0.1:{server.server_port}/ "
          "(Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def register_site(sub):
    p = sub.add_parser("site", help="write the demo page and a bundle as a static folder for any web host")
    p.add_argument("bundle", help="bundle folder (from `ditweb export`)")
    p.add_argument("out_dir", help="output folder (created; a folder from an earlier `ditweb site` is replaced)")
    p.add_argument("--base-path", metavar="PATH", help="the URL path the site is served under, e.g. /icons/: the "
                   "page gets a <base href> and works at any URL the host maps to it (default: relative URLs only)")
    p.set_defaults(func=cmd_site)


def cmd_site(args):
    from .site import CSP, first_visit_report, write_site
    written = write_site(Path(args.bundle), Path(args.out_dir), base_path=args.base_path)
    warn_stale_page()
    size = sum((Path(args.out_dir) / p).stat().st_size for p in written)
    where = f"under {args.base_path} of your host" if args.base_path else "anywhere on your host"
    print(f"wrote {len(written)} files ({size / 1e6:.2f} MB) to {args.out_dir}; upload it {where} as static files "
          f"(try it: `python -m http.server -d {args.out_dir}`)")
    print(first_visit_report(Path(args.out_dir)))
    print(f"it runs under this Content-Security-Policy (docs/hosting.md): {CSP}")
