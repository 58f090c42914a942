"""A slow peer never stalls the others (issue #2): real node processes on loopback.

One peer asks for a large file and then reads nothing, so the node's stream to it sits on a
full socket buffer; meanwhile transfers with a healthy peer, in both directions, must run to
completion in the same single-threaded loop.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from tests.junkflood import stalled_pull
from tests.nodeproc import NodeProc, nodes, wait_mesh

STALLED = "5" * 32


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def transfer(node: NodeProc, tid: str) -> dict[str, object]:
    found: dict[str, object] = node.api("GET", f"/api/transfers/{tid}")
    return found


def test_a_reader_that_stalls_does_not_hold_up_other_transfers(tmp_path: Path) -> None:
    # No rate floor and a long idle timeout: the stalled stream stays open for the whole test.
    with nodes(tmp_path, ["b", "c"], "--min-rate", "0", "--idle-timeout", "120") as (b, c):
        wait_mesh([b, c])
        (b.share / "big.bin").write_bytes(random.Random(1).randbytes(32 << 20))
        (b.share / "small.bin").write_bytes(random.Random(2).randbytes(4 << 20))
        (c.share / "up.bin").write_bytes(random.Random(3).randbytes(4 << 20))
        b.wait_api("/api/files", lambda fs: len(fs) == 2, timeout=30, what="b's files hashed")

        stalled = stalled_pull(b.tcp_port, STALLED, "big.bin")
        try:
            ev = b.wait_event(
                lambda e: e["event"] == "transfer_started" and e["name"] == "big.bin",
                timeout=30,
                what="b starts streaming big.bin to the stalled reader",
            )
            stuck_id = str(ev["id"])

            # A pull from b and a push into b, both while b's stream to the reader is stuck.
            pull = c.api("POST", "/api/pull", {"peer": "b", "name": "small.bin"})
            push = c.api("POST", "/api/push", {"peer": "b", "path": str(c.share / "up.bin")})
            for tid in (pull["id"], push["id"]):
                c.wait_api(
                    f"/api/transfers/{tid}",
                    lambda t: t["state"] in ("done", "failed", "cancelled"),
                    timeout=60,
                    what=f"transfer {tid} ends",
                )
                assert transfer(c, tid)["state"] == "done", transfer(c, tid)
            assert sha(c.inbox / "small.bin") == sha(b.share / "small.bin")
            assert sha(b.inbox / "up.bin") == sha(c.share / "up.bin")

            # The stalled stream is still there, unfinished: it did not have to end first.
            stuck = transfer(b, stuck_id)
            assert stuck["state"] == "active", stuck
            assert isinstance(stuck["bytes"], int) and stuck["bytes"] < 32 << 20, stuck
        finally:
            stalled.close()
