"""Pull: this node fetches a file from a peer's share (docs/protocol.md 2.4, 2.5).

`Pulls` starts each attempt; `PullClient` is the client side of one attempt: hello, `get`
(with the resume offset of the partial data it holds, claimed so nothing else writes it
meanwhile), the stream into a `.part`, the whole-file check, and its `verdict`. A hash-less
`file` (feature "pull-digest": the server streams while it hashes) is checked against the
server's `digest` after the stream; nothing is placed before it matched.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from node.conn import TransferClient, attempt_peer, dial_attempt
from node.errors import BadRequest, ErrorCode, LocalCode, StoreError
from node.intake import meta_of
from node.messages import Digest, FileHeader, Get, Hello, Message, Reject
from node.receive import DIGEST_WAIT_PER_BYTE, Receiving
from node.store import Reservation
from node.transfer import TEvent, Transfer, keeps_part

if TYPE_CHECKING:
    from node.node import Node


class Pulls:
    def __init__(self, node: Node) -> None:
        self.node = node

    def create(self, peer_text: str, name: str | None, sha256: str | None) -> Transfer:
        if not name and not sha256:
            raise BadRequest("pull needs a name or a sha256")
        node = self.node
        peer = node.peers.resolve(peer_text)
        t = node.manager.new("pull", "receive", peer.node, peer.name, name or "")
        t.sha256 = sha256
        node.manager.add(t)
        self.start(t)
        return t

    def start(self, t: Transfer) -> None:
        peer = attempt_peer(self.node, t)
        if peer is not None:
            dial_attempt(self.node, peer, t, PullClient(t, t.sha256 if not t.name else None))


class PullClient(Receiving, TransferClient):
    """Client side of a pull: hello, get (with resume offset), receive, verify, verdict."""

    def __init__(self, transfer: Transfer, sha256: str | None) -> None:
        self.transfer = transfer
        self.expect_peer = transfer.peer
        self.want_sha = sha256
        self.incoming = None
        self.reservation: Reservation | None = None
        self.finished = False
        self.asked = 0  # the resume offset our get asked for

    def on_message(self, msg: Message) -> None:
        t = self.transfer
        node = self.node
        if isinstance(msg, Hello):
            if not self.greeted(t, msg):
                return
            offset, expect = 0, None
            if t.name:
                # Claimed now, so the offset we ask for is what the part still holds when the
                # file arrives, whatever else is received meanwhile (a push of the same file).
                with contextlib.suppress(StoreError):
                    self.reservation = node.store.reserve(t.peer, t.name, t.id)
            if self.reservation is not None and self.reservation.held is not None:
                offset, expect = self.reservation.held
            self.asked = offset
            self.conn.send(Get(t.id, t.name or None, self.want_sha, offset, expect))
        elif isinstance(msg, FileHeader):
            self._file(msg)
        elif isinstance(msg, Digest):
            self._digest(msg)
        elif isinstance(msg, Reject):
            self.rejected(t, msg)
        else:
            super().on_message(msg)

    def _file(self, msg: FileHeader) -> None:
        t, node = self.transfer, self.node
        info = msg.info
        t.size, t.sha256, t.name = info.size, info.sha256, info.name
        refusal = node.intake.incoming_refusal(t.peer, info, asked=True)
        if refusal is not None:
            self.conn.fail(refusal.code, refusal.reason)
            return
        if node.manager.busy():  # our own pulls count against the node's slots too
            self.conn.fail(ErrorCode.BUSY, "too many transfers here, retry later")
            return
        try:
            # At the server's offset: ours, or 0 when it starts over (its file changed).
            self.incoming = node.store.open_incoming(
                t.peer,
                meta_of(info),
                unhashed=info.sha256 is None,  # a hash-less file: the digest follows the data
                owner=t.id,
                reservation=self.reservation,
                offset=msg.offset,
            )
        except StoreError as exc:
            self.conn.fail(exc.code, str(exc))
            return
        finally:
            self.reservation = None
        # A reset: our partial data was of other content, or the server would not resume it.
        if self.incoming.reset_reason or (self.asked and msg.offset == 0):
            node.manager.reset(t)
        t.offset = t.bytes = msg.offset
        node.manager.move(t, TEvent.STREAM)
        self.conn.watch_stream()
        if msg.offset:
            node.manager.resumed(t, msg.offset)

    def on_chunk(self, data: memoryview, done: bool) -> None:
        if self.receive_chunk(self.transfer, data) and done:
            assert self.incoming is not None
            if not self.incoming.unhashed:
                self.verify()
                return
            # A hash-less file waits for the server's digest, but not forever: its empty data
            # frames keep the connection from idling out, so they must not hold it open.
            t = self.transfer
            limit = self.node.config.idle_timeout + t.size * DIGEST_WAIT_PER_BYTE
            self.conn.digest_by = self.node.loop.time() + limit
            self.conn.wake()

    def _digest(self, msg: Digest) -> None:
        """The sha256 of a hash-less file, after its last byte: verify against it now."""
        if self.incoming is None:
            return  # failing already
        self.conn.digest_by = None
        try:
            self.incoming.expect(msg.sha256)
        except StoreError as exc:
            self.conn.fail(exc.code, str(exc))
            return
        self.transfer.sha256 = msg.sha256
        self.verify()

    def verify(self) -> None:
        t = self.transfer
        error = self.finish_incoming(t)
        self.finished = True
        if error is None:
            self.node.manager.finish(t)
        else:
            self.node.manager.fail(t, error.code, str(error))
        self.conn.close()

    def on_failed(self, code: str, reason: str) -> None:
        self._stop(code, reason)

    def on_lost(self, reason: str) -> None:
        self._stop(LocalCode.CONNECTION_LOST, reason)

    def _stop(self, code: str, reason: str) -> None:
        if self.reservation is not None:
            self.node.store.release(self.reservation)
            self.reservation = None
        if self.incoming is not None:
            # Keep the partial file when the link broke: a retry or a later pull resumes it.
            self.incoming.abort(keep=keeps_part(code))
            self.incoming = None
        if not self.finished:
            self.finished = True
            self.node.manager.fail(self.transfer, code, reason)
