"""A small static HTTP server on 127.0.0.1: URL prefixes mapped to folders (web/ at /, a bundle at /bundle/).

Used by `ditweb serve`, by the browser tests and by the browser benchmark. Only GET/HEAD, only
files under the mapped folders (no directory listings, no `..`), explicit MIME types because
ES modules must be served as JavaScript and .wasm as application/wasm. Hostile requests: a control
character or backslash in the path is 400, an over-long path 414, a silent connection is dropped after
READ_TIMEOUT_S, and one whose request line and headers have not all arrived after REQUEST_DEADLINE_S (a client that
sends a byte now and then) is closed; a bundle file that is a symlink is served exactly when its manifest lists it (as
`Bundle.load` reads it), and nothing else from outside the folders.

HTTP/1.1 with keep-alive: a browser sends a page's requests over a few connections it keeps open instead of opening a
new one for each file (every response carries its Content-Length; an error response closes its connection, as does
an HTTP/1.0 request without `Connection: keep-alive`). A kept connection is bound by the same limits request by
request: it is dropped once it stays silent for READ_TIMEOUT_S, and each request's line and headers must be in within
REQUEST_DEADLINE_S. Nagle's algorithm is off (the header and the body are separate writes: without it a kept
connection's small answer would wait for the client's delayed ACK), and closing the server does not wait for the
connections its browsers keep open.
"""
from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.parse
from pathlib import Path

from ditformat.errors import UsageError

MIME = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
        ".json": "application/json", ".wgsl": "text/plain; charset=utf-8", ".wasm": "application/wasm",
        ".safetensors": "application/octet-stream", ".onnx": "application/octet-stream",
        ".png": "image/png", ".ico": "image/x-icon", ".svg": "image/svg+xml", ".md": "text/plain; charset=utf-8"}


MAX_PATH_CHARS = 2048          # a longer URL path: 414 (no file of ours is named that long)
MAX_SEGMENTS = 64              # more '/'-separated parts: 414
READ_TIMEOUT_S = 10.0          # an idle or half-sent request is dropped after this long without a byte
REQUEST_DEADLINE_S = 30.0      # ... and after this long in all, however its bytes trickle in


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"              # keep-alive: the connection serves the client's next request too
    disable_nagle_algorithm = True             # TCP_NODELAY (socketserver.StreamRequestHandler)
    routes: list[tuple[str, Path]] = []        # (url prefix ending in '/', folder), longest prefix first
    log_requests = False
    requested: list[str] | None = None         # when a list, every path served is appended (tests count downloads)
    timeout = READ_TIMEOUT_S                   # socket read timeout (socketserver.StreamRequestHandler)
    listings: dict = {}                        # manifest path -> ((mtime_ns, size), names it lists)
    extra_headers: dict[str, str] = {}         # sent with every file (a Content-Security-Policy, for the tests)
    deadline = REQUEST_DEADLINE_S              # seconds for the request line and headers in all

    _timer: threading.Timer | None = None

    def _hang_up(self):
        """The request is not in after `deadline`: close the connection; the blocked read returns nothing."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def handle_one_request(self):
        """One request of the connection (a kept one serves several), its line and headers due within `deadline`."""
        self._timer = threading.Timer(self.deadline, self._hang_up)
        self._timer.daemon = True
        self._timer.start()
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True       # the client hung up, or the deadline did (no answer to send)
        finally:
            self._timer.cancel()

    def parse_request(self) -> bool:
        ok = super().parse_request()           # the request line and the headers are read by now
        self._timer.cancel()
        if ok and (self.headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in self.headers):
            self.close_connection = True       # a body we do not read must not be taken for the next request
        return ok

    def _end_headers(self):
        """The headers out; `Connection: close` where this answer ends a connection an HTTP/1.1 client would keep."""
        if self.close_connection and self.request_version == "HTTP/1.1":
            self.send_header("Connection", "close")
        self.end_headers()

    def finish(self):
        if self._timer is not None:
            self._timer.cancel()
        super().finish()

    def _resolve(self) -> tuple[int, Path | None]:
        """(status, file): 200 and the file to send, else 400 (a control character, a backslash, an unparsable
        target), 414 (too long) or 404. A file is served when it lies inside its route's folder after
        resolving links, or when a bundle's manifest.json lists it: those are read as Bundle.load reads them
        (runtime_py/verify.py check_files: symlinks followed), so `serve` publishes what `Bundle.load` accepts."""
        try:
            raw = urllib.parse.urlsplit(self.path).path
        except ValueError:
            return 400, None
        if len(raw) > 3 * MAX_PATH_CHARS:
            return 414, None
        path = urllib.parse.unquote(raw)
        if any(ord(c) < 32 or ord(c) == 127 for c in path) or "\\" in path:
            return 400, None
        if len(path) > MAX_PATH_CHARS or path.count("/") > MAX_SEGMENTS:
            return 414, None
        for prefix, root in self.routes:
            if path.startswith(prefix):
                rel = path[len(prefix):] or "index.html"
                parts = rel.split("/")
                if any(part in ("", ".", "..") for part in parts):
                    return 404, None               # no listings, no dot segments
                try:
                    lexical = root.joinpath(*parts)
                    target = lexical.resolve()
                    if (target == root or root in target.parents) and target.is_file():
                        return 200, target
                    if self._listed(root, parts) and lexical.is_file():
                        return 200, lexical        # a bundle file behind a symlink, as Bundle.load reads it
                except (OSError, ValueError, RuntimeError):    # a name too long for the OS, a link loop
                    pass
                return 404, None
        return 404, None

    def _listed(self, root: Path, parts: list[str]) -> bool:
        """Is root/parts a bundle file: a manifest.json, or a file a manifest.json in a folder above it lists?"""
        from ditformat.schema import unsafe_path
        for k in range(len(parts) - 1, -1, -1):
            rel = "/".join(parts[k:])
            names = self._listing(root.joinpath(*parts[:k], "manifest.json"))
            if names is not None and (rel == "manifest.json" or (rel in names and not unsafe_path(rel))):
                return True
        return False

    def _listing(self, manifest: Path) -> frozenset | None:
        try:
            st = manifest.stat()
            key = (st.st_mtime_ns, st.st_size)
            cached = self.listings.get(str(manifest))
            if cached is not None and cached[0] == key:
                return cached[1]
            if st.st_size > 64 * 2 ** 20:
                return None
            m = json.loads(manifest.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        files = m.get("files") if isinstance(m, dict) else None
        names = frozenset(k for k in files if isinstance(k, str)) if isinstance(files, dict) else None
        if names is not None:
            self.listings[str(manifest)] = (key, names)
        return names

    def _send(self, head_only: bool):
        status, target = self._resolve()
        if target is None:
            self.send_error(status, {400: "bad request", 414: "URI too long"}.get(status, "not found"))
            return
        try:
            st = target.stat()
            data = target.read_bytes()
        except OSError:
            self.send_error(404, "not found")
            return
        # a validator, as static hosts send: the browser's next request for the file (a worker importing a module the
        # page preloaded, a later visit) is answered 304 without the body while the file is unchanged
        etag = f'"{st.st_mtime_ns:x}-{len(data):x}"'
        if etag in [t.strip() for t in self.headers.get("If-None-Match", "").split(",")]:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Cache-Control", "no-cache")
            for name, value in self.extra_headers.items():
                self.send_header(name, value)
            self._end_headers()
            if self.requested is not None:
                self.requested.append(urllib.parse.urlsplit(self.path).path)
            return
        self.send_response(200)
        self.send_header("Content-Type", MIME.get(target.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.send_header("Cache-Control", "no-cache")   # a re-export must be seen at once; weights are cached by the page
        for name, value in self.extra_headers.items():
            self.send_header(name, value)
        self._end_headers()
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


def make_server(routes: dict[str, Path], port: int = 0, log: bool = False, requested: list[str] | None = None,
                timeout: float = READ_TIMEOUT_S, headers: dict[str, str] | None = None,
                deadline: float = REQUEST_DEADLINE_S) -> http.server.ThreadingHTTPServer:
    """routes: {'/': web_dir, '/bundle/': bundle_dir, ...}. port 0 = any free port (server.server_port).
    timeout: seconds a connection may stay silent while its request is read; deadline: seconds for the whole
    request line and headers. headers: sent with every file."""
    ordered = sorted(((p if p.endswith("/") else p + "/", Path(d).resolve()) for p, d in routes.items()),
                     key=lambda r: -len(r[0]))
    handler = type("Handler", (_Handler,), {"routes": ordered, "log_requests": log, "requested": requested,
                                            "timeout": timeout, "deadline": deadline, "listings": {},
                                            "extra_headers": dict(headers or {})})
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None
    server.daemon_threads = True
    server.block_on_close = False                  # server_close() does not wait for connections a browser keeps open
    return server


def serve_in_thread(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="ditweb-http", daemon=True)
    thread.start()
    return thread
