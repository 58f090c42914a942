"""BatchSink in process (node/batchio.py): small files gathered whole and placed by the store
(verified first), larger or resumed ones through the usual `.part` receive."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from node.batchio import BatchSink
from node.batchmsg import Batch, BFile, Entry
from node.store import FileMeta, Store
from node.store.whole import WHOLE_MAX

PEER = "0123456789abcdef0123456789abcdef"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeConn:
    def __init__(self, store: Store) -> None:
        self.node = SimpleNamespace(store=store, loop=SimpleNamespace(time=lambda: 0.0))
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


def sink_for(store: Store, entries: list[Entry]) -> BatchSink:
    t = SimpleNamespace(files=0, size=0, bytes=0, sent=0, files_done=0)
    return BatchSink(FakeConn(store), t, Batch("b1", tuple(entries)), PEER)  # type: ignore[arg-type]


def feed(sink: BatchSink, index: int, data: bytes, offset: int = 0, chunk: int = 1000) -> None:
    sink.on_bfile(BFile("b1", index, offset))
    rest = data[offset:]
    if not rest:
        sink.on_chunk(memoryview(b""), True)
    for at in range(0, len(rest), chunk):
        part = rest[at : at + chunk]
        sink.on_chunk(memoryview(part), at + chunk >= len(rest))


def parts_left(store: Store) -> list[str]:
    parts = store.inbox / ".mole" / "parts"
    return sorted(os.listdir(parts)) if parts.exists() else []


def test_small_files_placed_whole_bad_one_named_nothing_left(tmp_path: Path) -> None:
    store = Store(tmp_path / "share", tmp_path / "inbox", tmp_path / "state")
    good, bad, big = os.urandom(3000), os.urandom(500), os.urandom(WHOLE_MAX + 10)
    entries = [
        Entry("t/good.bin", len(good), sha(good), 1_700_000_000.0, 0o640),
        Entry("t/bad.bin", len(bad), sha(b"something else"), 1_700_000_000.0),
        Entry("t/empty", 0, sha(b""), 1_700_000_000.0),
        Entry("t/big.bin", len(big), sha(big), 1_700_000_000.0),
    ]
    sink = sink_for(store, entries)
    accept = sink.plan()
    assert accept.have == () and accept.offsets == ()
    feed(sink, 0, good)
    feed(sink, 1, bad)
    feed(sink, 2, b"")
    feed(sink, 3, big, chunk=64 << 10)
    verdict = sink.verdict()
    assert [(m.index, m.code) for m in verdict.missing] == [(1, "hash_mismatch")]
    assert (store.inbox / "t" / "good.bin").read_bytes() == good
    assert (store.inbox / "t" / "empty").read_bytes() == b""
    assert (store.inbox / "t" / "big.bin").read_bytes() == big
    assert not (store.inbox / "t" / "bad.bin").exists()
    assert parts_left(store) == []
    assert sink.t.files_done == 3


def test_a_small_file_with_partial_data_resumes_through_the_part(tmp_path: Path) -> None:
    store = Store(tmp_path / "share", tmp_path / "inbox", tmp_path / "state")
    data = os.urandom(4000)
    meta = FileMeta("t/f.bin", len(data), sha(data), 1_700_000_000.0, "")
    first = store.open_incoming(PEER, meta, owner="b1")
    first.write(memoryview(data[:1500]))
    first.abort(keep=True)  # a break: 1500 bytes kept for a resume
    sink = sink_for(store, [Entry("t/f.bin", len(data), sha(data), 1_700_000_000.0)])
    accept = sink.plan()
    assert accept.offsets == ((0, 1500),)
    feed(sink, 0, data, offset=1500)
    assert sink.verdict().missing == ()
    assert (store.inbox / "t" / "f.bin").read_bytes() == data
    assert parts_left(store) == []


def test_abort_mid_small_file_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "share", tmp_path / "inbox", tmp_path / "state")
    data = os.urandom(4000)
    sink = sink_for(store, [Entry("t/f.bin", len(data), sha(data), 1_700_000_000.0)])
    sink.plan()
    sink.on_bfile(BFile("b1", 0, 0))
    sink.on_chunk(memoryview(data[:1000]), False)
    sink.abort(keep=True)
    assert not (store.inbox / "t").exists()
    assert parts_left(store) == []
