"""TLS over real loopback sockets through node.loop. No sleeps: every wait is run(until=...)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node import tlsproto
from node.identity import Identity
from node.loop import Loop
from node.tlsproto import TlsProtocol, TlsTransport, connect_tls
from tests import loopkit
from tests.loopkit import check_sendfile_interleaved, pattern, pattern_file

WAIT = 10.0


class App(loopkit.Recorder[TlsTransport]):
    """A TlsApp that records everything; hooks drive the scenario."""


def run(loop: Loop, cond: Callable[[], bool], timeout: float = WAIT) -> None:
    loopkit.run(loop, cond, timeout)


class Pair:
    def __init__(self, loop: Loop, ident: Identity, server: App, client: App, **kw: object):
        self.protos: list[TlsProtocol] = []

        def factory() -> TlsProtocol:
            proto = TlsProtocol(
                loop,
                tlsproto.server_context(ident),
                server,
                server_side=True,
                **kw,  # type: ignore[arg-type]
            )
            self.protos.append(proto)
            return proto

        self.srv = loop.listen_tcp("127.0.0.1", 0, factory)
        self.client_proto = connect_tls(
            loop, "127.0.0.1", self.srv.port, tlsproto.client_context(ident), client
        )

    @property
    def server_proto(self) -> TlsProtocol:
        return self.protos[0]


def pair(loop: Loop, ident: Identity, server: App, client: App, **kw: object) -> Pair:
    p = Pair(loop, ident, server, client, **kw)
    run(loop, lambda: server.transport is not None and client.transport is not None)
    return p


def raw_socket(p: TlsProtocol) -> socket.socket:
    assert p._raw is not None
    return p._raw._sock


# -- handshake and data ---------------------------------------------------------------------------


def test_echo_and_peer_certificate(loop: Loop, ident: Identity) -> None:
    server, client = App(echo=True), App()
    hooked: list[list[str]] = []

    def factory() -> TlsProtocol:
        return TlsProtocol(
            loop,
            tlsproto.server_context(ident),
            server,
            server_side=True,
            handshake_done=lambda t: hooked.append(list(server.events)),
        )

    srv = loop.listen_tcp("127.0.0.1", 0, factory)
    connect_tls(loop, "127.0.0.1", srv.port, tlsproto.client_context(ident), client)
    run(loop, lambda: client.transport is not None and server.transport is not None)
    assert hooked == [[]], "connection_made only after the handshake hook"
    client.t.write(b"hello ")
    client.t.write(bytearray(b"mole"))
    client.t.write(memoryview(b"!!!!").cast("I"))
    run(loop, lambda: bytes(client.data) == b"hello mole!!!!")
    cert = client.t.peer_certificate()
    assert cert == ident.cert_der
    assert hashlib.sha256(cert).hexdigest() == ident.node_id
    assert server.t.peer_certificate() is None  # the client proves itself in-band later
    assert client.t.version() == server.t.version() == "TLSv1.3"
    assert client.t.peername == ("127.0.0.1", srv.port)
    assert server.t.peername == client.t.sockname
    assert not client.t.is_closing()
    assert "TlsTransport" in repr(client.t) and "open" in repr(client.t)
    assert loop.callback_errors == 0


def test_contexts_are_tls13_only_without_tickets(ident: Identity) -> None:
    server_ctx, client_ctx = tlsproto.server_context(ident), tlsproto.client_context(ident)
    for ctx in (server_ctx, client_ctx):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_TICKET
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert server_ctx.num_tickets == 0
    assert client_ctx.verify_mode == ssl.CERT_NONE and not client_ctx.check_hostname
    assert tlsproto.client_context().verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="no files"):
        tlsproto.server_context(Identity.from_seed(bytes(32)))


def test_client_refuses_tls12_server(loop: Loop, ident: Identity) -> None:
    assert ident.paths is not None
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.load_cert_chain(*ident.paths)
    server, client = App(), App()
    srv = loop.listen_tcp("127.0.0.1", 0, lambda: TlsProtocol(loop, old, server, server_side=True))
    connect_tls(loop, "127.0.0.1", srv.port, tlsproto.client_context(), client)
    run(loop, lambda: bool(client.lost) and bool(server.lost))
    assert isinstance(client.lost[0], ssl.SSLError) and isinstance(server.lost[0], ssl.SSLError)
    assert client.events == server.events == ["lost"]


@pytest.fixture
def datafile() -> Iterator[tuple[int, bytes]]:
    with pattern_file(6 << 20, seed=7) as opened:
        yield opened


def test_sendfile_interleaved_with_writes_keeps_order(
    loop: Loop, ident: Identity, datafile: tuple[int, bytes]
) -> None:
    fd, content = datafile
    server, client = App(), App()
    pair(loop, ident, server, client)
    check_sendfile_interleaved(loop, client.t, server.data, fd, content)
    run(loop, lambda: client.t.get_write_buffer_size() == 0)
    assert client.events.count("pause") == 1 and client.events[-1] == "resume"
    with pytest.raises(ValueError):
        client.t.sendfile(fd, -1, 10)


def test_partial_writes_with_tiny_socket_buffers(loop: Loop, ident: Identity) -> None:
    server, client = App(), App()
    p = Pair(loop, ident, server, client)
    p.srv._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accept
    run(loop, lambda: server.transport is not None and client.transport is not None)
    raw_socket(p.client_proto).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server.t.set_read_limit(1000)  # a slow reader: small reads
    server.t.pause_reading()
    payload = pattern(3 << 20)
    for i in range(0, len(payload), 100_000):
        client.t.write(payload[i : i + 100_000])
    assert client.events.count("pause") == 1
    assert client.t.get_write_buffer_size() > tlsproto.HIGH_WATER
    server.t.resume_reading()
    run(loop, lambda: len(server.data) == len(payload))
    assert server.data == payload
    assert client.events.count("resume") == 1
    assert client.t.get_write_buffer_size() == 0


def test_64_mib_sendfile_is_hashed_intact_on_the_receiver(loop: Loop, ident: Identity) -> None:
    size = 64 << 20
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=where) as d:
        path = Path(d) / "big"
        expected = hashlib.sha256()
        with open(path, "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(64):
                piece = i.to_bytes(8, "little") + block[8:]
                expected.update(piece)
                f.write(piece)
        fd = os.open(path, os.O_RDONLY)
        try:
            server, client = App(keep=False), App()
            pair(loop, ident, server, client)
            done: list[int] = []
            client.t.sendfile(fd, 0, size, on_done=lambda: done.append(1))
            client.t.write(b"!")  # after the file, in order
            run(loop, lambda: server.received == size + 1, timeout=120)
        finally:
            os.close(fd)
    expected.update(b"!")
    assert server.sha.hexdigest() == expected.hexdigest()
    assert done == [1]
    assert client.events == ["made", "pause", "resume"]


def test_pause_reading_holds_decrypted_records_until_resume(loop: Loop, ident: Identity) -> None:
    server, client = App(), App()
    pair(loop, ident, server, client)
    sizes: list[int] = []

    def first_chunk_pauses(data: memoryview) -> None:
        sizes.append(len(data))
        if len(sizes) == 1:
            server.t.pause_reading()

    server.on_data = first_chunk_pauses
    payload = pattern(600_000)
    client.t.write(payload)
    run(loop, lambda: bool(sizes))
    ticks: list[int] = []
    for i in range(5):
        loop.call_later(0.01 * i, lambda: ticks.append(1))
    run(loop, lambda: len(ticks) == 5)
    assert len(sizes) == 1, "no delivery while paused"
    assert max(sizes) <= tlsproto.READ_CHUNK
    server.t.resume_reading()
    server.t.resume_reading()  # idempotent
    run(loop, lambda: len(server.data) == len(payload))
    assert server.data == payload


# -- closing --------------------------------------------------------------------------------------


def test_close_flushes_file_then_close_notify(
    loop: Loop, ident: Identity, datafile: tuple[int, bytes]
) -> None:
    fd, content = datafile
    server, client = App(), App()
    pair(loop, ident, server, client)
    done: list[int] = []
    client.t.sendfile(fd, 0, len(content), on_done=lambda: done.append(1))
    client.t.close()
    client.t.close()
    assert client.t.is_closing()
    client.t.write(b"dropped after close")
    client.t.sendfile(fd, 0, 10, on_done=lambda: done.append(2))  # refused, but on_done runs
    run(loop, lambda: "lost" in server.events and "lost" in client.events)
    assert server.data == content
    assert server.events == ["made", "eof", "lost"]
    assert server.lost == [None] and client.lost == [None]
    assert sorted(done) == [1, 2]
    run(loop, lambda: not loop._lingering and not loop._transports)


def test_peer_close_notify_is_eof_then_we_close(loop: Loop, ident: Identity) -> None:
    class Answer(App):
        def eof_received(self) -> None:
            super().eof_received()
            self.t.write(b"answer to " + bytes(self.data))  # half-closed: still writable

    server, client = Answer(), App()
    pair(loop, ident, server, client)
    client.t.write(b"question")
    client.t.close()
    run(loop, lambda: bool(server.lost) and bool(client.lost))
    assert server.events == ["made", "eof", "lost"] and server.lost == [None]
    assert client.lost == [None]
    assert bytes(server.data) == b"question"


def test_fin_without_close_notify_is_an_error(loop: Loop, ident: Identity) -> None:
    server, client = App(), App()
    p = pair(loop, ident, server, client)
    client.t.write(b"partial")
    run(loop, lambda: server.data == b"partial")
    assert p.client_proto._raw is not None
    p.client_proto._raw.close()  # TCP FIN, no close_notify
    run(loop, lambda: bool(server.lost))
    assert isinstance(server.lost[0], ssl.SSLEOFError)
    assert "without close_notify" in str(server.lost[0])
    assert "eof" not in server.events


def test_abort_drops_queue(loop: Loop, ident: Identity, datafile: tuple[int, bytes]) -> None:
    fd, content = datafile
    server, client = App(), App()
    p = pair(loop, ident, server, client)
    server.t.pause_reading()
    raw_socket(p.client_proto).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    done: list[int] = []
    client.t.sendfile(fd, 0, len(content), on_done=lambda: done.append(1))
    client.t.write(pattern(1 << 20))
    client.t.abort()
    client.t.abort()
    assert client.t.is_closing()
    server.t.resume_reading()
    run(loop, lambda: bool(server.lost) and bool(client.lost))
    assert client.lost == [None]
    assert isinstance(server.lost[0], (ssl.SSLError, ConnectionError))
    assert len(server.data) < len(content)
    assert done == [1], "on_done runs even when the file was never sent"


def test_loop_close_reports_lost(ident: Identity) -> None:
    loop = Loop()
    server, client = App(), App()
    pair(loop, ident, server, client)
    loop.close()
    assert server.lost == [None] and client.lost == [None]


# -- hostile and failing peers --------------------------------------------------------------------


def _server(loop: Loop, ident: Identity, app: App, **kw: object) -> int:
    def factory() -> TlsProtocol:
        return TlsProtocol(loop, tlsproto.server_context(ident), app, server_side=True, **kw)  # type: ignore[arg-type]

    return loop.listen_tcp("127.0.0.1", 0, factory).port


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(WAIT)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except ConnectionResetError:
        pass
    return got


@pytest.mark.parametrize(
    "junk",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plaintext to a TLS server
        b"\x16\x03\x01\x00\x05hello",  # a handshake record holding garbage
        bytes(range(256)) * 4,
    ],
    ids=["plaintext-http", "bad-record", "binary"],
)
def test_garbage_instead_of_a_client_hello_fails_cleanly(
    loop: Loop, ident: Identity, junk: bytes
) -> None:
    server = App()
    port = _server(loop, ident, server)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(junk)
        run(loop, lambda: bool(server.lost))
        reply = _read_all(raw)
    assert server.events == ["lost"]
    assert isinstance(server.lost[0], ssl.SSLError)
    assert reply[:1] in (b"", b"\x15"), reply[:16]  # nothing, or a TLS alert record
    assert loop.callback_errors == 0


def test_peer_closing_mid_handshake(loop: Loop, ident: Identity) -> None:
    server = App()
    port = _server(loop, ident, server)
    hello = _client_hello()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(hello[: len(hello) // 2])
        raw.shutdown(socket.SHUT_WR)
        run(loop, lambda: bool(server.lost))
    assert server.events == ["lost"]
    assert isinstance(server.lost[0], ConnectionResetError)
    assert "during the handshake" in str(server.lost[0])


def dial_raw_server(loop: Loop, client: App, answer: Callable[[socket.socket], None]) -> None:
    """`client` dials a plain TCP listener that hands the connection it accepts to `answer`;
    returns once the client's connection is lost."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        connect_tls(loop, "127.0.0.1", listener.getsockname()[1], tlsproto.client_context(), client)
        accepted: list[socket.socket] = []

        def accept() -> None:
            listener.setblocking(False)
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                loop.call_later(0.005, accept)
                return
            accepted.append(conn)
            answer(conn)

        loop.call_soon(accept)
        run(loop, lambda: bool(client.lost))
        for conn in accepted:
            conn.close()


def test_server_closing_mid_handshake_fails_the_client(loop: Loop) -> None:
    client = App()
    dial_raw_server(loop, client, lambda conn: conn.close())
    assert client.events == ["lost"]
    assert isinstance(client.lost[0], ConnectionError)


@pytest.mark.parametrize("then_close", [False, True])
def test_a_server_answering_in_plaintext_is_not_tls_with_its_bytes(
    loop: Loop, then_close: bool
) -> None:
    """A plaintext server (a mole node with --insecure-plaintext, or one refusing in plaintext)
    answers our ClientHello with a frame: the client reports NotTls holding those bytes, not
    an anonymous `wrong version number`, so the application can say what the peer is."""
    answer = struct.pack(">I", 15) + b'{"type":"x","a"' + b"}"

    def answer_in_plaintext(conn: socket.socket) -> None:
        conn.sendall(answer)
        if then_close:
            conn.close()

    client = App()
    dial_raw_server(loop, client, answer_in_plaintext)
    assert client.events == ["lost"]
    exc = client.lost[0]
    assert isinstance(exc, tlsproto.NotTls) and exc.head == answer, exc


def test_handshake_timeout(loop: Loop, ident: Identity) -> None:
    server = App()
    port = _server(loop, ident, server, handshake_timeout=0.2)
    with socket.create_connection(("127.0.0.1", port)):
        run(loop, lambda: bool(server.lost))
    assert isinstance(server.lost[0], TimeoutError)
    assert "timed out after 0.2s" in str(server.lost[0])


def test_connect_refused_reaches_the_app(loop: Loop) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = App()
    connect_tls(loop, "127.0.0.1", port, tlsproto.client_context(), client)
    run(loop, lambda: bool(client.lost))
    assert isinstance(client.lost[0], ConnectionRefusedError)
    assert client.events == ["lost"]


def test_handshake_hook_can_refuse_the_peer(loop: Loop, ident: Identity) -> None:
    server, client = App(), App()

    def refuse(t: TlsTransport) -> None:
        assert t.peer_certificate() == ident.cert_der
        t.abort()  # e.g. not the node id we wanted

    srv = loop.listen_tcp(
        "127.0.0.1",
        0,
        tlsproto.tls_server_factory(loop, tlsproto.server_context(ident), lambda: server),
    )
    connect_tls(
        loop, "127.0.0.1", srv.port, tlsproto.client_context(), client, handshake_done=refuse
    )
    run(loop, lambda: bool(client.lost) and bool(server.lost))
    assert client.events == ["lost"]
    assert isinstance(client.lost[0], ConnectionAbortedError)
    assert server.events[0] == "made" and server.events[-1] == "lost"


def test_app_exception_aborts_only_that_connection(
    loop: Loop, ident: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_server, bad_client = App(), App()
    good_server, good_client = App(echo=True), App()
    pair(loop, ident, bad_server, bad_client)
    pair(loop, ident, good_server, good_client)

    def boom(data: memoryview) -> None:
        raise ValueError("protocol bug")

    bad_server.on_data = boom
    bad_client.t.write(b"x")
    run(loop, lambda: bool(bad_server.lost) and bool(bad_client.lost))
    assert isinstance(bad_server.lost[0], ValueError)
    assert loop.callback_errors == 1
    assert "ValueError: protocol bug" in capsys.readouterr().err
    good_client.t.write(b"ok")
    run(loop, lambda: good_client.data == b"ok")


def test_on_done_exception_aborts_the_connection(
    loop: Loop, ident: Identity, datafile: tuple[int, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    fd, _ = datafile

    def bad_on_done() -> None:
        raise RuntimeError("on_done bug")

    server, client = App(), App()
    pair(loop, ident, server, client)
    client.t.sendfile(fd, 0, 1000, on_done=bad_on_done)
    run(loop, lambda: bool(client.lost))
    assert isinstance(client.lost[0], RuntimeError)
    assert loop.callback_errors == 1
    assert "on_done bug" in capsys.readouterr().err


def test_sendfile_past_end_of_file(
    loop: Loop, ident: Identity, datafile: tuple[int, bytes]
) -> None:
    fd, content = datafile
    server, client = App(), App()
    pair(loop, ident, server, client)
    done: list[int] = []
    client.t.sendfile(fd, len(content) - 100, 1000, on_done=lambda: done.append(1))
    run(loop, lambda: bool(client.lost) and bool(server.lost))
    assert isinstance(client.lost[0], EOFError) and "file ended early" in str(client.lost[0])
    assert done == [1]
    assert server.data == content[-100:]


def test_two_big_sends_share_the_loop(loop: Loop, ident: Identity) -> None:
    size = 16 << 20
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f"
        path.write_bytes(os.urandom(1 << 20) * 16)
        fd = os.open(path, os.O_RDONLY)
        try:
            servers = [App(keep=False), App(keep=False)]
            clients = [App(), App()]
            for s, c in zip(servers, clients, strict=True):
                pair(loop, ident, s, c)
            progress: list[tuple[int, int]] = []
            for s in servers:
                s.on_data = lambda _d: progress.append((servers[0].received, servers[1].received))
            for c in clients:
                c.t.sendfile(fd, 0, size)
            run(loop, lambda: all(s.received == size for s in servers), timeout=60)
        finally:
            os.close(fd)
    first_done = next(p for p in progress if size in p)
    assert min(first_done) >= size // 8, "one connection starved the other"
    assert len(tlsproto._buffers) >= 1 and loop in tlsproto._buffers


def _client_hello() -> bytes:
    ctx = tlsproto.client_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_a_lost_connection_frees_its_ssl_state_at_once(loop: Loop, ident: Identity) -> None:
    """The SSL object (30-50 KiB of OpenSSL's memory) goes when the connection is lost, not at
    the cycle collector's next look: a connection's objects are in reference cycles (here the
    application keeps its transport and the error, whose traceback holds the frames that read
    the records), and under a junk-connection flood hundreds of dead SSL objects waited for it
    (bench/flood.py: +15-20 MiB of the victim's peak)."""
    import gc
    import weakref

    server = App()
    client = App()
    kept: list[object] = []

    def fail(data: memoryview) -> None:
        try:
            raise ValueError("the application refuses these bytes")
        except ValueError as exc:
            kept.append(exc)  # with its traceback: frames up to the protocol's record loop
            server.t.abort()

    server.on_data = fail
    p = pair(loop, ident, server, client)
    proto = p.server_proto
    ssl_state = weakref.ref(proto._sslobj)
    enabled = gc.isenabled()
    gc.disable()
    try:
        client.t.write(b"hello")
        run(loop, lambda: bool(server.lost))
        assert server.t.peer_certificate() is None and server.t.version() == "TLSv1.3"
        assert ssl_state() is None, "the SSL object outlived its connection"
    finally:
        if enabled:
            gc.enable()
    assert kept
