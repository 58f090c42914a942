"""node/lan.py's I/O: when a starting node's announces leave (docs/protocol.md 1.1)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from node.config import Config
from node.discovery import Announce, decode, encode
from node.events import EventBus
from node.identity import Identity
from node.node import Node
from tests.node.test_trust import listener
from tests.nodeproc import free_udp_port


def make_node(tmp_path: Path, port: int) -> Node:
    cfg = Config(
        name="late", share=tmp_path / "s", inbox=tmp_path / "i", state=tmp_path / "t",
        host="127.0.0.1", port=0, api_port=0, discovery_port=port,
        broadcast=("127.255.255.255",), discovery6=False,
    )  # fmt: skip
    return Node(cfg, events=EventBus("ab" * 16))


def test_the_first_announce_leaves_in_start_before_the_loop_reads_anything(
    tmp_path: Path,
) -> None:
    # Before: it left at the loop's first timer, which runs after the loop has read (and
    # verified, a signature each) every datagram already waiting; a late node among twenty
    # starting containers was heard up to 1.7 s after it listened (mesh-discovery-20).
    port = free_udp_port()
    with listener(port) as rx:
        node = make_node(tmp_path, port)
        try:
            node.start()  # the loop never runs in this test
            data, _ = rx.recvfrom(2048)
            msg, _, _ = decode(data)
            assert isinstance(msg, Announce)
            assert msg.name == "late" and msg.port == node.tcp_port
            # then twice more within the first second (node.announcer.STARTUP_GAPS)
            assert node.lan.announcer.next_deadline() == pytest.approx(
                node.lan.announcer.last_sent + 0.25
            )
        finally:
            node.shutdown()


def test_a_queue_of_datagrams_waiting_at_start_does_not_delay_the_announce(
    tmp_path: Path,
) -> None:
    # Peers' announces arrive between the socket's bind and the first loop round; ours has
    # left already, ahead of all of them.
    port = free_udp_port()
    others = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 9)]
    with listener(port) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        node = make_node(tmp_path, port)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            node.start()
            for i, who in enumerate(others):
                ann = Announce(who.node_id, who.cert_der, f"o{i}", 9, (), 1, 2.0)
                tx.sendto(encode(ann, who.seed), ("127.255.255.255", port))
            node.loop.run(timeout=0.5)  # reads the eight, and runs its timers
            names = []
            for _ in range(len(others) + 1):
                msg, _, _ = decode(rx.recvfrom(2048)[0])
                assert isinstance(msg, Announce)
                names.append(msg.name)
            assert names[0] == "late", names
            assert len(node.peers.table) == len(others)  # and they were all heard
        finally:
            node.shutdown()
