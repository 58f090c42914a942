"""Real nodes as processes on loopback: discovery, push, pull, concurrency, hostile peers."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
from pathlib import Path

import pytest

from tests import tlspeer
from tests.nodeproc import NodeProc, about, free_udp_port, nodes, wait_mesh


def write_random(path: Path, size: int, seed: int = 1) -> str:
    import random

    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def done(node: NodeProc, tid: str, timeout: float = 20) -> dict:
    return node.wait_api(
        f"/api/transfers/{tid}",
        lambda t: t["state"] in ("done", "failed", "cancelled"),
        timeout=timeout,
        what=f"transfer {tid} final",
    )


def test_three_nodes_discover_each_other(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b", "c"]) as procs:
        wait_mesh(procs, timeout=5)
        peers = procs[0].api("GET", "/api/peers")
        names = sorted(p["name"] for p in peers)
        assert names == ["b", "c"]
        assert all(p["addr"].startswith("127.") for p in peers)


def test_goodbye_drops_peer_at_once(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"], "--announce-interval", "30") as (a, b):
        wait_mesh([a, b])
        b_id = b.node_id
        b.stop()
        ev = a.wait_event(lambda e: e["event"] == "peer_down" and e["peer"] == b_id, timeout=5)
        assert ev["reason"] == "goodbye"
        assert all(p["node"] != b_id for p in a.api("GET", "/api/peers"))


def test_push_arrives_verified_and_atomically(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        digest = write_random(a.share / "big.bin", 3 << 20)
        t = a.api("POST", "/api/push", {"peer": "b", "path": str(a.share / "big.bin")})
        final = done(a, t["id"])
        assert final["state"] == "done", final
        assert final["sha256"] == digest
        assert sha(b.inbox / "big.bin") == digest
        ev = b.wait_event(lambda e: e["event"] == "transfer_done")
        assert ev["sha256"] == digest and ev["size"] == 3 << 20 and ev["seconds"] >= 0
        # nothing left over: no partial file under any name
        assert sorted(p.name for p in b.inbox.iterdir() if not p.name.startswith(".")) == [
            "big.bin"
        ]


def test_a_never_hashed_file_is_hashed_while_it_is_sent(tmp_path: Path) -> None:
    """Cold push to a peer with the "digest" feature: the offer goes without a sha256, the
    stream starts at once and the sender's hash finishes while it is under way."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        # A first push builds the sender's transfer machinery and TLS contexts (at their first
        # use: node/nodeparts.py), which would otherwise delay this stream's start by about
        # as long as the hash takes and let it finish first under load.
        (a.share / "warm.txt").write_bytes(b"warm")
        warm = a.api("POST", "/api/push", {"peer": "b", "path": "warm.txt"})["id"]
        assert done(a, warm, timeout=60)["state"] == "done"
        size = 96 << 20  # a dozen hashing steps: far more than a loopback round trip
        digest = write_random(a.share / "cold.bin", size, seed=9)
        tid = a.api("POST", "/api/push", {"peer": "b", "path": "cold.bin"})["id"]
        final = done(a, tid, timeout=60)
        assert final["state"] == "done" and final["sha256"] == digest, final
        assert sha(b.inbox / "cold.bin") == digest
        sent = a.wait_event(lambda e: e["event"] == "transfer_done" and e["id"] == tid)
        assert sent["hashed_while_sending"] is True and sent["sha256"] == digest, sent
        assert sent["sent"] == size and sent["attempts"] == 1
        # The receiver saw a hash-less offer and learnt the sha256 from the digest.
        b.wait_event(lambda e: e["event"] == "transfer_done" and about(e, tid))
        got = [e for e in b.events if about(e, tid)]
        assert [e["sha256"] for e in got if e["event"] == "transfer_started"] == [None]
        assert [e["sha256"] for e in got if e["event"] == "transfer_done"] == [digest]
        # The hash went into the cache: the same file again is a normal offer (deduplicated).
        again = a.api("POST", "/api/push", {"peer": "b", "path": "cold.bin"})["id"]
        final = done(a, again)
        assert final["state"] == "done" and final["skipped"], final
        ev = a.wait_event(lambda e: e["event"] == "transfer_done" and e["id"] == again)
        assert "hashed_while_sending" not in ev


def test_same_content_is_done_without_transfer_and_collision_gets_new_name(
    tmp_path: Path,
) -> None:
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        digest = write_random(a.share / "x.bin", 100_000, seed=2)
        t1 = done(a, a.api("POST", "/api/push", {"peer": "b", "path": "x.bin"})["id"])
        assert t1["state"] == "done" and not t1["skipped"]
        t2 = done(a, a.api("POST", "/api/push", {"peer": "b", "path": "x.bin"})["id"])
        assert t2["state"] == "done" and t2["skipped"], t2
        # a different file under the same name must not overwrite the first
        other = a.share / "elsewhere" / "x.bin"
        digest2 = write_random(other, 50_000, seed=3)
        t3 = done(a, a.api("POST", "/api/push", {"peer": "b", "path": str(other)})["id"])
        assert t3["state"] == "done"
        assert sha(b.inbox / "x.bin") == digest
        renamed = [p for p in b.inbox.iterdir() if p.name.startswith("x") and p.name != "x.bin"]
        assert len(renamed) == 1 and sha(renamed[0]) == digest2


def test_pull_from_list(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        digest = write_random(a.share / "sub" / "doc.txt", 12345, seed=4)
        wait_mesh([a, b])
        files = b.wait_api(
            f"/api/peers/{a.node_id}/files", lambda fs: len(fs) == 1, what="a's file list"
        )
        assert files[0]["name"] == "sub/doc.txt" and files[0]["sha256"] == digest
        t = b.api("POST", "/api/pull", {"peer": "a", "name": "sub/doc.txt"})
        final = done(b, t["id"])
        assert final["state"] == "done", final
        assert sha(b.inbox / "sub" / "doc.txt") == digest


def test_pull_unknown_file_fails_with_not_found(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        t = b.api("POST", "/api/pull", {"peer": "a", "name": "nope.txt"})
        final = done(b, t["id"])
        assert final["state"] == "failed" and final["error"]["code"] == "not_found"


def test_accept_policy_none_refuses_before_sending(tmp_path: Path) -> None:
    port = free_udp_port()
    a = NodeProc(tmp_path, "a", port).start()
    b = NodeProc(tmp_path, "b", port, "--accept", "none").start()
    try:
        wait_mesh([a, b])
        write_random(a.share / "f.bin", 1 << 20)
        final = done(a, a.api("POST", "/api/push", {"peer": "b", "path": "f.bin"})["id"])
        assert final["state"] == "failed" and final["error"]["code"] == "not_authorized"
        assert final["sent"] == 0
        assert not any(p for p in b.inbox.rglob("*") if p.is_file())
    finally:
        a.stop()
        b.stop()


def test_max_size_refuses(tmp_path: Path) -> None:
    port = free_udp_port()
    a = NodeProc(tmp_path, "a", port).start()
    b = NodeProc(tmp_path, "b", port, "--max-size", "1000").start()
    try:
        wait_mesh([a, b])
        write_random(a.share / "f.bin", 5000)
        final = done(a, a.api("POST", "/api/push", {"peer": "b", "path": "f.bin"})["id"])
        assert final["error"]["code"] == "too_large"
    finally:
        a.stop()
        b.stop()


def test_concurrent_transfers_fan_in_and_out(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b", "c"]) as (a, b, c):
        wait_mesh([a, b, c])
        digests = {
            f"f{i}.bin": write_random(a.share / f"f{i}.bin", 1 << 20, seed=i) for i in range(4)
        }
        ids = [
            a.api("POST", "/api/push", {"peer": peer, "path": name})["id"]
            for name in digests
            for peer in ("b", "c")
        ]
        for tid in ids:
            assert done(a, tid)["state"] == "done"
        for node in (b, c):
            for name, digest in digests.items():
                assert sha(node.inbox / name) == digest


def test_api_requires_token_when_set(tmp_path: Path) -> None:
    port = free_udp_port()
    a = NodeProc(tmp_path, "a", port, token="s3cret-s3cret-s3cret").start()
    try:
        status, body = a.api_raw("GET", "/api/peers", token="")
        assert status == 401 and body["error"] == "unauthorized"
        status, _ = a.api_raw("GET", "/api/peers", token="wrong")
        assert status == 401
        assert a.api("GET", "/api/peers") == []
    finally:
        a.stop()


def _frame(header: dict) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw


def _recv_all(sock: socket.socket) -> bytes:
    out = b""
    sock.settimeout(5)
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        out += chunk
    return out


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"\x00\x10\x00\x01" + b"x" * 16, "header_too_large"),
        (struct.pack(">I", 5) + b"nope!", "bad_json"),
        (_frame({"type": "offer", "id": "x"}), "unexpected_message"),
    ],
)
def test_bad_frames_get_an_error_code_and_node_survives(
    tmp_path: Path, payload: bytes, code: str
) -> None:
    with nodes(tmp_path, ["a"]) as (a,):
        with tlspeer.connect(("127.0.0.1", a.tcp_port)) as s:
            s.sendall(payload)
            reply = _recv_all(s)
        assert code.encode() in reply, reply
        assert a.alive()
        assert a.api("GET", "/api/node")["name"] == "a"


@pytest.mark.parametrize(
    "name", ["../evil.txt", "/etc/evil", "a/../../evil", "..", "C:\\evil", "ev\x00il", "sub/./x"]
)
def test_traversal_names_are_refused(tmp_path: Path, name: str) -> None:
    with nodes(tmp_path, ["b"]) as (b,):
        hello = {
            "type": "hello", "proto": 1, "node": "f" * 32, "name": "evil", "port": 1,
            "groups": [], "features": [],
        }  # fmt: skip
        offer = {
            "type": "offer", "id": "t1", "name": name, "size": 4, "sha256": "0" * 64,
            "mtime": 0.0, "mime": "text/plain",
        }  # fmt: skip
        with tlspeer.connect(("127.0.0.1", b.tcp_port)) as s:
            s.sendall(_frame(hello) + _frame(offer))
            s.shutdown(socket.SHUT_WR)
            reply = _recv_all(s)
        assert b"bad_name" in reply or b"bad_message" in reply, reply
        assert b.alive()
        outside = [p for p in tmp_path.rglob("evil*")]
        assert outside == []


def test_hash_mismatch_leaves_nothing_under_final_name(tmp_path: Path) -> None:
    with nodes(tmp_path, ["b"]) as (b,):
        body = b"hello world"
        hello = {
            "type": "hello", "proto": 1, "node": "e" * 32, "name": "liar", "port": 1,
            "groups": [], "features": [],
        }  # fmt: skip
        offer = {
            "type": "offer", "id": "t2", "name": "lie.txt", "size": len(body),
            "sha256": hashlib.sha256(b"something else").hexdigest(), "mtime": 0.0,
            "mime": "text/plain",
        }  # fmt: skip
        with tlspeer.connect(("127.0.0.1", b.tcp_port)) as s:
            s.sendall(_frame(hello) + _frame(offer))
            s.sendall(_frame({"type": "data", "body": len(body)}) + body)
            s.shutdown(socket.SHUT_WR)
            reply = _recv_all(s)
        assert b"hash_mismatch" in reply
        assert not (b.inbox / "lie.txt").exists()
        ev = b.wait_event(lambda e: e["event"] == "transfer_failed")
        assert ev["error"]["code"] == "hash_mismatch"
        leftovers = [p for p in b.inbox.rglob("*") if p.is_file()]
        assert all(".part" not in p.name for p in leftovers), leftovers


def test_static_peer_without_broadcast(tmp_path: Path) -> None:
    a = NodeProc(tmp_path, "a", free_udp_port(), "--no-discovery").start()
    try:
        b = NodeProc(
            tmp_path, "b", free_udp_port(), "--no-discovery", "--peer", f"127.0.0.1:{a.tcp_port}"
        ).start()
        try:
            b.wait_api("/api/peers", lambda ps: [p["name"] for p in ps] == ["a"], what="static a")
            # a learned b from b's hello
            a.wait_api(
                "/api/peers", lambda ps: [p["name"] for p in ps] == ["b"], what="b via hello"
            )
            digest = write_random(b.share / "s.bin", 200_000)
            final = done(b, b.api("POST", "/api/push", {"peer": "a", "path": "s.bin"})["id"])
            assert final["state"] == "done" and sha(a.inbox / "s.bin") == digest
        finally:
            b.stop()
    finally:
        a.stop()


def test_junk_datagrams_are_counted_not_fatal(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a"]) as (a,):
        port = a.discovery_port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"", b"\xff" * 50, b"{}", b'{"mole":99,"type":"announce"}', b"x" * 3000):
                s.sendto(junk, ("127.0.0.1", port))
        stats = a.wait_api(
            "/api/node",
            lambda n: sum(n["stats"]["discovery"].values()) >= 4,
            what="junk counted",
        )
        assert a.alive() and stats["name"] == "a"


def test_node_id_is_stable_across_restart(tmp_path: Path) -> None:
    a = NodeProc(tmp_path, "a", free_udp_port()).start()
    first = a.node_id
    a.stop()
    a.start()
    try:
        assert a.node_id == first
    finally:
        a.stop()


def test_stdout_is_json_lines_only(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a"]) as (a,):
        pass
    assert a.events and all("event" in e and "ts" in e for e in a.events)
    assert os.path.getsize(a.stderr_path) == 0 or "Traceback" not in a.stderr_path.read_text()


def test_a_push_never_lands_on_another_node_that_took_the_peers_address(tmp_path: Path) -> None:
    """Addresses are reused (a restarted container may get another node's old IP): the hello
    must come from the node we meant, or the attempt fails and waits for the real one."""
    with nodes(tmp_path, ["a", "b"], "--announce-interval", "30") as (a, b):
        wait_mesh([a, b])
        b_port = b.tcp_port
        b.stop(kill=True)  # no goodbye: a still lists b at its old address
        digest = write_random(a.share / "x.bin", 1 << 20)
        imposter = NodeProc(
            tmp_path, "c", a.discovery_port, "--announce-interval", "30", port=b_port
        ).start()
        try:
            t = a.api("POST", "/api/push", {"peer": b.node_id, "path": "x.bin"})
            retry = a.wait_event(
                lambda e: e["event"] == "transfer_retry" and e["id"] == t["id"],
                what="a retry after the wrong node answered",
            )
            assert retry["code"] == "unreachable" and "answers at" in retry["reason"], retry
            assert imposter.node_id[:8] in retry["reason"]
            assert not (imposter.inbox / "x.bin").exists()
        finally:
            imposter.stop()
        b.start()  # the real b comes back (on a new port) and announces itself
        final = done(a, t["id"], timeout=30)
        assert final["state"] == "done", final
        assert sha(b.inbox / "x.bin") == digest
        assert not (imposter.inbox / "x.bin").exists()
