"""node/cli.py against a fake control API (stdlib http.server on 127.0.0.1:0, in a thread)."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from node import cli, clifollow, cliview
from node.termsafe import UNSAFE, safe_json
from tests.httpserve import http_server
from tests.ssefake import EventBuffer, serve_events

NOW = 1_700_000_000.0
PEER_B = {
    "node": "b" * 32,
    "name": "b",
    "addr": "127.0.0.1",
    "port": 47101,
    "groups": ["lab", "x"],
    "last_seen": NOW,
    "static": False,
}
FILE = {"name": "f.bin", "size": 3 << 20, "sha256": "ab" * 32, "mtime": NOW, "mime": "x/y"}


def transfer(tid: str, **kw: Any) -> dict[str, Any]:
    t = {
        "id": tid,
        "direction": "push",
        "role": "send",
        "peer": "b" * 32,
        "peer_name": "b",
        "name": "f.bin",
        "size": 1000,
        "bytes": 0,
        "sent": 0,
        "offset": 0,
        "rate": 0.0,
        "state": "queued",
        "sha256": None,
        "path": None,
        "error": None,
        "started": NOW,
        "finished": None,
        "skipped": False,
    }
    t.update(kw)
    return t


class FakeApi:
    """What the fake node answers; each transfer walks through a script of states.

    With `sse` (the default) the node has GET /api/events: a transfer's script is played as
    events once the client has read the transfer (the CLI subscribes, starts, then reads once),
    and GET /api/transfers/{id} answers the latest state. Without it (a node from before the
    event stream: 404), each GET of a transfer moves it one step along its script.
    """

    def __init__(self) -> None:
        self.sse = True
        self.buf = EventBuffer()
        self.finish_silently = False  # sse: the transfer ends before any event of it is seen
        self.restart_in_play = False  # sse: the node restarts once the client saw the start
        self.extra: dict[str, Any] = {}  # more fields of every new transfer (e.g. peer_name)
        self.fail_start: tuple[int, dict[str, str]] | None = None  # push/pull answer this
        self.token: str | None = None
        self.requests: list[tuple[str, str, Any]] = []
        self.peers = [PEER_B]
        self.files = [FILE]
        self.script: list[dict[str, Any]] = [
            {"state": "active", "bytes": 500, "sent": 500, "rate": 250.0},
            {"state": "done", "bytes": 1000, "sent": 1000, "finished": NOW + 2},
        ]
        self.transfers: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()

    def answer(self, method: str, path: str, body: Any, auth: str | None) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, body))
            if self.token is not None and auth != f"Bearer {self.token}":
                return 401, {"error": "unauthorized", "message": "missing or wrong bearer token"}
            return self._route(method, path, body)

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if (method, path) == ("GET", "/api/peers"):
            return 200, self.peers
        if (method, path) == ("GET", "/api/peers/static"):
            return 200, [{"peer": "nas.lan:47101", "addrs": ["10.0.0.9"], "node": "c" * 32,
                          "runtime": True, "failures": 0}]  # fmt: skip
        if method == "POST" and path.startswith("/api/peers/static"):
            return (201 if path.endswith("static") else 200), {"peer": body["peer"]}
        if (method, path) in (("GET", "/api/files"), ("GET", "/api/inbox")):
            return 200, self.files
        if method == "GET" and parts[:2] == ["api", "peers"] and parts[3:] == ["files"]:
            if parts[2] not in ("b", "b" * 32):
                return 404, {"error": "unknown_peer", "message": f"peer unknown: {parts[2]}"}
            return 200, [{**FILE, "name": "remote.txt"}]
        if (method, path) == ("GET", "/api/transfers"):
            return 200, [steps[0] for steps in self.transfers.values()]
        if method == "GET" and parts[:2] == ["api", "transfers"] and len(parts) == 3:
            steps = self.transfers.get(parts[2])
            if steps is None:
                return 404, {"error": "not_found", "message": f"no transfer {parts[2]}"}
            if self.sse:
                now = steps[0]
                self.play(steps)
                return 200, now
            if len(steps) > 1:
                steps.pop(0)
            return 200, steps[0]
        if method == "POST" and parts[:2] == ["api", "transfers"] and parts[3:] == ["cancel"]:
            if parts[2] not in self.transfers:
                return 404, {"error": "not_found", "message": f"no transfer {parts[2]}"}
            return 200, {**self.transfers[parts[2]][0], "state": "cancelled"}
        if method == "POST" and path in ("/api/push", "/api/pull"):
            return self._start(path, body)
        return 404, {"error": "not_found", "message": f"no such route: {method} {path}"}

    def _start(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if self.fail_start is not None:
            return self.fail_start
        if body["peer"] not in ("b", "b" * 32):
            return 404, {"error": "unknown_peer", "message": f"peer unknown: {body['peer']}"}
        src = str(body.get("path") or body.get("paths", [""])[0])
        if path == "/api/push" and src.endswith("gone.bin"):
            return 404, {"error": "file_missing", "message": f"file missing: {src}"}
        tid = f"t{len(self.transfers) + 1}"
        if path == "/api/push":
            first = transfer(tid, name=Path(src).name, **self.extra)
            if "paths" in body:  # a batch: one transfer named by its first path
                first.update(kind="batch", files=len(body["paths"]))
        else:
            name = body.get("name") or (body.get("names") or [body.get("prefix")])[0]
            first = transfer(tid, direction="pull", role="receive", name=name, **self.extra)
            if "names" in body:  # a batch of named files: one transfer
                first.update(kind="batch", files=len(body["names"]))
        steps = [first] + [{**first, **step} for step in self.script]
        if steps[-1]["state"] == "done" and first["role"] == "receive":
            # The node's `path` is the inbox-relative name the file got: here a taken name.
            stem, dot, ext = first["name"].rpartition(".")
            steps[-1]["path"] = f"{stem} (1){dot}{ext}"
        self.transfers[tid] = steps
        if self.sse:
            if self.finish_silently:
                del steps[:-1]
            else:
                self.buf.emit("transfer_started", **first)
        return 202, first

    def play(self, steps: list[dict[str, Any]]) -> None:
        """The rest of a transfer's script as the node's events; the transfer ends there."""
        if self.restart_in_play:
            with self.buf.cond:  # once the client has the start, so it has an id to resume
                self.buf.cond.wait_for(lambda: "transfer_started" in self.buf.connections[0].sent)
            self.buf.restart()
        for step in steps[1:]:
            if step["state"] in cliview.FINAL_STATES:
                name = "transfer_done" if step["state"] == "done" else "transfer_failed"
                self.buf.emit(name, **step)
            else:
                keys = ("id", "wire_id", "name", "role", "bytes", "size", "sent", "offset", "rate")
                self.buf.emit("transfer_progress", **{k: step.get(k) for k in keys})
        del steps[:-1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the node
    api: FakeApi

    def _serve(self) -> None:
        fake: FakeApi = self.server.api  # type: ignore[attr-defined]
        if self.command == "GET" and self.path.startswith("/api/events") and fake.sse:
            auth = self.headers.get("Authorization")
            if fake.token is None or auth == f"Bearer {fake.token}":
                with fake.lock:
                    fake.requests.append((self.command, self.path, None))
                serve_events(self, fake.buf)
                return
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        body = json.loads(raw) if raw else None
        status, answer = self.server.api.answer(  # type: ignore[attr-defined]
            self.command, self.path, body, self.headers.get("Authorization")
        )
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.delenv("MOLE_API", raising=False)
    monkeypatch.delenv("MOLE_API_TOKEN", raising=False)
    monkeypatch.delenv("MOLE_HOME_DIR", raising=False)
    # Never the token file of a node of the person running the tests.
    monkeypatch.setenv("MOLE_STATE", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setattr(clifollow, "POLL_INTERVAL", 0.0)
    monkeypatch.setattr(cli.time, "time", lambda: NOW + 5)


@pytest.fixture
def api() -> Iterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    with http_server(Handler, fake.buf.close, api=fake) as url:
        yield fake, url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


EVENTS = "/api/events?types=" + ",".join(clifollow.TRANSFER_EVENTS)


def posts(fake: FakeApi) -> list[tuple[str, str, Any]]:
    return [r for r in fake.requests if r[0] == "POST"]


def shared_file(tmp_path: Path, name: str = "f.bin") -> Path:
    p = tmp_path / name
    p.write_bytes(b"x" * 1000)
    return p


# -- listing commands ---------------------------------------------------------------------------


def test_peers_table(api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = api
    fake.peers = [
        PEER_B,
        {**PEER_B, "name": "longer-name", "node": "c" * 32, "groups": [], "static": True},
        {**PEER_B, "name": "far", "node": "d" * 32, "static": True, "found_by": "tracker",
         "addrs": [
             {"addr": "203.0.113.9", "port": 47101, "sources": ["tracker", "dht"], "failures": 0},
             {"addr": "fe80::2%eth0", "port": 47101, "sources": ["inbound"], "failures": 2},
         ]},
    ]  # fmt: skip
    code, out, err = run(capsys, "--api", url, "peers")
    assert (code, err) == (0, "")
    assert out == (
        "NAME         NODE      ADDRESS               VIA                 GROUPS  SEEN    "
        "FOUND BY\n"
        "b            bbbbbbbb  127.0.0.1:47101       -                   lab,x   5s ago  lan\n"
        "longer-name  cccccccc  127.0.0.1:47101       -                   -       static  static\n"
        "far          dddddddd  203.0.113.9:47101     tracker,dht         lab,x   static  tracker\n"
        "                       [fe80::2%eth0]:47101  inbound (2 failed)\n"
    )


def test_peer_add_remove_list(api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = api
    assert run(capsys, "--api", url, "peer", "add", "nas.lan:47101")[:2] == (
        0,
        "added nas.lan:47101\n",
    )
    assert run(capsys, "--api", url, "peer", "remove", "nas.lan:47101")[0] == 0
    assert posts(fake) == [
        ("POST", "/api/peers/static", {"peer": "nas.lan:47101"}),
        ("POST", "/api/peers/static/remove", {"peer": "nas.lan:47101"}),
    ]
    code, out, _ = run(capsys, "--api", url, "peer", "list")
    assert code == 0 and "nas.lan:47101  10.0.0.9  cccccccc" in out


def test_peers_json_with_options_after_the_command(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = api
    code, out, _ = run(capsys, "peers", "--json", "--api", url)
    assert code == 0
    assert json.loads(out) == [PEER_B]


def test_api_from_the_environment(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = api
    monkeypatch.setenv("MOLE_API", url)
    assert run(capsys, "peers", "--json")[0] == 0


def test_ls_own_and_peer_files(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = api
    code, out, _ = run(capsys, "--api", url, "ls")
    assert code == 0
    assert out == "NAME      SIZE  SHA256\nf.bin  3.0 MiB  abababababab\n"
    code, out, _ = run(capsys, "--api", url, "ls", "b")
    assert code == 0
    assert out.splitlines()[1].startswith("remote.txt")
    assert fake.requests[-1][:2] == ("GET", "/api/peers/b/files")


def test_ls_unknown_peer(api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, url = api
    assert run(capsys, "--api", url, "ls", "zz") == (1, "", "mole: peer unknown: zz\n")


def test_inbox_json(api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, url = api
    code, out, _ = run(capsys, "--api", url, "--json", "inbox")
    assert (code, json.loads(out)) == (0, [FILE])


def test_transfers_table_and_cancel(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = api
    fake.transfers = {
        "t1": [transfer("t1", bytes=500, rate=2048.0, state="active")],
        "t2": [
            transfer(
                "t2",
                role="receive",
                peer_name="",
                name="g",
                state="failed",
                error={"code": "hash_mismatch", "reason": "x"},
            )
        ],
    }
    code, out, _ = run(capsys, "--api", url, "transfers")
    assert code == 0
    assert out == (
        "ID  DIR  PEER      NAME   PROGRESS           RATE       STATE\n"
        "t1  out  b         f.bin   50% 500 B/1000 B  2.0 KiB/s  active\n"
        "t2  in   bbbbbbbb  g        0% 0 B/1000 B    -          failed: hash_mismatch\n"
    )
    code, out, _ = run(capsys, "--api", url, "cancel", "t1")
    assert (code, out) == (0, "t1  f.bin  cancelled\n")
    assert fake.requests[-1][:2] == ("POST", "/api/transfers/t1/cancel")
    assert run(capsys, "--api", url, "cancel", "t9") == (1, "", "mole: no such transfer: t9\n")


# -- send and get ---------------------------------------------------------------------------------


def test_send_waits_until_done(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    path = shared_file(tmp_path)
    code, out, err = run(capsys, "--api", url, "send", "b", str(path))
    assert (code, err) == (0, ""), "no progress bar when stderr is not a terminal"
    assert out == "sent f.bin to b (1000 B in 2.0 s, 500 B/s)\n"
    assert fake.requests == [
        ("GET", EVENTS, None),  # subscribed first,
        ("POST", "/api/push", {"peer": "b", "path": str(path)}),  # then started,
        ("GET", "/api/transfers/t1", None),  # read once; the rest came as events
    ]


def test_send_polls_a_node_without_an_event_stream(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    fake.sse = False
    path = shared_file(tmp_path)
    code, out, err = run(capsys, "--api", url, "send", "b", str(path))
    assert (code, out, err) == (0, "sent f.bin to b (1000 B in 2.0 s, 500 B/s)\n", "")
    assert fake.requests[1] == ("POST", "/api/push", {"peer": "b", "path": str(path)})
    polls = [r[1] for r in fake.requests if r[0] == "GET"]
    assert polls == [EVENTS] + ["/api/transfers/t1"] * 2, "a 404, then polled until done"


def test_send_makes_paths_absolute_and_several_files_are_one_batch(
    api: tuple[FakeApi, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several plain files are one push of `paths` (one batch: one decision at the receiver);
    before, each was a push of its own."""
    fake, url = api
    shared_file(tmp_path, "a.bin")
    shared_file(tmp_path, "c.bin")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "--api", url, "--json", "send", "b", "a.bin", "./c.bin")
    assert code == 0
    pushes = [r[2] for r in fake.requests if r[0] == "POST"]
    paths = [str(tmp_path / "a.bin"), str(tmp_path / "c.bin")]
    assert pushes == [{"peer": "b", "paths": paths, "links": "refuse"}]
    final = json.loads(out)
    assert [(t["name"], t["kind"], t["state"]) for t in final] == [("a.bin", "batch", "done")]


def test_send_missing_file_is_checked_before_asking_the_node(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    ok = shared_file(tmp_path)
    code, out, err = run(capsys, "--api", url, "send", "b", str(ok), "nope.bin")
    assert (code, out, err) == (1, "", "mole: file missing: nope.bin\n")
    assert fake.requests == []


def test_send_absolute_path_only_the_node_has_is_left_to_the_node(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A node in a container (the compose demo) shares /data/share, which this host lacks."""
    fake, url = api
    theirs = "/nonexistent-mole-dir/share/hello.txt"
    code, out, err = run(capsys, "--api", url, "send", "b", theirs)
    assert (code, out, err) == (0, "sent hello.txt to b (1000 B in 2.0 s, 500 B/s)\n", "")
    assert posts(fake) == [("POST", "/api/push", {"peer": "b", "path": theirs})]
    # ... and a relative path is still refused here before anything starts (a directory is
    # a batch now: tests/node/test_batch.py)
    for bad in ("nope.bin",):
        fake.requests.clear()
        assert run(capsys, "--api", url, "send", "b", bad) == (
            1,
            "",
            f"mole: file missing: {bad}\n",
        )
        assert fake.requests == []


def test_send_file_missing_on_the_node(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, url = api
    path = shared_file(tmp_path, "gone.bin")
    assert run(capsys, "--api", url, "send", "b", str(path)) == (
        1,
        "",
        f"mole: file missing: {path}\n",
    )


def test_send_unknown_peer(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, url = api
    path = shared_file(tmp_path)
    assert run(capsys, "--api", url, "send", "zz", str(path)) == (1, "", "mole: peer unknown: zz\n")


def test_send_hash_mismatch(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    fake.script = [
        {"state": "active", "bytes": 900},
        {"state": "failed", "error": {"code": "hash_mismatch", "reason": "got 00"}},
    ]
    path = shared_file(tmp_path)
    assert run(capsys, "--api", url, "send", "b", str(path)) == (
        1,
        "",
        "mole: hash mismatch: f.bin\n",
    )


def test_get_waits_and_reports_the_path(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = api
    code, out, err = run(capsys, "--api", url, "get", "b", "doc.txt")
    assert (code, err) == (0, "")
    assert out == "received doc.txt from b as doc (1).txt (1000 B in 2.0 s, 500 B/s)\n"
    assert posts(fake) == [("POST", "/api/pull", {"peer": "b", "name": "doc.txt"})]


def test_get_of_several_names_is_one_batch_pull(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Several names are one pull of `names` (one batch); a DIR/ stays its own batch."""
    fake, url = api
    code, out, err = run(capsys, "--api", url, "--json", "get", "b", "a.txt", "d/", "c.txt")
    assert (code, err) == (0, ""), err
    assert posts(fake) == [
        ("POST", "/api/pull", {"peer": "b", "prefix": "d/"}),
        ("POST", "/api/pull", {"peer": "b", "names": ["a.txt", "c.txt"]}),
    ]
    assert [t.get("kind") for t in json.loads(out)] == [None, "batch"]


def test_get_file_missing_on_the_peer(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = api
    fake.script = [{"state": "failed", "error": {"code": "not_found", "reason": "no such file"}}]
    assert run(capsys, "--api", url, "get", "b", "nope.txt") == (
        1,
        "",
        "mole: file missing: nope.txt\n",
    )


def test_no_wait_returns_at_once(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    path = shared_file(tmp_path)
    code, out, _ = run(capsys, "--api", url, "send", "b", str(path), "--no-wait", "--json")
    assert code == 0
    assert [t["state"] for t in json.loads(out)] == ["queued"]
    assert [r[0] for r in fake.requests] == ["POST"]


def test_wait_timeout(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    fake.script = [{"state": "active"}]  # never finishes
    path = shared_file(tmp_path)
    code, out, err = run(capsys, "--api", url, "--timeout", "0.05", "send", "b", str(path))
    assert (code, out) == (1, "")
    assert err == "mole: timed out after 0.05 s waiting for f.bin\n"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(
    api: tuple[FakeApi, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url = api
    tty = Tty()
    monkeypatch.setattr(cli.sys, "stderr", tty)
    path = shared_file(tmp_path)
    code, out, _ = run(capsys, "--api", url, "send", "b", str(path))
    assert code == 0
    drawn = tty.getvalue()
    assert "\n" not in drawn, "one line, redrawn in place"
    frames = [f.removesuffix("\x1b[K") for f in drawn.split("\r") if f]
    assert frames[0].startswith("f.bin [") and "0% 0 B/1000 B queued" in frames[0]
    assert "50% 500 B/1000 B 250 B/s ETA 0:02" in frames[1]
    assert drawn.endswith("\r\x1b[K"), "the bar is cleared at the end"
    assert out.startswith("sent f.bin")


# -- the node is not there, or refuses us ------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("argv", [["peers"], ["transfers", "--json"], ["get", "b", "x"]])
def test_node_not_running(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert run(capsys, "--api", url, *argv) == (3, "", f"mole: node not running at {url}\n")


@pytest.mark.parametrize("token", [None, "wrong"])
def test_unauthorized(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], token: str | None
) -> None:
    fake, url = api
    fake.token = "s3cret"
    argv = ["--api", url, "peers", *(["--token", token] if token else [])]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    if token:
        assert err == (
            f"mole: unauthorized: the node at {url} refused the token from --token: "
            "pass its token with --token\n"
        )
    else:
        state = os.environ["MOLE_STATE"]
        assert err == (
            f"mole: unauthorized: the node at {url} wants its API token: pass --token or set "
            "MOLE_API_TOKEN, or point --state at the node's state directory "
            f"(no api_token in {state})\n"
        )


def test_token_from_option_and_environment(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = api
    fake.token = "s3cret"
    assert run(capsys, "--api", url, "--token", "s3cret", "peers")[0] == 0
    monkeypatch.setenv("MOLE_API_TOKEN", "s3cret")
    assert run(capsys, "--api", url, "peers")[0] == 0


@pytest.mark.parametrize(
    "argv",
    [[], ["send", "b"], ["bogus"], ["--timeout", "-1", "peers"], ["--api", "ftp://x", "peers"]],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.splitlines()[-1].startswith("mole: ")


# -- formatting helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (10 << 20, "10.0 MiB")],
)
def test_human_size(n: int, text: str) -> None:
    assert cliview.human_size(n) == text


def test_progress_line_fits_the_terminal() -> None:
    t = transfer(
        "t1",
        name="a-very-long-file-name-" * 5,
        size=10 << 20,
        bytes=5 << 20,
        rate=1 << 20,
        state="active",
    )
    line = cliview.progress_line(t, 80, "[2/3]")
    assert 70 < len(line) < 80
    assert line.startswith("[2/3] a-very-")
    assert line.endswith(" 50% 5.0 MiB/10.0 MiB 1.0 MiB/s ETA 0:05")
    assert "…" in line


def test_transfer_error_messages() -> None:
    failed = transfer("t1", state="failed", error={"code": "policy", "reason": "no pushes"})
    assert cliview.transfer_error(failed) == "refused by b: f.bin (no pushes)"
    odd = transfer("t1", state="failed", error={"code": "weird", "reason": "a\nb"})
    assert cliview.transfer_error(odd) == "transfer failed: f.bin: weird: a b"
    batch = {**failed, "kind": "batch", "files": 3}  # named by its first path only
    assert cliview.transfer_error(batch) == "refused by b: f.bin (batch of 3 files) (no pushes)"
    lacking = [{"path": f"x{i}", "code": "not_found", "reason": "-"} for i in range(5)]
    skipped = {"path": "link", "code": "skipped", "reason": "symlink"}
    batch.update(missing=[skipped, *lacking], error={"code": "not_found", "reason": "-"})
    assert cliview.transfer_error(batch) == "file missing: x0, x1, x2 and 2 more"


def test_node_that_never_answers(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()  # connections complete in the backlog; nobody ever reads them
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        code, out, err = run(capsys, "--api", url, "--timeout", "1", "peers")
    assert (code, out) == (1, "")
    assert err == f"mole: no answer from the node at {url} within 1 s\n"


def test_serve_help_shows_defaults_but_never_the_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLE_API_TOKEN", "s3cret-token")
    code, out, _ = run(capsys, "serve", "--help")
    out = " ".join(out.split())  # argparse wraps lines
    assert code == 0
    assert "transfer TCP port (default: 47101)" in out
    assert "(default: 127.0.0.1:47102)" in out
    assert "s3cret-token" not in out


def test_done_lines_say_where_the_file_is() -> None:
    from node.cliview import done_line

    sent = transfer("t1", state="done", path="f.bin", finished=NOW + 2, sent=1000)
    assert done_line(sent) == "sent f.bin to b (1000 B in 2.0 s, 500 B/s)"
    renamed = {**sent, "path": "f (1).bin"}
    assert done_line(renamed) == "sent f.bin to b as f (1).bin (1000 B in 2.0 s, 500 B/s)"
    held = {**sent, "name": ".gitkeep", "path": ".gitkeep", "skipped": True}
    assert done_line(held) == ".gitkeep: already held on b, now as .gitkeep (no bytes sent)"


# -- following transfers on the event stream ------------------------------------------------------


def test_send_resumes_a_dropped_stream_with_last_event_id(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    fake.buf.plan = [(1, False)]  # the stream drops after transfer_started
    code, out, err = run(capsys, "--api", url, "send", "b", str(shared_file(tmp_path)))
    assert (code, out, err) == (0, "sent f.bin to b (1000 B in 2.0 s, 500 B/s)\n", "")
    first, second = fake.buf.connections
    assert first.sent == ["transfer_started"]
    assert second.headers["Last-Event-ID"] == f"{fake.buf.boot}-1"
    assert second.sent == ["transfer_progress", "transfer_done"], "the rest, once"
    assert [r[1] for r in fake.requests].count("/api/transfers/t1") == 1, "no polling"


def test_get_reads_its_transfer_again_after_a_reset(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = api
    fake.restart_in_play = True  # the node restarts: the client's last id is from another boot
    code, out, err = run(capsys, "--api", url, "get", "b", "doc.txt")
    assert (code, err) == (0, "")
    assert out == "received doc.txt from b as doc (1).txt (1000 B in 2.0 s, 500 B/s)\n"
    assert fake.buf.connections[1].sent[0] == "reset"
    reads = [r for r in fake.requests if r[1] == "/api/transfers/t1"]
    assert len(reads) == 2, "read once after subscribing, once after the reset"


def test_a_transfer_that_ended_before_its_events_is_caught_by_the_read(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    fake.finish_silently = True  # no event of this transfer ever reaches the stream
    code, out, _ = run(capsys, "--api", url, "send", "b", str(shared_file(tmp_path)))
    assert (code, out) == (0, "sent f.bin to b (1000 B in 2.0 s, 500 B/s)\n")


def test_events_of_other_transfers_are_ignored(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    fake.buf.on_subscribe.append(
        lambda conn: fake.buf.emit("transfer_failed", **transfer("t9", state="failed"))
    )
    code, out, _ = run(capsys, "--api", url, "send", "b", str(shared_file(tmp_path)))
    assert (code, out) == (0, "sent f.bin to b (1000 B in 2.0 s, 500 B/s)\n")


def test_failed_transfer_from_events(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = api
    fake.script = [
        {"state": "retrying", "bytes": 10},
        {"state": "failed", "error": {"code": "no_space", "reason": "disk full"}},
    ]
    code, out, err = run(capsys, "--api", url, "get", "b", "big.iso")
    assert (code, out, err) == (1, "", "mole: no space left: big.iso (disk full)\n")


# -- watch -----------------------------------------------------------------------------------------


REAL_NEXT_EVENT = cli.Client.next_event


def interrupt_after(
    monkeypatch: pytest.MonkeyPatch, n: int, after: Callable[[int], None] | None = None
) -> None:
    """Ctrl-C once `mole watch` has taken n events; `after(i)` runs after the i-th (1-based)."""
    real = REAL_NEXT_EVENT  # not a wrapper left by an earlier call in the same test
    taken = 0

    def next_event(self: cli.Client, stream: Any) -> Any:
        nonlocal taken
        if taken == n:
            raise KeyboardInterrupt
        ev = real(self, stream)
        taken += 1
        if after is not None:
            after(taken)
        return ev

    monkeypatch.setattr(cli.Client, "next_event", next_event)


def clock(seq: int) -> str:
    """The time `watch` shows for the fake's event number seq (the fake's ts, local time)."""
    return time.strftime("%H:%M:%S", time.localtime(1_700_000_000.0 + seq))


def test_watch_prints_a_line_per_event_until_ctrl_c(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = api
    c = "c" * 32

    def play(conn: Any) -> None:
        b = fake.buf
        b.emit("listening", name="a", tcp_port=47101, api="http://127.0.0.1:47102")
        b.emit(
            "peer_up", peer=c, peer_name="nas", addr="10.0.0.2", port=47101, groups=["lab"],
            static=False,
        )  # fmt: skip
        b.emit("transfer_started", **transfer("t1"))
        b.emit("transfer_progress", id="t1", name="f.bin", bytes=500, size=1000, rate=250.0)
        b.emit("transfer_retry", id="t1", code="timeout", reason="silent", attempt=2, delay=1.0)
        done = transfer("t1", state="done", bytes=1000, sent=1000, finished=NOW + 2, path="f.bin")
        b.emit("transfer_done", seconds=2.0, **done)
        b.emit("peer_down", peer=c, reason="expired")
        b.emit("warning", message="disk almost full")
        b.emit("something_new", count=3, what="x")

    fake.buf.on_subscribe.append(play)
    interrupt_after(monkeypatch, 9)
    code, out, err = run(capsys, "--api", url, "watch")
    assert (code, err) == (0, ""), "Ctrl-C is how watch ends"
    assert out.splitlines() == [
        f"{clock(1)} listening  a listening (tcp 47101, api http://127.0.0.1:47102)",
        f"{clock(2)} peer_up  nas at 10.0.0.2:47101 (lab)",
        f"{clock(3)} transfer_started  f.bin to b (1000 B) [t1]",
        f"{clock(4)} transfer_progress  f.bin  50% 500 B/1000 B 250 B/s [t1]",
        f"{clock(5)} transfer_retry  attempt 2 failed (timeout: silent); retrying in 1.0 s [t1]",
        f"{clock(6)} transfer_done  sent f.bin to b (1000 B in 2.0 s, 500 B/s) [t1]",
        f"{clock(7)} peer_down  nas (expired)",
        f"{clock(8)} warning  disk almost full",
        f'{clock(9)} something_new  count=3 what="x"',
    ]
    assert fake.buf.connections[0].path == "/api/events"


def test_watch_json_of_some_types(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = api
    fake.buf.on_subscribe.append(lambda conn: fake.buf.emit("peer_up", peer="p", peer_name="é"))
    interrupt_after(monkeypatch, 1)
    code, out, _ = run(capsys, "--api", url, "watch", "--json", "--type", "peer_up", "--type", "x")
    assert code == 0
    assert fake.buf.connections[0].path == "/api/events?types=peer_up,x"
    assert out == (
        '{"ts":1700000001.0,"event":"peer_up","node":"' + "n" * 32 + '","peer":"p",'
        '"peer_name":"é"}\n'
    )


def test_watch_reconnects_where_it_left_off(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = api
    fake.buf.plan = [(1, False)]
    fake.buf.on_subscribe.append(
        lambda conn: (
            [fake.buf.emit("warning", message=f"w{i}") for i in range(3)]
            if len(fake.buf.connections) == 1
            else None
        )
    )
    interrupt_after(monkeypatch, 3)
    code, out, err = run(capsys, "--api", url, "watch")
    assert code == 0
    assert [line.split("  ")[1] for line in out.splitlines()] == ["w0", "w1", "w2"]
    assert err == (
        "mole: lost the event stream (ConnectionResetError: the node closed the event stream); "
        "reconnecting\n"
    )
    assert fake.buf.connections[1].headers["Last-Event-ID"] == f"{fake.buf.boot}-1"


def test_watch_says_when_events_were_missed(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = api
    fake.buf.on_subscribe.append(
        lambda conn: (
            fake.buf.emit("warning", message="before") if len(fake.buf.connections) == 1 else None
        )
    )

    def restart(i: int) -> None:
        if i == 1:
            fake.buf.restart()  # the node restarts (ends the stream) and says something new
            fake.buf.emit("warning", message="after")

    interrupt_after(monkeypatch, 3, restart)
    code, out, _ = run(capsys, "--api", url, "watch")
    assert code == 0
    assert [line.split(" ", 1)[1] for line in out.splitlines()] == [
        "warning  before",
        "reset  the stream started over (the node restarted): events may have been missed",
        "warning  after",
    ]


def test_watch_a_node_without_an_event_stream(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = api
    fake.sse = False
    assert run(capsys, "--api", url, "watch") == (
        1,
        "",
        f"mole: the node at {url} has no event stream (GET /api/events)\n",
    )


def test_watch_node_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert run(capsys, "--api", url, "watch") == (3, "", f"mole: node not running at {url}\n")


def test_watch_needs_the_token_too(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = api
    fake.token = "s3cret"
    code, _, err = run(capsys, "--api", url, "watch")
    assert code == 1 and err.startswith(f"mole: unauthorized: the node at {url} wants its API")


# -- the token file --------------------------------------------------------------------------------


def test_token_from_the_node_state_directory(
    api: tuple[FakeApi, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = api
    fake.token = "s3cret"
    state = Path(os.environ["MOLE_STATE"])
    (state / "api_token").write_text("s3cret\n")
    assert run(capsys, "--api", url, "peers")[0] == 0
    other = tmp_path / "other-state"
    other.mkdir()
    (other / "api_token").write_text("stale")
    code, _, err = run(capsys, "--api", url, "peers", "--state", str(other))
    assert code == 1
    assert err == (
        f"mole: unauthorized: the node at {url} refused the token from {other / 'api_token'}: "
        "pass its token with --token\n"
    )
    monkeypatch.setenv("MOLE_API_TOKEN", "s3cret")  # the environment comes before the file
    assert run(capsys, "--api", url, "peers", "--state", str(other))[0] == 0


def test_an_unreadable_token_file_is_named(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, url = api
    fake.token = "s3cret"
    (tmp_path / "api_token").write_text("")
    code, _, err = run(capsys, "--api", url, "--state", str(tmp_path), "peers")
    assert code == 1
    assert err.endswith(
        f"({tmp_path / 'api_token'}: it does not hold a token (one line, no spaces))\n"
    )


# -- what peers control is shown, never obeyed ----------------------------------------------------

# OSC 52 (write the clipboard), CSI 2J (clear the screen), C1 CSI, and RLO (reversed text).
EVIL = "x\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b31m\u202egpj"
SHOWN = "x\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x9b31m\\u202egpj"


JSON_SHOWN = safe_json(json.dumps(EVIL, ensure_ascii=False))[1:-1]  # "x\\u001b]52;..."


def inert(text: str) -> bool:
    return UNSAFE.search(text.replace("\n", "")) is None


def test_escape_sequences_from_peers_are_shown_not_obeyed(
    api: tuple[FakeApi, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = api
    fake.peers = [{**PEER_B, "name": EVIL, "groups": [EVIL]}]
    fake.files = [{**FILE, "name": EVIL}]
    fake.transfers = {
        "t1": [
            transfer(
                "t1", name=EVIL, peer_name=EVIL, state="failed",
                error={"code": EVIL, "reason": EVIL},
            )
        ]
    }  # fmt: skip
    printed: list[str] = []
    for argv in (
        ["peers"], ["peers", "--json"], ["ls"], ["ls", "--json"], ["inbox"], ["transfers"],
        ["transfers", "--json"], ["cancel", "t1"], ["cancel", "--json", "t1"], ["ls", EVIL],
    ):  # fmt: skip
        code, out, err = run(capsys, "--api", url, *argv)
        printed += [out, err]
        assert (JSON_SHOWN if "--json" in argv else SHOWN) in out + err, argv
    assert json.loads(run(capsys, "--api", url, "peers", "--json")[1])[0]["name"] == EVIL

    # send: the progress line on a terminal, then the done line
    fake.extra = {"peer_name": EVIL}
    tty, captured = Tty(), sys.stderr
    monkeypatch.setattr(cli.sys, "stderr", tty)
    evil_file = tmp_path / EVIL
    evil_file.write_bytes(b"x" * 1000)
    code, out, _ = run(capsys, "--api", url, "send", "b", str(evil_file))
    assert code == 0 and out.startswith(f"sent {SHOWN} to {SHOWN} (")
    drawn = tty.getvalue().replace("\r", "").replace("\x1b[K", "")  # our own redraw codes
    assert "x\\x1b]52;c;" in drawn, "the name, escaped (and shortened to fit the terminal)"
    printed += [out, drawn]
    monkeypatch.setattr(cli.sys, "stderr", captured)

    # errors: a transfer's reason, the node's message
    fake.script = [{"state": "failed", "error": {"code": "policy", "reason": EVIL}}]
    code, out, err = run(capsys, "--api", url, "get", "b", EVIL)
    assert (code, err) == (1, f"mole: refused by {SHOWN}: {SHOWN} ({SHOWN})\n")
    printed.append(err)
    fake.fail_start = (502, {"error": "peer_error", "message": f"policy: {EVIL}"})
    code, out, err = run(capsys, "--api", url, "get", "b", "f")
    assert (code, err) == (1, f"mole: peer error: policy: {SHOWN}\n")
    printed.append(err)

    # watch, readable and JSON
    fake.fail_start = None
    fake.buf.on_subscribe.append(
        lambda conn: fake.buf.emit("peer_up", peer="c" * 32, peer_name=EVIL, addr=EVIL, port=1)
    )
    for json_flag in ([], ["--json"]):
        interrupt_after(monkeypatch, 1)
        code, out, err = run(capsys, "--api", url, "watch", *json_flag)
        assert code == 0 and (JSON_SHOWN if json_flag else SHOWN) in out
        printed += [out, err]
    assert all(inert(text) for text in printed), [t for t in printed if not inert(t)]


def test_tables_stay_aligned_with_escaped_names(
    api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = api
    fake.files = [{**FILE, "name": "a\x1bb"}, {**FILE, "name": "plain"}]
    _, out, _ = run(capsys, "--api", url, "ls")
    assert out.splitlines() == [
        "NAME       SIZE  SHA256",
        "a\\x1bb  3.0 MiB  abababababab",  # measured as shown, escape included
        "plain   3.0 MiB  abababababab",
    ]


def test_polling_a_batch_that_fell_back_says_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    """The poll of a node without an event stream (clifollow.wait_for) tells the fallback once,
    with the batch's file count, however many reads show it."""
    from node import clifollow

    reads = [
        {"id": "b1", "peer_name": "old", "state": "active", "files": 6, "fallback": ["k1", "k2"]},
        {"id": "b1", "peer_name": "old", "state": "active", "files": 6, "fallback": ["k1", "k2"]},
        {"id": "b1", "peer_name": "old", "state": "done", "files": 6, "fallback": ["k1", "k2"]},
    ]

    class Polled:
        def get(self, path: str) -> dict[str, object]:
            assert path == "/api/transfers/b1"
            return reads.pop(0)

    start = {"id": "b1", "state": "connecting", "files": 6, "fallback": None}
    final = clifollow.wait_for(Polled(), [start], None, None, sleep=lambda s: None)  # type: ignore[arg-type]
    assert final[0]["state"] == "done" and reads == []
    err = capsys.readouterr().err
    assert err.count("does not speak batches") == 1, err
    assert "sending the 6 files one by one" in err, err
