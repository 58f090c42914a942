"""Dialling a peer at every address it is known by, in order, within one attempt.

`Dial` is one connection attempt of a client handler (a push, a pull, a batch, a list, a
pairing) to a peer: the peer's addresses in `Peers.dial_order` (node/peeraddrs.py), each with
a short connect deadline while others remain; an address that does not reach the peer (refused,
no answer in time, the TLS handshake failing, another node there) is counted against it in the
peer's book and the same handler goes on at the next one, so a stale address costs seconds,
not the transfer. Only the last address's failure reaches the handler (and the transfer's
retry policy). Which address reached the peer is for the handshake to prove, as always.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from node.conn import Conn
from node.session import Role
from node.transport import StderrLog

if TYPE_CHECKING:
    from node.conn import ClientHandler, Handler
    from node.discovery import Peer
    from node.node import Node
    from node.transfer import Transfer

log = StderrLog("mole.dial")  # not logging: see node/transport.py

# Seconds an address gets to connect (and to finish TLS) while the peer has others left to try:
# a live address on a LAN or across the Internet answers well within it, a dead one (a
# firewall dropping SYNs, a stale NAT mapping) would otherwise hold the attempt for the full
# CONNECT_TIMEOUT. The last address gets the full time.
TRY_TIMEOUT: Final = 3.0
CONNECT_TIMEOUT: Final = 10.0


def connect(
    node: Node,
    host: str,
    port: int,
    handler: Handler,
    *,
    timeout: float = CONNECT_TIMEOUT,
    handshake: float | None = None,
) -> Conn:
    """One address (`handshake`: a TLS handshake deadline shorter than the node's)."""
    conn = Conn(node, Role.CLIENT, handler)
    if not node.tls:  # --insecure-plaintext
        node.loop.connect_tcp(host, port, conn, timeout=timeout)
        return conn
    from node.tlsproto import connect_tls  # deferred: see Node.__init__

    limit = node.config.handshake_timeout
    connect_tls(
        node.loop,
        host,
        port,
        node.tls_contexts()[1],
        conn,
        timeout=timeout,
        handshake_timeout=limit if handshake is None else min(limit, handshake),
    )
    return conn


class Dial:
    def __init__(
        self,
        node: Node,
        peer: Peer,
        handler: ClientHandler,
        transfer: Transfer | None = None,
    ) -> None:
        self.node = node
        self.peer_id = peer.node
        self.handler = handler
        self.transfer = transfer
        self.addrs = node.peers.dial_order(peer)
        self.index = 0
        self.tried: list[str] = []  # "host:port: why" of each address that did not reach it

    def start(self) -> None:
        host, port = self.addrs[self.index]
        last = self.index == len(self.addrs) - 1
        if self.transfer is not None:
            self.transfer.addr = host  # where this attempt goes now (shown, fair slots)
        timeout = CONNECT_TIMEOUT if last else TRY_TIMEOUT
        handshake = None if last else TRY_TIMEOUT
        conn = connect(self.node, host, port, self.handler, timeout=timeout, handshake=handshake)
        conn.unreached = self._unreached

    def _unreached(self, reason: str) -> bool:
        """The current address did not reach the peer: count it, go on if any is left."""
        host, port = self.addrs[self.index]
        self.node.peers.dial_failed(self.peer_id, host, port)
        self.tried.append(f"{host}:{port}: {reason}")
        if self.index + 1 >= len(self.addrs):
            return False
        self.index += 1
        log.info("peer %s not reached at %s:%d (%s); trying %s:%d", self.peer_id[:8], host,
                 port, reason, *self.addrs[self.index])  # fmt: skip
        # Not from inside the dead connection's callbacks: the next one starts on its own turn.
        self.node.loop.call_soon(self.start)
        return True


__all__ = ["CONNECT_TIMEOUT", "TRY_TIMEOUT", "Dial", "connect"]
