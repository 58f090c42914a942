"""Pairing on transfer connections: the pairing desk (who is pairing with whom, the codes, the
user's answers) and the client side of `mole pair PEER`. The exchange itself is the pure
node/pairing.py; the server side is a few lines in node/serve.py that hand messages here.

Pairing needs both ends' ids proven by the connection (`conn.peer_auth`): the code only says
"the node at the other end holds the certificate the other user's node holds" if the
connection is bound to that certificate. A connection that proved nothing is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from node.conn import ClientHandler, Conn
from node.errors import ErrorCode, LocalCode, NotFound, RemoteProtocolError
from node.events import PairingChanged
from node.messages import Hello, Message, PairCommit, PairConfirm, PairReveal
from node.pairing import Pairing, PairingError, PState

if TYPE_CHECKING:
    from node.node import Node

PAIRING_TIMEOUT: Final = 300.0  # s the users have to compare the codes
MAX_PAIRINGS: Final = 16
KEEPALIVE: Final = 10.0  # s: how often a quiet pairing connection is marked alive


@dataclass
class _Desk:
    pairing: Pairing
    conn: Conn | None
    name: str
    deadline: float
    told: str = ""  # the last state published as a `pairing` event


class PairingDesk:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._by_peer: dict[str, _Desk] = {}

    # -- what the API asks -----------------------------------------------------------------------
    def start(self, peer_text: str) -> dict[str, Any]:
        """`mole pair PEER`: connect and begin (the code appears in `list_json()`)."""
        node = self.node
        peer = node.peers.resolve(peer_text)
        self._make(peer.node, peer.name, client=True, conn=None)
        node.dial(peer, PairClient(self, peer.node))
        self._changed(self._by_peer[peer.node])
        return self._by_peer[peer.node].pairing.to_json()

    def answer(self, peer_text: str, ok: bool) -> dict[str, Any]:
        """The user compared the codes: yes or no."""
        desk = self._find(peer_text)
        p = desk.pairing
        try:
            msg = p.answer(ok)
        except PairingError as exc:
            raise NotFound(
                f"nothing to confirm with that peer now ({exc})", LocalCode.NOT_FOUND
            ) from None
        if desk.conn is not None and not desk.conn.closed:
            desk.conn.send(msg)
        self._settle(desk)
        return {**p.to_json(), "name": desk.name}

    def list_json(self) -> list[dict[str, Any]]:
        self.expire(self.node.loop.time())
        return [{**d.pairing.to_json(), "name": d.name} for d in self._by_peer.values()]

    def expire(self, now: float) -> None:
        for peer, desk in list(self._by_peer.items()):
            p = desk.pairing
            if p.state in (PState.PAIRED, PState.FAILED) and now > desk.deadline:
                del self._by_peer[peer]
            elif now > desk.deadline:
                p.fail("nobody confirmed in time")
                self._changed(desk)
                if desk.conn is not None:
                    desk.conn.close()

    # -- what connections tell -------------------------------------------------------------------
    def on_message(self, conn: Conn, msg: Message, *, client: bool) -> None:
        """A pairing message on `conn` (either side). Refuses unproven connections."""
        auth = conn.peer_auth
        if auth is None:
            conn.fail(ErrorCode.NOT_AUTHORIZED, "pairing needs a connection that proved its id")
            return
        desk = self._by_peer.get(auth.node_id)
        if isinstance(msg, PairCommit) and not client:
            desk = self._make(auth.node_id, self.node.peers.name_of(auth.node_id), False, conn)
            conn.send(desk.pairing.on_commit(msg))
            self._changed(desk)
            return
        if desk is None or desk.conn is not conn:
            conn.fail(
                ErrorCode.UNEXPECTED_MESSAGE, f"no pairing under way for {type(msg).__name__}"
            )
            return
        p = desk.pairing
        try:
            if isinstance(msg, PairReveal):
                reply = p.on_reveal(msg)
                if reply is not None:
                    conn.send(reply)
            elif isinstance(msg, PairConfirm):
                p.on_confirm(msg)
        except (PairingError, RemoteProtocolError) as exc:
            p.fail(str(exc))
            self._changed(desk)
            conn.fail(ErrorCode.BAD_MESSAGE, str(exc))
            return
        self._settle(desk)

    def _live(self, conn: Conn) -> _Desk | None:
        for desk in self._by_peer.values():
            if desk.conn is conn and desk.pairing.state not in (PState.PAIRED, PState.FAILED):
                return desk
        return None

    def keepalive_at(self, conn: Conn) -> float | None:
        """While the users compare codes the connection is quiet on purpose: not idle."""
        desk = self._live(conn)
        return None if desk is None else min(desk.deadline, conn.last_activity + KEEPALIVE)

    def keepalive(self, conn: Conn, now: float) -> None:
        desk = self._live(conn)
        if desk is None:
            return
        if now >= desk.deadline:
            self.expire(now)
        else:
            conn.last_activity = now

    def lost(self, conn: Conn) -> None:
        for desk in self._by_peer.values():
            if desk.conn is conn:
                desk.pairing.fail("the connection closed")
                desk.conn = None
                self._changed(desk)

    # -- internals -------------------------------------------------------------------------------
    def _make(self, peer: str, name: str, client: bool, conn: Conn | None) -> _Desk:
        now = self.node.loop.time()
        self.expire(now)
        if peer not in self._by_peer and len(self._by_peer) >= MAX_PAIRINGS:
            raise NotFound("too many pairings under way", LocalCode.BAD_REQUEST)
        desk = _Desk(Pairing(self.node.node_id, peer, client), conn, name, now + PAIRING_TIMEOUT)
        self._by_peer[peer] = desk
        return desk

    def _find(self, text: str) -> _Desk:
        for peer, desk in self._by_peer.items():
            if text in (peer, desk.name) or (len(text) >= 4 and peer.startswith(text)):
                return desk
        raise NotFound(f"no pairing with {text!r:.64} under way", LocalCode.NOT_FOUND)

    def _changed(self, desk: _Desk) -> None:
        # One event per state a pairing reaches: a dashboard then reads the code from
        # list_json() (the code stays out of the event log).
        state = desk.pairing.state.value
        if state != desk.told:
            desk.told = state
            self.node.bus.publish(PairingChanged(desk.pairing.peer, desk.name, state))

    def _settle(self, desk: _Desk) -> None:
        self._changed(desk)
        p = desk.pairing
        if p.paired:
            self.node.trust.trust(p.peer, desk.name, "paired")
        if p.state in (PState.PAIRED, PState.FAILED) and desk.conn is not None:
            if p.client:
                desk.conn.close()
            desk.conn = None


class PairClient(ClientHandler):
    """`mole pair PEER`'s connection: hello, then the client side of the exchange."""

    def __init__(self, desk: PairingDesk, peer: str) -> None:
        self.desk = desk
        self.peer = peer
        self.expect_peer = peer

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Hello):
            if not self.greet_peer(msg):
                return
            entry = self.desk._by_peer.get(self.peer)
            if entry is None or self.conn.peer_auth is None:
                self.conn.fail(
                    ErrorCode.NOT_AUTHORIZED, "pairing needs a connection that proved its id"
                )
                if entry is not None:
                    entry.pairing.fail("the connection proved no id")
                    self.desk._changed(entry)
                return
            entry.conn = self.conn
            self.conn.send(entry.pairing.start())
            self.desk._changed(entry)
        elif isinstance(msg, PairReveal | PairConfirm):
            self.desk.on_message(self.conn, msg, client=True)
        else:
            super().on_message(msg)

    def get_timer(self) -> float | None:
        return self.desk.keepalive_at(self.conn)

    def handle_timer(self, now: float) -> None:
        self.desk.keepalive(self.conn, now)

    def on_failed(self, code: str, reason: str) -> None:
        self.desk.lost(self.conn)

    def on_lost(self, reason: str) -> None:
        self.desk.lost(self.conn)
