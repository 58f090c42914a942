"""Interrupted transfers resume, with real node processes on loopback (issue #4).

The sender runs under --max-rate, so a 32 MiB transfer takes about three seconds and can be
interrupted half-way on purpose: by SIGKILL (a crash), SIGSTOP (a peer that is away, or whose
connection is half-open), a restart, a changed source file or a cancel. Every wait is an event
or an API state with a deadline.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
from pathlib import Path

import pytest

from node.journal import Journal
from tests.nodeproc import PAIR_ARGS, Event, NodeProc, about, ev, pair

SIZE = 32 << 20
RATE = "12MiB"
SLOW = ("--max-rate", RATE)  # for whichever node sends the file


def write_random(path: Path, seed: int, size: int = SIZE) -> str:
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def parts(node: NodeProc) -> list[Path]:
    d = node.inbox / ".mole" / "parts"
    return sorted(d.iterdir()) if d.exists() else []


def part_bytes(node: NodeProc) -> int:
    return sum(p.stat().st_size for p in parts(node) if p.name.endswith(".part"))


def received(node: NodeProc) -> list[str]:
    return sorted(p.name for p in node.inbox.iterdir() if not p.name.startswith("."))


def halfway(node: NodeProc, tid: str, role: str) -> Event:
    """Wait until `node` reports at least a quarter of the file moved."""
    return node.wait_event(
        lambda e: (
            e["event"] == "transfer_progress"
            and about(e, tid)
            and e["role"] == role
            and e["bytes"] >= SIZE // 4
        ),
        timeout=30,
        what="a quarter of the file",
    )


def push(a: NodeProc, path: Path) -> str:
    """Push a share file once `a` has hashed it (its rescan lists it): a never-hashed file
    would go as a hash-less offer, which never resumes (docs/protocol.md 2.5)."""
    name = path.relative_to(a.share).as_posix()
    a.wait_api(
        "/api/files",
        lambda files: any(f["name"] == name for f in files),
        timeout=20,
        what=f"{name} hashed",
    )
    return str(a.api("POST", "/api/push", {"peer": "b", "path": str(path)})["id"])


def push_halfway(a: NodeProc, b: NodeProc, seed: int) -> tuple[Path, str, str]:
    """A random big.bin in `a`'s share, pushed to `b` until a quarter of it is there: its
    path, the push's id and the file's sha256."""
    src = a.share / "big.bin"
    digest = write_random(src, seed=seed)
    tid = push(a, src)
    halfway(b, tid, "receive")
    return src, tid, digest


def assert_resumed_receive(done: Event, digest: str) -> None:
    """The receiver's transfer_done of a resumed transfer: only the rest crossed the wire."""
    assert done["sha256"] == digest
    assert 0 < done["offset"] < SIZE, done
    assert done["sent"] == SIZE - done["offset"], done


def freeze(node: NodeProc) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGSTOP)


def thaw(node: NodeProc) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGCONT)


# -- push ---------------------------------------------------------------------------------------


def test_push_resumes_after_the_sender_is_killed_and_restarted(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        _, tid, digest = push_halfway(a, b, seed=1)
        a.stop(kill=True)
        # The receiver sees the connection end and keeps what it got.
        failed = ev(b, "transfer_failed", tid)
        assert failed["error"]["code"] in ("truncated", "connection_lost"), failed
        held = part_bytes(b)
        assert SIZE // 4 <= held < SIZE

        a.start()  # same state dir: the journal brings the push back
        restored = ev(a, "transfer_started", tid)
        assert restored["restored"] is True
        assert ev(a, "transfer_resumed", tid)["offset"] == held
        assert ev(b, "transfer_resumed", tid)["offset"] == held
        done_b = ev(b, "transfer_done", tid)
        assert_resumed_receive(done_b, digest)
        assert done_b["offset"] == held
        done_a = ev(a, "transfer_done", tid)
        assert (done_a["offset"], done_a["sent"]) == (held, SIZE - held)
        # Progress during the resumed attempt: offset, bytes held and bytes actually re-sent.
        since = b.events.index(ev(b, "transfer_resumed", tid))
        prog = [e for e in b.events[since:] if e["event"] == "transfer_progress" and about(e, tid)]
        assert prog and all(e["offset"] == held and e["bytes"] == held + e["sent"] for e in prog)
        assert sha(b.inbox / "big.bin") == digest
        assert parts(b) == [] and received(b) == ["big.bin"]


def test_an_interrupted_cold_push_resumes_after_the_sender_restarts(tmp_path: Path) -> None:
    """A never-hashed file goes as a hash-less offer; the receiver keeps its part when the
    sender dies, and the journal (whose row has no sha256 yet) brings the push back to resume
    it: the part matches by name, size and mtime, the final sha256 checks the whole file."""
    with pair(tmp_path, a_args=SLOW) as (a, b):
        src = a.share / "cold.bin"
        digest = write_random(src, seed=21)
        tid = str(a.api("POST", "/api/push", {"peer": "b", "path": str(src)})["id"])
        halfway(b, tid, "receive")
        assert ev(b, "transfer_started", tid)["sha256"] is None  # hash-less offer
        a.stop(kill=True)
        failed = ev(b, "transfer_failed", tid)
        assert failed["error"]["code"] in ("truncated", "connection_lost"), failed
        held = part_bytes(b)
        assert 0 < held < SIZE
        rows = Journal.read(a.state)
        assert [(r["id"], r["sha256"]) for r in rows] == [(tid, None)]
        a.start()
        assert ev(a, "transfer_started", tid)["restored"] is True
        done_b = ev(b, "transfer_done", tid, sha256=digest)
        assert done_b["offset"] == held and done_b["sent"] == SIZE - held, done_b
        ev(a, "transfer_done", tid)
        assert sha(b.inbox / "cold.bin") == digest and parts(b) == []
        assert received(b) == ["cold.bin"]


def test_a_cold_push_hashed_while_it_connects_still_goes_hash_less(tmp_path: Path) -> None:
    """The hash finishes before the receiver's hello (here: the receiver is stopped until a
    has hashed the file): the offer is still hash-less, the digest follows the data. Before,
    such a push offered the sha256 instead, so which offer went out depended on a race between
    the hash and the handshake (on a loaded machine the cold-push tests saw hashed offers)."""
    with pair(tmp_path, a_args=SLOW) as (a, b):
        src = a.share / "cold.bin"
        digest = write_random(src, seed=24)
        freeze(b)
        try:
            tid = str(a.api("POST", "/api/push", {"peer": "b", "path": str(src)})["id"])
            a.wait_api(
                "/api/files",
                lambda files: any(f["name"] == "cold.bin" for f in files),
                timeout=20,
                what="cold.bin hashed",
            )
        finally:
            thaw(b)
        assert ev(b, "transfer_started", tid)["sha256"] is None  # hash-less offer
        done_b = ev(b, "transfer_done", tid)
        assert (done_b["sha256"], done_b["offset"]) == (digest, 0), done_b
        assert ev(a, "transfer_done", tid)["sha256"] == digest
        assert sha(b.inbox / "cold.bin") == digest and received(b) == ["cold.bin"]


def test_push_retries_with_backoff_and_resumes_when_the_receiver_returns(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        _, tid, digest = push_halfway(a, b, seed=2)
        b.stop(kill=True)
        first = ev(a, "transfer_retry", tid)
        assert first["code"] in ("connection_lost", "truncated"), first
        assert 0 < first["bytes"] < SIZE
        ev(a, "transfer_retry", tid, attempt=2)  # it keeps trying while b is away
        b.start()  # a new port: a hears b's announce and retries at once
        offset = ev(a, "transfer_resumed", tid)["offset"]
        done_b = ev(b, "transfer_done", tid)
        assert_resumed_receive(done_b, digest)
        assert done_b["offset"] == offset
        done_a = ev(a, "transfer_done", tid)
        # Bytes sent in all: the first attempt's, then only what b did not hold.
        assert done_a["sent"] == first["bytes"] + SIZE - offset, (first, done_a)
        retries = [e for e in a.events if e["event"] == "transfer_retry" and e["id"] == tid]
        for e in retries:
            assert e["delay"] == pytest.approx(min(0.2 * 2 ** (e["attempt"] - 1), 1.0)), e
        assert sha(b.inbox / "big.bin") == digest and parts(b) == []


def test_a_dropped_connection_is_retried_and_resumed(tmp_path: Path) -> None:
    """The receiver stops answering (SIGSTOP) for longer than the sender's idle timeout: the
    sender gives the connection up, retries, and resumes once the receiver is back."""
    with pair(tmp_path, a_args=(*SLOW, "--idle-timeout", "1.5")) as (a, b):
        _, tid, digest = push_halfway(a, b, seed=3)
        freeze(b)
        retry = ev(a, "transfer_retry", tid)
        assert retry["code"] in ("timeout", "too_slow"), retry
        thaw(b)
        assert ev(a, "transfer_resumed", tid)["offset"] > 0
        done_b = ev(b, "transfer_done", tid)
        assert_resumed_receive(done_b, digest)
        assert sha(b.inbox / "big.bin") == digest and parts(b) == []


def test_changed_source_restarts_from_zero(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        src, tid, _ = push_halfway(a, b, seed=4)
        a.stop(kill=True)
        ev(b, "transfer_failed", tid)
        assert part_bytes(b) > 0
        new_digest = write_random(src, seed=5, size=SIZE - 1000)
        a.start()
        assert ev(a, "transfer_reset", tid)["reason"] == "source_changed"
        assert ev(b, "transfer_reset", tid)["reason"] == "source_changed"
        done_b = ev(b, "transfer_done", tid)
        assert done_b["sha256"] == new_digest
        assert (done_b["offset"], done_b["sent"], done_b["size"]) == (0, SIZE - 1000, SIZE - 1000)
        assert not any(e["event"] == "transfer_resumed" for e in b.events)
        assert sha(b.inbox / "big.bin") == new_digest and parts(b) == []


def test_a_source_modified_while_sent_starts_over(tmp_path: Path) -> None:
    """Bytes not yet sent change in place: the receiver's hash does not match, the sender sees
    its file changed, and the push starts over with the new content instead of failing."""
    with pair(tmp_path, a_args=SLOW) as (a, b):
        src, tid, _ = push_halfway(a, b, seed=16)
        with src.open("r+b") as f:
            f.seek(SIZE - (1 << 20))
            f.write(random.Random(17).randbytes(1 << 20))
        new_digest = sha(src)
        retry = ev(a, "transfer_retry", tid)
        assert retry["code"] == "source_changed", retry
        assert ev(a, "transfer_reset", tid)["reason"] == "source_changed"
        done_b = ev(b, "transfer_done", tid)
        assert (done_b["sha256"], done_b["offset"]) == (new_digest, 0)
        assert sha(b.inbox / "big.bin") == new_digest and parts(b) == []


def test_a_cold_source_modified_while_sent_sends_no_digest_and_starts_over(
    tmp_path: Path,
) -> None:
    """Hash-less push: the file was hashed early in the stream, then its tail changes. The
    digest would vouch for bytes that were not streamed, so none is sent: the sender ends the
    stream as source_changed and pushes the new content."""
    with pair(tmp_path, a_args=SLOW) as (a, b):
        src = a.share / "cold.bin"
        write_random(src, seed=22)
        tid = str(a.api("POST", "/api/push", {"peer": "b", "path": str(src)})["id"])
        halfway(b, tid, "receive")
        assert ev(b, "transfer_started", tid)["sha256"] is None  # hash-less offer
        with src.open("r+b") as f:
            f.seek(SIZE - (1 << 20))
            f.write(random.Random(23).randbytes(1 << 20))
        new_digest = sha(src)
        retry = ev(a, "transfer_retry", tid)
        assert retry["code"] == "source_changed", retry
        assert ev(a, "transfer_reset", tid)["reason"] == "source_changed"
        failed_b = ev(b, "transfer_failed", tid)
        assert failed_b["error"]["code"] == "source_changed", failed_b
        done_b = ev(b, "transfer_done", tid)
        assert (done_b["sha256"], done_b["offset"]) == (new_digest, 0)
        assert sha(b.inbox / "cold.bin") == new_digest and parts(b) == []
        assert received(b) == ["cold.bin"]


def test_a_new_offer_takes_over_a_half_open_connection(tmp_path: Path) -> None:
    """The sender freezes (its FIN never comes: the receiver's connection is half-open) and a
    new sender process on the same state dir offers the file again: the offer owns the .part,
    the stale connection ends at once, and the file resumes intact."""
    b_args = ("--idle-timeout", "120", "--min-rate", "0")  # the stale connection stays open
    with pair(tmp_path, a_args=SLOW, b_args=b_args) as (a, b):
        _, tid, digest = push_halfway(a, b, seed=6)
        freeze(a)
        a2 = NodeProc(tmp_path, "a", a.discovery_port, *PAIR_ARGS, *SLOW)
        try:
            a2.start()
            stale = ev(b, "transfer_failed", tid)
            assert "superseded" in stale["error"]["reason"], stale
            assert ev(b, "transfer_resumed", tid)["offset"] > 0
            done_b = ev(b, "transfer_done", tid)
            assert_resumed_receive(done_b, digest)
            ev(a2, "transfer_done", tid)
            assert sha(b.inbox / "big.bin") == digest and parts(b) == []
        finally:
            a.stop(kill=True)
            a2.stop()
        assert received(b) == ["big.bin"]


def test_retries_are_bounded(tmp_path: Path) -> None:
    a_args = (*SLOW, "--retries", "3", "--retry-backoff", "0.3", "--retry-backoff-max", "0.5")
    with pair(tmp_path, a_args=a_args) as (a, b):
        _, tid, _ = push_halfway(a, b, seed=7)
        b.stop(kill=True)
        failed = ev(a, "transfer_failed", tid)
        assert failed["attempts"] == 4, failed  # the first attempt and 3 retries
        retries = [e for e in a.events if e["event"] == "transfer_retry" and e["id"] == tid]
        assert [e["attempt"] for e in retries] == [1, 2, 3]
        assert [e["delay"] for e in retries] == [0.3, 0.5, 0.5]
        # Each retry waited its delay before the next attempt (which failed at once).
        times = [e["ts"] for e in retries] + [failed["ts"]]
        for e, later in zip(retries, times[1:], strict=True):
            assert later - e["ts"] >= e["delay"] * 0.9, (e, later)
        assert a.api("GET", f"/api/transfers/{tid}")["state"] == "failed"


# -- pull ---------------------------------------------------------------------------------------


def pull(b: NodeProc, name: str) -> str:
    return str(b.api("POST", "/api/pull", {"peer": "a", "name": name})["id"])


def test_pull_resumes_after_the_puller_is_killed_and_restarted(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        digest = write_random(a.share / "big.bin", seed=8)
        a.wait_api("/api/files", lambda fs: [f["name"] for f in fs] == ["big.bin"])
        tid = pull(b, "big.bin")
        halfway(b, tid, "receive")
        b.stop(kill=True)
        held = part_bytes(b)
        assert SIZE // 4 <= held < SIZE
        b.start()
        assert ev(b, "transfer_started", tid)["restored"] is True
        assert ev(b, "transfer_resumed", tid)["offset"] == held
        done_b = ev(b, "transfer_done", tid)
        assert_resumed_receive(done_b, digest)
        assert done_b["offset"] == held
        done_a = ev(a, "transfer_done", tid, offset=held)  # the server's record of the resume
        assert done_a["sent"] == SIZE - held
        assert sha(b.inbox / "big.bin") == digest and parts(b) == []


def test_a_pull_requested_again_ends_the_stale_stream(tmp_path: Path) -> None:
    """The puller freezes (the server's connection to it is half-open) and comes back as a new
    process: its get for the same transfer ends the stale stream before the new one starts."""
    a_args = (*SLOW, "--idle-timeout", "120", "--min-rate", "0")  # the stale stream stays open
    with pair(tmp_path, a_args=a_args) as (a, b):
        digest = write_random(a.share / "big.bin", seed=18)
        a.wait_api("/api/files", lambda fs: [f["name"] for f in fs] == ["big.bin"])
        tid = pull(b, "big.bin")
        halfway(b, tid, "receive")
        freeze(b)
        b2 = NodeProc(tmp_path, "b", b.discovery_port, *PAIR_ARGS)
        try:
            b2.start()
            done_b = ev(b2, "transfer_done", tid)
            assert_resumed_receive(done_b, digest)
        finally:
            b.stop(kill=True)
            b2.stop()
        mine = [
            e
            for e in a.events
            if about(e, tid) and e["event"] not in ("transfer_progress", "transfer_resumed")
        ]
        kinds = [e["event"] for e in mine]
        assert kinds == ["transfer_started", "transfer_failed", "transfer_started", "transfer_done"]
        assert "superseded" in mine[1]["error"]["reason"], mine[1]
        assert sha(b.inbox / "big.bin") == digest


def test_pull_of_a_changed_file_restarts_from_zero(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        src = a.share / "big.bin"
        write_random(src, seed=9)
        a.wait_api("/api/files", lambda fs: [f["name"] for f in fs] == ["big.bin"])
        tid = pull(b, "big.bin")
        halfway(b, tid, "receive")
        b.stop(kill=True)
        assert part_bytes(b) > 0
        new_digest = write_random(src, seed=10)  # same size, other content
        b.start()
        assert ev(b, "transfer_reset", tid)["reason"] == "source_changed"
        done_b = ev(b, "transfer_done", tid)
        assert (done_b["sha256"], done_b["offset"], done_b["sent"]) == (new_digest, 0, SIZE)
        assert sha(b.inbox / "big.bin") == new_digest and parts(b) == []


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_at_the_sender_stops_the_stream_and_removes_the_part(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        _, tid, _ = push_halfway(a, b, seed=11)
        assert a.api("POST", f"/api/transfers/{tid}/cancel")["state"] == "cancelled"
        failed = ev(b, "transfer_failed", tid)
        assert failed["error"]["code"] == "cancelled", failed
        assert failed["bytes"] < SIZE  # the rest of the file was not streamed after the cancel
        assert parts(b) == [] and received(b) == []
        assert not any(e["event"] == "transfer_retry" for e in a.events)


def test_cancel_at_the_receiver_removes_the_part(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        _, tid, _ = push_halfway(a, b, seed=12)
        mine = b.local_id(tid)
        assert b.api("POST", f"/api/transfers/{mine}/cancel")["state"] == "cancelled"
        failed = ev(a, "transfer_failed", tid)
        assert failed["error"]["code"] == "cancelled", failed
        assert parts(b) == [] and received(b) == []
        assert not any(e["event"] == "transfer_retry" for e in a.events)


def test_cancelling_an_interrupted_receive_removes_its_kept_part(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        _, tid, _ = push_halfway(a, b, seed=13)
        a.stop(kill=True)
        ev(b, "transfer_failed", tid)
        assert part_bytes(b) > 0  # kept for a resume ...
        b.api("POST", f"/api/transfers/{b.local_id(tid)}/cancel")
        assert parts(b) == []  # ... until the user says no


def test_cancel_of_a_pull_removes_the_part(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        write_random(a.share / "big.bin", seed=14)
        a.wait_api("/api/files", lambda fs: [f["name"] for f in fs] == ["big.bin"])
        tid = pull(b, "big.bin")
        halfway(b, tid, "receive")
        assert b.api("POST", f"/api/transfers/{tid}/cancel")["state"] == "cancelled"
        assert ev(a, "transfer_failed", tid)["error"]["code"] == "cancelled"
        assert parts(b) == [] and received(b) == []


# -- the cap itself -----------------------------------------------------------------------------


def test_max_rate_is_shared_by_all_uploads(tmp_path: Path) -> None:
    """Not a speed target: two pushes at once must share one cap, well below loopback speed."""
    with pair(tmp_path, a_args=("--max-rate", "16MiB")) as (a, b):
        digests = [
            write_random(a.share / f"cap{i}.bin", seed=20 + i, size=12 << 20) for i in (0, 1)
        ]
        tids = [push(a, a.share / f"cap{i}.bin") for i in (0, 1)]
        done = [ev(b, "transfer_done", tid) for tid in tids]
        assert [d["sha256"] for d in done] == digests
        # 24 MiB at 16 MiB/s with a 1 MiB burst: at least ~1.4 s together, however fast
        # loopback is (each alone would need only half of that).
        together = max(d["finished"] for d in done) - min(d["started"] for d in done)
        assert together >= 1.35, done
