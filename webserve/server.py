"""A small static HTTP server on 127.0.0.1: URL prefixes mapped to folders (web/ at /, a bundle at /bundle/).

Used by `ditweb serve`, by the browser tests and by the browser benchmark. Only GET/HEAD, only
files under the mapped folders (no directory listings, no `..`), explicit MIME types because
ES modules must be served as JavaScript and .wasm as application/wasm.
"""
from __future__ import annotations

import http.server
import threading
import urllib.parse
from pathlib import Path

from ditformat.errors import UsageError

MIME = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
        ".json": "application/json", ".wgsl": "text/plain; charset=utf-8", ".wasm": "application/wasm",
        ".safetensors": "application/octet-stream", ".onnx": "application/octet-stream",
        ".png": "image/png", ".ico": "image/x-icon", ".svg": "image/svg+xml", ".md": "text/plain; charset=utf-8"}


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: list[tuple[str, Path]] = []        # (url prefix ending in '/', folder), longest prefix first
    log_requests = False
    requested: list[str] | None = None         # when a list, every path served is appended (tests count downloads)

    def _resolve(self) -> Path | None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        for prefix, root in self.routes:
            if path.startswith(prefix):
                rel = path[len(prefix):] or "index.html"
                target = (root / rel).resolve()
                if target != root and root not in target.parents:
                    return None                # '..' escaped the folder
                return target if target.is_file() else None
        return None

    def _send(self, head_only: bool):
        target = self._resolve()
        if target is None:
            self.send_error(404, "not found")
            return
        data = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", MIME.get(target.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")   # a re-export must be seen at once; weights are cached by the page
        self.end_headers()
        if self.requested is not None:
            self.requested.append(urllib.parse.urlsplit(self.path).path)
        if not head_only:
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass                           # the page cancelled the download (e.g. another file failed)

    def do_GET(self):
        self._send(False)

    def do_HEAD(self):
        self._send(True)

    def log_message(self, fmt, *args):
        if self.log_requests:
            super().log_message(fmt, *args)


def make_server(routes: dict[str, Path], port: int = 0, log: bool = False,
                requested: list[str] | None = None) -> http.server.ThreadingHTTPServer:
    """routes: {'/': web_dir, '/bundle/': bundle_dir, ...}. port 0 = any free port (server.server_port)."""
    ordered = sorted(((p if p.endswith("/") else p + "/", Path(d).resolve()) for p, d in routes.items()),
                     key=lambda r: -len(r[0]))
    handler = type("Handler", (_Handler,), {"routes": ordered, "log_requests": log, "requested": requested})
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None
    server.daemon_threads = True
    return server


def serve_in_thread(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="ditweb-http", daemon=True)
    thread.start()
    return thread
