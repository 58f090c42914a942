"""The pairing desk (node/pairconn.py) between two nodes whose connection proved both ids:
fakes stand in for the node and the TLS connection (which the transport provides)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.discovery import Peer
from node.messages import Hello, Message
from node.pairconn import PairClient, PairingDesk
from node.peerauth import PeerAuth
from node.truststore import TrustStore

A, B = "a" * 64, "b" * 64


class FakeConn:
    def __init__(self, peer: str) -> None:
        self.peer_auth = PeerAuth(peer, b"cert")
        self.closed = False
        self.transport = None
        self.last_activity = 0.0
        self.other: Any = None  # (desk, client?) or a handler receiving our messages
        self.failed: tuple[str, str] | None = None

    def send(self, msg: Message) -> None:
        self.other(msg)

    def fail(self, code: str, reason: str, send: bool = True) -> None:
        self.failed = (code, reason)
        self.closed = True

    def close(self) -> None:
        self.closed = True


class FakeNode:
    def __init__(self, node_id: str, peer: str, state: Path) -> None:
        self.node_id = node_id
        self.trust = TrustStore(state)
        self.peer = Peer(peer, f"n-{peer[:1]}", "127.0.0.1", 1, (), 0.0, False)
        self.loop = self
        self.peers = self
        self.connected: list[Any] = []
        self.bus = self
        self.published: list[Any] = []

    def publish(self, event: Any) -> None:
        self.published.append(event)

    def time(self) -> float:
        return 0.0

    def resolve(self, text: str) -> Peer:
        return self.peer

    def name_of(self, node_id: str) -> str:
        return self.peer.name

    def learn(self, hello: Hello, addr: str, groups: Any = (), *, dialed: Any = None) -> None: ...

    def dial(self, peer: Peer, handler: Any, transfer: Any = None) -> None:
        self.connected.append(handler)


def wire(tmp_path: Path) -> tuple[PairingDesk, PairingDesk, FakeNode, FakeNode, FakeConn]:
    node_a, node_b = FakeNode(A, B, tmp_path / "a"), FakeNode(B, A, tmp_path / "b")
    for n in (node_a, node_b):
        n.trust.path.parent.mkdir(parents=True, exist_ok=True)
    desk_a, desk_b = PairingDesk(node_a), PairingDesk(node_b)  # type: ignore[arg-type]
    desk_a.start("n-b")
    [handler] = node_a.connected
    assert isinstance(handler, PairClient)
    client_conn, server_conn = FakeConn(B), FakeConn(A)
    handler.conn = client_conn  # type: ignore[assignment]
    client_conn.other = lambda m: desk_b.on_message(server_conn, m, client=False)  # type: ignore[arg-type]
    server_conn.other = handler.on_message
    handler.on_message(Hello(1, B, "n-b", 1))
    return desk_a, desk_b, node_a, node_b, client_conn


def test_both_confirm_and_both_trust(tmp_path: Path) -> None:
    desk_a, desk_b, node_a, node_b, _ = wire(tmp_path)
    [pa], [pb] = desk_a.list_json(), desk_b.list_json()
    assert pa["code"] == pb["code"] and pa["state"] == pb["state"] == "shown"
    desk_b.answer(A, True)
    assert desk_a.list_json()[0]["state"] == "peer_confirmed"
    desk_a.answer("n-b", True)
    assert desk_a.list_json()[0]["state"] == desk_b.list_json()[0]["state"] == "paired"
    assert B in node_a.trust and A in node_b.trust
    assert node_a.trust.get(B).how == "paired"  # type: ignore[union-attr]
    # A `pairing` event per state change seen, on both sides, and never the code (it is
    # logged). Here a reply comes back inside send(): `committed`/`revealed` pass untold.
    states = {n: [(e.peer, e.state) for e in n.published] for n in (node_a, node_b)}
    assert states[node_a] == [(B, "start"), (B, "shown"), (B, "peer_confirmed"), (B, "paired")]
    assert states[node_b] == [(A, "shown"), (A, "confirmed"), (A, "paired")]
    assert pa["code"] not in repr(node_a.published + node_b.published)


def test_one_no_and_nobody_trusts(tmp_path: Path) -> None:
    desk_a, desk_b, node_a, node_b, conn = wire(tmp_path)
    desk_a.answer(B, False)
    assert desk_b.list_json()[0]["state"] == "failed" and conn.closed
    assert len(node_a.trust) == len(node_b.trust) == 0
    assert [e.state for e in node_b.published][-1] == "failed"
