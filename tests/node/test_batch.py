"""Batches with real node processes on loopback (issue #12): a directory pushed and pulled as
one transfer, the tree recreated under the inbox, modes and empty directories kept, symlinks
refused by default, and a batch interrupted by a receiver restart resumed at the file and byte
where it stopped. Every wait is an event or an API state with a deadline."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pytest

from node import cli
from tests.node.test_integration import sha
from tests.nodeproc import TEST_GROUP_SECRET, Event, NodeProc, ev, nodes, pair, wait_mesh


def make_tree(root: Path, files: int, seed: int = 1, big: int = 0) -> dict[str, str]:
    """A nested tree with empty files, unicode names and an empty directory; returns
    relative path -> sha256 of every file."""
    rnd = random.Random(seed)
    out: dict[str, str] = {}
    for i in range(files):
        sub = f"d{i % 7}/sub{i % 3}" if i % 5 else f"d{i % 7}"
        name = f"{sub}/fïlé-{i}.bin" if i % 4 == 0 else f"{sub}/f{i}.txt"
        size = 0 if i % 11 == 0 else rnd.randrange(1, 3000)
        if big and i == files // 2:
            size = big
        data = rnd.randbytes(size)
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[name] = hashlib.sha256(data).hexdigest()
    (root / "empty" / "deeper").mkdir(parents=True)
    return out


def files_below(root: Path) -> list[str]:
    """The relative paths of the files under `root`, but not the node's own (.mole) state."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".mole" not in p.parts
    )


def tree_of(root: Path) -> dict[str, str]:
    return {name: sha(root / name) for name in files_below(root)}


def wait_done(node: NodeProc, tid: str, timeout: float = 60) -> dict[str, Any]:
    """The batch_done of `tid` (by either id); "" for the first batch_done at all."""
    return node.wait_event(
        lambda e: e["event"] == "batch_done" and (not tid or tid in (e["id"], e["wire_id"])),
        timeout=timeout,
        what=f"batch_done {tid}",
    )


BIG = 24 << 20  # under SLOW, about three seconds: time to break a batch on purpose
SLOW = ("--max-rate", "8MiB")  # for whichever node sends the batch


def wait_batch_bytes(node: NodeProc, past: int, what: str = "a quarter of the big file") -> None:
    """A batch_progress on `node` beyond `past` bytes: the batch is under way."""
    node.wait_event(
        lambda e: e["event"] == "batch_progress" and e["bytes"] > past, timeout=30, what=what
    )


def restart_restored(node: NodeProc, what: str) -> Event:
    """Kill `node` mid-batch and start it again: the transfer_started of the batch it takes up
    from its journal."""
    node.stop(kill=True)
    node.start()
    return node.wait_event(
        lambda e: e["event"] == "transfer_started" and e.get("restored"), timeout=10, what=what
    )


def test_push_a_directory_keeps_tree_modes_and_empty_dirs(tmp_path: Path) -> None:
    with pair(tmp_path) as (a, b):
        src = a.share / "proj"
        want = make_tree(src, 60)
        os.chmod(src / "d1" / "sub1" / "f1.txt", 0o750)
        os.symlink("d1", src / "link-in")
        t = a.api("POST", "/api/push", {"peer": "b", "path": str(src)})
        assert t["kind"] == "batch" and t["name"] == "proj"
        done_a = wait_done(a, t["id"])
        done_b = wait_done(b, t["id"])
        assert done_a["state"] == done_b["state"] == "done", (done_a, done_b)
        assert done_b["files"] == 60 and done_b["files_done"] == 60
        got = tree_of(b.inbox / "proj")
        assert got == want
        assert (b.inbox / "proj" / "empty" / "deeper").is_dir()
        assert (b.inbox / "proj" / "d1" / "sub1" / "f1.txt").stat().st_mode & 0o777 == 0o750
        assert not (b.inbox / "proj" / "link-in").exists()  # refused by default...
        assert any(m["path"] == "proj/link-in" for m in done_a["missing"])  # ...and said so
        # Again: everything is held, nothing crosses the wire.
        t2 = a.api("POST", "/api/push", {"peer": "b", "path": str(src)})
        done2 = wait_done(b, t2["id"])
        assert done2["state"] == "done" and done2["sent"] == 0


def test_pull_a_directory_and_a_glob(tmp_path: Path) -> None:
    with pair(tmp_path) as (a, b):
        want = make_tree(b.share / "docs", 30, seed=2)
        b.wait_api("/api/files", lambda fs: len(fs) >= 30, timeout=20, what="hashed")
        t = a.api("POST", "/api/pull", {"peer": "b", "prefix": "docs/"})
        assert wait_done(a, t["id"])["state"] == "done"
        assert tree_of(a.inbox / "docs") == want
        assert (a.inbox / "docs" / "empty" / "deeper").is_dir()  # empty directories too
        t = a.api("POST", "/api/pull", {"peer": "b", "glob": "*.bin"})
        done = wait_done(a, t["id"])
        assert done["state"] == "done" and done["files"] == sum(n.endswith(".bin") for n in want)
        missing = a.api("POST", "/api/pull", {"peer": "b", "prefix": "nothing/"})
        assert wait_done(a, missing["id"])["state"] == "failed"


def test_receiver_restart_mid_batch_resumes_at_the_file_and_byte(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        src = a.share / "set"
        want = make_tree(src, 40, seed=3, big=BIG)
        t = a.api("POST", "/api/push", {"peer": "b", "path": str(src)})
        wait_batch_bytes(b, BIG // 4)
        b.stop(kill=True)
        b.start()
        ev(a, "transfer_retry", t["id"])
        done = wait_done(b, t["id"])
        assert done["state"] == "done", done
        assert 0 < done["sent"] < BIG  # only the rest crossed the wire
        assert tree_of(b.inbox / "set") == want


def mole(capsys: pytest.CaptureFixture[str], node: NodeProc, *argv: str) -> tuple[int, str]:
    # --token=: a token is URL-safe base64 and starts with "-" one time in 64, which argparse
    # would take for an option after a separate "--token".
    code = cli.main(["--api", node.api_url, f"--token={node.file_token()}", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cli_send_get_and_ls_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    both = ("--group", "team:team-secret", "--group", f"test:{TEST_GROUP_SECRET}")
    with pair(tmp_path, a_args=both, b_args=both) as (a, b):  # members see members
        want = make_tree(a.share / "pics", 25, seed=4)
        code, text = mole(capsys, a, "send", "b", str(a.share / "pics"))
        assert code == 0, text
        assert "(25/25 files)" in text
        assert tree_of(b.inbox / "pics") == want
        a.wait_api("/api/files", lambda fs: len(fs) >= 25, timeout=20, what="pics hashed")
        code, text = mole(capsys, b, "ls", "a", "pics/")
        assert code == 0 and "  d1/" in text and "    sub1/" in text, text
        code, text = mole(capsys, b, "get", "a", "pics/")
        assert code == 0, text
        code, text = mole(capsys, b, "peers", "--group", "team")
        assert code == 0 and "\na " in text and "team" in text, text
        code, text = mole(capsys, b, "peers", "--group", "nobody")
        assert code == 0 and "no peers" in text, text


def test_sender_restart_mid_batch_resumes_from_the_journal(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        src = a.share / "set"
        want = make_tree(src, 20, seed=5, big=BIG)
        t = a.api("POST", "/api/push", {"peer": "b", "path": str(src)})
        wait_batch_bytes(b, BIG // 4)
        restored = restart_restored(a, "the batch restored from the journal")
        assert restored["id"] == t["id"] and restored["kind"] == "batch"
        done = b.wait_event(
            lambda e: e["event"] == "batch_done" and e["state"] == "done",
            timeout=60,
            what="the resumed batch done",
        )
        assert 0 < done["sent"] < BIG  # only the rest crossed the wire
        assert tree_of(b.inbox / "set") == want


def test_send_to_a_group_one_batch_per_member_and_a_late_member(tmp_path: Path) -> None:
    fast = ("--announce-interval", "0.5", "--retry-backoff", "0.2")
    with nodes(tmp_path, ["a", "b", "c"], *fast, "--group", "team:team-secret") as (a, b, c):
        wait_mesh([a, b, c])
        want = make_tree(a.share / "drop", 12, seed=6)
        send = a.api(
            "POST", "/api/push", {"peer": "@team", "paths": [str(a.share / "drop")],
                                  "include_late": True},
        )  # fmt: skip
        assert set(send["members"]) == {b.node_id, c.node_id} and len(send["batches"]) == 2
        for node in (b, c):
            assert wait_done(node, send["members"][node.node_id])["state"] == "done"
            assert tree_of(node.inbox / "drop") == want
        late = NodeProc(
            tmp_path, "d", a.discovery_port, *fast, "--group", "team:team-secret"
        ).start()
        try:
            assert wait_done(late, "", timeout=30)["state"] == "done"
            assert tree_of(late.inbox / "drop") == want
            ids = {t["id"] for t in a.api("GET", "/api/transfers") if t.get("job") == send["id"]}
            assert len(ids) == 3
        finally:
            late.stop()


def test_links_inside_the_tree_are_sent_with_links_inside(tmp_path: Path) -> None:
    with pair(tmp_path) as (a, b):
        src = a.share / "site"
        want = make_tree(src, 8, seed=7)
        os.symlink("d1", src / "current")  # inside: sent as a link
        os.symlink("../../etc", src / "escape")  # leaves the tree: never sent
        body = {"peer": "b", "paths": [str(src)], "links": "inside"}
        t = a.api("POST", "/api/push", body)
        done = wait_done(a, t["id"])
        assert done["state"] == "done", done
        assert [m["path"] for m in done["missing"]] == ["site/escape"]
        assert os.readlink(b.inbox / "site" / "current") == "d1"
        assert not os.path.lexists(b.inbox / "site" / "escape")
        assert tree_of(b.inbox / "site") == want
        assert (b.inbox / "site" / "current" / "sub1" / "f1.txt").is_file()  # resolves inside


def test_cancel_a_batch_ends_both_records_and_drops_the_partial_file(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        make_tree(a.share / "c", 6, seed=8, big=BIG)
        t = a.api("POST", "/api/push", {"peer": "b", "path": str(a.share / "c")})
        wait_batch_bytes(b, BIG // 8, "an eighth of the big file")
        a.api("POST", f"/api/transfers/{t['id']}/cancel")
        assert wait_done(a, t["id"])["state"] == "cancelled"
        done_b = wait_done(b, t["id"])
        assert done_b["state"] == "failed" and done_b["error"]["code"] == "cancelled", done_b
        b.wait_api(
            "/api/inbox/partials",
            lambda p: not p["partials"],
            timeout=10,
            what="no partial file kept",
        )


@pytest.mark.parametrize(
    ("b_args", "code"),
    [(("--inbox-quota", "64KiB"), "no_space"), (("--accept", "none"), "not_authorized")],
)
def test_one_accept_decision_for_the_whole_batch(
    tmp_path: Path, b_args: tuple[str, ...], code: str
) -> None:
    """Every file would fit on its own; together they do not: refused before any byte."""
    with pair(tmp_path, b_args=b_args) as (a, b):
        make_tree(a.share / "many", 80, seed=9)
        t = a.api("POST", "/api/push", {"peer": "b", "path": str(a.share / "many")})
        done = wait_done(a, t["id"])
        assert done["state"] == "failed" and done["error"]["code"] == code, done
        refused = b.wait_event(lambda e: e["event"] == "transfer_refused", what="refused")
        assert refused["code"] == code and refused["name"] == "many"
        assert not (b.inbox / "many").exists()
