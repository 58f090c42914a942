"""The attacks of issue 10 on discovery and authorization, against real node processes on
loopback. Each docstring says what the old (version 1) node did."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from node import discovery
from tests import tlspeer
from tests.attackkit import fake_identities, signed_announce
from tests.junkflood import frame, hello, offer
from tests.node.test_hostile import read_frames
from tests.node.test_integration import done, write_random
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
    """Frames over TLS; a junkflood `hello(label)` becomes the signed hello of the identity the
    label names (tests/tlspeer.py): a verified peer, in none of the node's groups."""
    with tlspeer.connect(("127.0.0.1", node.tcp_port), timeout=10, member=False) as s:
        s.sendall(b"".join(frames))
        got, _ = read_frames(s, b"", count)  # type: ignore[arg-type]
        return got


def test_a_stranger_can_neither_read_nor_push_under_the_defaults(tmp_path: Path) -> None:
    """Before: any host that reached the transfer port listed and downloaded the whole share
    and pushed into the inbox. Now (defaults: --accept group, --share-to group) a peer that
    proved its id but neither trust nor one of the node's groups gets `not_authorized`, and
    nothing lands in the inbox."""
    with nodes(tmp_path, ["b"]) as (b,):
        (b.share / "secret.txt").write_text("payroll")
        _, refused = talk(b, hello("mallory", "x"), frame({"type": "list"}), count=2)
        assert refused["type"] == "error" and refused["code"] == "not_authorized", refused
        get = frame({"type": "get", "id": "t1", "name": "secret.txt", "offset": 0})
        _, reject = talk(b, hello("mallory", "x"), get, count=2)
        assert (reject["type"], reject["code"]) == ("reject", "not_authorized"), reject
        _, reject = talk(b, hello("mallory", "x"), offer("t2", "evil.sh", 4, SHA), count=2)
        assert (reject["type"], reject["code"]) == ("reject", "not_authorized"), reject
        assert not [p for p in b.inbox.rglob("*") if p.is_file()]


def test_accept_trusted_cannot_be_bypassed_by_claiming_a_trusted_id(tmp_path: Path) -> None:
    """Before: `--accept ids --accept-from ID` accepted whoever said ID in its hello (every
    announce broadcast the ids). Now a hello naming a trusted id with another key's proof ends
    the connection (`auth_failed`) before any offer is looked at; the trusted peer itself may
    push."""
    with nodes(tmp_path, ["a", "b"], "--accept", "trusted") as (a, b):
        wait_mesh([a, b])
        b.api("POST", "/api/trust", {"peer": a.node_id})
        assert [t["node"] for t in b.api("GET", "/api/trusted")] == [a.node_id]
        with tlspeer.connect(("127.0.0.1", b.tcp_port), timeout=10) as s:
            real = json.loads(tlspeer.signed_hello(hello("mallory", "a"), s.challenge)[4:])
            s._greeted = True  # send our forged hello as it is
            s.sendall(frame({**real, "node": a.node_id}) + offer("t1", "evil.sh", 4, SHA))
            [refused], _ = read_frames(s, b"", 1)  # type: ignore[arg-type]
        assert (refused["type"], refused["code"]) == ("error", "auth_failed"), refused
        write_random(a.share / "ok.bin", 1000)
        tid = a.api("POST", "/api/push", {"peer": "b", "path": "ok.bin"})["id"]
        assert done(a, tid)["state"] == "done"
        assert [p.name for p in b.inbox.rglob("*") if p.is_file()] == ["ok.bin"]


def test_only_members_of_a_group_may_push_and_read(tmp_path: Path) -> None:
    """Nodes in the same group (the test run's) push and pull; a node in no group is refused
    both ways, and says so on its CLI line (`not authorized by ...`)."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        c = NodeProc(tmp_path, "c", a.discovery_port, group=False).start()
        try:
            wait_mesh([a, b, c])
            write_random(a.share / "x.bin", 1000)
            tid = a.api("POST", "/api/push", {"peer": "b", "path": "x.bin"})["id"]
            assert done(a, tid)["state"] == "done"
            write_random(c.share / "y.bin", 1000)
            tid = c.api("POST", "/api/push", {"peer": "b", "path": "y.bin"})["id"]
            failed = done(c, tid)
            assert (failed["state"], failed["error"]["code"]) == ("failed", "not_authorized")
            tid = c.api("POST", "/api/pull", {"peer": "a", "name": "x.bin"})["id"]
            assert done(c, tid)["error"]["code"] == "not_authorized"
            assert {p["node"]: p["groups"] for p in b.api("GET", "/api/peers")} == {
                a.node_id: ["test"],
                c.node_id: [],
            }
        finally:
            c.stop()


def test_pairing_makes_both_nodes_trust_each_other(tmp_path: Path) -> None:
    """`mole pair` over an authenticated connection: both see the same code, both confirm,
    each trusts the other; then `--accept trusted` takes the other's pushes."""
    with nodes(tmp_path, ["a", "b"], "--accept", "trusted", group=False) as (a, b):
        wait_mesh([a, b])
        a.api("POST", "/api/pair", {"peer": "b"})
        codes = []
        for n in (a, b):
            [p] = n.wait_api("/api/pairings", lambda ps: bool(ps) and ps[0]["code"], what="code")
            codes.append(p["code"])
        assert codes[0] == codes[1] and len(codes[0]) == 7
        b.api("POST", f"/api/pairings/{a.node_id}/answer", {"ok": True})
        a.api("POST", f"/api/pairings/{b.node_id}/answer", {"ok": True})
        for n, other in ((a, b), (b, a)):
            n.wait_api(
                "/api/trusted",
                lambda ts, other=other: [t["node"] for t in ts] == [other.node_id],
                what="the other node trusted",
            )
        write_random(a.share / "p.bin", 1000)
        tid = a.api("POST", "/api/push", {"peer": "b", "path": "p.bin"})["id"]
        assert done(a, tid)["state"] == "done"


def test_accept_prompt_waits_for_the_user(tmp_path: Path) -> None:
    """--accept prompt: the offer waits (the sender gets `pending`), the user sees the sender's
    name, verified id and file (`GET /api/offers`); accept lets it in, reject refuses it with
    `not_authorized`, and nothing of a rejected file is left."""
    with nodes(tmp_path, ["a", "b"], "--accept", "prompt", group=False) as (a, b):
        wait_mesh([a, b])
        write_random(a.share / "yes.bin", 1000)
        write_random(a.share / "no.bin", 1000, seed=2)
        for name, verb in (("yes.bin", "accept"), ("no.bin", "reject")):
            tid = a.api("POST", "/api/push", {"peer": "b", "path": name})["id"]
            [o] = b.wait_api("/api/offers", bool, what="a pending offer")
            assert (o["peer"], o["peer_name"], o["files"][0]["name"]) == (a.node_id, "a", name)
            a.wait_event(lambda e, tid=tid: e["event"] == "transfer_waiting" and e["id"] == tid)
            b.api("POST", f"/api/offers/{o['id']}/{verb}")
            t = done(a, tid)
            if verb == "accept":
                assert t["state"] == "done"
            else:
                assert (t["state"], t["error"]["code"]) == ("failed", "not_authorized")
        assert sorted(p.name for p in b.inbox.rglob("*") if p.is_file()) == ["yes.bin"]


def test_no_group_secret_on_the_wire_or_in_the_api(tmp_path: Path) -> None:
    """The group's secret (and its name) never leave the node: not in announces, not in a
    hello, not in the API's status."""
    with (
        nodes(tmp_path, ["a"], "--group", "crew:hunter2-hunter2", group=False) as (a,),
        listener(a.discovery_port) as ear,
    ):
        info = a.api("GET", "/api/node")
        assert "hunter2" not in repr(info) and info["groups"] == ["crew"]
        data = ear.recv(2048)
        assert b"hunter2" not in data and b"crew" not in data
        [its_hello] = talk(a, hello(MALLORY.node_id, "x"), count=1)
        # its group proofs (over our nonce) carry a tag and a MAC, never the name or secret
        assert its_hello["type"] == "hello" and len(its_hello["groups"]) == 1
        assert "crew" not in repr(its_hello) and "hunter2" not in repr(its_hello)


def test_an_offer_whose_sender_goes_away_is_decided_and_ids_come_in_human_form(
    tmp_path: Path,
) -> None:
    """The dashboard's needs: `offer_decided` when the sender goes away (the page drops the
    offer), the sender's id in human form on the offer, and each peer's on GET /api/peers."""
    with nodes(tmp_path, ["a", "b"], "--accept", "prompt", group=False) as (a, b):
        wait_mesh([a, b])
        human = a.api("GET", "/api/node")["node_human"]
        [peer] = b.api("GET", "/api/peers")
        assert peer["node_human"] == human
        write_random(a.share / "gone.bin", 1000)
        a.api("POST", "/api/push", {"peer": "b", "path": "gone.bin"})
        [o] = b.wait_api("/api/offers", bool, what="a pending offer")
        assert o["peer_human"] == human
        a.stop()
        e = b.wait_event(lambda e: e["event"] == "offer_decided", what="offer_decided")
        assert (e["offer"], e["peer"], e["accepted"]) == (o["id"], a.node_id, False)
        assert b.api("GET", "/api/offers") == []
