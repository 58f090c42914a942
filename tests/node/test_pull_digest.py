"""Cold pulls ("pull-digest"): a never-hashed file streams while the server hashes it, and the
client places nothing before the server's digest matches what it received."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from node.config import Config
from node.events import EventLog
from node.groups import Group
from node.node import Node
from node.store import HashJob
from tests import junkflood, tlspeer
from tests.node.test_hashing import _frame, config
from tests.nodeproc import TEST_GROUP_SECRET, about, nodes, wait_mesh

FEATURES = ("resume", "digest", "pull-digest")


class Wire:
    """Frames over a raw blocking socket (the fake peer's side)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.buf = b""

    def frame(self) -> tuple[dict[str, Any], bytes]:
        while True:
            if len(self.buf) >= 4:
                n = int.from_bytes(self.buf[:4], "big")
                if len(self.buf) >= 4 + n:
                    header = json.loads(self.buf[4 : 4 + n])
                    end = 4 + n + int(header.get("body", 0))
                    if len(self.buf) >= end:
                        body, self.buf = self.buf[4 + n : end], self.buf[end:]
                        return header, body
            chunk = self.conn.recv(1 << 20)
            if not chunk:
                raise EOFError(f"closed; held {self.buf[:200]!r}")
            self.buf += chunk

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        self.conn.sendall(_frame(header) + body)


class Puller:
    """A client on a raw socket: hello with `features`, `get` of `name`; records what comes."""

    def __init__(self, port: int, name: str, features: list[str]) -> None:
        self.port, self.name, self.features = port, name, features
        self.file: dict[str, Any] = {}
        self.reject: dict[str, Any] = {}
        self.received = hashlib.sha256()
        self.keepalives = 0
        self.digest: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with tlspeer.connect(("127.0.0.1", self.port)) as conn:
                w = Wire(conn)
                conn.sendall(junkflood.hello("puller", "puller", 0, tuple(self.features)))
                assert w.frame()[0]["type"] == "hello"
                w.send({"type": "get", "id": "p1", "name": self.name, "offset": 0})
                header, _ = w.frame()
                if header["type"] == "reject":
                    self.reject = header
                    return
                self.file = header
                got = 0
                while got < int(header["size"]):
                    data, body = w.frame()
                    assert data["type"] == "data", data
                    self.received.update(body)
                    got += len(body)
                while True:
                    header, _ = w.frame()
                    if header["type"] == "digest":
                        self.digest = header
                        break
                    assert header == {"type": "data", "body": 0}, header
                    self.keepalives += 1
                sha = self.received.hexdigest()
                ok = sha == self.digest["sha256"]
                verdict = {"type": "verdict", "id": "p1", "ok": ok, "sha256": sha}
                w.send({**verdict, "name": self.name, "skipped": False})
                with contextlib.suppress(OSError):
                    conn.recv(1)
        except BaseException as exc:  # reported by the test
            self.error = exc


def serving_node(tmp_path: Path, sink: list[dict[str, Any]]) -> Node:
    n = Node(
        # in the test run's group, which the raw pullers (tests/tlspeer.py) prove
        config(tmp_path, port=0, api_port=0, groups=(Group.make("test", TEST_GROUP_SECRET),)),
        events=EventLog("t", stream=io.StringIO(), sink=sink.append),
    )
    n.start()
    return n


def test_a_never_hashed_file_streams_at_once_and_the_digest_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash is held back until the whole stream is out: the data cannot have waited for
    it, keepalives cover the wait, and the digest is that of the bytes streamed."""
    release = threading.Event()
    real_step = HashJob.step

    def gated(self: HashJob, budget: int = 4 << 20) -> bool:
        return real_step(self, budget) if release.is_set() else False

    monkeypatch.setattr(HashJob, "step", gated)
    monkeypatch.setattr("node.sender.DIGEST_KEEPALIVE", 0.05)
    events: list[dict[str, Any]] = []
    n = serving_node(tmp_path, events)
    data = os.urandom(3 << 20)
    (n.config.share / "cold.bin").write_bytes(data)
    try:
        puller = Puller(n.tcp_port, "cold.bin", ["resume", "digest", "pull-digest"])
        # Two keepalives after the stream, then let the hash finish.
        n.loop.run(until=lambda: puller.keepalives >= 2 or not puller.thread.is_alive(), timeout=20)
        release.set()
        n.loop.run(until=lambda: not puller.thread.is_alive(), timeout=20)
    finally:
        n.loop.close()
        puller.thread.join(timeout=20)
    assert puller.error is None, puller.error
    sha = hashlib.sha256(data).hexdigest()
    assert puller.file["sha256"] is None and puller.file["offset"] == 0
    assert puller.file["size"] == len(data) and puller.received.hexdigest() == sha
    assert puller.keepalives >= 2
    assert puller.digest == {"type": "digest", "id": "p1", "sha256": sha}
    done = [e for e in events if e["event"] == "transfer_done" and e["direction"] == "pull"]
    assert len(done) == 1 and done[0]["sha256"] == sha and done[0]["role"] == "send", done


def test_a_client_without_the_feature_is_told_busy_until_the_file_is_hashed(
    tmp_path: Path,
) -> None:
    n = serving_node(tmp_path, [])
    (n.config.share / "cold.bin").write_bytes(os.urandom(1 << 20))
    try:
        puller = Puller(n.tcp_port, "cold.bin", ["resume", "digest"])
        n.loop.run(until=lambda: not puller.thread.is_alive(), timeout=20)
    finally:
        n.loop.close()
        puller.thread.join(timeout=20)
    assert puller.error is None, puller.error
    assert not puller.file and puller.reject["code"] in ("busy", "not_found"), puller.reject


class LiarServer:
    """A server on a raw socket that streams a hash-less file and then sends a digest of
    other content; records the client's verdict."""

    def __init__(self, data: bytes, digest: str) -> None:
        self.data, self.claim = data, digest
        self.side = tlspeer.ServerSide("liar")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.verdict: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            raw, _ = self.sock.accept()
            raw.settimeout(20)
            conn, hello = self.side.accept(raw)
            with conn:
                w = Wire(conn)
                assert "pull-digest" in hello["features"], hello
                conn.sendall(self.side.hello(hello, "fake", 0, FEATURES))
                get = w.frame()[0]
                assert get["type"] == "get", get
                info = {"name": get["name"], "size": len(self.data), "sha256": None}
                w.send(
                    {"type": "file", "id": get["id"], **info, "mtime": 1.0, "mime": "", "offset": 0}
                )
                w.send({"type": "data", "body": len(self.data)}, self.data)
                w.send({"type": "digest", "id": get["id"], "sha256": self.claim})
                self.verdict = w.frame()[0]
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.sock.close()


@pytest.mark.parametrize("lie", ["other content", "right content"])
def test_the_client_places_nothing_unless_the_digest_matches(tmp_path: Path, lie: str) -> None:
    data = os.urandom(1 << 20)
    right = hashlib.sha256(data).hexdigest()
    claim = hashlib.sha256(b"other").hexdigest() if lie == "other content" else right
    server = LiarServer(data, claim)
    events: list[dict[str, Any]] = []
    n = serving_node(tmp_path, events)
    try:
        n.peers.add_static(server.side.node_id, "fake", "127.0.0.1", server.port, (), n.loop.time())
        t = n.pull("fake", "x.bin", None)
        n.loop.run(until=lambda: t.final, timeout=20)
        n.loop.run(until=lambda: not server.thread.is_alive(), timeout=5)
    finally:
        n.loop.close()
        server.thread.join(timeout=20)
    assert server.error is None, server.error
    inbox = [p.name for p in n.config.inbox.iterdir() if not p.name.startswith(".")]
    if lie == "other content":
        assert t.state == "failed" and t.error is not None and t.error["code"] == "hash_mismatch"
        assert server.verdict["ok"] is False and server.verdict["code"] == "hash_mismatch"
        assert inbox == []  # nothing placed
        parts = n.config.inbox / ".mole" / "parts"
        assert not any(parts.glob("*.part")) if parts.exists() else True  # and nothing kept
    else:
        assert t.state == "done", t.to_json()
        assert server.verdict["ok"] is True and server.verdict["sha256"] == right
        assert inbox == ["x.bin"] and (n.config.inbox / "x.bin").read_bytes() == data


def test_a_cold_pull_between_two_nodes(tmp_path: Path) -> None:
    """Real processes: b pulls a file a has never hashed; it arrives verified, and a streamed
    it hash-less (its record had no sha256 when the stream started)."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        data = os.urandom(5 << 20)
        (a.share / "fresh.bin").write_bytes(data)
        t = b.api("POST", "/api/pull", {"peer": "a", "name": "fresh.bin"})
        done = b.wait_event(
            lambda e: e["event"] in ("transfer_done", "transfer_failed") and about(e, t["id"]),
            timeout=30,
            what="the pull's end",
        )
        assert done["event"] == "transfer_done", done
        assert done["sha256"] == hashlib.sha256(data).hexdigest()
        assert (b.inbox / "fresh.bin").read_bytes() == data
        started = a.wait_event(
            lambda e: e["event"] == "transfer_started" and about(e, t["id"]), what="a's record"
        )
        assert started["sha256"] is None and started["role"] == "send", started


def test_a_capped_stream_is_read_as_it_comes_not_held_for_the_low_water_mark(
    tmp_path: Path,
) -> None:
    """The receiver asks to be woken per STREAM_LOWAT bytes; a sender capped far below that per
    idle timeout must still be read as it trickles (a stalled look drops the mark to 1), or
    the receiver would time the stream out as idle."""
    with nodes(tmp_path, ["a", "b"], "--max-rate", "64KiB", "--idle-timeout", "2") as (a, b):
        wait_mesh([a, b])
        data = os.urandom(320 << 10)  # 5 s at the cap; under STREAM_LOWAT
        (a.share / "slow.bin").write_bytes(data)
        t = a.api("POST", "/api/push", {"peer": "b", "path": str(a.share / "slow.bin")})
        done = b.wait_event(
            lambda e: e["event"] in ("transfer_done", "transfer_failed") and about(e, t["id"]),
            timeout=30,
            what="the push's end",
        )
        assert done["event"] == "transfer_done", done
        assert (b.inbox / "slow.bin").read_bytes() == data


class ChangingServer:
    """A server on a raw socket: the first `get` is streamed hash-less, then ended with `error`
    `source_changed` (its file changed while it was sent); the second is served with the
    file's sha256."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.side = tlspeer.ServerSide("changing")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.gets: list[dict[str, Any]] = []
        self.verdict: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve(self, attempt: int) -> None:
        raw, _ = self.sock.accept()
        raw.settimeout(20)
        conn, hello = self.side.accept(raw)
        with conn:
            w = Wire(conn)
            conn.sendall(self.side.hello(hello, "fake", 0, FEATURES))
            get = w.frame()[0]
            self.gets.append(get)
            sha = None if attempt == 0 else hashlib.sha256(self.data).hexdigest()
            info = {"name": get["name"], "size": len(self.data), "sha256": sha, "mtime": 1.0}
            w.send({"type": "file", "id": get["id"], **info, "mime": "", "offset": 0})
            half = len(self.data) // 2
            if attempt == 0:
                w.send({"type": "data", "body": half}, self.data[:half])
                w.send({"type": "error", "code": "source_changed", "reason": "it changed"})
                with contextlib.suppress(OSError):
                    conn.recv(1)
                return
            w.send({"type": "data", "body": len(self.data)}, self.data)
            self.verdict = w.frame()[0]

    def _run(self) -> None:
        try:
            self._serve(0)
            self._serve(1)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.sock.close()


def test_a_pull_whose_source_changed_while_streamed_is_asked_again(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    server = ChangingServer(data)
    dirs = {d: tmp_path / d for d in ("share", "inbox", "state")}
    cfg = Config(name="t", discovery=False, port=0, api_port=0, retry_backoff=0.05, **dirs)
    n = Node(cfg, events=EventLog("t", stream=io.StringIO()))
    n.start()
    try:
        n.peers.add_static(server.side.node_id, "fake", "127.0.0.1", server.port, (), n.loop.time())
        t = n.pull("fake", "x.bin", None)
        n.loop.run(until=lambda: t.final, timeout=20)
    finally:
        n.loop.close()
        server.thread.join(timeout=20)
    assert server.error is None, server.error
    assert t.state == "done", t.to_json()
    assert [g["offset"] for g in server.gets] == [0, 0]  # the changed half was not resumed
    assert server.verdict["ok"] is True
    assert (n.config.inbox / "x.bin").read_bytes() == data
