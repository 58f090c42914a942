"""Real sockets on 127.0.0.1 through node.loop. No sleeps: every wait is run(until=..., timeout)."""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from node import plat
from node.loop import Loop, Transport
from node.transport import HAS_RCVLOWAT, HIGH_WATER
from tests import loopkit
from tests.loopkit import WAIT, check_sendfile_interleaved, pattern, pattern_file, run


class Recorder(loopkit.Recorder[Transport]):
    """A protocol on the loop's plain TCP transport that records everything."""


def pair(loop: Loop, server: Recorder, client: Recorder) -> None:
    srv = loop.listen_tcp("127.0.0.1", 0, lambda: server)
    loop.connect_tcp("127.0.0.1", srv.port, client)
    run(loop, lambda: server.transport is not None and client.transport is not None)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- TCP ----------------------------------------------------------------------------------------


def test_echo_round_trip(loop: Loop) -> None:
    server, client = Recorder(echo=True), Recorder()
    pair(loop, server, client)
    client.t.write(b"hello ")
    client.t.write(bytearray(b"mole"))
    run(loop, lambda: bytes(client.data) == b"hello mole")
    assert client.t.peername == ("127.0.0.1", server.t.sockname[1])
    assert server.t.peername == client.t.sockname
    nodelay = server.t._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert nodelay != 0


def test_mutable_buffer_is_copied_when_queued(loop: Loop) -> None:
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    server.t.pause_reading()
    client.t._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    buf = bytearray(b"x" * (1 << 20))
    client.t.write(buf)
    assert client.t.get_write_buffer_size() > 0, "expected a queued tail"
    buf[:] = b"y" * len(buf)  # the caller reuses its buffer
    server.t.resume_reading()
    run(loop, lambda: len(server.data) == 1 << 20)
    assert server.data == b"x" * (1 << 20)


def test_partial_writes_with_tiny_buffers_keep_order_and_fire_water_marks(loop: Loop) -> None:
    server, client = Recorder(), Recorder()
    srv = loop.listen_tcp("127.0.0.1", 0, lambda: server)
    srv._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accept
    loop.connect_tcp("127.0.0.1", srv.port, client)
    run(loop, lambda: server.transport is not None and client.transport is not None)
    client.t._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server.t.set_read_limit(1000)  # a slow reader: small reads
    server.t.pause_reading()

    payload = pattern(3 << 20)
    for i in range(0, len(payload), 100_000):
        client.t.write(payload[i : i + 100_000])
    assert client.events.count("pause") == 1
    assert client.t.get_write_buffer_size() > HIGH_WATER

    server.t.resume_reading()
    run(loop, lambda: len(server.data) == len(payload))
    assert server.data == payload
    assert client.events.count("resume") == 1
    assert client.t.get_write_buffer_size() == 0
    assert client.t._events == 1, "EVENT_WRITE must be dropped once the queue is empty"


@pytest.mark.parametrize("sendmsg", [True, False], ids=["sendmsg", "no-sendmsg"])
def test_many_small_writes_are_gathered(
    loop: Loop, sendmsg: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plat, "HAS_SENDMSG", sendmsg)  # Windows has no socket.sendmsg
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    server.t.pause_reading()
    client.t._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunks = [pattern(97, seed=i * 100) for i in range(5000)]
    for chunk in chunks:
        client.t.write(chunk)
    server.t.resume_reading()
    run(loop, lambda: len(server.data) == 97 * 5000)
    assert server.data == b"".join(chunks)


@pytest.fixture
def datafile() -> Iterator[tuple[int, bytes]]:
    with pattern_file(6 << 20, seed=7) as opened:
        yield opened


@pytest.mark.parametrize(
    "mode", ["sendfile", "pread", "seek-read"], ids=["sendfile", "pread-fallback", "windows"]
)
def test_sendfile_interleaved_with_writes(
    loop: Loop, datafile: tuple[int, bytes], mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows: no os.sendfile, no os.pread (seek + read), no sendmsg."""
    fd, content = datafile
    if mode == "seek-read":
        monkeypatch.setattr(plat, "_pread", None)
        monkeypatch.setattr(plat, "_preadv", None)
        monkeypatch.setattr(plat, "HAS_SENDMSG", False)
        monkeypatch.setattr(plat, "HAS_SENDFILE", False)
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    if mode == "seek-read":
        assert not client.t._use_sendfile
    client.t._use_sendfile = mode == "sendfile"
    check_sendfile_interleaved(loop, client.t, server.data, fd, content)
    assert client.t.get_write_buffer_size() == 0
    assert "pause" in client.events and "resume" in client.events


def test_sendfile_past_end_of_file_is_fatal_for_that_connection(
    loop: Loop, datafile: tuple[int, bytes]
) -> None:
    fd, content = datafile
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    done: list[int] = []
    client.t.sendfile(fd, len(content) - 100, 1000, on_done=lambda: done.append(1))
    run(loop, lambda: bool(client.lost) and bool(server.lost))
    assert isinstance(client.lost[0], EOFError)
    assert "file ended early" in str(client.lost[0])
    assert done == [1], "on_done must still run so the caller can close its fd"
    assert server.data == content[-100:]


def test_connection_reset_only_affects_that_connection(loop: Loop) -> None:
    servers: list[Recorder] = []

    def factory() -> Recorder:
        servers.append(Recorder(echo=True))
        return servers[-1]

    srv = loop.listen_tcp("127.0.0.1", 0, factory)
    survivor = Recorder()
    loop.connect_tcp("127.0.0.1", srv.port, survivor)
    raw = socket.create_connection(("127.0.0.1", srv.port))
    run(loop, lambda: len(servers) == 2 and survivor.transport is not None)
    raw.sendall(b"ping")
    run(loop, lambda: any(s.data == b"ping" for s in servers))
    victim = next(s for s in servers if s.data == b"ping")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()  # RST

    run(loop, lambda: bool(victim.lost))
    assert isinstance(victim.lost[0], ConnectionResetError)
    survivor.t.write(b"still here")
    run(loop, lambda: survivor.data == b"still here")
    assert survivor.lost == []
    assert [s.lost for s in servers if s is not victim] == [[]]


def test_callback_exception_aborts_only_that_connection(
    loop: Loop, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_server, bad_client = Recorder(), Recorder()
    good_server, good_client = Recorder(echo=True), Recorder()
    pair(loop, bad_server, bad_client)
    pair(loop, good_server, good_client)

    def boom(data: memoryview) -> None:
        raise ValueError("protocol bug")

    bad_server.on_data = boom
    bad_client.t.write(b"x")
    run(loop, lambda: bool(bad_server.lost) and bool(bad_client.lost))
    assert isinstance(bad_server.lost[0], ValueError)
    assert bad_server.lost == bad_server.lost[:1], "connection_lost exactly once"
    assert loop.callback_errors == 1
    assert "ValueError: protocol bug" in capsys.readouterr().err

    good_client.t.write(b"ok")
    run(loop, lambda: good_client.data == b"ok")


def test_timer_exception_does_not_stop_the_loop(loop: Loop) -> None:
    fired: list[int] = []

    def bad() -> None:
        raise RuntimeError("timer bug")

    loop.call_soon(bad)
    loop.call_later(0.0, bad)
    loop.call_later(0.01, lambda: fired.append(1))
    run(loop, lambda: fired == [1])
    assert loop.callback_errors == 2


def test_connect_to_closed_port_is_refused(loop: Loop) -> None:
    client = Recorder()
    loop.connect_tcp("127.0.0.1", closed_port(), client)
    run(loop, lambda: bool(client.lost))
    assert isinstance(client.lost[0], ConnectionRefusedError)
    assert client.events == ["lost"], "no connection_made on failure"


def test_connect_timeout(loop: Loop) -> None:
    # A listener that never accepts: once its accept queue is full, further SYNs are dropped.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        client = Recorder()
        loop.connect_tcp("127.0.0.1", port, client, timeout=0.3)
        run(loop, lambda: bool(client.lost))
        for s in fillers:
            s.close()
    assert isinstance(client.lost[0], TimeoutError)
    assert "timed out" in str(client.lost[0])


def test_unresolvable_host_reports_connection_lost(loop: Loop) -> None:
    client = Recorder()
    loop.connect_tcp("256.1.1.1.invalid", 1, client)  # .invalid never resolves (RFC 6761)
    run(loop, lambda: bool(client.lost))
    assert isinstance(client.lost[0], OSError)


def test_close_flushes_queue_and_is_idempotent(loop: Loop) -> None:
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    server.t.pause_reading()
    client.t._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = pattern(512 << 10)
    client.t.write(payload)
    assert client.t.get_write_buffer_size() > 0
    client.t.close()
    client.t.close()
    assert client.t.is_closing()
    client.t.write(b"dropped after close")
    server.t.resume_reading()
    run(loop, lambda: "lost" in server.events and "lost" in client.events)
    assert server.data == payload
    assert server.events == ["made", "eof", "lost"]
    assert client.lost == [None] and server.lost == [None]
    run(loop, lambda: not loop._lingering and not loop._transports)


def test_abort_drops_queue(loop: Loop) -> None:
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    server.t.pause_reading()
    client.t._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.t.write(pattern(2 << 20))
    client.t.abort()
    client.t.abort()
    assert client.t.get_write_buffer_size() == 0
    server.t.resume_reading()
    run(loop, lambda: bool(server.lost) and bool(client.lost))
    assert len(server.data) < 2 << 20
    assert client.lost == [None]


def test_peer_eof_then_lost(loop: Loop) -> None:
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    client.t.write(b"bye")
    client.t.close()
    run(loop, lambda: bool(server.lost))
    assert server.data == b"bye"
    assert server.events == ["made", "eof", "lost"]


def test_pause_and_resume_reading(loop: Loop) -> None:
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    server.t.pause_reading()
    client.t.write(b"queued in the kernel")
    ticks: list[int] = []
    for i in range(3):
        loop.call_later(0.01 * i, lambda: ticks.append(1))
    run(loop, lambda: len(ticks) == 3)
    assert server.data == b""
    server.t.resume_reading()
    run(loop, lambda: server.data == b"queued in the kernel")


def test_read_fairness_one_recv_per_socket_per_round(loop: Loop) -> None:
    a_srv, a_cli = Recorder(), Recorder()
    b_srv, b_cli = Recorder(), Recorder()
    pair(loop, a_srv, a_cli)
    pair(loop, b_srv, b_cli)
    for srv in (a_srv, b_srv):
        srv.t.set_read_limit(1024)
    a_cli.t.write(b"a" * 100_000)
    b_cli.t.write(b"b" * 100_000)
    order: list[str] = []
    a_srv.on_data = lambda d: order.append("a")
    b_srv.on_data = lambda d: order.append("b")
    run(loop, lambda: len(a_srv.data) == 100_000 and len(b_srv.data) == 100_000)
    # Both are readable the whole time, so reads alternate instead of one draining first.
    imbalance = max(abs(order[:i].count("a") - order[:i].count("b")) for i in range(150))
    assert imbalance <= 2, "".join(order[:40])


def test_loop_close_reports_lost_and_is_idempotent() -> None:
    loop = Loop()
    server, client = Recorder(), Recorder()
    pending = Recorder()
    pair(loop, server, client)
    loop.connect_tcp("127.0.0.1", closed_port(), pending)  # still in progress
    loop.close()
    loop.close()
    assert client.lost == [None] and server.lost == [None]
    assert len(pending.lost) == 1 and isinstance(pending.lost[0], ConnectionAbortedError)
    with pytest.raises(RuntimeError):
        loop.listen_tcp("127.0.0.1", 0, Recorder)


def test_factory_and_connection_made_errors(loop: Loop) -> None:
    def bad_factory() -> Recorder:
        raise RuntimeError("factory bug")

    srv = loop.listen_tcp("127.0.0.1", 0, bad_factory)
    client = Recorder()
    loop.connect_tcp("127.0.0.1", srv.port, client)
    run(loop, lambda: bool(client.lost))  # the server closed the accepted socket
    assert loop.callback_errors == 1

    server2 = Recorder()

    def explode(t: Transport) -> None:
        raise RuntimeError("made bug")

    server2.on_made = explode
    srv2 = loop.listen_tcp("127.0.0.1", 0, lambda: server2)
    client2 = Recorder()
    loop.connect_tcp("127.0.0.1", srv2.port, client2)
    run(loop, lambda: bool(server2.lost) and bool(client2.lost))
    assert isinstance(server2.lost[0], RuntimeError)


def test_reply_written_in_eof_received_reaches_a_half_closed_peer(loop: Loop) -> None:
    class Answer(Recorder):
        def eof_received(self) -> None:
            super().eof_received()
            self.t.write(b"answer to " + bytes(self.data))

    server = Answer()
    srv = loop.listen_tcp("127.0.0.1", 0, lambda: server)
    raw = socket.create_connection(("127.0.0.1", srv.port))
    raw.sendall(b"question")
    raw.shutdown(socket.SHUT_WR)
    run(loop, lambda: bool(server.lost))
    raw.settimeout(WAIT)
    got = b""
    while chunk := raw.recv(4096):
        got += chunk
    raw.close()
    assert got == b"answer to question"
    assert server.events == ["made", "eof", "lost"]


class _EmfileOnce:
    """Wraps a listening socket so that its first accept() fails with EMFILE."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.failed = False

    def accept(self) -> tuple[socket.socket, object]:
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        return self.sock.accept()

    def close(self) -> None:
        self.sock.close()


def test_accept_emfile_is_counted_and_accepting_resumes_later() -> None:
    now = [0.0]
    loop = Loop(clock=lambda: now[0])
    try:
        server = Recorder()
        srv = loop.listen_tcp("127.0.0.1", 0, lambda: server)
        srv._sock = _EmfileOnce(srv._sock)  # type: ignore[assignment]
        raw = socket.create_connection(("127.0.0.1", srv.port))
        run(loop, lambda: srv.accept_errors == 1)
        assert srv._events == 0, "accepting pauses instead of spinning"
        now[0] = 10.0
        run(loop, lambda: server.transport is not None)
        raw.close()
    finally:
        loop.close()


# -- timers and running ---------------------------------------------------------------------------


def test_call_later_order_with_fake_clock() -> None:
    now = [100.0]
    loop = Loop(clock=lambda: now[0])
    try:
        order: list[str] = []
        loop.call_later(3, lambda: order.append("c3"))
        loop.call_later(1, lambda: order.append("a1"))
        loop.call_later(2, lambda: order.append("b2"))
        loop.call_later(1, lambda: order.append("a1-second"))
        loop.call_later(0.5, lambda: order.append("cancelled")).cancel()
        loop.call_soon(lambda: order.append("soon"))
        assert loop.time() == 100.0

        loop.run(until=lambda: "soon" in order, timeout=WAIT)
        assert order == ["soon"]
        now[0] = 101.5
        run(loop, lambda: len(order) == 3)
        assert order == ["soon", "a1", "a1-second"]
        now[0] = 110.0
        run(loop, lambda: len(order) == 5)
        assert order == ["soon", "a1", "a1-second", "b2", "c3"]
    finally:
        loop.close()


def test_many_cancelled_timers_are_pruned(loop: Loop) -> None:
    handles = [loop.call_later(1000, lambda: None) for _ in range(500)]
    for h in handles:
        h.cancel()
        h.cancel()
    assert len(loop._timers) < 200


def test_stop_from_callback_and_timeout(loop: Loop) -> None:
    loop.call_later(0.01, loop.stop)
    loop.run()  # returns only because of stop()
    hits: list[int] = []
    loop.call_soon(lambda: hits.append(1))
    loop.run(timeout=0.05)
    assert hits == [1]


# -- UDP ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reuse_port", [True, False])
def test_two_udp_endpoints_on_one_port_both_get_a_broadcast(loop: Loop, reuse_port: bool) -> None:
    got: dict[str, list[tuple[bytes, tuple[str, int]]]] = {"a": [], "b": []}
    a = loop.open_udp(
        "0.0.0.0", 0, lambda d, addr: got["a"].append((d, addr)), reuse_port=reuse_port
    )
    b = loop.open_udp(
        "0.0.0.0", a.port, lambda d, addr: got["b"].append((d, addr)), reuse_port=reuse_port
    )
    sender = loop.open_udp("127.0.0.1", 0, lambda d, addr: None)
    sender.sendto(b"announce", ("127.255.255.255", a.port))
    run(loop, lambda: bool(got["a"]) and bool(got["b"]))
    assert got["a"] == got["b"] == [(b"announce", ("127.0.0.1", sender.port))]
    assert b.port == a.port
    assert sender.errors == 0


def test_udp_sendto_never_raises(loop: Loop) -> None:
    ep = loop.open_udp("127.0.0.1", 0, lambda d, addr: None, broadcast=False)
    ep.sendto(b"x" * 70_000, ("127.0.0.1", ep.port))  # EMSGSIZE
    ep.sendto(b"x", ("127.255.255.255", ep.port))  # EACCES without SO_BROADCAST
    ep.close()
    ep.close()
    ep.sendto(b"x", ("127.0.0.1", 1))  # closed
    assert ep.errors == 3
    assert isinstance(ep.last_error, OSError)


def test_udp_handler_exception_is_contained(loop: Loop) -> None:
    got: list[bytes] = []

    def handler(data: bytes, addr: tuple[str, int]) -> None:
        got.append(data)
        if data == b"bad":
            raise ValueError("handler bug")

    ep = loop.open_udp("127.0.0.1", 0, handler)
    ep.sendto(b"bad", ("127.0.0.1", ep.port))
    ep.sendto(b"good", ("127.0.0.1", ep.port))
    run(loop, lambda: got == [b"bad", b"good"])
    assert loop.callback_errors == 1


def test_loop_close_from_a_callback_ends_run() -> None:
    loop = Loop()
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    loop.call_soon(loop.close)
    loop.call_soon(lambda: None)
    loop.run(timeout=WAIT)
    assert client.lost == [None] and server.lost == [None]


def test_stop_from_another_thread_wakes_a_blocking_select(loop: Loop) -> None:
    started = time.monotonic()
    loop.call_soon(lambda: threading.Thread(target=loop.stop).start())
    loop.run(timeout=WAIT)  # no timers, no sockets: only the waker can end this select
    assert time.monotonic() - started < WAIT / 2


@pytest.mark.skipif(not HAS_RCVLOWAT, reason="SO_RCVLOWAT readiness is Linux's")
def test_read_low_water_holds_small_reads_until_enough_is_queued(loop: Loop) -> None:
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    server.t.set_read_low_water(1000)
    client.t.write(b"x" * 10)
    ticks: list[int] = []
    for i in range(3):
        loop.call_later(0.02 * i, lambda: ticks.append(1))
    run(loop, lambda: len(ticks) == 3)
    assert server.data == b""  # 10 bytes queued in the kernel: not worth a wake-up
    client.t.write(b"y" * 990)
    run(loop, lambda: len(server.data) == 1000)
    server.t.set_read_low_water(1)
    client.t.write(b"z")
    run(loop, lambda: len(server.data) == 1001)


@pytest.mark.skipif(not HAS_RCVLOWAT, reason="SO_RCVLOWAT readiness is Linux's")
def test_eof_wakes_a_reader_waiting_for_its_low_water_mark(loop: Loop) -> None:
    server, client = Recorder(), Recorder()
    pair(loop, server, client)
    server.t.set_read_low_water(1 << 20)
    client.t.write(b"short")
    client.t.close()
    run(loop, lambda: "eof" in server.events)
    assert server.data == b"short"
