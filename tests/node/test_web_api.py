"""The web dashboard's server side: its static files (node/webstatic.py), the streamed upload
(httpparse's streaming mode, node/apiweb.py, node/upload.py) and the retry route, driven through
ApiServerProtocol with a fake transport (tests/node/test_api.py's harness) and on disk."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from node.api import ApiServerProtocol
from node.errors import RequestError
from node.httpparse import HttpError, RequestParser
from node.upload import STAGING, TEMP, Uploads
from node.webstatic import CSP, WEB_DIR, WebFiles
from tests.node.test_api import HOST, TOKEN, FakeNode, FakeTimers, FakeTransport

# -- a harness with the dashboard's parts -------------------------------------------------------


class WebNode(FakeNode):
    def __init__(self, share: Path, **kw: Any) -> None:
        super().__init__()
        self.uploads = Uploads(share, **kw)
        self.retried: list[str] = []

    def retry(self, tid: str) -> dict[str, Any]:
        self._call("retry", tid)
        return {"id": "t2", "state": "queued", "name": "f.bin"}

    def begin_upload(self, name: str, length: int, batch: str | None = None) -> Any:
        self._call("begin_upload", name, length, *([batch] if batch else []))
        return self.uploads.begin(name, length, batch)


class Conn:
    def __init__(self, share: Path, **kw: Any) -> None:
        self.node = WebNode(share, **kw)
        self.timers = FakeTimers()
        self.transport = FakeTransport()
        self.proto = ApiServerProtocol(self.node, token=TOKEN, call_later=self.timers.call_later)
        self.proto.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.proto.data_received(memoryview(bytearray(data)))

    def answers(self) -> list[tuple[int, dict[str, str], bytes]]:
        out = []
        data = bytes(self.transport.out)
        while data:
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            n = int(headers.get("content-length", "0"))
            out.append((int(lines[0].split(" ")[1]), headers, rest[:n]))
            data = rest[n:]
        return out


def request(method: str, path: str, *headers: str, body: bytes = b"", auth: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", HOST]
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    lines += list(headers)
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def upload_head(name: str, size: int, *extra: str, auth: bool = True) -> bytes:
    head = request(
        "POST",
        f"/api/uploads?name={name}",
        "Content-Type: application/octet-stream",
        f"Content-Length: {size}",
        *extra,
        auth=auth,
    )
    return head


def staged(share: Path) -> list[str]:
    root = share / STAGING
    return sorted(
        str(Path(d).relative_to(root) / f) for d, _, files in os.walk(root) for f in files
    )


# -- static files -------------------------------------------------------------------------------


def test_the_page_is_served_without_a_token_with_a_strict_csp(tmp_path: Path) -> None:
    c = Conn(tmp_path)
    c.send(request("GET", "/", auth=False) + request("GET", "/app.js", auth=False))
    (page, page_h, body), (js, js_h, script) = c.answers()
    assert page == 200 and b'<script type="module" src="/app.js">' in body
    assert page_h["content-type"] == "text/html; charset=utf-8"
    assert js == 200 and js_h["content-type"] == "text/javascript; charset=utf-8"
    assert script == (WEB_DIR / "app.js").read_bytes()
    for h in (page_h, js_h):
        assert h["content-security-policy"] == CSP
        assert "default-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert h["x-content-type-options"] == "nosniff"
        assert h["cache-control"] == "no-cache" and h["etag"].startswith('"')
    assert c.node.calls == []  # the node itself was not asked anything


def test_no_inline_script_or_style_and_nothing_from_elsewhere() -> None:
    for path in WEB_DIR.iterdir():
        text = path.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), path
        assert "https://" not in text, path
        if path.suffix == ".html":
            assert "<script>" not in text and " style=" not in text and "<style" not in text
            assert not re.search(r"\son[a-z]+=", text), "inline event handler"
        if path.suffix == ".js":
            assert not re.search(r"\.(inner|outer)HTML\b|insertAdjacentHTML|document\.write", text)
            assert not re.search(r"\beval\(|new Function\(", text), path
            assert "localStorage" not in text and "sessionStorage" not in text, path


@pytest.mark.parametrize("ext", ["css", "js", "html", "svg"])
def test_content_types(ext: str) -> None:
    files = WebFiles()
    name = next(p.name for p in WEB_DIR.iterdir() if p.suffix == f".{ext}")
    found = files.answer(f"/{name}", None)
    assert found is not None
    assert found[2] is not None and found[2].startswith(
        {"css": "text/css", "js": "text/javascript", "html": "text/html", "svg": "image/svg+xml"}[
            ext
        ]
    )


def test_an_unchanged_file_is_a_304() -> None:
    files = WebFiles()
    found = files.answer("/app.css", None)
    assert found is not None
    etag = found[3]["ETag"]
    again = files.answer("/app.css", f'"x", {etag}')
    assert again is not None and again[0] == 304 and again[1] == b""


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/..%2Fapi.py",
        "/%2e%2e/api.py",
        "/web/app.js",
        "/api.py",
        "/./app.js",
        "//etc/passwd",
        "/app.js/",
        "/nope.html",
        "/secret.txt",
        "/link.js",
        "/sub/x.js",
    ],
)
def test_paths_cannot_escape_the_web_directory(tmp_path: Path, path: str) -> None:
    web = tmp_path / "web"
    web.mkdir()
    (web / "app.js").write_text("ok")
    (web / "secret.txt").write_text("not a served type")
    (tmp_path / "outside.js").write_text("outside")
    (web / "link.js").symlink_to(tmp_path / "outside.js")
    (web / "sub").mkdir()
    (web / "sub" / "x.js").write_text("nested")
    files = WebFiles(web)
    assert files.answer(path, None) is None
    assert files.answer("/app.js", None) is not None


def test_unknown_page_is_a_json_404_and_only_get(tmp_path: Path) -> None:
    c = Conn(tmp_path)
    c.send(request("GET", "/nope", auth=False))
    c.send(request("DELETE", "/", "Content-Type: application/json", auth=False))
    (nf, _, body), (na, headers, _) = c.answers()
    assert nf == 404 and json.loads(body)["error"] == "not_found"
    assert na == 405 and headers["allow"] == "GET"


def test_the_page_still_checks_host(tmp_path: Path) -> None:
    c = Conn(tmp_path)
    c.send(b"GET / HTTP/1.1\r\nHost: evil.example:47102\r\n\r\n")
    ((status, _, _),) = c.answers()
    assert status == 403 and c.transport.closed


# -- the streaming parser -----------------------------------------------------------------------


def test_a_streamed_body_comes_in_chunks_and_the_next_request_after_it() -> None:
    p = RequestParser(stream_body=lambda m, path: path == "/up", max_body=10)
    big = b"x" * 5000
    p.receive_data(b"POST /up HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + big[:1000])
    req = p.next_request()
    assert req is not None and req.streamed and req.length == 5000 and req.body == b""
    got = [p.next_body_chunk()]
    assert p.next_request() is None  # the body first
    p.receive_data(big[1000:] + b"GET /n HTTP/1.1\r\n\r\n")
    got.append(p.next_body_chunk())
    assert p.next_body_chunk() is None and p.body_left == 0
    assert b"".join(c for c in got if c) == big
    nxt = p.next_request()
    assert nxt is not None and nxt.path == "/n"
    # Any other route keeps the 1 MiB (here 10 byte) limit.
    p.receive_data(b"POST /other HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(HttpError) as err:
        p.next_request()
    assert err.value.status == 413


def test_a_streamed_body_cut_short_is_an_error() -> None:
    p = RequestParser(stream_body=lambda m, path: True)
    p.receive_data(b"POST /up HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    assert p.next_request() is not None
    assert p.next_body_chunk() == b"abc"
    p.receive_data(b"")
    with pytest.raises(HttpError):
        p.next_body_chunk()


# -- uploads through the API --------------------------------------------------------------------


def test_an_upload_is_streamed_to_disk_and_appears_whole(tmp_path: Path) -> None:
    c = Conn(tmp_path)
    data = os.urandom(3 << 20)  # 3 MiB: three times the buffered-body limit
    c.send(upload_head("dir%2Freport.pdf", len(data)))
    held = []
    for i in range(0, len(data), 256 << 10):
        c.send(data[i : i + (256 << 10)])
        held.append(c.proto._parser.buffered)
        if i + (256 << 10) < len(data):
            assert staged(tmp_path) != [] and all(".upload" in s for s in staged(tmp_path))
    assert max(held) == 0  # every chunk went to disk at once: nothing is held in memory
    ((status, _, body),) = c.answers()
    answer = json.loads(body)
    assert status == 201 and answer["name"] == "dir/report.pdf" and answer["size"] == len(data)
    path = Path(answer["path"])
    assert path.read_bytes() == data
    assert path.is_relative_to(tmp_path / STAGING) and path.parts[-2:] == ("dir", "report.pdf")
    assert not (path.parent.parent / TEMP).exists()
    assert c.node.calls == [("begin_upload", "dir/report.pdf", len(data))]
    assert not c.transport.closed  # keep-alive: the next request is served
    c.send(request("GET", "/api/node"))
    assert c.answers()[-1][0] == 200


@pytest.mark.parametrize(
    "name",
    ["..%2F..%2Fetc%2Fpasswd", "%2Fabs", "a%2F..%2Fb", "con.txt", "a%3Ab", ".mole%2Fx", "x.%20"],
)
def test_names_the_store_refuses_are_refused_before_any_byte(tmp_path: Path, name: str) -> None:
    c = Conn(tmp_path)
    c.send(upload_head(name, 10) + b"0123456789")
    ((status, headers, body),) = c.answers()
    assert status == 400 and json.loads(body)["error"] == "bad_name", body
    assert headers["connection"] == "close" and c.transport.closed  # body read, then closed
    assert staged(tmp_path) == []
    assert not (tmp_path.parent / "etc").exists()


def test_an_upload_over_the_free_space_or_quota_is_refused(tmp_path: Path) -> None:
    c = Conn(tmp_path, free=lambda p: 100 << 20, reserve=0, quota=None)
    c.send(upload_head("big.bin", 200 << 20))
    ((status, headers, body),) = c.answers()
    assert status == 507 and json.loads(body)["error"] == "no_space"
    assert headers["connection"] == "close" and not c.transport.closed  # draining the body
    c.send(b"x" * (1 << 20))  # a browser still sending: read and dropped
    assert staged(tmp_path) == []
    q = Conn(tmp_path, quota=1000, reserve=0)
    q.send(upload_head("a.bin", 600) + b"a" * 600)
    q.send(upload_head("b.bin", 600) + b"b" * 600)
    first, second = q.answers()
    assert first[0] == 201 and second[0] == 507


def test_an_upload_without_the_token_is_refused_and_nothing_written(tmp_path: Path) -> None:
    c = Conn(tmp_path)
    c.send(upload_head("x.bin", 5, auth=False) + b"hello")
    ((status, _, _),) = c.answers()
    assert status == 401 and c.transport.closed and c.node.calls == []
    assert not (tmp_path / STAGING).exists()


def test_an_upload_must_be_octet_stream(tmp_path: Path) -> None:
    c = Conn(tmp_path)
    for ctype in ("text/plain", "multipart/form-data; boundary=x", "application/json"):
        c = Conn(tmp_path)
        c.send(request("POST", "/api/uploads?name=x", f"Content-Type: {ctype}", body=b"hello"))
        ((status, _, _),) = c.answers()
        assert status == 415, ctype
    assert staged(tmp_path) == []


def test_an_aborted_upload_leaves_nothing(tmp_path: Path) -> None:
    c = Conn(tmp_path)
    c.send(upload_head("half.bin", 1000) + b"x" * 400)
    assert len(staged(tmp_path)) == 1
    c.proto.connection_lost(ConnectionResetError())
    assert staged(tmp_path) == [] and os.listdir(tmp_path / STAGING) == []
    # A client that stops sending is dropped after the idle timeout, and nothing stays.
    s = Conn(tmp_path)
    s.send(upload_head("slow.bin", 1000) + b"x" * 10)
    s.timers.fire()  # a first check sees bytes since the start
    s.timers.fire()  # nothing since: aborted
    assert s.transport.aborted and os.listdir(tmp_path / STAGING) == []


def test_uploads_are_never_outside_the_staging_directory(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    ups = Uploads(share)
    u = ups.begin("a/b/c.txt", 3)
    u.write(b"abc")
    got = Path(u.finish()["path"])
    assert got.resolve().is_relative_to((share / STAGING).resolve())
    # A staging directory replaced by a symlink out of the share is refused.
    (share / STAGING).rename(tmp_path / "moved")
    (share / STAGING).symlink_to(tmp_path)
    with pytest.raises(RequestError):
        ups.begin("x.txt", 1)
    assert not (tmp_path / "x.txt").exists()


def test_staged_uploads_are_released_and_pruned(tmp_path: Path) -> None:
    now = [100_000.0]
    ups = Uploads(tmp_path, clock=lambda: now[0])
    u = ups.begin("one.txt", 1)
    u.write(b"1")
    path = u.finish()["path"]
    assert ups.owns(path) and not ups.owns(str(tmp_path / "one.txt"))
    ups.release(path)
    assert not Path(path).exists() and os.listdir(tmp_path / STAGING) == []
    old = ups.begin("old.txt", 1)
    old.write(b"o")
    old_path = old.finish()["path"]
    os.utime(Path(old_path).parent, (0, 0))
    assert ups.prune(max_age=3600) == 1 and not Path(old_path).exists()


def test_the_files_of_one_send_share_one_directory_and_names_are_checked(
    tmp_path: Path,
) -> None:
    ups = Uploads(tmp_path, new_id=iter(f"{i:016x}" for i in range(1, 99)).__next__)
    first = ups.begin("a.txt", 1, "new")
    first.write(b"a")
    got = first.finish()
    batch = got["batch"]
    assert batch == "0000000000000001" and got["root"] == str(tmp_path / STAGING / batch / "a.txt")
    empty = ups.begin("folder/sub/empty", 0, batch).finish()  # an empty file of a send
    assert empty["root"] == str(tmp_path / STAGING / batch / "folder")
    assert Path(empty["path"]).read_bytes() == b""
    assert sorted(os.listdir(tmp_path / STAGING)) == [batch]  # one directory for the send
    assert sorted(os.listdir(tmp_path / STAGING / batch)) == ["a.txt", "folder"]
    for name in ("a.txt", "folder/sub/empty", "a.txt/x"):  # taken, or a file where a folder goes
        with pytest.raises(RequestError):
            ups.begin(name, 1, batch)
    for bad in ("../x", "0000000000000009", "ABCDEF0123456789", "x" * 16):
        with pytest.raises(RequestError):
            ups.begin("b.txt", 1, bad)  # not an upload directory of ours
    with pytest.raises(RequestError):
        ups.begin("lone.txt", 0)  # a lone upload still needs a body
    # An upload of the send that does not arrive complete leaves the others alone.
    broken = ups.begin("b.txt", 5, batch)
    broken.write(b"bb")
    broken.abort()
    assert sorted(os.listdir(tmp_path / STAGING / batch)) == ["a.txt", "folder"]
    # Two uploads of one name at once: the second to finish is refused, the first stays.
    one, two = ups.begin("c.txt", 1, batch), ups.begin("c.txt", 1, batch)
    one.write(b"1")
    two.write(b"2")
    one.finish()
    with pytest.raises(FileExistsError):
        two.finish()
    assert (tmp_path / STAGING / batch / "c.txt").read_bytes() == b"1"


def test_a_staged_directory_read_by_a_live_transfer_is_neither_released_nor_pruned(
    tmp_path: Path,
) -> None:
    reading: set[str] = set()
    ups = Uploads(tmp_path, in_use=lambda: set(reading))
    u = ups.begin("a.txt", 1, "new")
    u.write(b"a")
    staged = u.finish()
    reading.add(staged["batch"])
    os.utime(Path(staged["path"]).parent, (0, 0))
    assert ups.prune(max_age=3600) == 0
    ups.release(staged["path"])
    assert Path(staged["path"]).exists()
    reading.clear()
    ups.release(staged["path"])
    assert not Path(staged["path"]).exists() and os.listdir(tmp_path / STAGING) == []


# -- retry --------------------------------------------------------------------------------------


def test_retry_route(tmp_path: Path) -> None:
    c = Conn(tmp_path)
    c.send(request("POST", "/api/transfers/t1/retry", "Content-Type: application/json"))
    ((status, _, body),) = c.answers()
    assert status == 202 and json.loads(body)["id"] == "t2"
    assert c.node.calls == [("retry", "t1")]
    c = Conn(tmp_path)
    c.send(request("GET", "/api/transfers/t1/retry"))
    ((status, headers, _),) = c.answers()
    assert status == 405 and headers["allow"] == "POST"


def test_every_web_file_ships_as_package_data() -> None:
    """An installed `mole` (not only a checkout) serves the page: pyproject.toml's package data
    covers every file in node/web/, and each has a content type the server knows."""
    import fnmatch
    import tomllib

    pyproject = WEB_DIR.parents[1] / "pyproject.toml"
    with pyproject.open("rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["node"]
    for path in WEB_DIR.iterdir():
        assert any(fnmatch.fnmatch(f"web/{path.name}", g) for g in globs), path.name
        assert WebFiles().get(f"/{path.name}") is not None, path.name
