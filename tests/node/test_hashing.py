"""Hashing for pushes and rescans: one pass per file, however both ask for it."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.app import Node
from node.config import Config
from node.events import EventLog
from node.store import HashJob

STEP = 1 << 20
SIZE = 3 * STEP + 5  # four steps of hashing


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.setattr("node.app.HASH_STEP", STEP)
    cfg = Config(
        name="t",
        share=tmp_path / "share",
        inbox=tmp_path / "inbox",
        state=tmp_path / "state",
        discovery=False,
        retries=0,
    )
    n = Node(cfg, events=EventLog("t", stream=io.StringIO()))
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
    node.rescan()
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
    node.rescan()  # queues the file: the cache does not know it yet
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
    node.rescan()
    queued = node.hash_jobs[0]
    data = os.urandom(SIZE + 1)
    path.write_bytes(data)  # other size: another file as far as hashing goes
    t = node.push("peer", str(path))
    job = node.pending_pushes[t.id][1]
    assert isinstance(job, HashJob) and job is not queued
    hash_all(node)
    assert t.sha256 == hashlib.sha256(data).hexdigest()
