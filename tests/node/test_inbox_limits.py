"""Inbox limits (issue "Cheap traffic freezes the node"): receives claim the space they will
need, partial data counts against a quota and is visible, and nested names cannot burn inodes.
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

import pytest

from node.names import MAX_DEPTH
from node.store import BadName, FileMeta, Incoming, Store, StoreError
from node.store.space import DIR_COST, PART_COST, SpaceLedger
from tests.node.test_purity import FORBIDDEN_MODULES, _violations

PEER = "0123456789abcdef0123456789abcdef"
GB = 1 << 30


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta(name: str, size: int, data: bytes | None = None) -> FileMeta:
    digest = sha(data) if data is not None else "0" * 64
    return FileMeta(name, size, digest, 1_600_000_000.0, "application/octet-stream")


def make_store(root: Path, **kw: object) -> Store:
    return Store(root / "share", root / "inbox", root / "state", **kw)  # type: ignore[arg-type]


def parts_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "inbox" / ".mole" / "parts").glob("*.part"))


def fake_disk(store: Store, root: Path, free: int) -> None:
    """A file system with `free` bytes before any part was written (writes use it up)."""
    store.receiving.fs_free = lambda: free - parts_bytes(root)  # type: ignore[method-assign]


def feed(inc: Incoming, data: bytes) -> None:
    for i in range(0, len(data), 65536):
        inc.write(memoryview(data[i : i + 65536]))


# -- claims ------------------------------------------------------------------------------------


def test_concurrent_offers_reserve_the_space_they_claim(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    fake_disk(store, tmp_path, 2 * GB + 100)
    accepted = []
    refused = 0
    for i in range(10):  # ten 1 GB offers at once into 2 GB free
        if meta(f"f{i}.bin", GB).size > store.free_space():  # what the node asks first
            refused += 1
            continue
        accepted.append(store.open_incoming(PEER, meta(f"f{i}.bin", GB)))
    assert len(accepted) == 2 and refused == 8
    with pytest.raises(StoreError) as info:  # and open_incoming itself holds the line
        store.open_incoming(PEER, meta("late.bin", GB))
    assert info.value.code == "no_space"
    assert store.free_space() == 100
    accepted[0].abort(keep=False)  # its claim goes with it
    assert store.free_space() == GB + 100
    accepted[1].abort(keep=False)
    assert store.free_space() == 2 * GB + 100


def test_a_claim_shrinks_as_the_receive_writes_and_ends_with_it(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    fake_disk(store, tmp_path, 10_000_000)
    data = os.urandom(300_000)
    inc = store.open_incoming(PEER, meta("d.bin", len(data), data))
    assert store.free_space() == 10_000_000 - 300_000
    feed(inc, data[:100_000])
    assert store.free_space() == 10_000_000 - 300_000  # bytes moved from claim to disk
    assert store.inbox_usage().claimed == 200_000
    feed(inc, data[100_000:])
    assert inc.finish() == "d.bin"
    usage = store.inbox_usage()
    assert usage.claimed == 0 and usage.receiving == 0 and usage.parts == 0


def test_a_resume_claims_only_the_rest(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    data = os.urandom(200_000)
    inc = store.open_incoming(PEER, meta("r.bin", len(data), data))
    feed(inc, data[:150_000])
    inc.abort(keep=True)
    fake_disk(store, tmp_path, 150_000 + 60_000)  # room for the rest, not the whole file
    again = store.open_incoming(PEER, meta("r.bin", len(data), data))
    assert again.offset == 150_000
    feed(again, data[150_000:])
    assert again.finish() == "r.bin"


def test_directories_a_receive_will_create_are_claimed(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    fake_disk(store, tmp_path, 10 * DIR_COST)
    (tmp_path / "inbox" / "a").mkdir()
    name = "a/" + "/".join("bcdefghijk") + "/f.txt"  # a exists, 10 directories to create
    with pytest.raises(StoreError) as info:
        store.open_incoming(PEER, meta(name, 1))  # 1 byte + 10 directories: does not fit
    assert info.value.code == "no_space"
    inc = store.open_incoming(PEER, meta("a/" + "/".join("bcdefghij") + "/f.txt", 0, b""))
    assert store.free_space() == 10 * DIR_COST - 9 * DIR_COST
    assert inc.finish() == "a/b/c/d/e/f/g/h/i/j/f.txt"


# -- quota -------------------------------------------------------------------------------------


def test_partial_data_counts_against_the_quota(tmp_path: Path) -> None:
    quota = 100_000
    store = make_store(tmp_path, quota=quota)
    data = os.urandom(60_000)
    first = store.open_incoming(PEER, meta("one.bin", len(data), data))
    with pytest.raises(StoreError) as info:
        store.open_incoming(PEER, meta("two.bin", len(data), data))
    assert info.value.code == "no_space" and "quota" in str(info.value)
    feed(first, data[:45_000])
    first.abort(keep=True)  # a kept part still holds its 45,000 bytes
    usage = store.inbox_usage()
    assert usage.parts_bytes == 45_000 and usage.used == 45_000 + PART_COST
    assert store.free_space() == quota - 45_000 - 2 * PART_COST
    with pytest.raises(StoreError):
        store.open_incoming(PEER, meta("two.bin", len(data), data))
    resumed = store.open_incoming(PEER, meta("one.bin", len(data), data))  # counted once
    assert resumed.offset == 45_000
    resumed.abort(keep=True)
    # A restart does not forget what the parts hold.
    again = make_store(tmp_path, quota=quota)
    assert again.inbox_usage().parts_bytes == 45_000
    with pytest.raises(StoreError):
        again.open_incoming(PEER, meta("two.bin", len(data), data))
    again.discard_partial(PEER, "one.bin")  # a cancel frees it
    assert again.inbox_usage().used == 0
    two = again.open_incoming(PEER, meta("two.bin", len(data), data))
    feed(two, data)
    assert two.finish() == "two.bin"
    assert again.inbox_usage().used == 0  # placed files are the user's, outside the quota


def test_a_taken_over_part_is_counted_once_and_never_lost(tmp_path: Path) -> None:
    store = make_store(tmp_path, quota=1 << 20)
    data = os.urandom(20_000)
    first = store.open_incoming(PEER, meta("t.bin", len(data), data), owner="t1")
    feed(first, data[:5000])
    second = store.open_incoming(PEER, meta("t.bin", len(data), data), owner="t1")  # a retry
    u = store.inbox_usage()
    assert (u.receiving, u.parts, u.parts_bytes) == (1, 1, 5000)
    first.abort(keep=False)  # the stale one ending changes nothing
    assert store.inbox_usage() == u
    feed(second, data[5000:8000])
    fake_disk(store, tmp_path, 8000 + 100)  # the disk filled up meanwhile
    with pytest.raises(StoreError):  # a third attempt takes over, then does not fit
        store.open_incoming(PEER, meta("t.bin", len(data), data), owner="t1")
    u = store.inbox_usage()
    assert (u.receiving, u.parts, u.parts_bytes) == (0, 1, 8000)  # the part is still counted


def test_pruned_and_crashed_parts_leave_the_quota(tmp_path: Path) -> None:
    store = make_store(tmp_path, quota=1 << 20)
    data = os.urandom(10_000)
    inc = store.open_incoming(PEER, meta("p.bin", len(data), data))
    feed(inc, data[:4000])
    inc.abort(keep=True)
    parts = tmp_path / "inbox" / ".mole" / "parts"
    (parts / "deadbeef-0123.part").write_bytes(b"z" * 5000)  # a crashed concurrent receive
    store = make_store(tmp_path, quota=1 << 20)
    assert store.inbox_usage().parts_bytes == 9000 and store.inbox_usage().parts == 2
    assert store.prune_partials(3600) == 1  # the crashed one goes at once
    assert store.inbox_usage().parts_bytes == 4000
    assert store.prune_partials(-1) == 1
    assert store.inbox_usage().used == 0


def test_empty_parts_are_not_free(tmp_path: Path) -> None:
    store = make_store(tmp_path, quota=10 * PART_COST)
    opened = []
    with pytest.raises(StoreError) as info:
        for i in range(100):  # a peer opening zero-byte receives without end
            inc = store.open_incoming(PEER, meta(f"e{i}.bin", 1))
            inc.abort(keep=True)
            opened.append(inc)
    assert info.value.code == "no_space" and len(opened) < 10


def test_partials_are_visible(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    data = os.urandom(50_000)
    kept = store.open_incoming(PEER, meta("dir/kept.bin", len(data), data))
    feed(kept, data[:20_000])
    kept.abort(keep=True)
    live = store.open_incoming("peer2", meta("live.bin", len(data), data))
    feed(live, data[:7000])
    parts = {p.name: p for p in store.partials()}
    assert set(parts) == {"dir/kept.bin", "live.bin"}
    k, a = parts["dir/kept.bin"], parts["live.bin"]
    assert (k.peer, k.held, k.size, k.sha256, k.active) == (PEER, 20_000, 50_000, sha(data), False)
    assert (a.peer, a.held, a.active) == ("peer2", 7000, True)
    assert k.mtime > 0 and k.key == Store.part_key(PEER, "dir/kept.bin")
    feed(live, data[7000:])
    live.finish()
    assert [p.name for p in store.partials()] == ["dir/kept.bin"]


# -- nested names ------------------------------------------------------------------------------


def test_names_deeper_than_the_limit_are_refused_naming_it(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    deep = "/".join(["d"] * MAX_DEPTH) + ".txt"  # exactly MAX_DEPTH components: fine
    inc = store.open_incoming(PEER, meta(deep, 1, b"x"))
    feed(inc, b"x")
    assert inc.finish() == deep
    deeper = "/".join(["d"] * (MAX_DEPTH + 1))
    for call in (
        lambda: store.open_incoming(PEER, meta(deeper, 1, b"x")),
        lambda: store.reserve(PEER, deeper, "t1"),
    ):
        with pytest.raises(BadName, match=f"at most {MAX_DEPTH}") as info:
            call()
        assert info.value.code == "bad_name"
    assert not (tmp_path / "inbox" / "d" / "d" / "d").joinpath(*["d"] * 29, "d").exists()
    assert store.inbox_usage().receiving == 0


def test_the_depth_limit_is_a_store_option(tmp_path: Path) -> None:
    store = make_store(tmp_path, max_depth=2)
    with pytest.raises(BadName, match="at most 2"):
        store.open_incoming(PEER, meta("a/b/c.txt", 1, b"x"))
    inc = store.open_incoming(PEER, meta("a/c.txt", 1, b"x"))
    inc.abort(keep=False)


def test_a_flood_of_deep_one_byte_files_is_bounded_by_the_quota(tmp_path: Path) -> None:
    store = make_store(tmp_path, quota=64 * DIR_COST)
    accepted = 0
    with pytest.raises(StoreError) as info:
        for i in range(100):  # concurrent offers: a/b/.../z/<i> each
            store.open_incoming(PEER, meta(f"x{i}/" + "/".join("abcdefghijklmnopqrstuvwxyz"), 1))
            accepted += 1
    assert info.value.code == "no_space" and accepted == 2  # 27 directories ≈ 108 KiB each
    assert list((tmp_path / "inbox").iterdir()) == [tmp_path / "inbox" / ".mole"]


# -- the ledger alone --------------------------------------------------------------------------


class _Pos:
    def __init__(self, position: int = 0) -> None:
        self.position = position


def test_ledger_arithmetic() -> None:
    ledger = SpaceLedger(quota=None)
    assert ledger.room(1000) == 1000
    a = ledger.claim("a", 600, 1, _Pos())
    assert ledger.outstanding() == 600 + DIR_COST and ledger.room(10_000) == 10_000 - 4696
    a.progress = _Pos(400)
    assert ledger.outstanding() == 200 + DIR_COST
    ledger.end(a, kept=400)
    assert ledger.outstanding() == 0 and ledger.kept_bytes("a") == 400
    b = ledger.claim("a", 600, 0, _Pos(400))  # resumed: the kept bytes move into the claim
    assert ledger.kept_bytes("a") is None and ledger.used() == 600 + PART_COST
    c = ledger.claim("a", 600, 0, _Pos(0))  # taken over by the same transfer coming back
    ledger.end(b, kept=400)  # the superseded one ends: the newer claim stays
    assert ledger.outstanding() == 600 and ledger.kept_bytes("a") is None
    ledger.end(c, kept=None)
    assert ledger.used() == 0 and ledger.room(5) == 5
    assert ledger.room(-3) == 0
    q = SpaceLedger(quota=100_000)
    q.keep("k", 3000)
    assert q.room(1 << 40) == 100_000 - 3000 - 2 * PART_COST and q.quota_room() == q.room(1 << 40)
    with pytest.raises(ValueError):
        SpaceLedger(quota=-1)


def test_space_module_is_pure() -> None:
    path = Path(__file__).resolve().parents[2] / "node" / "store" / "space.py"
    assert _violations(ast.parse(path.read_text(encoding="utf-8"))) == []
    assert "os" in FORBIDDEN_MODULES


# -- a real small file system --------------------------------------------------------------------


def test_two_offers_that_each_fit_but_not_together_on_a_real_filesystem(
    tiny_fs: Path, tmp_path: Path
) -> None:
    s = Store(tmp_path / "share", tiny_fs / "inbox", tmp_path / "state")
    data = os.urandom(600_000)
    assert len(data) <= s.free_space()
    first = s.open_incoming(PEER, meta("a.bin", len(data), data))
    with pytest.raises(StoreError) as info:
        s.open_incoming(PEER, meta("b.bin", len(data), data))  # fits alone: not now
    assert info.value.code == "no_space"
    feed(first, data)
    assert first.finish() == "a.bin"  # the claim kept the room it needed
