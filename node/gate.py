"""Who gets a connection slot: admission of inbound transfer connections under a flood.

Every inbound connection is pending until its hello; one address may hold only a bounded share
of the pending ones (node/admission.py). At the connection limit the node does not refuse the
newcomer: it evicts the connection with nothing in flight that got nothing done for longest,
and only refuses (`busy`) when every connection is mid-operation (docs/protocol.md 2.7). Drops
are counted, and reported as event lines at a bounded rate (a flood must not become a flood of
log lines); the tail of a flood is one summary line. `Timed` for that summary. A ClientHello
is only answered with TLS within the handshake budget of its address (`may_handshake`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node import events as ev
from node.admission import Admission, HandshakeBudget, RateLimit, Strangers
from node.conn import Conn, Refuse
from node.errors import ErrorCode
from node.loop import Transport
from node.messages import Error, encode_message
from node.serve import ServerHandler
from node.session import Role

TLS_HANDSHAKE_RECORD = 0x16  # the first byte of a TLS ClientHello
# The longest first record (the ClientHello's) we wait for: a TLS record holds at most 2^14
# bytes of plaintext, and a ClientHello is sent unencrypted.
MAX_FIRST_RECORD = 5 + (1 << 14)

if TYPE_CHECKING:
    from node.node import Node
    from node.tlsproto import TlsProtocol, TlsTransport

DROP_LINES_PER_S = 10.0  # connection_dropped lines during a flood (burst DROP_LINES_BURST)
DROP_LINES_BURST = 20
DROP_TAIL_EVERY = 0.25  # s between looks at whether the flood's summary line may go
# A TLS client sends its ClientHello as soon as TCP connects; a protocol-2 client without TLS
# (--insecure-plaintext) sends nothing and waits for our challenge. Silence this long (or
# --handshake-timeout if shorter) is answered `tls_required`, so such a client fails at once
# with a clear error instead of both sides timing out; a silent socket of a flood goes too.
SNIFF_SILENCE = 1.0
# Hellos of node ids neither verified here before nor heard announcing, checked per second
# (burst): each costs two pure-Python Ed25519 verifications and a certificate parse (~2.5 ms
# in all; node/admission.py, Strangers). 16 a second was 4-5% of a core under
# bench/flood.py's junk_connections (fresh keys at 200 connections a second), about a quarter
# of what the flood cost the node; a person adds a new peer far more slowly than 4 a second,
# and the burst lets dozens arrive at once.
STRANGER_HELLOS_PER_S = 4.0
STRANGER_HELLOS_BURST = 32
# TLS handshakes started per second from one address / from all addresses together (bursts
# twice that), the addresses of known peers exempt (node/admission.py, HandshakeBudget). A
# ClientHello over budget is answered `busy` in plaintext and closed, before any TLS state.
HANDSHAKES_PER_ADDR_S = 16.0
HANDSHAKES_PER_S = 64.0
KNOWN_HOSTS_EVERY = 1.0  # s: how stale the set of known peers' addresses may be


class Gate:
    def __init__(self, node: Node) -> None:
        self.node = node
        cfg = node.config
        # Pending: before the hello; a connection in its TLS handshake is pending as its Sniff.
        self.admission: Admission[Conn | Sniff] = Admission(cfg.max_pending_per_addr)
        self._lines = RateLimit(DROP_LINES_PER_S, DROP_LINES_BURST, node.loop.time())
        self.counts: dict[str, int] = {}
        # Inbound connections before their TLS handshake is done, oldest first (a dict as an
        # ordered set): they count against --max-connections like any other.
        self.handshaking: dict[Sniff, None] = {}
        self.strangers = Strangers(STRANGER_HELLOS_PER_S, STRANGER_HELLOS_BURST, node.loop.time())
        now = node.loop.time()
        self.handshakes = HandshakeBudget(
            HANDSHAKES_PER_ADDR_S,
            int(2 * HANDSHAKES_PER_ADDR_S),
            HANDSHAKES_PER_S,
            int(2 * HANDSHAKES_PER_S),
            now,
        )
        self._known_hosts: frozenset[str] = frozenset()
        self._known_at = -KNOWN_HOSTS_EVERY

    def may_handshake(self, host: str) -> bool:
        """May a TLS handshake from `host` start now? Known peers' addresses always may."""
        now = self.node.loop.time()
        if now - self._known_at >= KNOWN_HOSTS_EVERY:
            # Every address a peer in the table is known by (announced, dialled, greeted).
            books = self.node.peers.books.values()
            self._known_hosts = frozenset(a.host for book in books for a in book.ordered())
            self._known_at = now
        return host in self._known_hosts or self.handshakes.allow(host, now)

    def accept(self) -> Any:
        """The protocol for a new inbound connection (the loop's listen factory)."""
        node = self.node
        limit = node.config.max_connections
        if len(node.conns) + len(self.handshaking) >= limit:
            # Full: make room rather than refuse, or a flood of silent sockets locks peers out.
            # A TLS handshake not yet done has got nothing done at all: it goes first.
            if self.handshaking:
                oldest = next(iter(self.handshaking))
                oldest.drop(
                    ErrorCode.BUSY, f"evicted: {limit} connections open, TLS handshake not done"
                )
            else:
                victim = self._victim()
                if victim is None:
                    return Refuse(node)
                age = node.loop.time() - victim.useful_at
                victim.drop(
                    ErrorCode.BUSY,
                    f"evicted: {limit} connections open and this one got nothing done "
                    f"for {age:.1f} s",
                )
        conn = Conn(node, Role.SERVER, ServerHandler())
        if not node.tls:
            return conn  # --insecure-plaintext
        return Sniff(self, conn)

    def _victim(self) -> Conn | None:
        """The inbound connection with nothing in flight that got nothing done for longest.

        Silent sockets date from their accept, tricklers from their last whole message: a real
        peer that just connected is the newest of all and goes last.
        """
        victim: Conn | None = None
        for c in self.node.conns:
            if (victim is None or c.useful_at < victim.useful_at) and c.unproductive():
                victim = c
        return victim

    def admit(self, conn: Conn | Sniff, addr: str | None = None) -> None:
        """An inbound connection is pending until its hello; one address gets a bounded share."""
        if addr is None:
            assert isinstance(conn, Conn) and conn.transport is not None
            addr = conn.transport.peername[0]
        victim = self.admission.opened(conn, addr)
        if victim is not None:
            victim.drop(
                ErrorCode.BUSY,
                f"evicted: over {self.admission.per_addr} connections from {addr} without a hello",
            )

    def note_drop(self, peer: tuple[str, int] | None, code: str, reason: str) -> None:
        """Count an inbound connection we dropped; an event line unless a flood is under way."""
        node = self.node
        self.counts[code] = self.counts.get(code, 0) + 1
        if self._lines.allow(node.loop.time()):
            node.bus.publish(
                ev.ConnectionDropped(
                    peer[0] if peer else None,
                    peer[1] if peer else None,
                    code,
                    reason[:200],
                    self._lines.take_suppressed(),
                )
            )
        else:
            node.timers.update(self)  # the summary line comes from handle_timer

    # -- Timed: the flood's summary line ---------------------------------------------------------
    def get_timer(self) -> float | None:
        if not self._lines.suppressed:
            return None
        return self.node.loop.time() + DROP_TAIL_EVERY

    def handle_timer(self, now: float) -> None:
        if self._lines.suppressed and self._lines.allow(now):
            # The flood's tail: say how many drops had no line of their own.
            self.node.bus.publish(ev.ConnectionsDropped(self._lines.take_suppressed()))


class Sniff:
    """The first protocol of an inbound connection: TLS or a clear refusal.

    A TLS client's first byte is a handshake record (0x16). Anything else is a plaintext
    client (an old node, a script, a port scanner): it gets one plaintext `error` frame,
    `tls_required`, so a person sees why, and the connection closes (counted). So does a
    client that sends nothing within SNIFF_SILENCE (a protocol-2 node running
    --insecure-plaintext waits for our challenge). A TLS client is handed to a `TlsProtocol`
    whose application is the connection's `Conn`; this object stays the loop's protocol and
    forwards to it (the loop's Transport has one protocol). The whole TLS handshake must
    finish within --handshake-timeout. Deadlines are `Timed` (node/timers.py).
    """

    FRAME = encode_message(
        Error(ErrorCode.TLS_REQUIRED, "this node speaks TLS 1.3 only (mole protocol 2)")
    )

    def __init__(self, gate: Gate, conn: Conn) -> None:
        self.gate = gate
        self.conn = conn
        self.raw: Transport | None = None
        self.tls: TlsProtocol | None = None
        # The client's first TLS record until it is whole: OpenSSL takes ~45 KiB for a
        # connection as soon as it is fed a byte, so a flood of ClientHellos that stop short
        # costs the node their few bytes each, not an SSL object each, until they are evicted.
        self.head: bytearray | None = None
        self.opened = 0.0
        self.pending = True  # until handshake done, refused, dropped or lost
        gate.handshaking[self] = None

    def connection_made(self, transport: Transport) -> None:
        node = self.gate.node
        self.raw = transport
        self.opened = node.loop.time()
        node.timers.update(self)
        self.gate.admit(self, transport.peername[0])

    # -- Timed --------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        if not self.pending:
            return None
        limit = self.gate.node.config.handshake_timeout
        silent = self.tls is None and self.head is None
        return self.opened + (min(SNIFF_SILENCE, limit) if silent else limit)

    def handle_timer(self, now: float) -> None:
        when = self.get_timer()
        if when is None or now < when or self.raw is None:
            return
        if self.tls is None and self.head is None:
            self._refuse_plaintext("nothing received: a TLS client speaks first")
        else:
            limit = self.gate.node.config.handshake_timeout
            self.drop(ErrorCode.TOO_SLOW, f"TLS handshake not done within {limit:g} s")

    def data_received(self, data: memoryview) -> None:
        if self.tls is None:
            if not data or self.raw is None:
                return
            if self.head is None:
                if data[0] != TLS_HANDSHAKE_RECORD:
                    self._refuse_plaintext("plaintext client refused")
                    return
                self.head = bytearray()
            self.head += data
            if len(self.head) < 5:
                return
            whole = 5 + int.from_bytes(self.head[3:5], "big")
            if whole > MAX_FIRST_RECORD:
                self.drop(ErrorCode.BAD_FRAME, f"a first TLS record of {whole} bytes")
                return
            if len(self.head) < whole:
                return  # its deadline is the handshake's (get_timer): wait for the rest
            if not self.gate.may_handshake(self.raw.peername[0]):
                per_addr, total = HANDSHAKES_PER_ADDR_S, HANDSHAKES_PER_S
                limit = f"{per_addr:g}/s from one address, {total:g}/s in all"
                self.drop(ErrorCode.BUSY, f"too many TLS handshakes now ({limit}): retry later")
                return
            data, self.head = memoryview(bytes(self.head)), bytearray()
            # ssl is loaded (and the contexts made) here, at the first TLS client: an idle
            # node does not hold libssl (node.Node.tls_contexts).
            from node.tlsproto import TlsProtocol

            node = self.gate.node
            self.tls = TlsProtocol(
                node.loop,
                node.tls_contexts()[0],
                self.conn,
                server_side=True,
                handshake_timeout=node.config.handshake_timeout,
                handshake_done=self._handshake_done,
            )
            self.tls.connection_made(self.raw)
            # its deadline is now the whole handshake's (later): Timers finds that lazily
        self.tls.data_received(data)

    def _handshake_done(self, transport: TlsTransport) -> None:
        self._forget()

    def _refuse_plaintext(self, reason: str) -> None:
        raw = self.raw
        assert raw is not None
        raw.write(self.FRAME)
        raw.close()  # flush the frame, then FIN; the linger stage bounds a peer that never reads
        self._forget()
        self.gate.note_drop(raw.peername, ErrorCode.TLS_REQUIRED, reason)

    def drop(self, code: str, reason: str) -> None:
        """Evicted or too slow: counted, told why, then reset. Until we have sent a byte of TLS
        (our ServerHello answers a whole ClientHello) the answer is a plaintext `error` frame,
        as `Refuse`'s: a protocol-2 client reads a non-TLS answer to its ClientHello as one
        (docs/protocol.md 2.0). After it, only TLS can reach the client, and there is no TLS
        connection to say it in until the handshake is done: the reset is all it gets."""
        self._forget()
        raw = self.raw
        if raw is not None and not raw.is_closing():
            self.gate.note_drop(raw.peername, code, reason)
            if self.tls is None or not self.tls.wrote:
                raw.write(encode_message(Error(code, reason)))
            raw.abort()

    def _forget(self) -> None:
        self.pending = False
        self.gate.handshaking.pop(self, None)
        self.gate.admission.done(self)
        self.gate.node.timers.discard(self)

    def eof_received(self) -> None:
        if self.tls is not None:
            self.tls.eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._forget()
        if self.tls is not None:
            self.tls.connection_lost(exc)
        else:
            self.conn.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.tls is not None:
            self.tls.pause_writing()

    def resume_writing(self) -> None:
        if self.tls is not None:
            self.tls.resume_writing()
