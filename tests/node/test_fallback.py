"""A batch push to a real node that does not speak batches (tests/nobatch.py): plain top-level
files fall back to one plain push each, a directory still fails with the clear reason
(node/batchfallback.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from node.batchfallback import WINDOW
from tests.node.test_batch import mole, wait_done
from tests.nodeproc import Event, NodeProc, pair

OLD = ("tests/nobatch.py",)  # `b_launcher` of a node without the batch features


def files(root: Path, n: int, size: int = 5000) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    want = {}
    for i in range(n):
        data = os.urandom(size + i)
        (root / f"f{i}.bin").write_bytes(data)
        want[f"f{i}.bin"] = hashlib.sha256(data).hexdigest()
    return want


def held(inbox: Path, names: list[str]) -> dict[str, str]:
    return {n: hashlib.sha256((inbox / n).read_bytes()).hexdigest() for n in names}


def fell_back(node: NodeProc, tid: str, timeout: float = 20, what: str = "batch_fallback") -> Event:
    """The batch_fallback of batch `tid`: which plain pushes it started."""
    return node.wait_event(
        lambda e: e["event"] == "batch_fallback" and e["id"] == tid, timeout=timeout, what=what
    )


def push_under_way(node: NodeProc, fell: Event) -> None:
    """One of the plain pushes a fallback (`fell`) started has sent bytes."""
    node.wait_event(
        lambda e: e["event"] == "transfer_progress" and e["id"] in fell["transfers"],
        timeout=20,
        what="a plain push under way",
    )


def test_plain_files_fall_back_to_one_push_each_and_a_tree_still_fails(tmp_path: Path) -> None:
    with pair(tmp_path, b_launcher=OLD) as (a, b):
        hello = b.api("GET", "/api/node")
        assert hello["name"] == "b"
        want = files(a.share / "set", WINDOW + 2)
        paths = [str(a.share / "set" / n) for n in want]
        t = a.api("POST", "/api/push", {"peer": "b", "paths": paths})
        assert t["kind"] == "batch"
        fell = fell_back(a, t["id"])
        assert fell["files"] == WINDOW + 2 and len(fell["transfers"]) == WINDOW  # a few at once
        done = wait_done(a, t["id"])
        assert done["state"] == "done" and done["files_done"] == WINDOW + 2, done
        assert done["fallback"][:WINDOW] == fell["transfers"]
        assert len(set(done["fallback"])) == WINDOW + 2
        assert held(b.inbox, list(want)) == want  # each verified by the old node
        kids = [a.api("GET", f"/api/transfers/{k}") for k in done["fallback"]]
        assert {k["state"] for k in kids} == {"done"} and {k["job"] for k in kids} == {t["id"]}
        assert done["size"] == sum(k["size"] for k in kids) == done["bytes"]
        # Nothing of a batch reached the old node: plain offers only.
        assert not [e for e in b.events if e["event"].startswith("batch_")]
        # A directory cannot be sent as plain pushes: it fails, saying why.
        (a.share / "dir" / "sub").mkdir(parents=True)
        (a.share / "dir" / "sub" / "x.txt").write_bytes(b"x" * 10)
        t2 = a.api("POST", "/api/push", {"peer": "b", "path": str(a.share / "dir")})
        failed = wait_done(a, t2["id"])
        assert failed["state"] == "failed", failed
        assert failed["error"]["code"] == "policy"
        assert "does not speak batches" in failed["error"]["reason"]
        assert "directory" in failed["error"]["reason"]
        assert not (b.inbox / "dir").exists()


def test_cli_send_says_once_it_fell_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pair(tmp_path, b_launcher=OLD) as (a, b):
        want = files(a.share, 2, size=20000)
        code, text = mole(capsys, a, "send", "b", *[str(a.share / n) for n in want])
        assert code == 0, text
        assert text.count("does not speak batches") == 1, text
        assert held(b.inbox, list(want)) == want


def test_a_file_the_old_node_refuses_fails_the_batch_naming_it(tmp_path: Path) -> None:
    with pair(tmp_path, b_args=("--max-size", "10000"), b_launcher=OLD) as (a, b):
        (a.share / "small.txt").write_bytes(b"s" * 100)
        (a.share / "big.bin").write_bytes(os.urandom(50_000))
        paths = [str(a.share / "small.txt"), str(a.share / "big.bin")]
        t = a.api("POST", "/api/push", {"peer": "b", "paths": paths})
        end = wait_done(a, t["id"])
        assert end["state"] == "failed" and end["files_done"] == 1, end
        assert [m["path"] for m in end["missing"]] == ["big.bin"], end
        assert "1 of 2 files not sent: big.bin" in end["error"]["reason"], end
        assert (b.inbox / "small.txt").read_bytes() == b"s" * 100
        assert not (b.inbox / "big.bin").exists()


def test_cancelling_a_batch_that_fell_back_cancels_its_plain_pushes(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=("--max-rate", "256KiB"), b_launcher=OLD) as (a, b):
        files(a.share, 2, size=2 << 20)
        paths = [str(a.share / "f0.bin"), str(a.share / "f1.bin")]
        t = a.api("POST", "/api/push", {"peer": "b", "paths": paths})
        fell = fell_back(a, t["id"])
        push_under_way(a, fell)
        assert a.api("POST", f"/api/transfers/{t['id']}/cancel")["state"] == "cancelled"
        for kid in fell["transfers"]:
            assert a.api("GET", f"/api/transfers/{kid}")["state"] == "cancelled"
        assert wait_done(a, t["id"])["state"] == "cancelled"
        assert not (b.inbox / "f0.bin").exists() and not (b.inbox / "f1.bin").exists()


def test_a_sender_restart_takes_up_the_plain_pushes_once(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=("--max-rate", "1MiB"), b_launcher=OLD) as (a, b):
        want = files(a.share, WINDOW + 2, size=1 << 20)
        paths = [str(a.share / n) for n in want]
        t = a.api("POST", "/api/push", {"peer": "b", "paths": paths})
        fell = fell_back(a, t["id"])
        push_under_way(a, fell)
        a.stop(kill=True)
        a.start()
        again = fell_back(a, t["id"], timeout=30, what="the restored batch falling back again")
        assert set(fell["transfers"]) <= set(again["transfers"])  # taken up, not started twice
        done = wait_done(a, t["id"])
        assert done["state"] == "done" and done["files_done"] == WINDOW + 2, done
        assert held(b.inbox, list(want)) == want
        assert sorted(p.name for p in b.inbox.iterdir() if p.is_file()) == sorted(want)
