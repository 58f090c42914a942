"""node/store/share.py: the share index no peer can make expensive (issue "Cheap traffic
freezes the node"), on a real file system in tmp_path, with a fake clock."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

import node.store.share as share_mod
import node.store.walk as walk_mod
from node.messages import FileInfo, Files
from node.store import FileMeta, HashJob, ShareIndex, Store
from node.store.hashcache import HashCache


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_index(tmp_path: Path, **kw: float) -> tuple[ShareIndex, HashCache, Path]:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    cache = HashCache(tmp_path / "hashcache.json", save_interval=1e9)
    return ShareIndex(share, cache, **kw), cache, share


def run_pass(index: ShareIndex, now: float, budget: int = 1000) -> None:
    """Drive step() until a pass that starts now (or is under way) is complete."""
    done = index.passes
    index.request_rescan(now)
    for _ in range(100_000):
        index.step(budget, now)
        if index.passes > done:
            return
    raise AssertionError("the pass never ended")


def hash_all(index: ShareIndex, cache: HashCache) -> list[FileMeta]:
    """What the node's hashing scheduler does with take_jobs() (via Store.finish_hash)."""
    out = []
    for job in index.take_jobs():
        while not job.step(1 << 20):
            pass
        assert job.sha256 is not None
        cache.record(job.real, job.size, job.mtime_ns, job.sha256)
        index.note_hashed(job.real, job.size, job.mtime_ns, job.sha256)
        out.append(FileMeta(job.name, job.size, job.sha256, job.mtime, ""))
    return out


def make_files(root: Path, n: int, per_dir: int) -> list[Path]:
    """n one-byte files, per_dir per directory, created with bare syscalls (fast)."""
    paths = []
    for i in range(n):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(exist_ok=True)
        p = d / f"f{i:05d}.txt"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"x")
        os.close(fd)
        paths.append(p)
    return paths


# -- cost: what a peer can make the node do ----------------------------------------------------


@pytest.mark.slow
def test_unknown_names_on_a_20000_file_share_cost_one_pass_per_min_interval(
    tmp_path: Path,
) -> None:
    index, cache, share = make_index(tmp_path, interval=60.0, min_interval=5.0)
    files = make_files(share, 10_000, per_dir=100)  # 100 directories of 100 ...
    flat = share / "flat"
    flat.mkdir()
    files += make_files(flat, 10_000, per_dir=10_000)  # ... and one of 10,000
    for p in files:  # known to the cache: listed without hashing
        st = p.stat()
        cache.record(os.path.realpath(p), st.st_size, st.st_mtime_ns, sha(b"x"))
    budget = 500
    now = 0.0
    run_pass(index, now, budget)
    assert len(index.files()) == 20_000
    first = index.entries_visited
    assert first >= 20_000
    # A peer asks for 10,000 names we do not list, over 30 s (fake clock), pipelined.
    steps = []
    for i in range(10_000):
        assert index.lookup(f"nope/{i}.bin") is None  # O(1): never walks
        index.request_rescan(now)
        steps.append(index.step(budget, now))
        now += 0.003
    elapsed = now
    assert max(steps) <= budget  # every tick's share of the walk is bounded
    started = index.passes_started - 1
    assert 1 <= started <= int(elapsed / index.min_interval) + 1
    # ... and the whole cost is that many passes, not one per request.
    assert index.entries_visited - first <= started * (first + 10)
    assert len(index.files()) == 20_000 and index.take_jobs() == []


def test_a_huge_directory_is_read_a_bounded_slice_per_step(tmp_path: Path) -> None:
    index, _cache, share = make_index(tmp_path)
    make_files(share, 3000, per_dir=3000)
    index.step(50, 0.0)  # starts the pass
    counts = []
    while index.scanning:
        counts.append(index.step(50, 0.0))
    assert max(counts) <= 50 and len(counts) >= 3000 // 50
    assert len(index.take_jobs()) == 3000  # not hashed yet: queued, not listed
    assert index.files() == ()


def test_rescans_are_rate_limited_remembered_and_periodic(tmp_path: Path) -> None:
    index, _cache, share = make_index(tmp_path, interval=30.0, min_interval=5.0)
    (share / "a.txt").write_bytes(b"a")
    assert index.request_rescan(0.0)  # nothing ran yet: starts at once
    run_pass(index, 0.0)
    assert index.passes_started == 1
    assert not index.request_rescan(1.0)  # too soon: remembered, not started
    assert index.step(100, 4.9) == 0 and not index.scanning
    assert index.step(100, 5.0) > 0  # the remembered request, as soon as allowed
    while index.scanning:
        index.step(100, 5.0)
    assert index.passes_started == 2
    for t in (6.0, 10.0, 20.0, 34.9):  # no request: only the periodic pass, at 5 + 30
        index.step(100, t)
        assert not index.scanning
    index.step(100, 35.0)
    assert index.passes_started == 3


# -- the published view ------------------------------------------------------------------------


def test_listing_body_is_encoded_once_per_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, cache, share = make_index(tmp_path, min_interval=1.0)
    for name, data in (("b.txt", b"bb"), ("a/é.txt", b"a"), ("c.bin", b"")):
        (share / name).parent.mkdir(exist_ok=True)
        (share / name).write_bytes(data)
    run_pass(index, 0.0)
    hash_all(index, cache)
    index.step(10, 0.5)  # publishes the hashes
    encodes = 0
    real_body = Files.body

    def counting(self: Files) -> bytes:
        nonlocal encodes
        encodes += 1
        return real_body(self)

    monkeypatch.setattr(Files, "body", counting)
    body = index.listing_body()
    infos = tuple(FileInfo(m.name, m.size, m.sha256, m.mtime, m.mime) for m in index.files())
    assert [i.name for i in infos] == ["a/é.txt", "b.txt", "c.bin"]
    assert body == real_body(Files(infos))  # exactly what Files(...).body() sends
    for _ in range(100):  # a flood of `list` requests
        assert index.listing_body() is body
    assert encodes == 1
    gen = index.generation
    run_pass(index, 2.0)  # nothing changed on disk
    assert index.generation == gen and index.listing_body() is body and encodes == 1
    (share / "d.txt").write_bytes(b"d")
    run_pass(index, 4.0)
    hash_all(index, cache)
    index.step(10, 4.5)
    assert index.generation == gen + 1
    new = index.listing_body()
    assert new is not body and b'"d.txt"' in new and encodes == 2
    assert index.listing_body() is new and index.files() is index.files()


def test_hashes_are_published_in_one_batch_per_step_but_looked_up_at_once(
    tmp_path: Path,
) -> None:
    index, cache, share = make_index(tmp_path, min_interval=0.1)
    for i in range(20):
        (share / f"{i}.txt").write_text(str(i))
    run_pass(index, 0.0)
    gen = index.generation
    hashed = hash_all(index, cache)
    assert len(hashed) == 20
    assert index.lookup("7.txt") is not None  # a get right after hashing finds it
    assert index.by_sha(sha(b"7")) == index.lookup("7.txt")
    assert index.files() == () and index.generation == gen  # the listing waits for step()
    index.step(10, 1.0)
    assert index.generation == gen + 1 and len(index.files()) == 20
    # At most one batch per publish_interval (1 s): a listing is rebuilt at most that often.
    (share / "late.txt").write_text("late")
    run_pass(index, 1.2)
    gen = index.generation
    hash_all(index, cache)
    index.step(10, 1.5)
    assert index.generation == gen and index.lookup("late.txt") is not None
    index.step(10, 2.0)
    assert index.generation == gen + 1 and index.files()[-1].name == "late.txt"


def test_a_hash_finished_during_a_pass_survives_its_end(tmp_path: Path) -> None:
    index, cache, share = make_index(tmp_path, min_interval=1.0)
    for i in range(50):
        (share / f"{i:02d}.txt").write_text(str(i))
    run_pass(index, 0.0)
    jobs = {j.name: j for j in index.take_jobs()}
    index.request_rescan(5.0)
    index.step(20, 5.0)  # the second pass is under way, some names seen again
    assert index.scanning
    for job in jobs.values():
        while not job.step():
            pass
        assert job.sha256 is not None
        cache.record(job.real, job.size, job.mtime_ns, job.sha256)
        index.note_hashed(job.real, job.size, job.mtime_ns, job.sha256)
    while index.scanning:
        index.step(20, 5.0)
    assert len(index.files()) == 50
    assert index.take_jobs() == []  # the pass saw the rest already cached


# -- changes between passes --------------------------------------------------------------------


def test_deletions_additions_renames_and_changes_between_passes(tmp_path: Path) -> None:
    index, cache, share = make_index(tmp_path, min_interval=1.0)
    for name in ("a.txt", "b.txt", "c.txt"):
        (share / name).write_text(name)
    run_pass(index, 0.0)
    hash_all(index, cache)
    run_pass(index, 1.0)
    assert [m.name for m in index.files()] == ["a.txt", "b.txt", "c.txt"]
    a_real = os.path.realpath(share / "a.txt")
    (share / "a.txt").unlink()
    (share / "b.txt").rename(share / "renamed.txt")
    (share / "new.txt").write_text("new")
    (share / "c.txt").write_text("changed c")
    run_pass(index, 2.0)
    assert [m.name for m in index.files()] == []  # nothing left is known by its path
    assert index.lookup("a.txt") is None and index.by_sha(sha(b"a.txt")) is None
    assert cache.entry(a_real) is None  # the cache forgot the deleted file
    assert index.lookup("c.txt") is None  # changed: never listed under the old sha256
    jobs = index.take_jobs()
    assert sorted(j.name for j in jobs) == ["c.txt", "new.txt", "renamed.txt"]
    hash_all_jobs(jobs, index, cache)
    index.step(10, 3.0)
    got = {m.name: m.sha256 for m in index.files()}
    assert got == {
        "c.txt": sha(b"changed c"),
        "new.txt": sha(b"new"),
        "renamed.txt": sha(b"b.txt"),
    }


def hash_all_jobs(jobs: list[HashJob], index: ShareIndex, cache: HashCache) -> None:
    for job in jobs:
        while not job.step():
            pass
        assert job.sha256 is not None
        cache.record(job.real, job.size, job.mtime_ns, job.sha256)
        index.note_hashed(job.real, job.size, job.mtime_ns, job.sha256)


def test_deleted_while_waiting_for_its_hash_is_never_listed(tmp_path: Path) -> None:
    index, _cache, share = make_index(tmp_path, min_interval=1.0)
    (share / "gone.txt").write_text("x")
    run_pass(index, 0.0)
    (job,) = index.take_jobs()
    (share / "gone.txt").unlink()
    run_pass(index, 1.0)  # the pass ends before the hash does: the name is forgotten
    index.note_hashed(job.real, job.size, job.mtime_ns, sha(b"x"))
    index.step(10, 1.5)
    assert index.lookup("gone.txt") is None and index.files() == ()


def test_a_hash_noted_mid_pass_for_a_file_deleted_meanwhile_is_not_published(
    tmp_path: Path,
) -> None:
    # publish_interval: nothing noted is published by a step until the pass has ended.
    index, cache, share = make_index(tmp_path, min_interval=1.0, publish_interval=100.0)
    (share / "a").mkdir()
    (share / "z").mkdir()
    (share / "a" / "a.txt").write_text("a")
    (share / "z" / "z.txt").write_text("z")
    (share / "known.txt").write_text("k")
    st = (share / "known.txt").stat()
    cache.record(str(share / "known.txt"), st.st_size, st.st_mtime_ns, sha(b"k"))
    run_pass(index, 0.0)
    assert [m.name for m in index.files()] == ["known.txt"]
    jobs = {j.name: j for j in index.take_jobs()}
    index.request_rescan(2.0)
    seen: list[str] = []
    while index.scanning and not seen:  # until the pass saw one of the two (queued again)
        index.step(1, 2.0)
        seen = [j.name for j in index.take_jobs()]
    (first,) = seen
    (later,) = set(jobs) - {first}
    hash_all_jobs(list(jobs.values()), index, cache)  # both hashed meanwhile ...
    (share / later).unlink()  # ... and the one the pass has not reached is deleted
    while index.scanning:
        index.step(1, 2.0)
    index.step(1, 200.0)
    assert [m.name for m in index.files()] == sorted([first, "known.txt"])
    assert index.lookup(later) is None


def test_skipped_files_are_recorded_with_their_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _cache, share = make_index(tmp_path, min_interval=1.0)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (share / "ok.txt").write_text("ok")
    (share / "out.txt").symlink_to(outside / "secret.txt")
    (share / "outdir").symlink_to(outside)
    (share / "dangling").symlink_to(share / "missing")
    (share / "CON.txt").write_text("unsendable name")
    (share / "bad\u202etxt.exe").write_text("bidi")
    (share / "sub").mkdir()
    os.mkfifo(share / "sub" / "fifo")
    (share / "locked.txt").write_text("locked")
    (share / ".hidden").write_text("not shared, on purpose: not a skip")
    (share / "half.part").write_text("ditto")
    real_access = os.access
    locked = os.path.realpath(share / "locked.txt")
    monkeypatch.setattr(
        walk_mod.os, "access", lambda p, m: False if p == locked else real_access(p, m)
    )
    run_pass(index, 0.0)
    reasons = {s.name: s.reason for s in index.skipped()}
    assert reasons == {
        "out.txt": "symlink_outside",
        "outdir": "symlink_outside",
        "dangling": "unreadable",
        "CON.txt": "bad_name",
        "bad\u202etxt.exe": "bad_name",
        "sub/fifo": "not_regular",
        "locked.txt": "unreadable",
    }
    assert index.skipped_total == 7
    detail = {s.name: s.detail for s in index.skipped()}
    assert "Windows" in detail["CON.txt"] and "outside" in detail["out.txt"]
    assert [j.name for j in index.take_jobs()] == ["ok.txt"]  # nothing outside is read


def test_undecodable_names_are_reported_printably(tmp_path: Path) -> None:
    index, _cache, share = make_index(tmp_path)
    fd = os.open(os.fsencode(str(share)) + b"/caf\xe9.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    run_pass(index, 0.0)
    (skip,) = index.skipped()
    assert skip.reason == "bad_name" and skip.name == "caf\\xe9.txt"
    skip.name.encode("utf-8")  # valid text for the API's JSON


def test_a_symlink_escape_planted_between_passes_unlists_the_file(tmp_path: Path) -> None:
    index, cache, share = make_index(tmp_path, min_interval=1.0)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("outside")
    (share / "x.txt").write_text("inside")
    run_pass(index, 0.0)
    hash_all(index, cache)
    index.step(10, 0.5)
    assert index.lookup("x.txt") is not None
    (share / "x.txt").unlink()
    (share / "x.txt").symlink_to(outside / "x.txt")
    run_pass(index, 1.0)
    assert index.lookup("x.txt") is None and index.take_jobs() == []
    assert [(s.name, s.reason) for s in index.skipped()] == [("x.txt", "symlink_outside")]


def test_a_directory_swapped_for_a_symlink_mid_pass_is_not_read(tmp_path: Path) -> None:
    index, _cache, share = make_index(tmp_path)
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "leak.txt").write_text("outside")
    (outside / "deep" / "leak2.txt").write_text("outside")
    (share / "sub" / "deep").mkdir(parents=True)
    (share / "sub" / "deep" / "fine.txt").write_text("inside")
    index.step(3, 0.0)  # opened the share and found sub/; not read yet
    (share / "sub").rename(tmp_path / "moved")
    (share / "sub").symlink_to(outside)  # the last component is a symlink now
    while index.scanning:
        index.step(3, 0.0)
    assert index.take_jobs() == [] and index.files() == ()
    # An inner component swapped: sub/deep was found, then sub became a link outside, so
    # the path share/sub/deep names outside/deep (O_NOFOLLOW alone does not see that).
    (share / "sub").unlink()
    (tmp_path / "moved").rename(share / "sub")
    assert index.request_rescan(10.0)
    before = index.entries_visited
    for _ in range(5):  # open share, see sub/, end of share, open sub, see deep/
        index.step(1, 10.0)
    assert index.entries_visited - before == 5 and index.scanning
    (share / "sub").rename(tmp_path / "moved")
    (share / "sub").symlink_to(outside)
    while index.scanning:
        index.step(1, 10.0)
    assert index.take_jobs() == [] and index.files() == ()


def test_a_file_that_cannot_be_hashed_is_skipped_until_it_changes(tmp_path: Path) -> None:
    s = Store(tmp_path / "share", tmp_path / "inbox", tmp_path / "state", clock=lambda: 0.0)
    f = tmp_path / "share" / "f.bin"
    f.write_bytes(b"1" * 100)
    run_pass(s.index, 0.0)
    (job,) = s.index.take_jobs()
    s.hash_failed(job, OSError(errno.EIO, "Input/output error"))
    assert [(x.name, x.reason, x.detail) for x in s.index.skipped()] == [
        ("f.bin", "unreadable", "Input/output error")
    ]
    run_pass(s.index, 10.0)
    assert s.index.take_jobs() == []  # not read again every pass
    assert [x.name for x in s.index.skipped()] == ["f.bin"]
    f.write_bytes(b"2" * 200)  # changed: worth another try
    run_pass(s.index, 20.0)
    assert [j.name for j in s.index.take_jobs()] == ["f.bin"]
    assert s.index.skipped() == ()


def test_skipped_list_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(share_mod, "MAX_SKIPPED", 5)
    index, _cache, share = make_index(tmp_path)
    for i in range(12):
        (share / f"bad{i}:x.txt").write_text("x")
    run_pass(index, 0.0)
    assert len(index.skipped()) == 5 and index.skipped_total == 12
