"""A `bfile` carrying its file as its own body (feature "batch-inline", docs/protocol.md 2.10):
one frame per small file of a batch instead of bfile + data (issue 12)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from node import plat
from node.batchio import BatchSink, BatchStream
from node.batchmsg import (
    INLINE_FEATURE,
    Batch,
    BatchAccept,
    BatchVerdict,
    BEnd,
    BFile,
    Entry,
    encode_any,
    parse_any,
)
from node.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from node.framing import encode_header, parse_header
from node.messages import Data
from node.session import DataChunk, Role, Session, State
from node.store import FileMeta, HashJob, Store
from tests.node.test_session import (
    CHALLENGE,
    HELLO,
    SHA,
    deliver,
    drain,
    drain_until_error,
)

C, S = Role.CLIENT, Role.SERVER
MANIFEST = Batch(
    "t1",
    (
        Entry("d/a", 5, SHA, 1700000000.5, 0o644),
        Entry("d/b", 3, SHA, 1700000000.5, 0o644),
        Entry("d/c", 10, SHA, 1700000000.5, 0o644),
        Entry("d/zero", 0, SHA, 1700000000.5, 0o644),
    ),
)


def hellos(client: bool = True, server: bool = True) -> dict[Role, object]:
    def feat(role: Role, on: bool) -> tuple[str, ...]:
        base = tuple(f for f in HELLO[role].features if f != INLINE_FEATURE)
        return (*base, INLINE_FEATURE) if on else base

    return {
        C: replace(HELLO[C], features=feat(C, client)),
        S: replace(HELLO[S], features=feat(S, server)),
    }


def streaming(
    client: bool = True, server: bool = True, accept: BatchAccept | None = None
) -> tuple[Session, Session]:
    """A client pushing MANIFEST to a server that accepted it; "batch-inline" in their hellos
    as asked."""
    h = hellos(client, server)
    c, s = Session(C), Session(S)
    deliver(s, c, CHALLENGE)
    deliver(c, s, h[C])  # type: ignore[arg-type]
    deliver(s, c, h[S])  # type: ignore[arg-type]
    deliver(c, s, MANIFEST)
    deliver(s, c, accept or BatchAccept("t1"))
    assert c.state is s.state is State.BATCH_PUSH
    return c, s


def test_the_header_round_trips_by_the_fast_path_and_by_json() -> None:
    msg = BFile("t1", 2, 7, 3)
    frame = encode_any(msg)
    raw = frame[4:]
    assert raw == b'{"type":"bfile","id":"t1","index":2,"offset":7,"body":3}'
    assert raw == encode_header(msg.to_header())[4:]
    header = parse_header(raw)
    assert header.body_len == 3 and parse_any(header.fields) == msg
    # The JSON path (keys reordered) reads the same message and body length.
    other = parse_header(b'{"body":3,"offset":7,"index":2,"id":"t1","type":"bfile"}')
    assert other.body_len == 3 and parse_any(other.fields) == msg
    # An id needing escapes takes json.dumps, byte for byte as encode_header.
    odd = BFile('t"1', 0, 0, 9)
    assert encode_any(odd) == encode_header(odd.to_header())
    assert BFile("t1", 0).to_header() == {"type": "bfile", "id": "t1", "index": 0, "offset": 0}


def test_inline_files_stream_back_to_back_and_mix_with_data_frames() -> None:
    c, s = streaming()
    wire = (
        c.send(BFile("t1", 0, 0, 5))
        + b"aaaaa"
        + c.send(BFile("t1", 1))  # the old form in the same batch
        + c.send(Data(3))
        + b"bbb"
        + c.send(BFile("t1", 2, 0, 10))
        + b"cccccccccc"
        + c.send(BFile("t1", 3))  # empty: no body either way
        + c.send(BEnd("t1"))
    )
    # Every split of the stream gives the same events (the bodies may come in pieces).
    want = [b"aaaaa", b"bbb", b"cccccccccc", b""]
    for cut in range(len(wire) + 1):
        _, s = streaming()
        events = []
        for piece in (wire[:cut], wire[cut:]):
            if piece:
                s.receive_data(bytearray(piece))
            events += drain(s)
        files: list[bytes] = []
        for ev in events:
            if isinstance(ev, BFile):
                files.append(b"")
            elif isinstance(ev, DataChunk):
                files[-1] += bytes(ev.data)
        done = [ev for ev in events if isinstance(ev, DataChunk) and ev.done]
        assert files == want and len(done) == 4, cut
        assert events[-1] == BEnd("t1") and s.state is State.BATCH_PUSH_VERDICT
    assert c.state is State.BATCH_PUSH_VERDICT
    assert deliver(s, c, BatchVerdict("t1")) == [BatchVerdict("t1")]


def test_a_resumed_file_inlines_the_rest_from_its_offset() -> None:
    c, s = streaming(accept=BatchAccept("t1", (0, 1), ((2, 6),)))
    events = deliver(c, s, BFile("t1", 2, 6, 4), b"wxyz")
    assert events == [BFile("t1", 2, 6, 4), DataChunk(memoryview(b"wxyz"), True)]
    with pytest.raises(LocalProtocolError, match="body 10 must be the 4 bytes"):
        streaming(accept=BatchAccept("t1", (0, 1), ((2, 6),)))[0].send(BFile("t1", 2, 6, 10))


@pytest.mark.parametrize(
    ("bfile", "why"),
    [
        (BFile("t1", 0, 0, 6), "body 6 must be the 5 bytes"),  # more than the file
        (BFile("t1", 0, 0, 4), "body 4 must be the 5 bytes"),  # less: no data may follow
        (BFile("t1", 0, 0, 1 << 40), "must be the 5 bytes"),  # oversized, before any byte
    ],
)
def test_a_body_other_than_the_rest_of_the_file_is_bad_message(bfile: BFile, why: str) -> None:
    c, s = streaming()
    with pytest.raises(LocalProtocolError, match=why):
        c.send(bfile)
    s.receive_data(encode_any(bfile) + b"x" * 8)
    err = drain_until_error(s)
    assert err.code is ErrorCode.BAD_MESSAGE and why in err.message


@pytest.mark.parametrize(("client", "server"), [(False, True), (True, False), (False, False)])
def test_an_inline_bfile_needs_the_feature_in_both_hellos(client: bool, server: bool) -> None:
    c, s = streaming(client, server)
    with pytest.raises(LocalProtocolError, match="batch-inline"):
        c.send(BFile("t1", 0, 0, 5))
    assert c.send(BFile("t1", 0)) and c.send(Data(5))  # the old form still goes
    s.receive_data(encode_any(BFile("t1", 0, 0, 5)) + b"aaaaa")
    assert drain_until_error(s).code is ErrorCode.BAD_MESSAGE


def test_a_connection_ending_inside_the_body_is_truncated() -> None:
    _c, s = streaming()
    s.receive_data(encode_any(BFile("t1", 0, 0, 5)) + b"aa")
    events = drain(s)
    assert events == [BFile("t1", 0, 0, 5), DataChunk(memoryview(b"aa"), False)]
    s.receive_data(b"")
    assert drain_until_error(s).code is ErrorCode.TRUNCATED


def test_no_data_frame_may_add_to_an_inline_file() -> None:
    _c, s = streaming()
    s.receive_data(encode_any(BFile("t1", 0, 0, 5)) + b"aaaaa" + encode_any(Data(1)) + b"x")
    assert drain_until_error(s).code is ErrorCode.TOO_MUCH_DATA
    c, _s = streaming()
    c.send(BFile("t1", 0, 0, 5))
    with pytest.raises(LocalProtocolError, match="data frame of 1 bytes"):
        c.send(Data(1))


@pytest.mark.parametrize(
    "header",
    [
        {"type": "bfile", "id": "t1", "index": 0, "offset": 0, "body": -1},
        {"type": "bfile", "id": "t1", "index": 0, "offset": 0, "body": "5"},
        {"type": "bfile", "id": "t1", "index": 0, "offset": 0, "body": 5.0},
        {"type": "bfile", "id": "t1", "index": 0, "offset": 0, "body": True},
    ],
)
def test_a_malformed_body_is_refused_before_any_byte(header: dict[str, object]) -> None:
    _c, s = streaming()
    s.receive_data(encode_header(header) + b"aaaaa")
    assert drain_until_error(s).code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_MESSAGE)


def test_body_zero_is_the_ordinary_bfile() -> None:
    _c, s = streaming(client=False, server=False)  # legal even without the feature
    header = {"type": "bfile", "id": "t1", "index": 3, "offset": 0, "body": 0}
    s.receive_data(encode_header(header))
    assert drain(s) == [BFile("t1", 3), DataChunk(memoryview(b""), True)]


def test_other_batch_messages_still_carry_no_body() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        parse_any({"type": "bend", "id": "t1", "body": 3})
    assert err.value.code is ErrorCode.BAD_MESSAGE


# -- the node's two ends: BatchStream inlines only for a peer that lists the feature, and
# BatchSink stores a file that came in one piece straight from the receive buffer.


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return False


def stream_frames(tmp_path: Path, peer_inline: bool) -> tuple[list[object], bytes]:
    """What BatchStream writes for MANIFEST's files (read from tmp_path) to a peer whose
    hello does or does not list "batch-inline"; the frames as the peer's session reads them."""
    c, s = streaming(server=peer_inline)
    sources = {}
    for e in MANIFEST.entries:
        p = tmp_path / e.path.replace("/", "_")
        p.write_bytes(bytes([65 + len(sources)]) * e.size)
        sources[e.path] = str(p)
    transport = FakeTransport()
    node = SimpleNamespace(upload_bucket=None, loop=SimpleNamespace(time=lambda: 0.0))
    conn = SimpleNamespace(node=node, session=c, transport=transport, closed=False)
    conn.last_activity = 0.0
    t = SimpleNamespace(files=4, size=18, bytes=0, sent=0, files_done=0)
    BatchStream(conn, t, MANIFEST, sources, BatchAccept("t1"), lambda _: None).start()  # type: ignore[arg-type]
    s.receive_data(bytes(transport.out))
    return drain(s), bytes(transport.out)


def test_the_stream_inlines_small_files_only_for_a_peer_that_lists_it(tmp_path: Path) -> None:
    events, wire = stream_frames(tmp_path, peer_inline=True)
    assert [e for e in events if isinstance(e, BFile)] == [
        BFile("t1", 0, 0, 5),
        BFile("t1", 1, 0, 3),
        BFile("t1", 2, 0, 10),
        BFile("t1", 3),
    ]
    assert b'"type":"data"' not in wire
    old, old_wire = stream_frames(tmp_path, peer_inline=False)
    assert [e for e in old if isinstance(e, BFile)] == [BFile("t1", i) for i in range(4)]
    assert old_wire.count(b'"type":"data"') == 3  # as before the feature (none for the empty)
    # The same bytes arrive either way.
    got = [bytes(e.data) for e in events if isinstance(e, DataChunk)]
    assert got == [bytes(e.data) for e in old if isinstance(e, DataChunk)]
    assert got == [b"AAAAA", b"BBB", b"C" * 10, b""]


def test_a_file_in_one_piece_is_stored_before_its_buffer_is_reused(tmp_path: Path) -> None:
    store = Store(tmp_path / "share", tmp_path / "inbox", tmp_path / "state")
    data = os.urandom(3000)
    nfd = "t/cafe\u0301.bin"  # the manifest's name, decomposed: placed as its NFC form
    entries = (Entry(nfd, len(data), hashlib.sha256(data).hexdigest(), 1_700_000_000.0, 0o640),)
    conn = SimpleNamespace(
        node=SimpleNamespace(store=store, loop=SimpleNamespace(time=lambda: 0.0))
    )
    conn.send = lambda msg: None
    t = SimpleNamespace(files=0, size=0, bytes=0, sent=0, files_done=0)
    sink = BatchSink(conn, t, Batch("b1", entries), "0" * 32)  # type: ignore[arg-type]
    sink.plan()
    buf = bytearray(data)  # the receive buffer the chunk is a view of
    sink.on_bfile(BFile("b1", 0, 0, len(data)))
    sink.on_chunk(memoryview(buf), True)
    buf[:] = b"\0" * len(buf)  # reused by the next receive
    assert sink.placed == {0} and not sink.missing
    placed = tmp_path / "inbox" / "t" / "caf\u00e9.bin"
    assert placed.read_bytes() == data and sink.verdict().ok


@pytest.mark.parametrize("size", [2, 4, 0])
def test_a_source_of_another_size_than_its_entry_fails_the_stream(
    tmp_path: Path, size: int
) -> None:
    """Read with one byte to spare instead of an fstat: a grown or shrunk file still stops the
    stream (source_changed) after the files before it went out whole."""
    c, s = streaming()
    sources = {}
    for n, e in enumerate(MANIFEST.entries):
        p = tmp_path / f"f{n}"
        p.write_bytes(b"x" * (size if n == 1 else e.size))  # the 2nd of 3 bytes
        sources[e.path] = str(p)
    failed: list[tuple[str, str]] = []
    transport = FakeTransport()
    node = SimpleNamespace(upload_bucket=None, loop=SimpleNamespace(time=lambda: 0.0))
    conn = SimpleNamespace(node=node, session=c, transport=transport, closed=False)
    conn.last_activity = 0.0
    conn.fail = lambda code, why: failed.append((code, why))
    t = SimpleNamespace(files=4, size=18, bytes=0, sent=0, files_done=0)
    BatchStream(conn, t, MANIFEST, sources, BatchAccept("t1"), lambda _: None).start()  # type: ignore[arg-type]
    assert [code for code, _ in failed] == [ErrorCode.SOURCE_CHANGED]
    assert t.files_done == 1  # the first file went out before the failure
    s.receive_data(bytes(transport.out))
    assert drain(s) == [BFile("t1", 0, 0, 5), DataChunk(memoryview(b"xxxxx"), True)]


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="no POSIX modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_a_whole_file_gets_its_mode_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """Created with its mode when the umask keeps it (no fchmod), fchmod'ed when not."""
    old = os.umask(umask)
    try:
        store = Store(tmp_path / "share", tmp_path / "inbox", tmp_path / "state")
    finally:
        os.umask(old)
    for n, mode in enumerate((0o644, 0o640, 0o755, 0o600)):
        data = os.urandom(100)
        meta = FileMeta(f"m/f{n}", len(data), hashlib.sha256(data).hexdigest(), 1.7e9, "")
        name = store.store_whole("0" * 32, meta, data, mode)
        assert (tmp_path / "inbox" / name).stat().st_mode & 0o7777 == mode, (oct(umask), oct(mode))


# -- manifest entries: a valid file entry is taken in one test (issue 12), anything else goes
# through the checks that name what is wrong.

GOOD = {"path": "d/a", "size": 5, "sha256": SHA, "mtime": 1700000000.5, "mode": 0o644}


def entry_of(item: dict[str, object]) -> Entry:
    header = {"type": "batch", "id": "t1"}
    body = json.dumps({"entries": [item]}).encode()
    msg = parse_any(header, body)
    assert isinstance(msg, Batch)
    return msg.entries[0]


def test_a_file_entry_parses_the_same_by_either_path() -> None:
    assert entry_of(GOOD) == Entry("d/a", 5, SHA, 1700000000.5, 0o644)
    assert entry_of({**GOOD, "kind": "file"}) == entry_of(GOOD)  # the checked path
    assert entry_of({**GOOD, "mtime": 1700000000}) == Entry("d/a", 5, SHA, 1.7e9, 0o644)
    assert Entry("d/a", 5, SHA, 1700000000.5, 0o644).to_json() == GOOD  # key order kept too
    assert list(Entry("d/a", 5, SHA, 1.5, 0o644).to_json()) == list(GOOD)


@pytest.mark.parametrize(
    "change",
    [
        {"path": ""},
        {"path": 7},
        {"path": "x" * 70000},
        {"size": -1},
        {"size": 5.0},
        {"size": True},
        {"sha256": SHA.upper()},
        {"sha256": SHA[:-1]},
        {"mtime": "1"},
        {"mtime": None},
        {"mode": 0o1000},
        {"mode": -1},
        {"mode": None},
        {"kind": None},
    ],
)
def test_a_bad_file_entry_is_bad_message(change: dict[str, object]) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        entry_of({**GOOD, **change})
    assert err.value.code is ErrorCode.BAD_MESSAGE


# -- hashing a small file is one read: its short read is its end (no read of 0 bytes), and a
# change after that read is still seen by the fstat at the end.


def test_a_small_file_is_hashed_in_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 3000)
    reads: list[int] = []
    real = plat.read_into

    def counting(fd: int, view: memoryview) -> int:
        n = real(fd, view)
        reads.append(n)
        return n

    monkeypatch.setattr(plat, "read_into", counting)
    job = HashJob(str(p))
    assert job.step() and job.sha256 == hashlib.sha256(b"x" * 3000).hexdigest()
    assert reads == [3000]
    assert str(job.path) == str(p) and job.name == "f"


def test_a_file_grown_after_its_one_read_is_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 3000)
    real = plat.read_into
    grown: list[bool] = []

    def growing(fd: int, view: memoryview) -> int:
        n = real(fd, view)
        if not grown:  # someone appends right after our read
            grown.append(True)
            with p.open("ab") as f:
                f.write(b"y")
        return n

    monkeypatch.setattr(plat, "read_into", growing)
    job = HashJob(str(p))
    while not job.step():
        pass
    assert job.size == 3001 and job.sha256 == hashlib.sha256(b"x" * 3000 + b"y").hexdigest()


# -- resume in the middle of a stream of inline files: what was placed is held, the file cut
# in its body is sent again whole, the rest follows.


def test_a_break_inside_an_inline_stream_resumes_at_the_file_it_cut(tmp_path: Path) -> None:
    store = Store(tmp_path / "share", tmp_path / "inbox", tmp_path / "state")
    files = {f"r/d{i // 4}/f{i}": os.urandom(100 + i) for i in range(12)}
    sha = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    entries = tuple(Entry(n, len(d), sha[n], 1_700_000_000.0, 0o644) for n, d in files.items())
    manifest = Batch("t1", entries)

    def attempt(cut: int | None) -> tuple[BatchAccept, BatchSink]:
        """One connection: plan, stream every file not held inline, cut after `cut` bytes."""
        h = hellos()
        c, s = Session(C), Session(S)
        deliver(s, c, CHALLENGE)
        deliver(c, s, h[C])  # type: ignore[arg-type]
        deliver(s, c, h[S])  # type: ignore[arg-type]
        deliver(c, s, manifest)
        conn = SimpleNamespace(
            node=SimpleNamespace(store=store, loop=SimpleNamespace(time=lambda: 0.0))
        )
        conn.send = lambda msg: None
        t = SimpleNamespace(files=0, size=0, bytes=0, sent=0, files_done=0)
        sink = BatchSink(conn, t, manifest, "0" * 32)  # type: ignore[arg-type]
        accept = sink.plan()
        deliver(s, c, accept)
        held = set(accept.have)
        wire = b"".join(
            c.send(BFile("t1", i, 0, e.size)) + files[e.path]
            for i, e in enumerate(entries)
            if i not in held
        )
        wire += c.send(BEnd("t1"))
        s.receive_data(wire[:cut] if cut is not None else wire)
        for ev in drain(s):
            if isinstance(ev, BFile):
                sink.on_bfile(ev)
            elif isinstance(ev, DataChunk):
                sink.on_chunk(ev.data, ev.done)
        if cut is not None:
            sink.abort(keep=True)  # the connection broke
        return accept, sink

    # The first attempt breaks in the middle of the 6th file's body.
    head = sum(
        len(encode_any(BFile("t1", i, 0, e.size))) + e.size for i, e in enumerate(entries[:5])
    )
    accept, sink = attempt(head + 40)
    assert accept.have == () and sink.placed == {0, 1, 2, 3, 4}
    accept, sink = attempt(None)
    assert accept.have == (0, 1, 2, 3, 4) and accept.offsets == ()  # the 6th comes again whole
    assert sink.placed == set(range(12)) and sink.verdict().ok  # held ones count as placed
    for n, d in files.items():
        assert (tmp_path / "inbox" / n).read_bytes() == d
