"""`ditweb serve` speaks HTTP/1.1 with keep-alive (webserve/server.py): a browser's requests share a few connections.
Every answer carries its Content-Length, so a client reading several answers off one connection never waits for a
close; an HTTP/1.0 request, a `Connection: close`, an error and a request with a body end their connection; a kept
connection is dropped once silent (the read timeout) and each of its requests must be in by the deadline; closing the
server does not wait for the connections clients keep open."""
from __future__ import annotations

import socket
import time
import traceback

import pytest

from webserve.server import make_server, serve_in_thread

PAGE = b"<html>page</html>"
WEIGHTS = b"W" * 70000


@pytest.fixture
def server(tmp_path):
    web, bundle = tmp_path / "web", tmp_path / "bundle"
    web.mkdir()
    bundle.mkdir()
    (web / "index.html").write_bytes(PAGE)
    (web / "app.js").write_text("export {};\n")
    (bundle / "weights.safetensors").write_bytes(WEIGHTS)
    (bundle / "manifest.json").write_text('{"files": {"weights.safetensors": {}}}')
    server = make_server({"/": web, "/bundle/": bundle}, timeout=0.5, deadline=2.0)
    errors = []
    server.handle_error = lambda request, address: errors.append(traceback.format_exc())
    serve_in_thread(server)
    yield server, errors
    server.shutdown()
    server.server_close()


def read_response(s: socket.socket, head_only: bool = False) -> tuple[int, dict, bytes]:
    """One response off the connection: (status, headers, body), the body read by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the headers: {data[:80]!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    status = int(lines[0].split()[1])
    n = 0 if head_only or status == 304 else int(headers["content-length"])
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    assert len(body) == n, "more bytes than the Content-Length"
    return status, headers, body


def closed(s: socket.socket, within: float = 3.0) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_one_connection_serves_many_requests(server):
    srv, errors = server
    with socket.create_connection(("127.0.0.1", srv.server_port), timeout=5) as s:
        for path, want in [("/index.html", PAGE), ("/bundle/weights.safetensors", WEIGHTS), ("/app.js", None),
                           ("/index.html", PAGE)]:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, body = read_response(s)
            assert status == 200 and headers.get("connection") != "close", (path, status, headers)
            assert want is None or body == want
        s.sendall(b"GET /missing.js HTTP/1.1\r\nHost: x\r\n\r\n")      # an error ends the connection
        status, headers, _ = read_response(s)
        assert status == 404 and headers.get("connection") == "close" and closed(s)
    # a HEAD, a revalidation and a last request that asks to close
    with socket.create_connection(("127.0.0.1", srv.server_port), timeout=5) as s:
        s.sendall(b"HEAD /bundle/weights.safetensors HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(s, head_only=True)
        assert status == 200 and headers["content-length"] == str(len(WEIGHTS))
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(s)
        etag = headers["etag"]
        s.sendall(f"GET /index.html HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n".encode())
        assert read_response(s)[0] == 304
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, body = read_response(s)
        assert status == 200 and body == PAGE and headers.get("connection") == "close" and closed(s)
    assert not errors, errors[:1]


def test_http10_and_requests_with_a_body_end_their_connection(server):
    srv, errors = server
    for request in (b"GET /index.html HTTP/1.0\r\n\r\n",
                    b"GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 27\r\n\r\nGET /index.html HTTP/1.1\r\n\r\n",
                    b"GET /index.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", srv.server_port), timeout=5) as s:
            s.sendall(request)
            status, _, body = read_response(s)
            assert status == 200 and body == PAGE
            assert closed(s), request[:60]            # nothing after the body is taken for a request
    assert not errors, errors[:1]


def test_a_kept_connection_is_bound_by_the_timeout_and_the_deadline(server):
    srv, errors = server
    with socket.create_connection(("127.0.0.1", srv.server_port), timeout=5) as s:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        t0 = time.time()
        assert closed(s, 5.0) and time.time() - t0 < 3, "a silent kept connection stays open"
    with socket.create_connection(("127.0.0.1", srv.server_port), timeout=5) as s:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        t0, cut = time.time(), False
        for byte in b"GET /index.html HTTP/1.1\r\nX: " + b"y" * 100:     # the second request trickles in
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.2)
            if time.time() - t0 > 8:
                break
        assert (cut or closed(s)) and time.time() - t0 < 8, "the trickling second request was not cut off"
    assert not errors, errors[:1]


def test_closing_the_server_does_not_wait_for_kept_connections(tmp_path):
    (tmp_path / "index.html").write_bytes(PAGE)
    srv = make_server({"/": tmp_path}, timeout=30.0)
    serve_in_thread(srv)
    with socket.create_connection(("127.0.0.1", srv.server_port), timeout=5) as s:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        t0 = time.time()
        srv.shutdown()
        srv.server_close()
        assert time.time() - t0 < 5
