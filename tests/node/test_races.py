"""Requests for the same content that overlap: whatever the interleaving, the receiver ends with
one verified copy under the requested name and every request the user made ends `done`.

Real processes on loopback: the races only show with real sockets and real timing.
"""

from __future__ import annotations

from pathlib import Path

from tests.node.test_integration import done, sha, write_random
from tests.nodeproc import NodeProc, nodes, wait_mesh


def visible(inbox: Path) -> list[str]:
    return sorted(
        p.relative_to(inbox).as_posix()
        for p in inbox.rglob("*")
        if p.is_file() and ".mole" not in p.relative_to(inbox).parts
    )


def push(a: NodeProc, path: str) -> str:
    return str(a.api("POST", "/api/push", {"peer": "b", "path": path})["id"])


def pull(b: NodeProc, name: str) -> str:
    return str(b.api("POST", "/api/pull", {"peer": "a", "name": name})["id"])


def test_a_push_and_a_pull_of_the_same_file_at_once_both_end_done(tmp_path: Path) -> None:
    """a pushes twice.bin to b while b pulls it from a: before, one side ended `cancelled
    (superseded)` and the other `bad_message: server offset N unknown`; b had no file."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        for i in range(3):  # several interleavings: push first, pull first, both at once
            name = f"twice{i}.bin"
            digest = write_random(a.share / name, 24 << 20, seed=40 + i)
            # Hash it first so both requests carry the sha256 (the original report).
            a.wait_api("/api/files", lambda fs, n=name: any(f["name"] == n for f in fs))
            if i == 1:
                g, p = pull(b, name), push(a, name)
            else:
                p, g = push(a, name), pull(b, name)
            fp, fg = done(a, p, timeout=60), done(b, g, timeout=60)
            assert fp["state"] == "done", fp
            assert fg["state"] == "done", fg
            assert fp["path"] == name and fg["path"] == name, (fp, fg)
            assert sha(b.inbox / name) == digest
        assert visible(b.inbox) == [f"twice{i}.bin" for i in range(3)]


def test_two_pushes_of_the_same_file_at_once_both_end_done(tmp_path: Path) -> None:
    """A double click: before, the first push failed (superseded) although the file arrived."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        digest = write_random(a.share / "double.bin", 24 << 20, seed=7)
        a.wait_api("/api/files", lambda fs: any(f["name"] == "double.bin" for f in fs))
        first, second = push(a, "double.bin"), push(a, "double.bin")
        for tid in (first, second):
            final = done(a, tid, timeout=60)
            assert final["state"] == "done" and final["path"] == "double.bin", final
        assert sha(b.inbox / "double.bin") == digest
        assert visible(b.inbox) == ["double.bin"]
        # Every record on the receiver ends done too: nothing says cancelled for a file there.
        for t in b.api("GET", "/api/transfers"):
            assert t["state"] == "done", t


def test_two_pulls_of_the_same_file_at_once_both_end_done(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        digest = write_random(a.share / "pp.bin", 24 << 20, seed=8)
        a.wait_api("/api/files", lambda fs: any(f["name"] == "pp.bin" for f in fs))
        g1, g2 = pull(b, "pp.bin"), pull(b, "pp.bin")
        for tid in (g1, g2):
            final = done(b, tid, timeout=60)
            assert final["state"] == "done" and final["path"] == "pp.bin", final
        assert sha(b.inbox / "pp.bin") == digest
        assert visible(b.inbox) == ["pp.bin"]


def test_a_push_of_content_held_under_another_name_appears_under_its_own_name(
    tmp_path: Path,
) -> None:
    """Push an empty __init__.py, then an empty .gitkeep: before, only the first existed and
    the CLI said "already present" without saying where."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        (a.share / "pkg").mkdir()
        (a.share / "pkg" / "__init__.py").write_bytes(b"")
        (a.share / "keep").mkdir()
        (a.share / "keep" / ".gitkeep").write_bytes(b"")
        t1 = done(a, push(a, str(a.share / "pkg" / "__init__.py")))
        t2 = done(a, push(a, str(a.share / "keep" / ".gitkeep")))
        assert t1["state"] == "done" and t1["path"] == "__init__.py", t1
        assert t2["state"] == "done" and t2["path"] == ".gitkeep", t2
        assert t2["skipped"] is True  # no bytes crossed: the held bytes were used
        assert (b.inbox / "__init__.py").read_bytes() == b""
        assert (b.inbox / ".gitkeep").read_bytes() == b""
        # The receiver's record names the file the user asked for, too.
        got = b.wait_event(lambda e: e["event"] == "transfer_done" and e["name"] == ".gitkeep")
        assert got["path"] == ".gitkeep", got
        # Bigger content held under another name: the same, and the copy is independent.
        digest = write_random(a.share / "one.bin", 300_000, seed=5)
        (a.share / "two.bin").write_bytes((a.share / "one.bin").read_bytes())
        done(a, push(a, "one.bin"))
        t4 = done(a, push(a, "two.bin"))
        assert t4["state"] == "done" and t4["path"] == "two.bin" and t4["skipped"], t4
        assert sha(b.inbox / "two.bin") == digest == sha(b.inbox / "one.bin")


def test_the_sender_learns_the_final_name_of_a_collision(tmp_path: Path) -> None:
    """Same name, other content: `name (1).ext` on the receiver, and the sender is told."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        (b.inbox / "report.txt").write_text("the receiver's own report\n")
        (a.share / "report.txt").write_text("the sender's report\n")
        t = done(a, push(a, "report.txt"))
        assert t["state"] == "done" and t["path"] == "report (1).txt", t
        ev = a.wait_event(lambda e: e["event"] == "transfer_done" and e["id"] == t["id"])
        assert ev["path"] == "report (1).txt"
        assert (b.inbox / "report (1).txt").read_text() == "the sender's report\n"
