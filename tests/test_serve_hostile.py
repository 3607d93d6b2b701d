"""`ditweb serve` under hostile requests: NUL bytes, control characters, over-long paths, traversal in
every encoding, bad methods and request lines, half-sent, idle and trickling connections. Every answer is a clean
HTTP status (400 / 404 / 414 / 501 ...), no handler raises (no traceback), no byte from outside the
served folders comes back, and normal requests are still answered; a bundle whose files are symlinks
is served exactly as Bundle.load reads it (its listed files, and nothing else outside its folder)."""
from __future__ import annotations

import hashlib
import json
import random
import socket
import time
import traceback

import pytest

from runtime_py.verify import check_files
from webserve.files import check_bundle
from webserve.server import make_server, serve_in_thread

SECRET = b"SECRET-OUTSIDE-THE-SERVED-FOLDERS"


@pytest.fixture
def site(tmp_path):
    """web/ at /, a bundle at /bundle/ whose kernel is a symlink to a file outside it (listed in its manifest),
    with unlisted symlinks to a secret file and folder beside it."""
    web, bundle, elsewhere, secret = (tmp_path / n for n in ("web", "bundle", "elsewhere", "secret"))
    for d in (web, bundle / "kernels", elsewhere, secret):
        d.mkdir(parents=True)
    (web / "index.html").write_text("<html>page</html>")
    (secret / "passwd").write_bytes(SECRET)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (bundle / "weights.safetensors").write_bytes(b"W" * 100)
    (elsewhere / "step.wgsl").write_text("// a kernel kept in another export folder\n")
    (bundle / "kernels" / "step.wgsl").symlink_to(elsewhere / "step.wgsl")
    (bundle / "evil").symlink_to(tmp_path / "secret.txt")               # not listed: never served
    (bundle / "evil-dir").symlink_to(secret, target_is_directory=True)
    files = {}
    for rel in ("weights.safetensors", "kernels/step.wgsl"):
        raw = (bundle / rel).read_bytes()
        files[rel] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    (bundle / "manifest.json").write_text(json.dumps({"files": files}))
    server = make_server({"/": web, "/bundle/": bundle}, timeout=0.5, deadline=2.0)
    errors = []
    server.handle_error = lambda request, address: errors.append(traceback.format_exc())
    serve_in_thread(server)
    yield server, bundle, files, errors
    server.shutdown()
    server.server_close()


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, whole response) of one request sent as raw bytes; status 0 if the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
    resp = b"".join(chunks)
    try:
        return int(resp.split(b" ", 2)[1]), resp
    except (IndexError, ValueError):
        return 0, resp


def get(port: int, path: str | bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.0", extra: bytes = b""):
    path = path.encode("latin-1") if isinstance(path, str) else path
    return raw_request(port, method + b" " + path + b" " + version + b"\r\n" + extra + b"\r\n")


def hostile_paths(seed: int = 0, n: int = 500) -> list[bytes]:
    fixed = [b"/bundle/a%00b", b"/%00", b"/bundle/weights.safetensors%00.png", b"/a\x00b", b"/bundle/%0d%0aX: y",
             b"/bundle/%1b[31m", b"/%7f", b"/" + b"a/" * 5000, b"/bundle/" + b"x/" * 5000, b"/" + b"a" * 5000,
             b"/bundle/../secret.txt", b"/bundle/%2e%2e/secret.txt", b"/bundle/%2e%2e%2fsecret.txt",
             b"/bundle/%252e%252e/secret.txt", b"/bundle/..%5csecret.txt", b"/bundle/..\\secret.txt",
             b"//etc/passwd", b"/bundle//etc/passwd", b"/bundle/evil", b"/bundle/evil-dir/passwd",
             b"/bundle/./evil", b"/bundle/kernels/../evil", b"/bundle/kernels/step.wgsl/../../evil",
             b"http://127.0.0.1/bundle/../secret.txt", b"//[", b"/bundle/%ff%fe", b"/bundle/\xff\xfe",
             b"/bundle/evil?x=1", b"/bundle/evil#frag", b"/bundle/evil%3fx", b"*", b"", b"/bundle/manifest.json/..",
             b"/" + b"%2e%2e/" * 40 + b"secret.txt", b"/bundle/" + b"%" * 300, b"/bundle/kernels/",
             b"/bundle/evil-dir/", b"/bundle/evil-dir/%2e%2e/passwd"]
    tokens = [b"..", b"%2e%2e", b"%2E%2e", b".", b"%00", b"\x00", b"%0a", b"\\", b"%5c", b"evil", b"evil-dir",
              b"passwd", b"secret.txt", b"kernels", b"step.wgsl", b"manifest.json", b"%252e", b"%", b"~", b"//",
              b"\xc0\xae", b"%c0%ae", b"a" * 300, b"bundle", b";", b"?", b"#"]
    rng = random.Random(seed)
    out = list(fixed)
    while len(out) < n:
        parts = [rng.choice(tokens) for _ in range(rng.randint(1, 8))]
        out.append(rng.choice([b"/", b"/bundle/"]) + b"/".join(parts))
    return out


def test_hostile_requests_get_clean_answers_and_nothing_from_outside(site):
    server, bundle, files, errors = site
    port = server.server_port
    statuses = {}
    t0 = time.time()
    paths = hostile_paths()
    cases = [(p, b"GET", b"HTTP/1.0", b"") for p in paths]
    cases += [(b"/bundle/weights.safetensors", m, b"HTTP/1.0", b"") for m in (b"POST", b"PUT", b"DELETE", b"OPTIONS",
                                                                             b"TRACE", b"G\x00T", b"")]
    cases += [(b"/index.html", b"GET", v, b"") for v in (b"HTTP/2.0", b"HTTP/9", b"FOO", b"HTTP/1.1\x00")]
    cases += [(b"/index.html", b"GET", b"HTTP/1.0", b"".join(b"X-%d: y\r\n" % i for i in range(200))),
              (b"/index.html", b"GET", b"HTTP/1.0", b"X: " + b"y" * 70000 + b"\r\n"),
              (b"/index.html", b"GET", b"HTTP/1.0", b"Range: bytes=-1\r\nHost: \x00\r\n")]
    served = [(bundle / rel).read_bytes() for rel in ("manifest.json", *files)] + [b"<html>page</html>"]
    for path, method, version, extra in cases:
        status, resp = get(port, path, method, version, extra)
        assert SECRET not in resp, path[:80]
        assert status != 200 or any(resp.endswith(b) for b in served), path[:80]   # 200: one of our files
        statuses[status] = statuses.get(status, 0) + 1
    for raw in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET\r\n\r\n", b"\r\n\r\n", b"GET / HTTP/1.0 extra\r\n\r\n",
                b"GET " + b"/a" * 40000 + b" HTTP/1.0\r\n\r\n"):
        status, resp = raw_request(port, raw)
        assert SECRET not in resp
        statuses[status] = statuses.get(status, 0) + 1
    n = sum(statuses.values())
    print(f"{n} hostile requests in {time.time() - t0:.1f} s: {dict(sorted(statuses.items()))}")
    assert n >= 500 and not errors, errors[:1]
    assert set(statuses) <= {0, 200, 400, 404, 414, 431, 501, 505}, statuses
    assert statuses[414] >= 3 and statuses[400] >= 5
    # a NUL and a 5,000-segment path in particular
    assert get(port, b"/bundle/a%00b")[0] == 400 and get(port, b"/" + b"a/" * 5000)[0] == 414
    # normal requests are still answered, the symlinked bundle file included (what Bundle.load reads)
    assert get(port, "/index.html")[1].endswith(b"<html>page</html>")
    status, resp = get(port, "/bundle/kernels/step.wgsl")
    assert status == 200 and resp.endswith(b"another export folder\n")
    check_files(bundle, files, "manifest.json")        # Bundle.load's file check accepts the same folder
    assert check_bundle(bundle) == ["manifest.json", "weights.safetensors", "kernels/step.wgsl"]
    assert get(port, "/bundle/evil")[0] == 404 and get(port, "/bundle/evil-dir/passwd")[0] == 404


def test_idle_and_half_sent_requests_time_out(site):
    server, _, _, errors = site
    port = server.server_port
    for sent in (b"", b"GET /index.html HTTP/1.0\r\n", b"GET /index.html HTTP/1.0\r\nHost: x\r\n", b"GE"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(sent)
            t0 = time.time()
            try:
                rest = s.recv(65536)                   # the server gives up after its 0.5 s read timeout
            except ConnectionResetError:
                rest = b""
            waited = time.time() - t0
            assert waited < 5 and rest in (b"",) or rest.startswith(b"HTTP/1.0 408"), (sent, rest[:40])
            # meanwhile (threads) and afterwards, normal requests are answered
            assert get(port, "/index.html")[0] == 200
    assert not errors, errors[:1]


def test_a_trickling_request_is_cut_off_at_the_deadline(site):
    """A client that sends its request one byte every 0.2 s never trips the 0.5 s read timeout; the 2 s deadline
    for the whole request closes it, and the server answers others meanwhile."""
    server, _, _, errors = site
    request = b"GET /index.html HTTP/1.0\r\n" + b"X: " + b"y" * 200 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as s:
        t0, closed = time.time(), False
        for byte in request:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            if time.time() - t0 > 8:
                break
        if not closed:
            try:
                closed = s.recv(65536) == b""
            except ConnectionResetError:
                closed = True
        assert closed and time.time() - t0 < 8, "the trickling request was still open after 8 s"
        assert get(server.server_port, "/index.html")[0] == 200
    assert not errors, errors[:1]
