"""Several plain files as one batch, and batches under --accept prompt (issue #12), with real
node processes on loopback: `mole send PEER a b c` is one transfer with one accept decision
(a single file stays a single transfer), it resumes at the file and byte where a receiver
restart broke it, and a prompt-mode receiver sees the whole batch as one pending offer:
accepting it delivers every file, rejecting it (or letting it time out) delivers none and the
sender says why. Every wait is an event or an API state with a deadline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node.batchmsg import Batch, Entry, encode_any
from node.units import format_size
from tests.junkflood import hello
from tests.node.test_batch import (
    BIG,
    SLOW,
    files_below,
    make_tree,
    mole,
    restart_restored,
    tree_of,
    wait_batch_bytes,
    wait_done,
)
from tests.node.test_integration import sha, write_random
from tests.node.test_trust import talk
from tests.nodeproc import REPO, NodeProc, ev, nodes, pair, wait_mesh

PROMPT = ("--accept", "prompt")


def test_several_files_sent_by_the_cli_are_one_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pair(tmp_path) as (a, b):
        names = ["c.txt", "a.txt", "b.bin"]
        want = {n: write_random(a.share / n, 1000 + i, seed=i) for i, n in enumerate(names)}
        code, text = mole(capsys, a, "send", "b", *(str(a.share / n) for n in names))
        assert code == 0, text
        assert "(3/3 files)" in text, text
        [sent] = a.api("GET", "/api/transfers")
        [got] = b.api("GET", "/api/transfers")  # one record, one accept decision
        for t in (sent, got):
            assert (t["kind"], t["state"], t["files"], t["files_done"]) == ("batch", "done", 3, 3)
        assert {n: sha(b.inbox / n) for n in names} == want
        # One file stays one plain transfer (its wire format is unchanged).
        one = write_random(a.share / "solo.txt", 500, seed=9)
        code, text = mole(capsys, a, "send", "b", str(a.share / "solo.txt"))
        assert code == 0, text
        solo = [t for t in b.api("GET", "/api/transfers") if t["name"] == "solo.txt"]
        assert len(solo) == 1 and solo[0].get("kind") != "batch", solo
        assert sha(b.inbox / "solo.txt") == one
        # The API takes several paths the same way.
        more = [write_random(a.share / f"m{i}.txt", 300, seed=20 + i) for i in range(2)]
        paths = [str(a.share / "m0.txt"), str(a.share / "m1.txt")]
        t = a.api("POST", "/api/push", {"peer": "b", "paths": paths})
        assert t["kind"] == "batch"
        assert wait_done(b, t["id"])["files"] == 2
        assert [sha(b.inbox / f"m{i}.txt") for i in range(2)] == more


def test_receiver_restart_mid_batch_of_plain_files_resumes(tmp_path: Path) -> None:
    with pair(tmp_path, a_args=SLOW) as (a, b):
        sizes = {"a-first.txt": 3000, "m-big.bin": BIG, "z-last.txt": 2000}
        want = {
            n: write_random(a.share / n, size, seed=i) for i, (n, size) in enumerate(sizes.items())
        }
        paths = [str(a.share / n) for n in sizes]
        t = a.api("POST", "/api/push", {"peer": "b", "paths": paths})
        wait_batch_bytes(b, BIG // 4)
        b.stop(kill=True)
        assert files_below(b.inbox) == ["a-first.txt"]  # placed before the break
        b.start()
        ev(a, "transfer_retry", t["id"])
        done = wait_done(b, t["id"])
        assert done["state"] == "done" and done["files"] == 3, done
        assert 0 < done["sent"] < BIG  # only the rest of the big file (and the last) crossed
        assert {n: sha(b.inbox / n) for n in sizes} == want


def offered(b: NodeProc) -> dict[str, Any]:
    [o] = b.wait_api("/api/offers", bool, what="the batch's one pending offer")
    return dict(o)


def test_a_prompt_receiver_sees_one_offer_and_accepting_it_delivers_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with nodes(tmp_path, ["a", "b"], *PROMPT, group=False) as (a, b):
        wait_mesh([a, b])
        want = make_tree(a.share / "pics", 12, seed=3)
        x = write_random(a.share / "x.txt", 700, seed=4)
        y = write_random(a.share / "y.txt", 0, seed=5)
        total = sum(p.stat().st_size for p in a.share.rglob("*") if p.is_file())
        paths = [str(a.share / n) for n in ("pics", "x.txt", "y.txt")]
        t = a.api("POST", "/api/push", {"peer": "b", "paths": paths})
        o = offered(b)
        assert (o["peer"], o["peer_name"]) == (a.node_id, "a")
        assert o["batch"] == {"files": 14, "size": total, "names": 3}
        tops = [(f["name"], f["kind"], f["files"]) for f in o["files"]]
        assert tops == [("pics", "dir", 12), ("x.txt", "file", 1), ("y.txt", "file", 1)]
        a.wait_event(lambda e: e["event"] == "transfer_waiting" and e["id"] == t["id"])
        # Nothing before a yes.
        assert files_below(b.inbox) == [] and not (b.inbox / "pics").exists()
        code, text = mole(capsys, b, "offers")  # one line for the whole batch
        assert code == 0 and text.count("\n") == 1, text
        assert f"batch of 14 files, {format_size(total)}: pics/ (12 files," in text, text
        assert "x.txt (700 B), y.txt (0 B)" in text, text
        code, text = mole(capsys, b, "accept", o["id"])
        assert code == 0 and text.startswith("accepted: batch of 14 files"), text
        assert wait_done(a, t["id"])["state"] == "done"
        assert tree_of(b.inbox / "pics") == want
        assert (sha(b.inbox / "x.txt"), sha(b.inbox / "y.txt")) == (x, y)
        assert (b.inbox / "pics" / "empty" / "deeper").is_dir()
        assert b.api("GET", "/api/offers") == []
        [got] = b.api("GET", "/api/transfers")
        assert (got["kind"], got["state"], got["files_done"]) == ("batch", "done", 14)


def test_rejecting_a_batch_offer_delivers_nothing_and_the_cli_sender_says_so(
    tmp_path: Path,
) -> None:
    with nodes(tmp_path, ["a", "b"], *PROMPT, group=False) as (a, b):
        wait_mesh([a, b])
        for i in range(3):
            write_random(a.share / f"f{i}.txt", 400, seed=i)
        argv = [sys.executable, "-m", "node", "--api", a.api_url, f"--token={a.file_token()}"]
        argv += ["send", "b", *(str(a.share / f"f{i}.txt") for i in range(3))]
        cli = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            o = offered(b)
            assert o["batch"]["files"] == 3
            b.api("POST", f"/api/offers/{o['id']}/reject")
            out, err = cli.communicate(timeout=30)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.communicate()
        assert cli.returncode != 0, (out, err)
        assert b"not authorized by b: f0.txt (batch of 3 files) (rejected by the user)" in err, err
        refused = b.wait_event(lambda e: e["event"] == "transfer_refused", what="refused")
        assert refused["code"] == "not_authorized"
        assert files_below(b.inbox) == [] and b.api("GET", "/api/transfers") == []
        assert b.api("GET", "/api/offers") == []


def test_a_batch_offer_nobody_decides_expires_like_a_single_one(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"], *PROMPT, "--prompt-timeout", "1.5", group=False) as (a, b):
        wait_mesh([a, b])
        for i in range(2):
            write_random(a.share / f"late{i}.txt", 100, seed=i)
        paths = [str(a.share / f"late{i}.txt") for i in range(2)]
        t = a.api("POST", "/api/push", {"peer": "b", "paths": paths})
        o = offered(b)
        decided = b.wait_event(lambda e: e["event"] == "offer_decided", what="the expiry")
        assert (decided["offer"], decided["accepted"]) == (o["id"], False)
        final = a.wait_api(
            f"/api/transfers/{t['id']}", lambda t: t["state"] == "failed", what="the refusal"
        )
        assert final["error"]["code"] == "not_authorized"
        assert "within 1.5 s" in final["error"]["reason"], final
        assert files_below(b.inbox) == []


def test_a_sender_that_cannot_wait_for_a_batch_decision_is_refused(tmp_path: Path) -> None:
    """A sender without "batch-pending" (an older node) would fail its connection on a
    `pending` to its batch: it gets the refusal it always got, and nothing is offered."""
    with nodes(tmp_path, ["b"], *PROMPT, group=False) as (b,):
        manifest = Batch("t1", (Entry("x.txt", 4, "ab" * 32, 1.0),))
        old = hello("mallory", "x", features=("resume", "digest", "batch"))
        _, reject = talk(b, old, encode_any(manifest), count=2)
        assert (reject["type"], reject["code"]) == ("reject", "not_authorized"), reject
        assert "one by one" in reject["reason"]
        assert b.api("GET", "/api/offers") == []


def test_get_of_several_names_is_one_batch_and_names_what_the_peer_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pair(tmp_path) as (a, b):
        names = ["one.txt", "sub/two.bin", "zz.txt"]
        want = {n: write_random(b.share / n, 800 + i, seed=30 + i) for i, n in enumerate(names)}
        b.wait_api("/api/files", lambda fs: len(fs) >= 3, timeout=20, what="b's files hashed")
        code, text = mole(capsys, a, "get", "b", *names)
        assert code == 0, text
        assert "(3/3 files)" in text, text
        [got] = a.api("GET", "/api/transfers")
        assert (got["kind"], got["state"], got["files_done"]) == ("batch", "done", 3), got
        assert {n: sha(a.inbox / n) for n in names} == want
        [served] = b.api("GET", "/api/transfers")  # one record on the serving side too
        assert (served["kind"], served["state"], served["name"]) == ("batch", "done", "one.txt")
        # A name the peer does not share: the others arrive, the batch names the one missing.
        code, text = mole(capsys, a, "get", "b", "zz.txt", "nope.txt")
        assert code == 1 and "file missing: nope.txt" in text, text
        [done] = [t for t in a.api("GET", "/api/transfers") if t["id"] != got["id"]]
        assert (done["state"], done["error"]["code"]) == ("failed", "not_found"), done
        assert [(m["path"], m["code"]) for m in done["missing"]] == [("nope.txt", "not_found")]
        assert sha(a.inbox / "zz.txt") == want["zz.txt"]
        assert not (a.inbox / "nope.txt").exists()


def test_a_puller_restarted_mid_batch_of_names_takes_it_up_from_its_journal(
    tmp_path: Path,
) -> None:
    with pair(tmp_path, b_args=SLOW) as (a, b):
        sizes = {"a.txt": 900, "m-big.bin": BIG, "z.txt": 700}
        want = {
            n: write_random(b.share / n, size, seed=i) for i, (n, size) in enumerate(sizes.items())
        }
        b.wait_api("/api/files", lambda fs: len(fs) >= 3, timeout=30, what="b's files hashed")
        t = a.api("POST", "/api/pull", {"peer": "b", "names": list(sizes)})
        wait_batch_bytes(a, BIG // 4)
        restored = restart_restored(a, "the named pull restored from the journal")
        assert (restored["id"], restored["kind"]) == (t["id"], "batch")
        done = wait_done(a, t["id"])
        assert done["state"] == "done" and done["files"] == 3, done
        assert 0 < done["sent"] < BIG  # only the rest crossed the wire
        assert {n: sha(a.inbox / n) for n in sizes} == want


def test_an_accepted_batch_sent_again_after_a_break_is_not_asked_again(tmp_path: Path) -> None:
    """One prompt per batch: the sender killed mid-batch sends it again from its journal (same
    id, same manifest) and the receiver takes it up without a second offer."""
    fast = ("--announce-interval", "0.5", "--retry-backoff", "0.2", *SLOW)
    with nodes(tmp_path, ["a", "b"], *PROMPT, *fast, group=False) as (a, b):
        wait_mesh([a, b])
        sizes = {"a.txt": 900, "m-big.bin": BIG}
        want = {
            n: write_random(a.share / n, size, seed=i) for i, (n, size) in enumerate(sizes.items())
        }
        t = a.api("POST", "/api/push", {"peer": "b", "paths": [str(a.share / n) for n in sizes]})
        b.api("POST", f"/api/offers/{offered(b)['id']}/accept")
        wait_batch_bytes(b, BIG // 4)
        a.stop(kill=True)
        a.start()
        done = b.wait_event(
            lambda e: e["event"] == "batch_done" and e["state"] == "done",
            timeout=60,
            what="the batch taken up again and done",
        )
        assert done["wire_id"] == t["id"] and 0 < done["sent"] < BIG, done
        assert [e["event"] for e in b.events].count("offer_pending") == 1
        assert {n: sha(b.inbox / n) for n in sizes} == want
