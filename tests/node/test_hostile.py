"""Hostile peers: liars, slowloris, floods of junk connections and datagrams (issue #4).

Unit tests of the admission policy and the header-deadline hook, then real node processes on
loopback attacked through raw sockets (tests/junkflood.py for the flood).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.admission import Admission, RateLimit, Strangers
from node.framing import NEED_DATA, BodyChunk, FrameDecoder, Header, encode_header
from node.messages import Hello
from tests import tlspeer
from tests.junkflood import JunkFlood, error_codes, frame, hello, offer, stalled_pull
from tests.nodeproc import NodeProc, free_udp_port, nodes, wait_mesh

LIAR = "e" * 32

# -- pure parts --------------------------------------------------------------------------------


def test_admission_evicts_the_oldest_of_an_address_over_its_share() -> None:
    adm: Admission[str] = Admission(per_addr=2)
    assert adm.opened("a1", "10.0.0.1") is None
    assert adm.opened("b1", "10.0.0.2") is None
    assert adm.opened("a2", "10.0.0.1") is None
    assert adm.opened("a3", "10.0.0.1") == "a1"  # the address's oldest, not b1
    assert "a1" not in adm and adm.count("10.0.0.1") == 2 and len(adm) == 3
    adm.done("b1")  # greeted
    assert "b1" not in adm and adm.count("10.0.0.2") == 0
    adm.done("b1")  # twice is harmless
    assert adm.opened("a4", "10.0.0.1") == "a2"  # still oldest first
    adm.done("a3")
    adm.done("a4")
    assert len(adm) == 0 and adm.count("10.0.0.1") == 0
    with pytest.raises(ValueError):
        Admission(per_addr=0)


def test_rate_limit_counts_what_it_holds_back() -> None:
    rl = RateLimit(rate=2.0, burst=3, now=0.0)
    assert [rl.allow(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert rl.suppressed == 2
    assert rl.allow(0.5)  # one token back after 0.5 s at 2/s
    assert not rl.allow(0.5)
    assert rl.take_suppressed() == 3 and rl.suppressed == 0
    assert [rl.allow(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_strangers_are_checked_within_a_budget_and_remembered_once_checked() -> None:
    st = Strangers(rate=2.0, burst=3, now=0.0, remember=2)
    assert [st.allow(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert st.allow(0.5) and not st.allow(0.5)  # 2 a second after the burst
    assert not st.known("a")
    st.verified("a")
    st.verified("b")
    assert st.known("a")  # and "a" is now the most recently seen
    st.verified("c")  # over `remember`: the least recently seen ("b") goes
    assert st.known("a") and st.known("c") and not st.known("b")


def test_hello_features_are_remembered_for_a_bounded_number_of_ids() -> None:
    """Before: every hello's features stayed, so a flood of fresh ids grew the dict forever."""
    from node.peers import MAX_FEATURES, Peers

    peers = Peers("0" * 64, missed=3, clock=lambda: 1.0, on_change=lambda ev: None)
    first = Hello(2, f"{0:064x}", "", 0, (), ("digest",))
    peers.learn(first, "10.0.0.2")
    for i in range(1, MAX_FEATURES + 100):
        peers.learn(Hello(2, f"{i:064x}", "", 0, (), ("batch",)), "10.0.0.2")
        if i == MAX_FEATURES - 10:
            peers.learn(first, "10.0.0.2")  # greeted again: among the most recent, it stays
    assert len(peers.features) == MAX_FEATURES
    assert peers.supports(f"{0:064x}", "digest", unknown=False)
    assert not peers.supports(f"{1:064x}", "batch", unknown=False)  # the oldest went


def held(dec: FrameDecoder) -> bool:
    return dec.partial_header  # (a call, so mypy does not narrow the property between steps)


def test_decoder_reports_a_header_in_progress() -> None:
    dec = FrameDecoder()
    assert not held(dec)
    data = encode_header({"type": "data", "body": 3}) + b"abc"
    head = len(data) - 3
    dec.receive_data(data[:2])  # half a prefix
    assert dec.next_event() is NEED_DATA and held(dec)
    dec.receive_data(data[2:6])  # prefix done, header begun
    assert dec.next_event() is NEED_DATA and held(dec)
    dec.receive_data(data[6 : head + 1])  # header done, one body byte
    assert isinstance(dec.next_event(), Header)
    assert isinstance(dec.next_event(), BodyChunk)
    assert dec.next_event() is NEED_DATA and not held(dec)  # a body is not a header
    dec.receive_data(data[head + 1 :])
    last = dec.next_event()
    assert isinstance(last, BodyChunk) and last.last
    assert dec.next_event() is NEED_DATA and not held(dec)


# -- raw-socket helpers --------------------------------------------------------------------------


def recv_until_closed(sock: socket.socket, timeout: float = 20) -> bytes:
    """Everything the node sends until it closes the connection (bounded by `timeout`)."""
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        except TimeoutError:
            raise AssertionError(f"node did not close within {timeout} s; got {out!r}") from None
        if not chunk:
            return out
        out += chunk


def frames(reply: bytes) -> list[dict[str, Any]]:
    out, pos = [], 0
    while pos + 4 <= len(reply):
        (n,) = struct.unpack(">I", reply[pos : pos + 4])
        out.append(json.loads(reply[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


def partials(node: NodeProc) -> list[Path]:
    return sorted(node.inbox.glob(".mole/parts/*.part"))


def inbox_files(node: NodeProc) -> list[str]:
    return sorted(
        p.relative_to(node.inbox).as_posix()
        for p in node.inbox.rglob("*")
        if p.is_file() and ".mole" not in p.relative_to(node.inbox).parts
    )


def liar_push(
    node: NodeProc, content: bytes, *, declared: int, sha256: str, stream: bytes
) -> socket.socket:
    """Hello + offer `declared` bytes; once accepted, a data header for `declared` + `stream`."""
    s = tlspeer.connect(("127.0.0.1", node.tcp_port), timeout=20)
    s.sendall(hello(LIAR, "liar") + offer("t1", "lie.bin", declared, sha256))
    head = b""
    while len(frames_complete(head)) < 2:  # their hello, then accept
        chunk = s.recv(65536)
        assert chunk, f"closed before accept: {head!r}"
        head += chunk
    hello_back, accept = frames(head)[:2]
    assert hello_back["type"] == "hello" and accept["type"] == "accept", accept
    s.sendall(frame({"type": "data", "body": declared}) + stream)
    return s


def frames_complete(reply: bytes) -> list[int]:
    ends, pos = [], 0
    while pos + 4 <= len(reply):
        (n,) = struct.unpack(">I", reply[pos : pos + 4])
        if pos + 4 + n > len(reply):
            break
        pos += 4 + n
        ends.append(pos)
    return ends


def accept_offset(node: NodeProc, size: int, sha256: str) -> int:
    with tlspeer.connect(("127.0.0.1", node.tcp_port), timeout=20) as s:
        s.sendall(hello(LIAR, "liar") + offer("t2", "lie.bin", size, sha256))
        got = b""
        while len(frames_complete(got)) < 2:
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        accept = frames(got)[1]
        assert accept["type"] == "accept", accept
        return int(accept["offset"])


# -- liars pushing to a node -------------------------------------------------------------------


def test_fewer_bytes_than_declared_keeps_the_part_for_resume(tmp_path: Path) -> None:
    content = random.Random(1).randbytes(200_000)
    digest = hashlib.sha256(content).hexdigest()
    with nodes(tmp_path, ["b"]) as (b,):
        s = liar_push(b, content, declared=len(content), sha256=digest, stream=content[:80_000])
        s.shutdown(socket.SHUT_WR)  # EOF mid-body
        recv_until_closed(s)
        s.close()
        ev = b.wait_event(lambda e: e["event"] == "transfer_failed", what="transfer_failed")
        assert ev["error"]["code"] == "truncated" and ev["bytes"] == 80_000
        assert inbox_files(b) == []  # nothing under the final name
        assert [p.stat().st_size for p in partials(b)] == [80_000]
        # the same sender offering the same file again resumes where the lie stopped
        assert accept_offset(b, len(content), digest) == 80_000


def test_more_bytes_than_declared_is_a_protocol_error(tmp_path: Path) -> None:
    content = b"twelve bytes"
    with nodes(tmp_path, ["b"]) as (b,):
        s = tlspeer.connect(("127.0.0.1", b.tcp_port), timeout=20)
        digest = hashlib.sha256(content).hexdigest()
        s.sendall(hello(LIAR, "liar") + offer("t1", "lie.bin", len(content), digest))
        s.sendall(frame({"type": "data", "body": len(content) + 5}) + content + b"extra")
        reply = recv_until_closed(s)
        s.close()
        assert [f["code"] for f in frames(reply) if f["type"] == "error"] == ["too_much_data"]
        ev = b.wait_event(lambda e: e["event"] == "transfer_failed", what="transfer_failed")
        assert ev["error"]["code"] == "too_much_data"
        assert inbox_files(b) == [] and partials(b) == []


def test_garbage_mid_stream_is_a_hash_mismatch_and_the_part_is_deleted(tmp_path: Path) -> None:
    content = random.Random(2).randbytes(300_000)
    lie = content[:100_000] + b"\xde\xad" * 500 + content[101_000:]
    assert len(lie) == len(content)
    with nodes(tmp_path, ["b"]) as (b,):
        digest = hashlib.sha256(content).hexdigest()
        s = liar_push(b, content, declared=len(content), sha256=digest, stream=lie)
        s.shutdown(socket.SHUT_WR)
        reply = recv_until_closed(s)
        s.close()
        verdict = [f for f in frames(reply) if f["type"] == "verdict"]
        assert verdict and not verdict[0]["ok"] and verdict[0]["code"] == "hash_mismatch"
        ev = b.wait_event(lambda e: e["event"] == "transfer_failed", what="transfer_failed")
        assert ev["error"]["code"] == "hash_mismatch"
        assert inbox_files(b) == [] and partials(b) == []


# -- hash-less offers (feature "digest"): the sha256 follows the stream ---------------------------


def read_frames(s: socket.socket, buf: bytes, count: int) -> tuple[list[dict[str, Any]], bytes]:
    """`count` more whole frames from `s` (after what `buf` holds); returns them and the rest."""
    while len(frames_complete(buf)) < count:
        chunk = s.recv(65536)
        assert chunk, f"closed early: {buf!r}"
        buf += chunk
    end = frames_complete(buf)[count - 1]
    return frames(buf[:end]), buf[end:]


def hashless_push(
    node: NodeProc, tid: str, content: bytes, *, offset: int = 0, mtime: float = 0.0
) -> socket.socket:
    """Hello, a hash-less offer of lie.bin, accepted at `offset`, then the rest of the stream."""
    s = tlspeer.connect(("127.0.0.1", node.tcp_port), timeout=20)
    s.sendall(hello(LIAR, "liar") + offer(tid, "lie.bin", len(content), None, mtime))
    (hello_back, accept), rest = read_frames(s, b"", 2)
    assert "digest" in hello_back["features"], hello_back
    assert accept == {"type": "accept", "id": tid, "offset": offset}, accept
    assert rest == b""
    if offset < len(content):
        s.sendall(frame({"type": "data", "body": len(content) - offset}) + content[offset:])
    return s


def received_all(node: NodeProc, tid: str, size: int) -> None:
    """The node holds every byte (waits on its API, no sleeping)."""
    node.wait_api(
        f"/api/transfers/{node.local_id(tid)}",
        lambda t: t["bytes"] == size,
        what=f"all {size} bytes of {tid}",
    )


def test_a_wrong_digest_is_a_hash_mismatch_and_nothing_is_placed(tmp_path: Path) -> None:
    content = random.Random(4).randbytes(300_000)
    with nodes(tmp_path, ["b"]) as (b,):
        s = hashless_push(b, "t1", content)
        received_all(b, "t1", len(content))
        # Every byte is in, yet nothing carries the final name before the digest matched.
        assert inbox_files(b) == [] and len(partials(b)) == 1
        started = b.first("transfer_started")
        assert started["wire_id"] == "t1" and started["sha256"] is None
        s.sendall(frame({"type": "digest", "id": "t1", "sha256": "0" * 64}))
        (verdict,), _ = read_frames(s, b"", 1)
        s.close()
        assert verdict["ok"] is False and verdict["code"] == "hash_mismatch", verdict
        assert verdict["sha256"] == hashlib.sha256(content).hexdigest()  # what it computed
        ev = b.wait_event(lambda e: e["event"] == "transfer_failed", what="transfer_failed")
        assert ev["error"]["code"] == "hash_mismatch" and ev["sha256"] == "0" * 64
        assert inbox_files(b) == [] and partials(b) == []


def test_a_right_digest_places_the_file_and_fills_in_its_sha256(tmp_path: Path) -> None:
    content = random.Random(5).randbytes(300_000)
    digest = hashlib.sha256(content).hexdigest()
    with nodes(tmp_path, ["b"]) as (b,):
        s = hashless_push(b, "t1", content)
        received_all(b, "t1", len(content))
        assert inbox_files(b) == []
        s.sendall(frame({"type": "data", "body": 0}))  # a keepalive while "still hashing"
        s.sendall(frame({"type": "digest", "id": "t1", "sha256": digest}))
        (verdict,), _ = read_frames(s, b"", 1)
        s.close()
        assert verdict["ok"] is True and verdict["sha256"] == digest, verdict
        assert verdict["name"] == "lie.bin"
        ev = b.wait_event(lambda e: e["event"] == "transfer_done", what="transfer_done")
        assert ev["sha256"] == digest and ev["wire_id"] == "t1"
        assert inbox_files(b) == ["lie.bin"] and partials(b) == []
        assert hashlib.sha256((b.inbox / "lie.bin").read_bytes()).hexdigest() == digest


def test_a_hashless_offer_resumes_a_part_of_the_same_size_and_mtime_but_never_skips(
    tmp_path: Path,
) -> None:
    content = random.Random(6).randbytes(200_000)
    digest = hashlib.sha256(content).hexdigest()
    with nodes(tmp_path, ["b"]) as (b,):
        # A hashed push (mtime 0) that broke off leaves a resumable part ...
        s = liar_push(b, content, declared=len(content), sha256=digest, stream=content[:80_000])
        s.shutdown(socket.SHUT_WR)
        recv_until_closed(s)
        s.close()
        b.wait_event(lambda e: e["event"] == "transfer_failed", what="transfer_failed")
        assert [p.stat().st_size for p in partials(b)] == [80_000]
        # ... which a hash-less offer of that name, size and mtime resumes: the digest then
        # checks the whole file, the held prefix included.
        s = hashless_push(b, "t2", content, offset=80_000)
        received_all(b, "t2", len(content))
        s.sendall(frame({"type": "digest", "id": "t2", "sha256": digest}))
        (verdict,), _ = read_frames(s, b"", 1)
        assert verdict["ok"] is True, verdict
        # The node now holds that content; a hash-less offer of it is still streamed (nobody
        # knows it is the same before the digest), and lands under the same name.
        s.sendall(offer("t3", "lie.bin", len(content), None))
        (accept,), _ = read_frames(s, b"", 1)
        assert accept == {"type": "accept", "id": "t3", "offset": 0}, accept
        s.sendall(frame({"type": "data", "body": len(content)}) + content)
        s.sendall(frame({"type": "digest", "id": "t3", "sha256": digest}))
        (verdict,), _ = read_frames(s, b"", 1)
        s.close()
        assert verdict["ok"] is True and verdict["skipped"] is False, verdict
        assert verdict["name"] == "lie.bin"
        assert inbox_files(b) == ["lie.bin"] and partials(b) == []


def test_an_interrupted_hashless_push_keeps_its_part_for_a_resume(tmp_path: Path) -> None:
    content = random.Random(7).randbytes(200_000)
    digest = hashlib.sha256(content).hexdigest()
    with nodes(tmp_path, ["b"]) as (b,):
        s = hashless_push(b, "t1", content[:120_000] + bytes(80_000), mtime=5.0)
        received_all(b, "t1", len(content))
        s.close()  # gone before its digest
        ev = b.wait_event(lambda e: e["event"] == "transfer_failed", what="transfer_failed")
        assert ev["error"]["code"] in ("truncated", "connection_lost"), ev
        assert inbox_files(b) == [] and [p.stat().st_size for p in partials(b)] == [200_000]
        # Another mtime: another file, so the part goes and the stream starts at 0.
        s = hashless_push(b, "t2", content[:50_000] + bytes(150_000), mtime=6.0)
        received_all(b, "t2", len(content))
        s.close()
        b.wait_event(
            lambda e: e["event"] == "transfer_failed" and e["wire_id"] == "t2", what="t2 failed"
        )
        # Same size and mtime as t2: resumed with everything held, nothing left to stream. The
        # held bytes are not what the digest names (zeros, not content): refused, nothing
        # under the final name, and the part is gone so the retry starts afresh.
        s = hashless_push(b, "t3", content, offset=200_000, mtime=6.0)
        s.sendall(frame({"type": "digest", "id": "t3", "sha256": digest}))
        (verdict,), _ = read_frames(s, b"", 1)
        s.close()
        assert verdict["ok"] is False and verdict["code"] == "hash_mismatch", verdict
        assert inbox_files(b) == [] and partials(b) == []


def test_a_digest_that_never_comes_is_too_slow_despite_keepalives(tmp_path: Path) -> None:
    content = random.Random(9).randbytes(100_000)
    with nodes(tmp_path, ["b"], "--idle-timeout", "1") as (b,):
        s = hashless_push(b, "t1", content)
        stop = threading.Event()

        def keepalives() -> None:  # empty data frames: the connection never idles
            with contextlib.suppress(OSError):
                while not stop.wait(0.2):  # pacing of the keepalives, not synchronisation
                    s.sendall(frame({"type": "data", "body": 0}))

        pacer = threading.Thread(target=keepalives, daemon=True)
        pacer.start()
        try:
            ev = b.wait_event(lambda e: e["event"] == "transfer_failed", what="transfer_failed")
        finally:
            stop.set()
            pacer.join()
        assert ev["error"]["code"] == "too_slow" and "digest" in ev["error"]["reason"], ev
        codes = [f.get("code") for f in frames(recv_until_closed(s)) if f["type"] == "error"]
        s.close()
        assert codes == ["too_slow"], codes
        # Nothing under its final name; the part stays for a resume, as after any broken push.
        assert inbox_files(b) == [] and [p.stat().st_size for p in partials(b)] == [100_000]


def test_a_digest_without_a_hashless_offer_is_unexpected(tmp_path: Path) -> None:
    content = b"twelve bytes"
    digest = hashlib.sha256(content).hexdigest()
    with nodes(tmp_path, ["b"]) as (b,):
        s = liar_push(b, content, declared=len(content), sha256=digest, stream=content)
        s.sendall(frame({"type": "digest", "id": "t1", "sha256": digest}))
        reply = recv_until_closed(s)
        s.close()
        kinds = [(f["type"], f.get("code")) for f in frames(reply)]
        assert ("error", "unexpected_message") in kinds, kinds


# -- liars serving a pull ----------------------------------------------------------------------


class FakeServer(tlspeer.Listener):
    """A peer that answers hellos and serves one file through `serve(get_header) -> bytes`."""

    def __init__(self, serve: Callable[[dict[str, Any]], bytes]) -> None:
        self.serve = serve
        self.gets: list[dict[str, Any]] = []
        self.offers: list[dict[str, Any]] = []
        self.listing: list[dict[str, Any]] = []  # what a `list` gets
        self.side = tlspeer.ServerSide("fake")
        super().__init__()

    def _talk(self, raw: socket.socket) -> None:
        with raw:
            raw.settimeout(20)
            buf = b""
            try:
                conn, their = self.side.accept(raw)
                conn.sendall(self.side.hello(their, "fake", self.port, ()))
                while True:
                    ends = frames_complete(buf)
                    if ends:
                        header = frames(buf[: ends[0]])[0]
                        buf = buf[ends[0] :]
                        if header["type"] == "hello":
                            raise AssertionError("a second hello")
                        elif header["type"] == "list":
                            body = json.dumps(self.listing).encode()
                            conn.sendall(frame({"type": "files", "body": len(body)}) + body)
                        elif header["type"] == "offer":
                            self.offers.append(header)
                            reply = {"type": "reject", "id": header["id"], "code": "policy"}
                            conn.sendall(frame({**reply, "reason": "fake"}))
                        elif header["type"] == "get":
                            self.gets.append(header)
                            conn.sendall(self.serve(header))
                            conn.unwrap().shutdown(socket.SHUT_WR)
                        continue
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
            except (OSError, ssl.SSLError):
                return

    def close(self) -> None:
        super().close()
        self.side.close()


@pytest.fixture
def fake_peer(tmp_path: Path) -> Iterator[tuple[FakeServer, NodeProc, bytes]]:
    content = random.Random(3).randbytes(400_000)
    digest = hashlib.sha256(content).hexdigest()
    served: list[bytes] = []

    def serve(get: dict[str, Any]) -> bytes:
        info = {"name": "f.bin", "size": len(content), "sha256": digest, "mtime": 0.0}
        info["mime"] = "application/octet-stream"
        offset = get["offset"] if get.get("expect") == digest else 0
        head = frame({"type": "file", "id": get["id"], "offset": offset, **info})
        body = served.pop(0) if served else content[offset:]
        return head + frame({"type": "data", "body": len(content) - offset}) + body

    fake = FakeServer(serve)
    fake.served = served  # type: ignore[attr-defined]
    b = NodeProc(
        tmp_path, "b", free_udp_port(), "--no-discovery", "--peer", f"127.0.0.1:{fake.port}"
    )
    b.start()
    try:
        b.wait_api("/api/peers", lambda ps: [p["name"] for p in ps] == ["fake"], what="fake peer")
        yield fake, b, content
    finally:
        b.stop()
        fake.close()


def test_a_peer_without_the_digest_feature_gets_an_offer_with_its_sha256(
    fake_peer: tuple[FakeServer, NodeProc, bytes],
) -> None:
    """The fake peer's hello lists no features: a never-hashed file is hashed first."""
    fake, b, _ = fake_peer
    src = b.share / "cold.bin"
    data = random.Random(8).randbytes(3 << 20)
    src.write_bytes(data)
    t = b.api("POST", "/api/push", {"peer": "fake", "path": str(src)})
    final = b.wait_api(
        f"/api/transfers/{t['id']}", lambda t: t["state"] == "failed", what="push refused"
    )
    assert final["error"]["code"] == "policy", final
    assert [o["sha256"] for o in fake.offers] == [hashlib.sha256(data).hexdigest()]


def test_pull_from_a_peer_that_stops_short_resumes_from_the_part(
    fake_peer: tuple[FakeServer, NodeProc, bytes],
) -> None:
    fake, b, content = fake_peer
    fake.served.append(content[:150_000])  # type: ignore[attr-defined]  # then EOF
    t = b.api("POST", "/api/pull", {"peer": "fake", "name": "f.bin"})
    final = b.wait_api(
        f"/api/transfers/{t['id']}", lambda x: x["state"] in ("done", "failed"), timeout=30
    )
    assert final["state"] == "done", final
    assert [g["offset"] for g in fake.gets] == [0, 150_000]  # the retry resumed
    assert (b.inbox / "f.bin").read_bytes() == content
    assert partials(b) == []


def test_pull_of_garbage_fails_with_hash_mismatch_and_leaves_nothing(
    fake_peer: tuple[FakeServer, NodeProc, bytes],
) -> None:
    fake, b, content = fake_peer
    garbage = content[:200_000] + bytes(1000) + content[201_000:]
    fake.served.append(garbage)  # type: ignore[attr-defined]
    t = b.api("POST", "/api/pull", {"peer": "fake", "name": "f.bin"})
    final = b.wait_api(
        f"/api/transfers/{t['id']}", lambda x: x["state"] in ("done", "failed"), timeout=30
    )
    assert final["state"] == "failed" and final["error"]["code"] == "hash_mismatch", final
    assert len(fake.gets) == 1  # a verdict on the content is not retried
    assert inbox_files(b) == [] and partials(b) == []


# -- slowloris ---------------------------------------------------------------------------------


HANDSHAKE_S = 3  # --handshake-timeout of the slowloris tests
PACE = 0.05  # s between two trickled bytes


def trickle(sock: socket.socket, data: bytes, stop: threading.Event, pace: float) -> None:
    for i in range(len(data)):
        if stop.wait(pace):
            return
        try:
            sock.send(data[i : i + 1])
        except OSError:
            return


@pytest.mark.parametrize("kind", ["silent", "slow_hello", "slow_header", "slow_body"])
def test_slowloris_gets_a_clear_error_and_is_closed(tmp_path: Path, kind: str) -> None:
    # One deadline bounds what the client does at full speed (TLS handshake, signed hello) and
    # what it trickles: 1 s was too short for the first on a loaded 2-core machine; 3 s is far
    # from both (the trickles take 6.5 s and 9 s; load only makes them slower).
    args = ("--handshake-timeout", str(HANDSHAKE_S), "--idle-timeout", "4")
    with nodes(tmp_path, ["b"], *args) as (b,):
        s = tlspeer.connect(("127.0.0.1", b.tcp_port), timeout=20)
        size = 1 << 20
        sha = hashlib.sha256(b"x").hexdigest()
        first, slow = {
            "silent": (b"", b""),
            "slow_hello": (b"", hello(LIAR)),
            "slow_header": (hello(LIAR), offer("t1", "slow.bin", size, sha)),
            "slow_body": (
                hello(LIAR)
                + offer("t1", "slow.bin", size, sha)
                + frame({"type": "data", "body": size}),
                bytes(size),
            ),
        }[kind]
        s.sendall(first)
        stop = threading.Event()
        pacer = threading.Thread(target=trickle, args=(s, slow, stop, PACE), daemon=True)
        pacer.start()
        try:
            reply = recv_until_closed(s)
        finally:
            stop.set()
            pacer.join()
            s.close()
        assert kind in ("silent", "slow_body") or len(slow) * PACE > 2 * HANDSHAKE_S, len(slow)
        want = "timeout" if kind == "silent" else "too_slow"
        assert want in error_codes(reply), reply
        ev = b.wait_event(
            lambda e: e["event"] in ("connection_dropped", "transfer_failed"), what="drop event"
        )
        code = ev["code"] if ev["event"] == "connection_dropped" else ev["error"]["code"]
        assert code == want, ev
        assert inbox_files(b) == []
        assert b.api("GET", "/api/node")["stats"]["dropped"].get(want, 0) >= (
            1 if ev["event"] == "connection_dropped" else 0
        )


def test_a_peer_that_stops_reading_a_pull_is_dropped(tmp_path: Path) -> None:
    """Slow read: the stream stalls on the peer's side; the node gives up and frees the slot."""
    with nodes(tmp_path, ["b"], "--idle-timeout", "2") as (b,):
        (b.share / "big.bin").write_bytes(random.Random(5).randbytes(16 << 20))
        b.wait_api("/api/files", lambda fs: len(fs) == 1, timeout=30, what="big.bin hashed")
        s = stalled_pull(b.tcp_port, LIAR, "big.bin")
        try:
            ev = b.wait_event(lambda e: e["event"] == "transfer_failed", timeout=30)
            assert ev["error"]["code"] == "too_slow" and ev["role"] == "send", ev
            # the connection is gone even though its queued bytes were never taken
            b.wait_api(
                "/api/node", lambda n: n["stats"]["connections"] == 0, timeout=30, what="closed"
            )
        finally:
            s.close()


# -- admission under a flood -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stalled_tls", "idle_hello"])
def test_full_node_evicts_an_unproductive_connection_for_a_newcomer(
    tmp_path: Path, kind: str
) -> None:
    args = ("--max-connections", "16", "--handshake-timeout", "60")
    with nodes(tmp_path, ["a", "b"], *args) as (a, b):
        wait_mesh([a, b])
        # 10 a second: within the budget of strangers' hellos (node/gate.py) an idle_hello's
        # fresh id is checked, so its connection waits idle for an eviction, as meant here.
        flood = JunkFlood([("127.0.0.1", b.tcp_port)], total=40, wave=1, tick=0.1, mix={kind: 1})
        flood.start()
        try:
            # 40 junk sockets into 16 slots: the 24 oldest were evicted to admit newer ones
            assert flood.wait(lambda: flood.opened == 40 and flood.closed >= 24, timeout=20)
            evicted = [j for j in flood.junk if j.closed_at is not None]
            assert evicted == flood.junk[: len(evicted)], "not the oldest first"
            assert all("busy" in j.codes for j in evicted), [j.reply for j in evicted]
            # a real peer still gets in (evicting another silent one) and completes a push
            digest = hashlib.sha256(b"through the flood").hexdigest()
            (a.share / "f.txt").write_bytes(b"through the flood")
            t = a.api("POST", "/api/push", {"peer": "b", "path": "f.txt"})
            final = a.wait_api(
                f"/api/transfers/{t['id']}", lambda x: x["state"] in ("done", "failed")
            )
            assert final["state"] == "done" and final["attempts"] == 1, final
            assert hashlib.sha256((b.inbox / "f.txt").read_bytes()).hexdigest() == digest
        finally:
            flood.close()


def test_one_address_holds_a_bounded_share_of_pending_connections(tmp_path: Path) -> None:
    args = ("--max-pending-per-addr", "8", "--handshake-timeout", "60")
    with nodes(tmp_path, ["b"], *args) as (b,):
        flood = JunkFlood([("127.0.0.1", b.tcp_port)], total=20, wave=1, mix={"stalled_tls": 1})
        flood.start()
        try:
            assert flood.wait(lambda: flood.opened == 20 and flood.closed >= 12, timeout=20)
            # exactly the 12 oldest went, each told why; the 8 newest are still waiting
            assert [j.closed_at is not None for j in flood.junk] == [True] * 12 + [False] * 8
            assert all(j.codes == ["busy"] for j in flood.junk[:12])
            ev = b.wait_event(lambda e: e["event"] == "connection_dropped", what="drop line")
            assert ev["code"] == "busy" and ev["addr"] == "127.0.0.1" and "evicted" in ev["reason"]
        finally:
            flood.close()


def test_legitimate_push_completes_during_a_flood(tmp_path: Path) -> None:
    """300+ junk connections of every kind and junk datagrams while 64 MiB are pushed."""
    args = ("--handshake-timeout", "2", "--idle-timeout", "5")
    with nodes(tmp_path, ["a", "b"], *args) as (a, b):
        wait_mesh([a, b])
        size = 64 << 20
        data = random.Random(9).randbytes(1 << 20)
        with open(a.share / "big.bin", "wb") as f:
            for i in range(size >> 20):
                f.write(i.to_bytes(8, "little") + data[8:])
        digest = hashlib.sha256((a.share / "big.bin").read_bytes()).hexdigest()
        targets = [("127.0.0.1", b.tcp_port)] * 3 + [("127.0.0.1", a.tcp_port)]
        mix = {
            "silent": 30, "stalled_tls": 10, "random": 15, "tls_random": 10, "oversized": 10,
            "slow_hello": 15, "slow_header": 15, "slow_body": 1,
        }  # fmt: skip
        flood = JunkFlood(
            targets, udp=("127.255.255.255", b.discovery_port), total=400, wave=40, mix=mix
        )
        flood.start()
        try:
            assert flood.wait(lambda: flood.opened >= 300, timeout=20), flood.opened
            t = a.api("POST", "/api/push", {"peer": "b", "path": "big.bin"})
            final = a.wait_api(
                f"/api/transfers/{t['id']}",
                lambda x: x["state"] in ("done", "failed"),
                timeout=120,
                what="push through the flood",
            )
            assert final["state"] == "done", final
            assert hashlib.sha256((b.inbox / "big.bin").read_bytes()).hexdigest() == digest
            # every junk connection is closed by the nodes, each with an error it can read
            assert flood.wait_closed(timeout=60), [
                (j.kind, j.reply[:80]) for j in flood.open_junk()[:5]
            ]
            assert flood.connect_failures == 0 and flood.datagrams > 0
            by_kind: dict[str, set[str]] = {}
            for j in flood.junk:
                by_kind.setdefault(j.kind, set()).update(j.codes)
            assert by_kind["silent"] <= {"tls_required", "busy"} and by_kind["silent"]
            assert "too_slow" in by_kind["slow_hello"] | by_kind["slow_header"]
            assert by_kind["random"] <= {"tls_required", "busy"}, by_kind  # plaintext
            assert by_kind["tls_random"] - {"busy", "too_slow"}, by_kind  # frame errors, in TLS
            assert by_kind["oversized"] <= {"header_too_large", "busy"} and by_kind["oversized"]
        finally:
            flood.close()
        # both nodes still answer, still list each other, and took in nothing else
        wait_mesh([a, b])
        stats = b.api("GET", "/api/node")["stats"]
        junk_b = sum(1 for j in flood.junk if j.target[1] == b.tcp_port)
        # each one was dropped: counted, or (slow_body) failed as a transfer that was too slow
        slow_transfers = [
            e for e in b.events if e["event"] == "transfer_failed" and e["peer"] != a.node_id
        ]
        assert all(e["error"]["code"] == "too_slow" for e in slow_transfers), slow_transfers
        assert sum(stats["dropped"].values()) + len(slow_transfers) >= junk_b, stats
        assert inbox_files(b) == ["big.bin"] and inbox_files(a) == []
        assert b.wait_event(lambda e: e["event"] == "connection_dropped")["code"]
