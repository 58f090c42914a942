"""TlsProtocol on an in-memory stand-in for the loop's Transport: deterministic tests of what
real sockets make timing-dependent (how much is encrypted per turn, the drain after
resume_reading, the water marks of the ciphertext queue)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from node import tlsproto
from node.identity import Identity
from node.loop import Loop
from node.tlsproto import TlsProtocol
from tests.loopkit import pattern, pattern_file, run
from tests.node.test_tlsproto import App


class MemRaw:
    """Enough of node.loop.Transport; `accept` says how many bytes the "kernel" takes."""

    def __init__(self, proto: TlsProtocol, accept: int | None = None) -> None:
        self.proto = proto
        self.accept = accept  # None: everything, at once
        self.sent = bytearray()  # taken by the "kernel", not yet delivered
        self.queued = 0  # refused by the "kernel"
        self.queue: list[bytes] = []
        self.paused = False
        self.reading = True
        self.closed = False
        self.peername = ("10.0.0.1", 1)
        self.sockname = ("10.0.0.2", 2)
        self.writes = 0

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.writes += 1
        if self.accept is None and not self.queue:
            self.sent += data
            return
        self.queue.append(bytes(data))
        self.queued += len(data)
        if not self.paused:
            self.paused = True
            self.proto.pause_writing()

    def drain(self) -> None:
        """The "kernel" sends everything that was queued: resume_writing (water marks 0/0)."""
        for chunk in self.queue:
            self.sent += chunk
        self.queue.clear()
        self.queued = 0
        if self.paused:
            self.paused = False
            self.proto.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self.queued

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        assert (high, low) == (0, 0)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_read_limit(self, n: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class MemPair:
    """A client and a server TlsProtocol whose bytes the test carries across by hand."""

    def __init__(self, loop: Loop, ident: Identity, *, client_accept: int | None = None):
        self.server_app, self.client_app = App(), App()
        self.server = TlsProtocol(
            loop, tlsproto.server_context(ident), self.server_app, server_side=True
        )
        self.client = TlsProtocol(
            loop, tlsproto.client_context(), self.client_app, server_side=False
        )
        self.s_raw = MemRaw(self.server)
        self.c_raw = MemRaw(self.client)
        self.server.connection_made(self.s_raw)  # type: ignore[arg-type]
        self.client.connection_made(self.c_raw)  # type: ignore[arg-type]
        for _ in range(4):
            self.carry()
        assert self.server_app.events == ["made"] and self.client_app.events == ["made"]
        self.c_raw.accept = client_accept
        self.c_raw.writes = self.s_raw.writes = 0

    def carry(self) -> None:
        """Deliver what each side's "kernel" took to the other side."""
        for raw, peer in ((self.c_raw, self.server), (self.s_raw, self.client)):
            if raw.sent:
                data, raw.sent = bytes(raw.sent), bytearray()
                peer.data_received(memoryview(data))


@pytest.fixture
def bigfile() -> Iterator[tuple[int, int]]:
    with pattern_file(4 << 20, seed=3) as (fd, content):
        yield fd, len(content)


def test_one_chunk_per_writable_turn_while_the_kernel_refuses(
    loop: Loop, ident: Identity, bigfile: tuple[int, int]
) -> None:
    fd, size = bigfile
    p = MemPair(loop, ident, client_accept=0)
    p.client_app.t.sendfile(fd, 0, size)
    run(loop, lambda: p.c_raw.writes > 0)
    for _ in range(3):  # more turns of the loop change nothing while the kernel refuses
        loop.call_soon(lambda: None)
        loop.run(until=lambda: False, timeout=0.01)
    assert p.c_raw.writes == 1
    assert tlsproto.FILE_CHUNK < p.c_raw.queued < tlsproto.FILE_CHUNK + (8 << 10)
    assert p.client_app.t.get_write_buffer_size() == size - tlsproto.FILE_CHUNK + p.c_raw.queued
    p.c_raw.drain()  # resume_writing: the next chunk, synchronously
    assert p.c_raw.writes == 2
    while p.c_raw.queue:
        p.c_raw.drain()
        p.carry()
    run(loop, lambda: p.server_app.received == size)
    assert p.server_app.data == pattern(size, seed=3)
    assert p.client_app.events == ["made", "pause", "resume"]


def test_budget_yields_to_other_connections(
    loop: Loop, ident: Identity, bigfile: tuple[int, int]
) -> None:
    fd, size = bigfile
    p = MemPair(loop, ident)  # a kernel that takes everything: never a pause
    p.client_app.t.sendfile(fd, 0, size)
    run(loop, lambda: p.c_raw.writes > 0)
    first_turn = len(p.c_raw.sent)
    assert tlsproto.PUMP_BUDGET <= first_turn < tlsproto.PUMP_BUDGET + (64 << 10)
    run(loop, lambda: p.client_app.t.get_write_buffer_size() == 0)
    p.carry()
    assert p.server_app.data == pattern(size, seed=3)


def test_resume_reading_delivers_what_waits_in_the_tls_buffers(loop: Loop, ident: Identity) -> None:
    p = MemPair(loop, ident)
    payload = pattern(3 * tlsproto.READ_CHUNK + 1000)
    sizes: list[int] = []

    def pause_on_first(data: memoryview) -> None:
        sizes.append(len(data))
        if len(sizes) == 1:
            p.server_app.t.pause_reading()

    p.server_app.on_data = pause_on_first
    p.client_app.t.write(payload)
    p.carry()  # all ciphertext arrives in one piece
    assert sizes == [tlsproto.READ_CHUNK]
    assert not p.s_raw.reading
    assert p.server._incoming.pending > 0  # the rest waits, and no more bytes will come
    p.server_app.t.resume_reading()
    assert p.s_raw.reading
    run(loop, lambda: len(p.server_app.data) == len(payload))
    assert p.server_app.data == payload
    assert sizes == [tlsproto.READ_CHUNK] * 3 + [1000]


def test_close_notify_after_data_in_one_piece(loop: Loop, ident: Identity) -> None:
    p = MemPair(loop, ident)
    p.client_app.t.write(b"last words")
    p.client_app.t.close()
    assert p.c_raw.closed
    p.carry()
    assert p.server_app.data == b"last words"
    assert p.server_app.events == ["made", "eof"]
    assert p.s_raw.closed  # we answered with our close_notify and closed
    p.server.connection_lost(None)
    p.server.connection_lost(None)  # exactly once
    assert p.server_app.events == ["made", "eof", "lost"]


def test_water_marks_count_queued_plaintext_and_unsent_ciphertext(
    loop: Loop, ident: Identity
) -> None:
    p = MemPair(loop, ident, client_accept=0)
    t = p.client_app.t
    t.set_write_buffer_limits(high=100_000, low=10_000)
    t.write(b"x" * 50_000)
    assert 50_000 < t.get_write_buffer_size() < 51_000  # ciphertext the "kernel" refused
    assert "pause" not in p.client_app.events
    t.write(b"y" * 60_000)
    assert p.client_app.events == ["made", "pause"]
    p.c_raw.drain()
    assert p.client_app.events == ["made", "pause", "resume"]
    assert t.get_write_buffer_size() == 0
    t.set_write_buffer_limits(high=0, low=0)
    t.write(b"z")
    assert p.client_app.events[-1] == "pause"
    with pytest.raises(ValueError):
        t.set_write_buffer_limits(high=1, low=2)


def test_app_pause_writing_exception_aborts(loop: Loop, ident: Identity) -> None:
    p = MemPair(loop, ident, client_accept=0)

    def bad() -> None:
        raise RuntimeError("pause bug")

    p.client_app.pause_writing = bad  # type: ignore[method-assign]
    p.client_app.t.write(b"x" * 100_000)
    assert p.c_raw.closed
    assert loop.callback_errors == 1
    p.client.connection_lost(None)
    assert isinstance(p.client_app.lost[0], RuntimeError)


def test_a_damaged_record_fails_the_connection_with_an_alert(loop: Loop, ident: Identity) -> None:
    p = MemPair(loop, ident)
    p.client_app.t.write(b"x" * 1000)
    record = bytearray(p.c_raw.sent)
    p.c_raw.sent.clear()
    record[-5] ^= 0x01  # inside the AEAD tag
    p.server.data_received(memoryview(bytes(record)))
    assert p.server_app.data == b""
    assert p.s_raw.closed
    assert p.s_raw.sent[:1] == b"\x15" or p.s_raw.sent[:1] == b"\x17"  # an alert was sent
    p.server.connection_lost(None)
    assert isinstance(p.server_app.lost[0], ssl.SSLError)


def test_peer_closing_while_our_file_is_queued_is_an_error(
    loop: Loop, ident: Identity, bigfile: tuple[int, int]
) -> None:
    fd, size = bigfile
    p = MemPair(loop, ident, client_accept=0)
    done: list[int] = []
    p.client_app.t.sendfile(fd, 0, size, on_done=lambda: done.append(1))
    run(loop, lambda: p.c_raw.writes > 0)
    p.client_app.t.close()  # the file is still queued: close waits for it
    assert not p.c_raw.closed
    p.server_app.t.close()  # the peer's close_notify, then its FIN
    p.carry()
    p.client.eof_received()
    p.client.connection_lost(None)
    assert p.client_app.events == ["made", "pause", "lost"]
    assert isinstance(p.client_app.lost[0], ConnectionResetError)
    assert "still to send" in str(p.client_app.lost[0])
    assert done == [1]
