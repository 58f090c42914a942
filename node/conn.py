"""One TCP connection speaking the mole protocol, and the base of what each side says on it.

`Conn` is the loop's stream protocol for a transfer connection: it feeds bytes to its `Session`
(the sans-I/O state machine), hands events to its `Handler` (push, pull, list, ping or the
serving side), and ends it through one `fail()` path. Its deadlines (docs/protocol.md 2.7)
are owned by a `Deadlines` (node/conndeadlines.py); the Conn is the `Timed` object
(node/timers.py) that asks it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from node import connauth
from node.batchmsg import BATCH_TYPES, AnyMessage, BatchMessage
from node.conndeadlines import Deadlines
from node.errors import ErrorCode, LocalCode, LocalProtocolError, RemoteProtocolError
from node.events import TransferWaiting
from node.loop import Transport
from node.messages import Challenge, Error, Hello, Message, Pending, Reject, encode_message
from node.peerauth import PeerAuth
from node.session import NEED_DATA, Closed, DataChunk, Role, Session, State
from node.transfer import TEvent

if TYPE_CHECKING:
    from node.discovery import Peer
    from node.node import Node
    from node.sender import FileSender
    from node.tlsproto import TlsTransport
    from node.transfer import Transfer

# While a stream we receive flows, the loop wakes us only once this much is queued (or the
# stream's last bytes are): fewer, fuller reads, so the per-read cost in Python (loop turn,
# framing, session) is paid per ~STREAM_LOWAT bytes instead of per ~150 KiB on loopback.
STREAM_LOWAT = 512 << 10
CLOSE_GRACE = 5.0  # after an error, how long a peer that does not read gets to take our bytes


class Handler:
    """Base of what a connection does; client operations and the serving side subclass it."""

    conn: Conn
    sender: FileSender | None = None  # the file stream this side is sending, if any
    keepalive = False  # a hello-only dial that keeps a static/WAN peer listed (query.PingClient)

    @property
    def node(self) -> Node:
        return self.conn.node

    def on_connected(self) -> None: ...

    def on_message(self, msg: Message) -> None:
        self.conn.fail(ErrorCode.UNEXPECTED_MESSAGE, f"unexpected {type(msg).__name__}")

    def on_chunk(self, data: memoryview, done: bool) -> None:
        self.conn.fail(ErrorCode.UNEXPECTED_MESSAGE, "unexpected data")

    def on_batch(self, msg: BatchMessage) -> None:
        """A batch message (docs/protocol.md 2.10); handlers that speak batches override it."""
        self.conn.fail(ErrorCode.UNEXPECTED_MESSAGE, f"unexpected {type(msg).__name__}")

    def on_peer_error(self, code: str, reason: str) -> None:
        self.on_failed(code, f"peer error: {reason}")

    def on_failed(self, code: str, reason: str) -> None: ...

    def on_lost(self, reason: str) -> None: ...

    def busy(self) -> bool:
        """Something is in flight (a transfer, a stream): the connection is not idle clutter."""
        return False

    def streaming(self) -> bool:
        """We are sending a stream of our own (a batch): never pause reading for it."""
        return False

    # The transport's water marks, for a handler that writes a stream itself (a batch).
    def on_write_paused(self) -> None: ...

    def on_writable(self) -> None: ...

    def account(self) -> None:
        """Refresh the transfer's byte counts from the stream (called by the deadline checks)."""

    # Handler deadlines (keepalives, waits): folded into the connection's.
    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None: ...

    def hello(self) -> Hello:
        """The server's answer to the client's (verified) hello."""
        return connauth.server_hello(self.conn)

    def greet_peer(self, msg: Hello) -> bool:
        """A hello (its proof checked by Conn) tells us who is at the other end; remember them
        as a reachable peer. False (and the connection failed) when it is not the node we
        dialed."""
        auth = self.conn.peer_auth
        if auth is None:  # Conn checks every hello before a handler sees it
            self.conn.fail(ErrorCode.AUTH_FAILED, "hello without a checked proof")
            return False
        self.conn.peer_id = auth.node_id
        transport = self.conn.transport
        if transport is not None:
            # A connection we dialled proves the address we dialled works (not the port the
            # hello names: a NAT may forward another one to it).
            dialed = transport.peername[:2] if self.conn.session.role is Role.CLIENT else None
            groups = tuple(sorted(auth.groups))
            peers = self.node.peers
            peers.learn(msg, transport.peername[0], groups, dialed=dialed, keepalive=self.keepalive)
        return True


class ClientHandler(Handler):
    """A connection we dialed: our hello (with its proof) answers the server's challenge."""

    # The node we meant to reach. Addresses are reused (a restarted container may get the old
    # address of another node), so a hello from anyone else must not receive its file.
    expect_peer: str | None = None

    def greet_peer(self, msg: Hello) -> bool:
        super().greet_peer(msg)
        if self.expect_peer is not None and msg.node != self.expect_peer:
            where = self.conn.transport.peername if self.conn.transport else "?"
            self.conn.wrong_node(
                f"node {msg.node[:8]} ({msg.name}) answers at {where}, not {self.expect_peer[:8]}"
            )
            return False
        return True


class TransferClient(ClientHandler):
    """The client side of one attempt of a transfer (a push, a pull, a batch): what all of
    them do with the peer's hello, its `pending` and its `reject`."""

    finished: bool  # the attempt is over: its outcome went to the manager, or will not
    told_pending = False  # a `pending` from the peer was reported

    def busy(self) -> bool:
        return True

    def greeted(self, t: Transfer, msg: Hello) -> bool:
        """Whether the attempt goes on after this hello: from the node we meant (else the
        connection failed), and `t` not cancelled (or failed) while we connected (else closed)."""
        if not self.greet_peer(msg):
            return False
        if t.final or self.finished:
            self.finished = True
            self.conn.close()
            return False
        return True

    def pending(self, t: Transfer, msg: Pending) -> None:
        """The peer's user decides (--accept prompt): keep waiting; its `pending` frames keep
        the connection alive, its accept or reject follows."""
        if not self.told_pending:
            self.told_pending = True
            self.node.bus.publish(TransferWaiting(t.id, msg.timeout))

    def rejected(self, t: Transfer, msg: Reject) -> None:
        self.finished = True
        self.node.manager.fail(t, msg.code, msg.reason, retry_after=msg.retry_after)
        self.conn.close()


def attempt_peer(node: Node, t: Transfer) -> Peer | None:
    """The peer a new attempt of `t` dials, the attempt counted; None when the peer is not
    known (yet): the attempt failed, and the manager retries it as for any unreachable peer."""
    peer = node.peers.get(t.peer)
    t.attempts += 1
    if peer is None:
        node.manager.fail(t, LocalCode.UNREACHABLE, "peer is not known (yet)")
    return peer


def dial_attempt(node: Node, peer: Peer, t: Transfer, client: ClientHandler) -> None:
    """An attempt of `t` connects to `peer` through `client`."""
    t.addr = peer.addr  # before the event: the dial sets it again per address it tries
    node.manager.move(t, TEvent.CONNECT)
    node.dial(peer, client, t)


class Conn:
    """One TCP connection speaking the mole protocol; a handler decides what to say."""

    def __init__(self, node: Node, role: Role, handler: Handler) -> None:
        self.node = node
        self.session = Session(role)
        self.handler = handler
        self.transport: Transport | TlsTransport | None = None
        self.closed = False
        now = node.loop.time()
        self.last_activity = now
        self.peer_id: str | None = None  # set only from a verified hello (peer_auth)
        # What the peer proved (after its hello checked out): handlers and policy read this.
        self.peer_auth: PeerAuth | None = None
        # Client: the certificate the server showed in TLS (None on an insecure connection).
        self.server_cert: bytes | None = None
        self.rx_bytes = 0
        # Last time the peer got something done (a whole message, stream bytes): trickled
        # bytes move last_activity, not this. Eviction picks the smallest.
        self.useful_at = now
        self.deadlines = Deadlines(self)
        self._reads_paused = False
        # Client: called when this address did not reach the peer (no connection, no TLS, or
        # another node there); True when the dial moved on to the peer's next address
        # (node/dial.py), so the handler is not told. None: the handler is told, as always.
        self.unreached: Callable[[str], bool] | None = None
        handler.conn = self

    # -- StreamProtocol --------------------------------------------------------------------------
    def connection_made(self, transport: Transport | TlsTransport) -> None:
        node = self.node
        self.transport = transport
        self.last_activity = self.useful_at = node.loop.time()
        node.conns.add(self)
        if self.session.role is Role.SERVER:
            self.deadlines.hello_by = self.last_activity + node.config.handshake_timeout
            node.admit(self)
            self.send(connauth.challenge(self))
        else:
            self.deadlines.hello_by = self.last_activity + node.config.handshake_timeout
            if not connauth.server_is_expected(self, transport):
                return
        self.handler.on_connected()
        self.wake()

    def data_received(self, data: memoryview) -> None:
        now = self.node.loop.time()
        self.last_activity = now
        self.rx_bytes += len(data)
        try:
            self.session.receive_data(data)
            self._drain()
        except RemoteProtocolError as exc:
            self.fail(exc.code, str(exc))
            return
        self._tune_lowat()
        # Trickled bytes keep a connection "active"; a header must still finish in time.
        if self.session.partial_header:
            if self.deadlines.header_since is None:
                self.deadlines.header_since = now
                self.wake()
        else:
            self.deadlines.header_since = None

    def _tune_lowat(self) -> None:
        """Read in large gulps while a stream comes in, never waiting for bytes that cannot
        come: at most what is left of the stream (frame headers only add to what arrives);
        back to 1 outside a stream and when a look at the stream finds it stalled."""
        transport = self.transport
        if transport is None or self.closed:
            return
        session = self.session
        incoming = session.state in (State.PUSH_STREAM, State.PULL_STREAM) and (
            (session.state is State.PUSH_STREAM) is (session.role is Role.SERVER)
        )
        want = min(STREAM_LOWAT, session.stream_remaining) if incoming else 1
        self.set_lowat(max(1, want))

    def set_lowat(self, n: int) -> None:
        # Only a plain socket transport has the mark: under TLS, ciphertext of the stream's
        # last bytes may already sit read in the TLS layer, so a mark on the socket could wait
        # for bytes that will never come again.
        set_mark = getattr(self.transport, "set_read_low_water", None)
        if set_mark is not None:
            set_mark(n)

    def eof_received(self) -> None:
        try:
            self.session.receive_data(b"")
            self._drain()
        except RemoteProtocolError as exc:
            self.fail(exc.code, str(exc), send=False)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        node = self.node
        node.conns.discard(self)
        node.admission.done(self)
        node.timers.discard(self)
        head = getattr(exc, "head", None)  # tlsproto.NotTls: a plaintext answer to our TLS
        answer = connauth.plaintext_answer(head) if isinstance(head, bytes) else None
        if answer is not None:
            self.handler.on_failed(*answer)
            return
        reason = f"connection lost: {exc}" if exc else "connection closed"
        if self.transport is None and self._next_address(reason):
            return  # never connected here: the same handler goes on at the next address
        self.handler.on_lost(reason)

    def pause_writing(self) -> None:
        # A peer that asks faster than it reads (pipelined `list`s) gets no more of its
        # requests read until it takes our answers: memory stays at the water marks. Not
        # while we stream a file (our queue is the stream; the peer's `error` must get in).
        self.handler.on_write_paused()
        if self.transport is not None and self.handler.sender is None:
            if self.handler.streaming():
                return
            self.transport.pause_reading()
            self._reads_paused = True

    def resume_writing(self) -> None:
        if self._reads_paused and self.transport is not None:
            self._reads_paused = False
            self.transport.resume_reading()
            # Requests already received wait in the session (see _drain).
            try:
                self._drain()
            except RemoteProtocolError as exc:
                self.fail(exc.code, str(exc))
        self.handler.on_writable()

    # -- helpers ---------------------------------------------------------------------------------
    def _drain(self) -> None:
        while not self.closed:
            if self._reads_paused:
                # The peer does not take our answers: answer no more of what it already sent
                # (a burst of pipelined `list`s would otherwise cost one copy each, and over
                # TLS each answer is its own ciphertext). What waits is copied: the buffer it
                # is a view of is reused.
                self.session.detach()
                return
            event = self.session.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, Closed):
                self.close()
                return
            self.useful_at = self.last_activity
            if isinstance(event, DataChunk):
                self.handler.on_chunk(event.data, event.done)
            elif isinstance(event, Error):
                self.handler.on_peer_error(event.code, event.reason)
                self.close()
                return
            elif isinstance(event, Challenge):
                self.send(connauth.answer_challenge(self, event))
            else:
                if isinstance(event, Hello):
                    connauth.check_hello(self, event)  # raises auth_failed
                    if self.deadlines.hello_by is not None:
                        self.deadlines.hello_by = None
                        self.node.admission.done(self)
                if isinstance(event, BATCH_TYPES):  # the one list of batch messages (batchmsg)
                    self.handler.on_batch(event)
                else:
                    self.handler.on_message(event)

    def send(self, msg: AnyMessage) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(self.session.send(msg))

    def send_files_frame(self, frame: bytes) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(self.session.send_files_frame(frame))

    def fail(self, code: str, reason: str, *, send: bool = True) -> None:
        """Report an error to the peer (when the session still allows it) and close.

        A connection that never sent its hello is aborted rather than closed: its error frame is
        already in the kernel's hands, and a flood's sockets must not linger holding fds.
        """
        transport = self.transport
        if self.closed or (transport is not None and transport.is_closing()):
            return
        if send and transport is not None:
            # The session may already be past the point where an error frame is legal.
            with contextlib.suppress(LocalProtocolError):
                transport.write(self.session.send(Error(str(code), reason[:500])))
        inbound = self.session.role is Role.SERVER
        if inbound and transport is not None and not self.handler.busy():
            self.node.note_drop(transport.peername, str(code), reason)
        self.handler.on_failed(str(code), reason)
        if inbound and self in self.node.admission:
            self.node.admission.done(self)
            self.abort()
        else:
            self.close()
            # A peer that stopped reading would keep the flush (and the fd) pending forever.
            self.deadlines.abort_at = self.node.loop.time() + CLOSE_GRACE
            self.wake()

    def _next_address(self, reason: str) -> bool:
        unreached, self.unreached = self.unreached, None
        return unreached is not None and unreached(reason)

    def wrong_node(self, reason: str) -> None:
        """Client: another node answers at the address dialled (addresses are reused). The
        dial moves on to the peer's next address if it has one; else the handler fails
        `unreachable` (transient: the peer may announce itself elsewhere)."""
        if self._next_address(reason):
            self.handler = Handler()  # the next address's Conn has the real handler now
            self.handler.conn = self
            self.abort()
            return
        self.fail(LocalCode.UNREACHABLE, reason, send=False)

    def drop(self, code: str, reason: str) -> None:
        """Fail and give the slot back at once (eviction: the newcomer needs it now)."""
        self.fail(code, reason)
        self.abort()
        self.node.conns.discard(self)
        self.node.admission.done(self)

    def unproductive(self) -> bool:
        """An inbound connection with nothing in flight: first to go when the node is full."""
        return (
            self.session.role is Role.SERVER
            and self.session.state in (State.START, State.GREETING, State.IDLE)
            and not self.handler.busy()
        )

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def wake(self) -> None:
        """A deadline may have moved earlier: let the node's timers ask again."""
        if not self.closed:
            self.node.timers.update(self)

    def watch_stream(self) -> None:
        """A stream starts on this connection: look at its progress every STREAM_CHECK s."""
        self.deadlines.watch_stream(self.node.loop.time())
        self.wake()

    @property
    def digest_by(self) -> float | None:
        """When a hash-less transfer's digest is due (the pull and serve handlers set it)."""
        return self.deadlines.digest_by

    @digest_by.setter
    def digest_by(self, when: float | None) -> None:
        self.deadlines.digest_by = when

    # -- Timed: the deadlines say -------------------------------------------------------------
    def get_timer(self) -> float | None:
        return self.deadlines.get_timer()

    def handle_timer(self, now: float) -> None:
        self.deadlines.handle_timer(now)

    def receiving_stream(self) -> bool:
        """The peer streams file bytes to us now (a single file, or a batch)."""
        state, role = self.session.state, self.session.role
        if state in (State.PUSH_STREAM, State.PULL_STREAM):
            return True
        return (state, role) in ((State.BATCH_PUSH, Role.SERVER), (State.BATCH_PULL, Role.CLIENT))


class Refuse:
    """Protocol for a connection over the limit when nothing can be evicted: say so, close."""

    FRAME = encode_message(Error(ErrorCode.BUSY, "connection limit reached, retry later"))

    def __init__(self, node: Node) -> None:
        self.node = node

    def connection_made(self, transport: Transport) -> None:
        transport.write(self.FRAME)
        transport.abort()
        self.node.note_drop(transport.peername, ErrorCode.BUSY, "connection limit reached")

    def data_received(self, data: memoryview) -> None: ...

    def eof_received(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...
