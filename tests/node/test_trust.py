"""The attacks of issue 10 on discovery and authorization, against real node processes on
loopback. Each docstring says what the old (version 1) node did."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node import discovery
from tests.attackkit import fake_identities, signed_announce
from tests.junkflood import frame, hello, offer
from tests.node.test_hostile import read_frames
from tests.nodeproc import NodeProc, nodes, wait_mesh

MALLORY = fake_identities(1, b"mallory")[0]
SHA = "ab" * 32


def send_datagram(node: NodeProc, data: bytes) -> None:
    """To the nodes' discovery port on the loopback broadcast address, as announces go."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.sendto(data, ("127.255.255.255", node.discovery_port))


def counter_reached(node: NodeProc, key: str, at_least: int = 1) -> None:
    node.wait_api(
        "/api/node",
        lambda info: info["stats"]["discovery"].get(key, 0) >= at_least,
        what=f"discovery counter {key} >= {at_least}",
    )


def peer_ids(node: NodeProc) -> set[str]:
    return {p["node"] for p in node.api("GET", "/api/peers")}


@contextlib.contextmanager
def listener(port: int) -> Iterator[socket.socket]:
    """A socket that hears the nodes' broadcasts on their shared discovery port (as any host
    on the LAN does)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", port))
    s.settimeout(10)
    try:
        yield s
    finally:
        s.close()


def test_a_spoofed_goodbye_does_not_hide_a_live_peer(tmp_path: Path) -> None:
    """Before: a goodbye datagram naming a live peer's id, from any address, dropped it from
    every node's peer list at once."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        forged = discovery.encode(discovery.Goodbye(a.node_id, 2**62), MALLORY.seed)
        send_datagram(b, forged)
        counter_reached(b, "forged")
        assert a.node_id in peer_ids(b)


def test_a_replayed_announce_does_not_revive_a_departed_peer(tmp_path: Path) -> None:
    """Before: an announce recorded earlier and sent again after the peer had left (goodbye)
    listed it again, with its old address and port."""
    with nodes(tmp_path, ["b"]) as (b,):
        with listener(b.discovery_port) as ear:
            a = NodeProc(tmp_path, "a", b.discovery_port).start()
            try:
                wait_mesh([a, b])
                while True:  # a's announce, as any host on the LAN hears it
                    data = ear.recv(2048)
                    msg = discovery.decode(data)[0]
                    if msg.node == a.node_id and isinstance(msg, discovery.Announce):
                        break
            finally:
                a.stop()
        b.wait_event(lambda e: e["event"] == "peer_down" and e["peer"] == a.node_id)
        send_datagram(b, data)
        counter_reached(b, "replayed")
        assert a.node_id not in peer_ids(b)


def test_an_announce_with_a_foreign_key_for_a_known_id_is_ignored(tmp_path: Path) -> None:
    """Before: an announce naming another node's id from another address took the id over:
    pushes to "desk" went to the impostor's address and port."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        impostor = signed_announce(MALLORY, 2**62, name="a", port=9, node=a.node_id)
        send_datagram(b, impostor)
        counter_reached(b, "spoofed")
        [entry] = [p for p in b.api("GET", "/api/peers") if p["node"] == a.node_id]
        assert entry["port"] == a.tcp_port


def talk(node: NodeProc, *frames: bytes, count: int) -> list[dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", node.tcp_port), timeout=10) as s:
        s.sendall(b"".join(frames))
        got, _ = read_frames(s, b"", count)
        return got


@pytest.mark.parametrize("who", ["stranger", "claims a member's id"])
def test_a_stranger_can_neither_read_nor_push_under_the_defaults(tmp_path: Path, who: str) -> None:
    """Before: any host that reached the transfer port listed and downloaded the whole share
    and pushed into the inbox. Now (defaults: --accept group, --share-to group) a peer that
    proved neither trust nor a group gets `not_authorized`, and nothing lands in the inbox."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        (b.share / "secret.txt").write_text("payroll")
        wait_mesh([a, b])
        claimed = a.node_id if who != "stranger" else MALLORY.node_id
        _, refused = talk(b, hello(claimed, "x"), frame({"type": "list"}), count=2)
        assert refused["type"] == "error" and refused["code"] == "not_authorized", refused
        get = frame({"type": "get", "id": "t1", "name": "secret.txt", "offset": 0})
        _, reject = talk(b, hello(claimed, "x"), get, count=2)
        assert (reject["type"], reject["code"]) == ("reject", "not_authorized"), reject
        _, reject = talk(b, hello(claimed, "x"), offer("t2", "evil.sh", 4, SHA), count=2)
        assert (reject["type"], reject["code"]) == ("reject", "not_authorized"), reject
        assert not [p for p in b.inbox.rglob("*") if p.is_file()]


def test_accept_trusted_cannot_be_bypassed_by_claiming_a_trusted_id(tmp_path: Path) -> None:
    """Before: `--accept ids --accept-from ID` accepted whoever said ID in its hello (every
    announce broadcast the ids). A claimed id proves nothing: only what the connection proved
    counts."""
    with nodes(tmp_path, ["a", "b"], "--accept", "trusted") as (a, b):
        wait_mesh([a, b])
        b.api("POST", "/api/trust", {"peer": a.node_id})
        assert [t["node"] for t in b.api("GET", "/api/trusted")] == [a.node_id]
        _, reject = talk(b, hello(a.node_id, "a"), offer("t1", "evil.sh", 4, SHA), count=2)
        assert (reject["type"], reject["code"]) == ("reject", "not_authorized"), reject
        assert "no node id" in reject["reason"]


def test_no_group_secret_on_the_wire_or_in_the_api(tmp_path: Path) -> None:
    """The group's secret (and its name) never leave the node: not in announces, not in a
    hello, not in the API's status."""
    with (
        nodes(tmp_path, ["a"], "--group", "crew:hunter2-hunter2") as (a,),
        listener(a.discovery_port) as ear,
    ):
        info = a.api("GET", "/api/node")
        assert "hunter2" not in repr(info) and info["groups"] == ["crew"]
        data = ear.recv(2048)
        assert b"hunter2" not in data and b"crew" not in data
        [its_hello] = talk(a, hello(MALLORY.node_id, "x"), count=1)
        assert its_hello["type"] == "hello" and its_hello["groups"] == []


def test_pairing_needs_a_connection_that_proved_its_id(tmp_path: Path) -> None:
    """New: pairing stores a peer as trusted, so it is refused on a connection whose client
    proved no id (a claimed id would let anyone pair as anyone)."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        commit = frame({"type": "pair_commit", "commit": SHA})
        _, refused = talk(b, hello(a.node_id, "a"), commit, count=2)
        assert (refused["type"], refused["code"]) == ("error", "not_authorized"), refused
        a.api("POST", "/api/pair", {"peer": "b"})
        a.wait_api(
            "/api/pairings",
            lambda ps: bool(ps) and ps[0]["state"] == "failed",
            what="the pairing to fail",
        )
        assert b.api("GET", "/api/trusted") == [] and a.api("GET", "/api/trusted") == []
