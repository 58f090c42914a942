"""TLS 1.3 inside the one selectors loop, the way asyncio's sslproto.py does it.

`TlsProtocol` is the `StreamProtocol` the loop's `Transport` talks to (ciphertext); it owns an
`ssl.SSLObject` over two `MemoryBIO`s and talks plaintext to an application protocol through a
`TlsTransport`, which has the interface the application uses on `node.loop.Transport`
(write, sendfile, water marks, pause/resume reading, close, abort, is_closing, peername) plus
`peer_certificate()`. Nothing in node/loop.py changes: a listening socket gets
`tls_server_factory(...)` as its factory, an outgoing connection `connect_tls(...)`.

Lifecycle: the application's `connection_made` runs only after the handshake (and after the
optional `handshake_done` hook). A failed handshake (bad bytes, plaintext, a peer that closes,
`handshake_timeout`) closes the connection and reports the error to the application's
`connection_lost`, which is called exactly once in every case, made or not; nothing raises
into the loop. `close()` flushes what is queued, sends close_notify, then closes the socket.
A peer's close_notify is the application's `eof_received` (then we close, as the loop does on
FIN); a FIN without close_notify is `ssl.SSLEOFError` (the stream may have been cut short).

Data path (the node's transfers go through it, so it is kept lean):
- Received ciphertext goes into the incoming BIO; plaintext is read record by record with
  `SSLObject.read(n, buffer)` into one preallocated buffer, and the application gets up to
  READ_CHUNK bytes per `data_received` (a memoryview valid only during the call, as with the
  loop's Transport).
- `write()` encrypts at once and hands the ciphertext to the loop's transport (which sends what
  the kernel takes and queues the rest), unless a file is still being sent: then it waits in
  order behind it.
- `sendfile()` reads the file with `os.preadv` (node.plat.pread_into: seek + read where it is
  missing) into one reusable buffer, FILE_CHUNK bytes at a time, and encrypts each chunk; it
  never blocks the loop: it runs only while the loop's transport holds no unsent ciphertext
  (its water marks are set to 0/0, so it pauses us as soon as the kernel refuses bytes and
  resumes us when it has drained), and at most PUMP_BUDGET bytes per turn before it yields to
  the other connections.
The read and file buffers are shared by all TLS connections of a loop (one thread, and each
is used only within one call), so an idle connection costs no buffer memory. The sending half
(queue, pump, water marks) is `SendQueue` in node/tlssend.py.
"""

from __future__ import annotations

import contextlib
import mmap
import ssl
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from node.loop import Handle, Loop

# FILE_CHUNK and PUMP_BUDGET are read as tlsproto's (tests, docs): the send queue owns them now.
from node.tlssend import FILE_CHUNK as FILE_CHUNK
from node.tlssend import PUMP_BUDGET as PUMP_BUDGET
from node.tlssend import SendQueue
from node.transport import HIGH_WATER, LOW_WATER, Address, Transport, log

if TYPE_CHECKING:
    from node.identity import Identity

HANDSHAKE_TIMEOUT: Final = 10.0
READ_CHUNK: Final = 256 << 10  # plaintext per data_received at most
FAILED_CLOSE_GRACE: Final = 2.0  # after a failed handshake: time for our alert to leave
PLAIN_HEAD: Final = 4096  # a client keeps this much of a server's non-TLS answer (NotTls.head)
# The content types a TLS record can start with (RFC 8446 5.1: change_cipher_spec, alert,
# handshake, application_data, heartbeat). A server's first byte outside them is not TLS.
TLS_RECORD_TYPES: Final = frozenset(range(0x14, 0x19))

_HANDSHAKE, _OPEN, _CLOSING, _SHUTDOWN, _CLOSED = range(5)


class NotTls(ConnectionError):
    """A client's handshake failed because the server answered with bytes that are not TLS (a
    server that speaks plaintext, or one that refused us in plaintext before any TLS): `head`
    is the start of what it sent (at most PLAIN_HEAD bytes) for the application to read."""

    def __init__(self, head: bytes) -> None:
        super().__init__(f"the peer answered in plaintext, not TLS ({head[:16]!r}...)")
        self.head = head

    @staticmethod
    def judge(head: bytearray | None) -> NotTls | None:
        """Client: the server's first bytes, when they cannot be a TLS record."""
        if head and head[0] not in TLS_RECORD_TYPES:
            return NotTls(bytes(head))
        return None


class TlsApp(Protocol):
    """The application side: the loop's StreamProtocol, with a TlsTransport."""

    def connection_made(self, transport: TlsTransport) -> None: ...

    def data_received(self, data: memoryview) -> None: ...  # valid only during the call

    def eof_received(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


# -- contexts -----------------------------------------------------------------------------------


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # TLS 1.3 has neither compression nor renegotiation; the options guard against a build
    # that would otherwise fall back. No tickets: every connection proves its certificate.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET


def server_context(identity: Identity) -> ssl.SSLContext:
    """TLS 1.3 only, our certificate, no client certificate requested (Python's ssl cannot
    accept an unknown one), no session tickets."""
    if identity.paths is None:
        raise ValueError("the identity has no files for ssl to load (use load_or_create)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.num_tickets = 0
    ctx.load_cert_chain(*identity.paths)
    return ctx


def client_context(identity: Identity | None = None) -> ssl.SSLContext:
    """TLS 1.3 only, no certificate checks: the application compares the SHA-256 of
    `peer_certificate()` with the node id it expects. Our certificate is loaded when the
    identity has files (sent only if a server asks, which ours do not)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if identity is not None and identity.paths is not None:
        ctx.load_cert_chain(*identity.paths)
    return ctx


# -- wiring -------------------------------------------------------------------------------------


def tls_server_factory(
    loop: Loop,
    context: ssl.SSLContext,
    app_factory: Callable[[], TlsApp],
    *,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    handshake_done: Callable[[TlsTransport], None] | None = None,
) -> Callable[[], TlsProtocol]:
    """A protocol factory for `loop.listen_tcp`: every accepted connection is TLS."""

    def factory() -> TlsProtocol:
        return TlsProtocol(
            loop,
            context,
            app_factory(),
            server_side=True,
            handshake_timeout=handshake_timeout,
            handshake_done=handshake_done,
        )

    return factory


def connect_tls(
    loop: Loop,
    host: str,
    port: int,
    context: ssl.SSLContext,
    app: TlsApp,
    *,
    timeout: float = 10.0,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    handshake_done: Callable[[TlsTransport], None] | None = None,
) -> TlsProtocol:
    """`loop.connect_tcp` with TLS on top; failures reach `app.connection_lost`."""
    proto = TlsProtocol(
        loop,
        context,
        app,
        server_side=False,
        handshake_timeout=handshake_timeout,
        handshake_done=handshake_done,
    )
    loop.connect_tcp(host, port, proto, timeout=timeout)
    return proto


class _Buffers:
    """Per-loop scratch memory. Anonymous mmap: pages cost memory only once written."""

    def __init__(self) -> None:
        self.read = memoryview(mmap.mmap(-1, READ_CHUNK))
        self.file = memoryview(mmap.mmap(-1, FILE_CHUNK))


_buffers: weakref.WeakKeyDictionary[Loop, _Buffers] = weakref.WeakKeyDictionary()
_released: list[ssl.MemoryBIO] = []


def _read_into(sslobj: ssl.SSLObject, n: int, buffer: memoryview) -> int:
    """Decrypt at most `n` bytes into `buffer`: their count (typeshed says bytes). No caller
    keeps the SSL object (or its bound method) in a local: a traceback the application keeps
    holds the frames, and would keep the object _release_tls frees."""
    return sslobj.read(n, buffer)  # type: ignore[return-value]


def _released_bio() -> ssl.MemoryBIO:
    """One empty BIO shared by every closed connection (nothing reads or writes it)."""
    if not _released:
        _released.append(ssl.MemoryBIO())
    return _released[0]


def _loop_buffers(loop: Loop) -> _Buffers:
    buffers = _buffers.get(loop)
    if buffers is None:
        buffers = _buffers[loop] = _Buffers()
    return buffers


class TlsProtocol:
    """Between the loop's Transport (ciphertext) and an application protocol (plaintext)."""

    def __init__(
        self,
        loop: Loop,
        context: ssl.SSLContext,
        app: TlsApp,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        handshake_done: Callable[[TlsTransport], None] | None = None,
    ) -> None:
        self._loop = loop
        self._app = app
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._server_side = server_side
        self._handshake_timeout = handshake_timeout
        self._handshake_done = handshake_done
        self._buffers = _loop_buffers(loop)
        self._raw: Transport | None = None
        self._transport: TlsTransport | None = None
        self._app_made = False  # the application's connection_made ran
        self._state = _HANDSHAKE
        self._error: BaseException | None = None  # reported by connection_lost
        self._lost = False
        self._timer: Handle | None = None
        self._out = SendQueue(self, self._buffers.file)
        self._app_reading = True
        # A client keeps the start of what the server sent until the handshake is done: a
        # server that answers in plaintext is then told apart from a broken TLS one (NotTls).
        self._head: bytearray | None = None if server_side else bytearray()
        self._peer_cert: bytes | None = None  # kept at the handshake (_release_tls)
        self._version: str | None = None
        self.wrote = False  # anything sent to the peer yet (a server: nothing before the hello)
        self.peername: Address = ("", 0)
        self.sockname: Address = ("", 0)

    def __repr__(self) -> str:
        side = "server" if self._server_side else "client"
        state = ["handshake", "open", "closing", "shutdown", "closed"][self._state]
        return f"<TlsProtocol {side} {self.peername} {state}>"

    # -- StreamProtocol: called by the loop's Transport ---------------------------------------
    def connection_made(self, transport: Transport) -> None:
        self._raw = transport
        self.peername, self.sockname = transport.peername, transport.sockname
        transport.set_write_buffer_limits(0, 0)  # see the module docstring: pump on empty
        self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_timed_out)
        self._do_handshake()

    def data_received(self, data: memoryview) -> None:
        state = self._state
        if state == _OPEN:
            self._incoming.write(data)
            if self._app_reading:
                self._read_app_data()
        elif state == _HANDSHAKE:
            head = self._head
            if head is not None and len(head) < PLAIN_HEAD:
                head += data[: PLAIN_HEAD - len(head)]
            self._incoming.write(data)
            self._do_handshake()
        # closing or failed: incoming data is discarded, as the loop's Transport does

    def eof_received(self) -> None:
        if self._state == _HANDSHAKE:
            plain = NotTls.judge(self._head)
            self._fail(
                plain or ConnectionResetError("the peer closed the connection during the handshake")
            )
            return
        if self._state == _OPEN:
            if self._app_reading:  # a close_notify may still wait in the incoming BIO
                self._read_app_data()
            if self._state == _OPEN:
                self._fail(
                    ssl.SSLEOFError(
                        ssl.SSL_ERROR_EOF, "the peer closed the connection without close_notify"
                    )
                )
                return
        if self._state == _CLOSING and self._out.items:
            # The loop's transport closes on FIN once its own queue is flushed; what we still
            # hold (a file being encrypted) can no longer go out: say so instead of None.
            self._error = self._error or ConnectionResetError(
                f"the peer closed the connection with {self._out.size} bytes still to send"
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
        error = self._error or exc
        if error is None and not self._app_made:
            error = ConnectionAbortedError("closed before the TLS connection was made")
        for on_done in self._out.drop():
            self._report(on_done, "sendfile on_done")
        self._release_tls()
        self._report(lambda: self._app.connection_lost(error), "connection_lost")

    def _release_tls(self) -> None:
        """Free OpenSSL's state (15-45 KiB) now: a connection's objects are in reference
        cycles, and hundreds of dead SSL objects waited for the cycle collector under 200 junk
        connections a second (+15-20 MiB at peak). The certificate and version were kept."""
        with contextlib.suppress(AttributeError):
            del self._sslobj
        self._incoming = self._outgoing = _released_bio()

    def pause_writing(self) -> None:
        self._out.raw_paused = True

    def resume_writing(self) -> None:
        self._out.raw_paused = False
        if self._out.items:
            self._out.pump()
        elif self._state == _OPEN:
            self._out.maybe_resume_app()

    # -- handshake ---------------------------------------------------------------------------
    def _do_handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError, OSError, ValueError) as exc:
            self._flush()  # our alert tells the peer why
            self._fail(NotTls.judge(self._head) or exc)
            return
        self._flush()
        self._head = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._peer_cert, self._version = self._sslobj.getpeercert(True), self._sslobj.version()
        self._state = _OPEN
        self._transport = transport = TlsTransport(self)
        if self._handshake_done is not None:
            self._handshake_done(transport)
        if self._state != _OPEN:
            return  # the hook refused the peer (abort or close)
        self._app_made = True
        self._app.connection_made(transport)
        if self._state == _OPEN and self._app_reading:
            self._read_app_data()  # records that came with the end of the handshake

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._state == _HANDSHAKE:
            what = f"TLS handshake with {self.peername[0]}:{self.peername[1]}"
            self._error = TimeoutError(f"{what} timed out after {self._handshake_timeout}s")
        if self._raw is not None:
            self._raw.abort()

    def _fail(self, exc: BaseException) -> None:
        """End the connection because of `exc` (reported by connection_lost)."""
        if self._state >= _SHUTDOWN and self._error is not None:
            return
        log.debug("%r: %r", self, exc)
        self._error = self._error or exc
        was_handshake = self._state == _HANDSHAKE
        self._state = _SHUTDOWN
        raw = self._raw
        if raw is None:
            return
        if was_handshake and not raw.is_closing():
            # Let the alert leave, but do not wait on a peer that never reads.
            raw.close()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(FAILED_CLOSE_GRACE, raw.abort)
        else:
            raw.abort()

    # -- reading -----------------------------------------------------------------------------
    def _read_app_data(self) -> None:
        """Decrypt what the incoming BIO holds and hand it to the application."""
        view = self._buffers.read
        app = self._app
        while True:
            got = 0
            eof = False
            try:
                while got < READ_CHUNK:
                    n = _read_into(self._sslobj, READ_CHUNK - got, view[got:])
                    if not n:  # close_notify (SSLObject.read returns 0 rather than raising)
                        eof = True
                        break
                    got += n
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                eof = True
            except ssl.SSLError as exc:  # a forged or damaged record
                self._flush()  # OpenSSL's alert
                self._fail(exc)
                return
            if got:
                app.data_received(view[:got])
            if self._outgoing.pending:  # e.g. a key update answer
                self._flush()
            if eof:
                if self._state == _OPEN:
                    self._peer_closed()
                return
            if got < READ_CHUNK or self._state != _OPEN or not self._app_reading:
                return

    def _peer_closed(self) -> None:
        """close_notify: the application's eof_received, then our close (as the loop does)."""
        self._app.eof_received()
        if self._transport is not None:
            self._transport.close()

    def _drain(self) -> None:
        """After resume_reading: what arrived while the application paused reading."""
        if self._state == _OPEN and self._app_reading:
            try:
                self._read_app_data()
            except Exception as exc:
                self._callback_failed("data_received", exc)

    # -- writing -----------------------------------------------------------------------------
    def _flush(self) -> None:
        if self._outgoing.pending and self._raw is not None:
            self.wrote = True
            self._raw.write(self._outgoing.read())

    def _encrypt(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:  # no local bound to the SSL object: see _read_app_data
            view = view[self._sslobj.write(view) :]
        self._flush()

    # What the send queue asks (it owns no state of the connection).
    def _is_open(self) -> bool:
        return self._state == _OPEN

    def _sending(self, raw: Transport) -> bool:
        """Queued plaintext may still go out: open, or closing once the queue is sent."""
        return self._state in (_OPEN, _CLOSING) and not raw.is_closing()

    def _queue_sent(self) -> None:
        """The send queue is empty: a close that waited for it goes on."""
        if self._state == _CLOSING:
            self._shutdown()
        elif self._state == _OPEN:
            self._out.maybe_resume_app()

    # -- closing -----------------------------------------------------------------------------
    def _close(self) -> None:
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        if not self._out.items:
            self._shutdown()

    def _shutdown(self) -> None:
        """Queue flushed: close_notify, then the loop's transport flushes and closes."""
        self._state = _SHUTDOWN
        # SSLWantReadError: close_notify is written; we do not wait for the peer's.
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self._sslobj.unwrap()
        self._flush()
        if self._raw is not None:
            self._raw.close()

    def _abort(self) -> None:
        if self._state == _CLOSED:
            return
        self._state = _SHUTDOWN
        if self._raw is not None:
            self._raw.abort()

    # -- application callbacks ---------------------------------------------------------------
    # Errors go to the loop's own accounting (`Loop._report_callback_error`, counted in
    # `callback_errors`) so that a TLS connection fails exactly like a plain one.
    def _report(self, fn: Callable[[], None], where: str, *, fatal: bool = False) -> None:
        try:
            fn()
        except Exception as exc:
            if fatal:
                self._callback_failed(where, exc)
            else:
                self._loop._report_callback_error(f"{where} of {self!r}", exc)

    def _callback_failed(self, where: str, exc: Exception) -> None:
        """An application callback raised: report it and abort, as the loop does."""
        self._loop._report_callback_error(f"{where} of {self!r}", exc)
        self._error = self._error or exc
        self._abort()


class TlsTransport:
    """What the application holds: the loop Transport's interface, over TLS."""

    __slots__ = ("_proto", "peername", "sockname")

    def __init__(self, proto: TlsProtocol) -> None:
        self._proto = proto
        self.peername: Address = proto.peername
        self.sockname: Address = proto.sockname

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send (or queue behind a file); dropped silently after close()."""
        self._proto._out.write(data)

    def sendfile(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> None:
        """As `Transport.sendfile`: `on_done` runs exactly once, when every byte was read and
        encrypted, or the connection closed first (then `connection_lost` follows)."""
        self._proto._out.sendfile(fd, offset, count, on_done)

    def get_write_buffer_size(self) -> int:
        """Plaintext still queued here plus ciphertext the loop's transport has not sent."""
        return self._proto._out.buffer_size()

    def set_write_buffer_limits(self, high: int = HIGH_WATER, low: int = LOW_WATER) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"water marks need 0 <= low <= high, got {high}, {low}")
        proto = self._proto
        out = proto._out
        out.high, out.low = high, low
        if proto._state == _OPEN:
            out.maybe_pause_app()
            out.maybe_resume_app()

    def pause_reading(self) -> None:
        proto = self._proto
        proto._app_reading = False
        if proto._raw is not None:
            proto._raw.pause_reading()

    def resume_reading(self) -> None:
        proto = self._proto
        if proto._app_reading:
            return
        proto._app_reading = True
        if proto._raw is not None:
            proto._raw.resume_reading()
        # Records may wait decrypted or undecrypted; no new bytes may come to trigger a read.
        proto._loop.call_soon(proto._drain)

    def set_read_limit(self, n: int) -> None:
        """At most `n` ciphertext bytes per recv (see `Transport.set_read_limit`)."""
        if self._proto._raw is not None:
            self._proto._raw.set_read_limit(n)

    def close(self) -> None:
        """Flush the queue, send close_notify, close. connection_lost(None) follows."""
        self._proto._close()

    def abort(self) -> None:
        """Close now, dropping whatever is queued."""
        self._proto._abort()

    def is_closing(self) -> bool:
        return self._proto._state != _OPEN

    def peer_certificate(self) -> bytes | None:
        """The DER of the peer's certificate (None for a client, which sends none)."""
        return self._proto._peer_cert

    def version(self) -> str | None:
        return self._proto._version

    def __repr__(self) -> str:
        return f"<TlsTransport {self.sockname}->{self.peername} of {self._proto!r}>"
