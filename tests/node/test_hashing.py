"""Hashing for pushes and rescans: one pass per file, however both ask for it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.config import Config
from node.events import EventLog
from node.node import Node
from node.store import HashJob
from tests import tlspeer

STEP = 1 << 20
SIZE = 3 * STEP + 5  # four steps of hashing


def config(tmp_path: Path, **kw: Any) -> Config:
    """A node of its own in tmp_path: no discovery, no retries."""
    dirs = {d: tmp_path / d for d in ("share", "inbox", "state")}
    return Config(name="t", discovery=False, retries=0, **dirs, **kw)


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.setattr("node.hashqueue.HASH_STEP", STEP)
    n = Node(config(tmp_path), events=EventLog("t", stream=io.StringIO()))
    # A peer to push to; nothing listens there, and the loop never runs in these tests.
    n.peers.add_static("f" * 32, "peer", "127.0.0.1", 9, (), n.loop.time())
    try:
        yield n
    finally:
        n.loop.close()


def make(node: Node, name: str) -> tuple[Path, str]:
    data = os.urandom(SIZE)
    path = node.config.share / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def hash_all(node: Node) -> int:
    """Run _hash_step until nothing is left; returns how many steps it took."""
    turns = 0
    while node.pending_pushes or node.hash_jobs:
        node._hash_step()
        turns += 1
        assert turns < 1000, "hashing does not finish"
    return turns


def test_a_push_takes_over_the_rescan_job_for_its_file(node: Node) -> None:
    path, digest = make(node, "new.bin")
    node.share.rescan()
    assert [j.path for j in node.hash_jobs] == [path]
    node._hash_step()  # the rescan's job is under way ...
    started = node.hash_jobs[0].hashed
    assert 0 < started < SIZE
    t = node.push("peer", str(path))  # ... and the push continues it instead of starting over
    assert node.pending_pushes[t.id][1] is node.hash_jobs[0]
    turns = hash_all(node)
    assert turns == -(-(SIZE - started) // STEP) + 1  # the rest of the file, then the listing
    assert node.store.hashes_done == 1
    assert t.sha256 == digest
    assert node.shared["new.bin"].sha256 == digest  # the rescan's job still lists it


def test_a_rescan_during_a_push_does_not_hash_the_file_again(node: Node) -> None:
    path, digest = make(node, "new.bin")
    t = node.push("peer", str(path))
    node._hash_step()
    node.share.rescan()  # queues the file: the cache does not know it yet
    assert [j.path for j in node.hash_jobs] == [path]
    hash_all(node)
    assert node.store.hashes_done == 1
    assert t.sha256 == digest and node.shared["new.bin"].sha256 == digest


def test_two_pushes_of_one_new_file_share_one_pass(node: Node) -> None:
    path, digest = make(node, "new.bin")
    t1 = node.push("peer", str(path))
    t2 = node.push("peer", str(path))
    assert node.pending_pushes[t1.id][1] is node.pending_pushes[t2.id][1]
    hash_all(node)
    assert node.store.hashes_done == 1
    assert t1.sha256 == t2.sha256 == digest


def test_a_changed_file_is_not_taken_for_the_queued_one(node: Node) -> None:
    path, _ = make(node, "new.bin")
    node.share.rescan()
    queued = node.hash_jobs[0]
    data = os.urandom(SIZE + 1)
    path.write_bytes(data)  # other size: another file as far as hashing goes
    t = node.push("peer", str(path))
    job = node.pending_pushes[t.id][1]
    assert isinstance(job, HashJob) and job is not queued
    hash_all(node)
    assert t.sha256 == hashlib.sha256(data).hexdigest()


# -- hashing while sending: a push that waits for its own hash keeps the connection alive ----------


def _frame(header: dict[str, object]) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return len(raw).to_bytes(4, "big") + raw


class DigestPeer:
    """A receiver with the "digest" feature on a raw socket: takes one hash-less push, counts
    the empty data frames that arrive after the stream, and opens `gate` after the second."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.side = tlspeer.ServerSide("digest-peer")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.offer: dict[str, object] = {}
        self.received = hashlib.sha256()
        self.keepalives = 0
        self.digest: dict[str, object] = {}
        self.error: BaseException | None = None
        self._buf = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _frame(self, conn: socket.socket) -> tuple[dict[str, Any], bytes]:
        while True:
            if len(self._buf) >= 4:
                n = int.from_bytes(self._buf[:4], "big")
                if len(self._buf) >= 4 + n:
                    header = json.loads(self._buf[4 : 4 + n])
                    end = 4 + n + int(header.get("body", 0))
                    if len(self._buf) >= end:
                        body, self._buf = self._buf[4 + n : end], self._buf[end:]
                        return header, body
            chunk = conn.recv(1 << 20)
            if not chunk:
                raise EOFError(f"closed; held {self._buf[:200]!r}")
            self._buf += chunk

    def _run(self) -> None:
        try:
            raw, _ = self.sock.accept()
            raw.settimeout(20)
            conn, their = self.side.accept(raw)
            with conn:
                conn.sendall(self.side.hello(their, "fake", 0, ("resume", "digest")))
                self.offer = offer = self._frame(conn)[0]
                conn.sendall(_frame({"type": "accept", "id": offer["id"], "offset": 0}))
                got = 0
                while got < int(offer["size"]):
                    header, body = self._frame(conn)
                    assert header["type"] == "data", header
                    self.received.update(body)
                    got += len(body)
                while True:
                    header, body = self._frame(conn)
                    if header["type"] == "digest":
                        self.digest = header
                        break
                    assert header == {"type": "data", "body": 0}, header
                    self.keepalives += 1
                    if self.keepalives == 2:
                        self.gate.set()  # now the sender may finish hashing
                sha = self.received.hexdigest()
                verdict = {"type": "verdict", "id": offer["id"], "ok": sha == header["sha256"]}
                conn.sendall(_frame({**verdict, "sha256": sha, "name": "k.bin", "skipped": False}))
                with contextlib.suppress(OSError):
                    conn.recv(1)
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.gate.set()
        finally:
            self.sock.close()


def test_a_push_waiting_for_its_own_hash_sends_keepalives_then_the_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_step = HashJob.step

    def gated(self: HashJob, budget: int = 4 << 20) -> bool:
        return real_step(self, budget) if gate.is_set() else False  # held until the gate opens

    monkeypatch.setattr(HashJob, "step", gated)
    monkeypatch.setattr("node.sender.DIGEST_KEEPALIVE", 0.05)
    peer = DigestPeer(gate)
    events: list[dict[str, Any]] = []
    cfg = config(tmp_path, port=0, api_port=0)  # any free ports on this host
    n = Node(cfg, events=EventLog("t", stream=io.StringIO(), sink=events.append))
    try:
        n.start()
        n.peers.add_static(peer.side.node_id, "fake", "127.0.0.1", peer.port, (), n.loop.time())
        data = os.urandom(3 << 20)
        (n.config.share / "k.bin").write_bytes(data)
        t = n.push("fake", str(n.config.share / "k.bin"))
        n.loop.run(until=lambda: t.final, timeout=20)
    finally:
        n.loop.close()
        peer.thread.join(timeout=20)
    assert peer.error is None, peer.error
    assert t.state == "done", t.to_json()
    digest = hashlib.sha256(data).hexdigest()
    assert peer.offer["sha256"] is None and peer.keepalives >= 2
    assert peer.digest == {"type": "digest", "id": t.id, "sha256": digest}
    done = [e for e in events if e["event"] == "transfer_done"]
    assert len(done) == 1 and done[0]["sha256"] == digest, done
    assert done[0]["hashed_while_sending"] is True and done[0]["sent"] == len(data)
