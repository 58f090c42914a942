"""What an independent peer written from docs/protocol.md ran into, as raw-socket tests against a
real node: zero-length streams, `"body": null`, bytes counted per operation, `transfer_resumed`
on the serving side, transfer ids chosen by peers, and names a peer lists that no node may store.
"""

from __future__ import annotations

import hashlib
import random
import socket
from pathlib import Path
from typing import Any

from tests import tlspeer
from tests.junkflood import frame, hello, offer
from tests.node.test_hostile import FakeServer, frames, read_frames, recv_until_closed
from tests.node.test_integration import done, write_random
from tests.nodeproc import NodeProc, free_udp_port, nodes, wait_mesh

PEER = "7" * 32
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def connect(node: NodeProc) -> tuple[socket.socket, bytes]:
    """A greeted raw connection: returns the socket and what followed the node's hello."""
    s = tlspeer.connect(("127.0.0.1", node.tcp_port), timeout=20)
    s.sendall(hello(PEER, "raw"))
    (their,), rest = read_frames(s, b"", 1)
    assert their["type"] == "hello", their
    return s, rest


def test_a_zero_byte_push_has_no_data_frame_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    with nodes(tmp_path, ["b"]) as (b,):
        s, rest = connect(b)
        s.sendall(offer("z1", "empty.txt", 0, EMPTY_SHA))
        (accept, verdict), rest = read_frames(s, rest, 2)
        assert accept == {"type": "accept", "id": "z1", "offset": 0}, accept
        assert verdict["type"] == "verdict" and verdict["ok"] is True, verdict
        # No data frame was needed, and the session is back in IDLE: another operation works.
        s.sendall(frame({"type": "list"}))
        (files,), _ = read_frames(s, rest, 1)
        assert files["type"] == "files", files
        s.close()
        assert (b.inbox / "empty.txt").read_bytes() == b""
        assert not [e for e in b.events if e["event"] == "connection_dropped"]


def test_an_empty_data_frame_after_a_zero_byte_accept_is_unexpected(tmp_path: Path) -> None:
    with nodes(tmp_path, ["b"]) as (b,):
        s, rest = connect(b)
        s.sendall(offer("z1", "empty.txt", 0, EMPTY_SHA))
        _, rest = read_frames(s, rest, 2)
        s.sendall(frame({"type": "data", "body": 0}))
        reply = rest + recv_until_closed(s)
        assert [f["code"] for f in frames(reply) if f["type"] == "error"] == ["unexpected_message"]


def test_zero_byte_push_and_pull_between_two_nodes_drop_no_connection(tmp_path: Path) -> None:
    """Before, every 0-byte push logged connection_dropped between two reference nodes."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        (a.share / "zero.bin").write_bytes(b"")
        a.wait_api("/api/files", lambda fs: any(f["name"] == "zero.bin" for f in fs))
        p = done(a, a.api("POST", "/api/push", {"peer": "b", "path": "zero.bin"})["id"])
        (a.share / "zero2.bin").write_bytes(b"")
        a.wait_api("/api/files", lambda fs: any(f["name"] == "zero2.bin" for f in fs))
        g = done(b, b.api("POST", "/api/pull", {"peer": "a", "name": "zero2.bin"})["id"])
        assert p["state"] == "done" and g["state"] == "done", (p, g)
        assert (b.inbox / "zero.bin").read_bytes() == b"" == (b.inbox / "zero2.bin").read_bytes()
        for node in (a, b):
            dropped = [e for e in node.events if e["event"] == "connection_dropped"]
            assert dropped == [], dropped


def test_body_null_reads_as_no_body(tmp_path: Path) -> None:
    with nodes(tmp_path, ["b"]) as (b,):
        s, rest = connect(b)
        s.sendall(frame({"type": "list", "body": None}))
        (files,), _ = read_frames(s, rest, 1)
        s.close()
        assert files["type"] == "files", files


def served(node: NodeProc, wire_id: str) -> dict[str, Any]:
    return node.api("GET", f"/api/transfers/{node.local_id(wire_id)}")  # type: ignore[no-any-return]


def test_a_push_after_a_pull_on_one_connection_counts_only_its_own_bytes(
    tmp_path: Path,
) -> None:
    """Before, the pull's sender stayed attached and its bytes leaked into the push's `sent`."""
    with nodes(tmp_path, ["b"], "--progress-interval", "0.05") as (b,):
        digest = write_random(b.share / "out.bin", 2 << 20, seed=3)
        b.wait_api("/api/files", lambda fs: any(f["name"] == "out.bin" for f in fs))
        s, rest = connect(b)
        s.sendall(frame({"type": "get", "id": "g1", "name": "out.bin", "offset": 0}))
        (head,), rest = read_frames(s, rest, 1)
        assert head["type"] == "file" and head["sha256"] == digest, head
        got = rest
        while len(got) < len(frame({"type": "data", "body": 2 << 20})) + (2 << 20):
            got += s.recv(1 << 20)
        s.sendall(frame({"type": "verdict", "id": "g1", "ok": True, "sha256": digest}))
        # Now a hash-less push of 100 kB on the same connection.
        data = random.Random(5).randbytes(100_000)
        s.sendall(offer("p1", "in.bin", len(data), None, 7.0))
        (accept,), rest = read_frames(s, b"", 1)
        assert accept["type"] == "accept", accept
        s.sendall(frame({"type": "data", "body": len(data)}) + data)
        b.wait_api(f"/api/transfers/{b.local_id('p1')}", lambda t: t["bytes"] == len(data))
        # Several ticks of the node's accounting while the push waits for its digest.
        b.wait_event(lambda e: e["event"] == "transfer_progress" and e["wire_id"] == "p1")
        sha = hashlib.sha256(data).hexdigest()
        s.sendall(frame({"type": "digest", "id": "p1", "sha256": sha}))
        (verdict,), _ = read_frames(s, rest, 1)
        s.close()
        assert verdict["ok"] is True, verdict
        push = served(b, "p1")
        assert push["sent"] == push["size"] == len(data), push
        progress = [
            e for e in b.events if e["event"] == "transfer_progress" and e.get("wire_id") == "p1"
        ]
        assert all(e["sent"] <= len(data) for e in progress), progress


def test_the_serving_side_of_a_resumed_pull_reports_it(tmp_path: Path) -> None:
    with nodes(tmp_path, ["b"]) as (b,):
        digest = write_random(b.share / "r.bin", 300_000, seed=6)
        b.wait_api("/api/files", lambda fs: any(f["name"] == "r.bin" for f in fs))
        s, rest = connect(b)
        get = {"type": "get", "id": "g7", "name": "r.bin", "offset": 100_000, "expect": digest}
        s.sendall(frame(get))
        (head,), _ = read_frames(s, rest, 1)
        assert head["offset"] == 100_000, head
        ev = b.wait_event(lambda e: e["event"] == "transfer_resumed" and e["wire_id"] == "g7")
        assert ev["offset"] == 100_000
        s.close()


def test_transfer_ids_are_the_nodes_own_whatever_peers_send(tmp_path: Path) -> None:
    """Two peers that both name their push "dup": two records, each with its own id."""
    with nodes(tmp_path, ["b"]) as (b,):
        ids = []
        for i, who in enumerate(("8" * 32, "9" * 32)):
            data = bytes([i]) * 1000
            with tlspeer.connect(("127.0.0.1", b.tcp_port), timeout=20) as s:
                s.sendall(hello(who, f"peer{i}"))
                sha = hashlib.sha256(data).hexdigest()
                s.sendall(offer("dup", f"f{i}.bin", len(data), sha))
                _, rest = read_frames(s, b"", 2)
                s.sendall(frame({"type": "data", "body": len(data)}) + data)
                (verdict,), _ = read_frames(s, rest, 1)
                assert verdict["ok"] is True, verdict
        rows = [t for t in b.api("GET", "/api/transfers") if t["wire_id"] == "dup"]
        ids = [t["id"] for t in rows]
        assert len(rows) == 2 and len(set(ids)) == 2 and "dup" not in ids, rows
        assert sorted(b.api("GET", f"/api/transfers/{i}")["name"] for i in ids) == [
            "f0.bin",
            "f1.bin",
        ]


def test_names_no_node_may_store_are_not_listed_as_a_peers_files(tmp_path: Path) -> None:
    def serve(get: dict[str, Any]) -> bytes:
        raise AssertionError("no get expected")

    fake = FakeServer(serve)
    listing = [
        {"name": n, "size": 1, "sha256": "ab" * 32, "mtime": 0.0, "mime": ""}
        for n in ("ok.txt", "../../etc/passwd", "a\u202egpj.exe", "x\u2215y", "CON")
    ]
    fake.listing = listing
    b = NodeProc(
        tmp_path, "b", free_udp_port(), "--no-discovery", "--peer", f"127.0.0.1:{fake.port}"
    )
    b.start()
    try:
        b.wait_api("/api/peers", lambda ps: [p["name"] for p in ps] == ["fake"], what="fake peer")
        files = b.api("GET", "/api/peers/fake/files")
        assert [f["name"] for f in files] == ["ok.txt"], files
    finally:
        b.stop()
        fake.close()
