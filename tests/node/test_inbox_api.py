"""The inbox's hidden partial data and the share's unshared files are visible in the API, and
the inbox quota holds against concurrent offers (real node processes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests import tlspeer
from tests.junkflood import frame, hello, offer
from tests.node.test_hostile import read_frames
from tests.nodeproc import nodes

PEER = "5" * 32


def test_partial_data_is_listed_with_the_quota(tmp_path: Path) -> None:
    with nodes(tmp_path, ["b"], "--inbox-quota", "1MiB") as (b,):
        data = bytes(300_000)
        sha = hashlib.sha256(data).hexdigest()
        s = tlspeer.connect(("127.0.0.1", b.tcp_port), timeout=10)
        s.sendall(hello(PEER) + offer("p1", "half.bin", len(data), sha))
        (_, accept), _ = read_frames(s, b"", 2)
        assert accept["type"] == "accept", accept
        s.sendall(frame({"type": "data", "body": len(data)}) + data[:100_000])
        b.wait_api(
            f"/api/transfers/{b.local_id('p1')}", lambda t: t["bytes"] == 100_000, what="100 kB"
        )
        s.close()  # broken off: the part is kept for a resume
        got = b.wait_api(
            "/api/inbox/partials",
            lambda p: [x["held"] for x in p["partials"]] == [100_000],
            what="the kept part",
        )
        (part,) = got["partials"]
        assert (part["peer"], part["name"], part["size"]) == (
            tlspeer.peer_id(PEER),
            "half.bin",
            300_000,
        )
        assert got["usage"]["quota"] == 1 << 20 and got["usage"]["parts_bytes"] == 100_000
        # Two offers at once that together claim more than the quota: the first fits (and holds
        # its claim while it streams), the second does not.
        big = hashlib.sha256(b"x").hexdigest()
        s1 = tlspeer.connect(("127.0.0.1", b.tcp_port), timeout=10)
        s1.sendall(hello(PEER) + offer("q1", "a.bin", 600_000, big))
        (_, first), _ = read_frames(s1, b"", 2)
        s2 = tlspeer.connect(("127.0.0.1", b.tcp_port), timeout=10)
        s2.sendall(hello(PEER) + offer("q2", "b.bin", 600_000, big))
        (_, second), _ = read_frames(s2, b"", 2)
        s1.close()
        s2.close()
        assert first["type"] == "accept", first
        assert second["type"] == "reject" and second["code"] == "no_space", second


def test_files_that_are_not_shared_are_listed_with_the_reason(tmp_path: Path) -> None:
    with nodes(tmp_path, ["b"]) as (b,):
        (b.share / "ok.txt").write_text("fine")
        (b.share / "what?.txt").write_text("no node may store this name")
        (b.share / "out").symlink_to(tmp_path)
        got = b.wait_api(
            "/api/files/skipped",
            lambda s: {f["name"] for f in s["files"]} >= {"what?.txt", "out"},
            what="the skipped files",
        )
        reasons = {f["name"]: f["reason"] for f in got["files"]}
        assert reasons["what?.txt"] == "bad_name" and got["total"] >= 2
        files = b.wait_api("/api/files", lambda fs: len(fs) == 1, what="ok.txt hashed")
        assert [f["name"] for f in files] == ["ok.txt"]
