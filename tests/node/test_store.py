"""node/store.py against a real file system in tmp_path: sharing, hash cache, receiving, safety."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

import node.store as store_mod
from node import plat
from node.store import (
    BadName,
    FileMeta,
    HashJob,
    Incoming,
    Store,
    StoreError,
)
from node.store import dirs as store_dirs

PEER = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True, params=["dirfd", "path"])
def dirs_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs against both directory implementations (node/store/dirs.py): by fd
    (what Linux/macOS use) and by checked path (what a Python without dir_fd calls, Windows,
    uses), with the same safety expectations."""
    monkeypatch.setattr(store_dirs, "DEFAULT", request.param)
    if request.param == "path":
        forbid_dir_fd_calls(monkeypatch)
    return str(request.param)


def forbid_dir_fd_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """In the path implementation, a call Windows lacks is a test failure: anything relative
    to a directory fd, a directory opened as a file, a directory listed or timed by fd."""
    dir_kw = ("dir_fd", "src_dir_fd", "dst_dir_fd")

    def guard(name: str) -> None:
        real = getattr(os, name)

        def guarded(*args: Any, **kw: Any) -> Any:
            if any(kw.get(k) is not None for k in dir_kw):
                raise AssertionError(f"os.{name}(dir_fd=...) in the path implementation")
            if name in ("listdir", "scandir", "utime") and args and isinstance(args[0], int):
                raise AssertionError(f"os.{name}(fd) in the path implementation")
            if name == "open" and len(args) > 1 and args[1] & getattr(os, "O_DIRECTORY", 0):
                raise AssertionError("a directory opened in the path implementation")
            return real(*args, **kw)

        monkeypatch.setattr(os, name, guarded)

    for name in ("open", "stat", "mkdir", "unlink", "link", "replace", "rename", "listdir"):
        guard(name)
    for name in ("scandir", "utime"):  # utime: no longer in os.supports_fd, as on Windows
        guard(name)
    monkeypatch.setattr(plat, "O_DIRECTORY", 0)  # as on Windows: fsync_dir() does nothing


def test_the_store_uses_the_implementation_asked_for(store: Store, dirs_impl: str) -> None:
    assert store.dirs == dirs_impl


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def store(root: Path) -> Store:
    return make_store(root)


def make_store(root: Path, **kw: object) -> Store:
    return Store(root / "share", root / "inbox", root / "state", **kw)  # type: ignore[arg-type]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta(name: str, data: bytes, mtime: float = 1_600_000_000.5) -> FileMeta:
    return FileMeta(name, len(data), sha(data), mtime, "application/octet-stream")


def feed(inc: Incoming, data: bytes, chunk: int = 64 << 10) -> None:
    view = memoryview(data)
    for i in range(0, len(data), chunk):
        inc.write(view[i : i + chunk])


def keep_part(store: Store, name: str, data: bytes, n: int) -> Incoming:
    """A receive of `data` as `name` interrupted after `n` bytes: its part kept for a resume."""
    inc = store.open_incoming(PEER, meta(name, data))
    feed(inc, data[:n])
    inc.abort(keep=True)
    return inc


def receive(store: Store, name: str, data: bytes, peer: str = PEER) -> str:
    inc = store.open_incoming(peer, meta(name, data))
    feed(inc, data[inc.offset :])
    return inc.finish()


def finish_all(jobs: list[HashJob], store: Store, budget: int = 1 << 20) -> list[FileMeta]:
    out = []
    for job in jobs:
        while not job.step(budget):
            pass
        out.append(store.finish_hash(job))
    return out


def parts_dir(root: Path) -> Path:
    return root / "inbox" / ".mole" / "parts"


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- HashJob ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4095, (1 << 20), (3 << 20) + 17])
def test_hashjob_incremental_equals_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    job = HashJob(path)
    steps = 0
    while not job.step(300_001):
        steps += 1
        assert job.hashed <= size
        assert not job.done and job.sha256 is None
    assert job.done and job.sha256 == sha(data)
    assert steps == size // 300_001  # bounded slices: no single step hashed the whole file
    assert job.step() is True  # idempotent once done


def test_hashjob_restarts_when_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100_000)
    job = HashJob(path)
    assert not job.step(10_000)
    path.write_bytes(b"b" * 150_000)  # changes size and mtime under the job
    while not job.step(10_000):
        pass
    assert job.sha256 == sha(b"b" * 150_000)
    assert job.size == 150_000


def test_hashjob_gives_up_on_a_file_that_keeps_changing(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    job = HashJob(path)
    with pytest.raises(OSError, match="keeps changing"):
        for _ in range(100):
            job.step(300)
            with path.open("ab") as f:
                f.write(b"y")
    assert job._fd == -1  # released the file


def test_hashjob_refuses_non_regular(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    job = HashJob(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        job.step()


# -- sharing and the hash cache -----------------------------------------------------------------


def test_scan_share_skips_hidden_parts_symlinks_out_and_specials(root: Path, store: Store) -> None:
    share = root / "share"
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (share / "a.txt").write_text("a")
    (share / "sub" / "deep").mkdir(parents=True)
    (share / "sub" / "deep" / "b.bin").write_bytes(b"b" * 10)
    (share / ".hidden").write_text("h")
    (share / ".hiddendir").mkdir()
    (share / ".hiddendir" / "x.txt").write_text("x")
    (share / "half.bin.part").write_bytes(b"p")
    (share / "out.txt").symlink_to(outside / "secret.txt")
    (share / "outdir").symlink_to(outside)
    (share / "in.txt").symlink_to(share / "a.txt")
    (share / "loop").symlink_to(share)  # a loop inside the share must not hang the walk
    os.mkfifo(share / "fifo")
    (share / "CON.txt").write_text("unsendable name")
    metas, jobs = store.scan_share()
    assert metas == []
    names = sorted(j.name for j in jobs)
    assert "a.txt" in names and "sub/deep/b.bin" in names and "in.txt" in names
    assert not any("secret" in n or n.startswith("out") for n in names)
    assert not any(n.startswith(".") or n.endswith(".part") or "fifo" in n for n in names)
    assert "CON.txt" not in names
    got = {m.name: m for m in finish_all(jobs, store)}
    assert got["a.txt"].sha256 == sha(b"a") and got["a.txt"].mime == "text/plain"
    assert got["sub/deep/b.bin"].size == 10
    assert all(j.path == share.joinpath(*j.name.split("/")) for j in jobs)


def test_cache_prevents_rehash_and_notices_changes(root: Path, store: Store) -> None:
    f = root / "share" / "f.bin"
    f.write_bytes(b"1" * 5000)
    _, jobs = store.scan_share()
    assert len(jobs) == 1
    finish_all(jobs, store)
    assert store.hashes_done == 1
    for _ in range(3):
        metas, jobs = store.scan_share()
        assert jobs == [] and [m.sha256 for m in metas] == [sha(b"1" * 5000)]
    found = store.meta_for_path(f)
    assert isinstance(found, FileMeta) and found.sha256 == sha(b"1" * 5000)
    assert store.hashes_done == 1
    # same size, other content, other mtime: must be re-hashed
    f.write_bytes(b"2" * 5000)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    metas, jobs = store.scan_share()
    assert metas == [] and len(jobs) == 1
    assert finish_all(jobs, store)[0].sha256 == sha(b"2" * 5000)
    # mtime trick: restore the hashed mtime on new content of the same size -> cache trusted
    # (documents that the key is exactly (realpath, size, mtime_ns))
    hashed_ns = f.stat().st_mtime_ns
    f.write_bytes(b"3" * 5000)
    os.utime(f, ns=(hashed_ns, hashed_ns))
    metas, jobs = store.scan_share()
    assert jobs == [] and metas[0].sha256 == sha(b"2" * 5000)


def test_cache_persists_across_instances_and_is_throttled(root: Path) -> None:
    s1 = make_store(root, save_interval=3600.0)
    (root / "share" / "f.txt").write_text("hello")
    s1.scan_share()
    finish_all(s1.scan_share()[1], s1)
    cache = root / "state" / "hashcache.json"
    assert not cache.exists()  # throttled: not written on every hash
    s1.flush()
    assert json.loads(cache.read_text())["version"] == 1
    s2 = make_store(root)
    metas, jobs = s2.scan_share()
    assert jobs == [] and metas[0].sha256 == sha(b"hello")
    assert s2.hashes_done == 0


def test_cache_saved_when_interval_elapsed(root: Path) -> None:
    s1 = make_store(root, save_interval=0.0)
    (root / "share" / "f.txt").write_text("x")
    finish_all(s1.scan_share()[1], s1)
    assert (root / "state" / "hashcache.json").exists()
    assert not list((root / "state").glob("*.tmp"))


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"{",
        b"[]",
        b'{"version":1,"files":[1]}',
        b'{"version":1,"files":{"/x":[1,2,"zz"],"/y":"q"}}',
    ],
)
def test_damaged_cache_starts_empty(root: Path, garbage: bytes) -> None:
    (root / "state").mkdir(parents=True)
    (root / "state" / "hashcache.json").write_bytes(garbage)
    s = make_store(root)
    (root / "share" / "f.txt").write_text("x")
    assert len(s.scan_share()[1]) == 1


def test_meta_for_path(root: Path, store: Store, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    f = elsewhere / "report.pdf"
    f.write_bytes(b"%PDF")
    job = store.meta_for_path(f)
    assert isinstance(job, HashJob) and job.name == "report.pdf"
    m = finish_all([job], store)[0]
    assert m.mime == "application/pdf" and m.sha256 == sha(b"%PDF")
    assert store.meta_for_path(f) == m
    (root / "share" / "d").mkdir()
    (root / "share" / "d" / "x.txt").write_text("x")
    inside = store.meta_for_path(root / "share" / "d" / "x.txt")
    assert inside.name == "d/x.txt"
    for bad in (elsewhere / "missing", elsewhere, Path("/dev/null")):
        with pytest.raises(StoreError) as info:
            store.meta_for_path(bad)
        assert info.value.code == "not_found"


def test_resolve_shared(root: Path, store: Store) -> None:
    share = root / "share"
    (share / "d").mkdir()
    (share / "d" / "x.txt").write_text("x")
    (share / ".secret").write_text("s")
    (root / "outside.txt").write_text("o")
    (share / "link.txt").symlink_to(root / "outside.txt")
    assert store.resolve_shared("d/x.txt", None) == share / "d" / "x.txt"
    for bad in ("../outside.txt", ".secret", "link.txt", "missing", "d", "/etc/passwd", "d/"):
        with pytest.raises(StoreError) as info:
            store.resolve_shared(bad, None)
        assert info.value.code == "not_found", bad
    finish_all(store.scan_share()[1], store)
    assert store.resolve_shared(None, sha(b"x")) == share / "d" / "x.txt"
    assert store.resolve_shared("d/x.txt", sha(b"x")) == share / "d" / "x.txt"
    with pytest.raises(StoreError):
        store.resolve_shared(None, sha(b"nothing"))
    with pytest.raises(StoreError):
        store.resolve_shared("d/x.txt", sha(b"other"))


# -- receiving ----------------------------------------------------------------------------------


def test_receive_sets_mtime_mime_and_cache(root: Path, store: Store) -> None:
    data = os.urandom(300_000)
    name = receive(store, "dir/sub/photo.jpg", data)
    final = root / "inbox" / "dir" / "sub" / "photo.jpg"
    assert name == "dir/sub/photo.jpg"
    assert final.read_bytes() == data
    assert final.stat().st_mtime == pytest.approx(1_600_000_000.5, abs=1e-6)
    assert list(parts_dir(root).iterdir()) == []
    assert store.find_existing(sha(data), len(data)) == "dir/sub/photo.jpg"
    assert store.find_existing(sha(data), len(data) + 1) is None
    listing = store.inbox_files()
    assert [(m.name, m.sha256, m.mime) for m in listing] == [
        ("dir/sub/photo.jpg", sha(data), "image/jpeg")
    ]
    assert store.hashes_done == 0  # received files are known without re-hashing


def test_receive_with_fsync_and_empty_file(root: Path) -> None:
    s = make_store(root, fsync=True)
    assert receive(s, "empty", b"") == "empty"
    assert (root / "inbox" / "empty").read_bytes() == b""
    assert receive(s, "one", b"1") == "one"


def test_find_existing_revalidates(root: Path, store: Store) -> None:
    data = b"content" * 100
    receive(store, "a.txt", data)
    (root / "inbox" / "a.txt").write_bytes(b"CONTENT" * 100)  # same size, new mtime
    assert store.find_existing(sha(data), len(data)) is None
    receive(store, "b.txt", data)
    (root / "inbox" / "b.txt").unlink()
    assert store.find_existing(sha(data), len(data)) is None
    assert store.find_existing(123, "x") is None


def test_collision_naming_never_overwrites(root: Path, store: Store) -> None:
    inbox = root / "inbox"
    (inbox / "report.pdf").write_bytes(b"mine")
    (inbox / "backup.tar.gz").write_bytes(b"mine")
    (inbox / ".profile").write_bytes(b"mine")
    assert receive(store, "report.pdf", b"theirs 1") == "report (1).pdf"
    assert receive(store, "report.pdf", b"theirs 2") == "report (2).pdf"
    assert receive(store, "backup.tar.gz", b"theirs") == "backup (1).tar.gz"
    assert receive(store, ".profile", b"theirs") == ".profile (1)"
    assert receive(store, "noext", b"a") == "noext"
    assert receive(store, "noext", b"b") == "noext (1)"
    assert (inbox / "report.pdf").read_bytes() == b"mine"
    assert (inbox / "report (1).pdf").read_bytes() == b"theirs 1"
    assert (inbox / "report (2).pdf").read_bytes() == b"theirs 2"
    (inbox / "dir").mkdir()
    assert receive(store, "dir", b"file where a directory is") == "dir (1)"


def test_collision_name_of_a_long_component_stays_valid(store: Store) -> None:
    long = "x" * 251 + ".txt"
    assert receive(store, long, b"1") == long
    second = receive(store, long, b"2")
    assert second.endswith(" (1).txt") and len(second.encode()) <= 255


def test_same_content_returns_existing_name(root: Path, store: Store) -> None:
    inbox = root / "inbox"
    (inbox / "a.txt").write_bytes(b"hand copied")  # not in the cache: hashed inline to compare
    assert receive(store, "a.txt", b"hand copied") == "a.txt"
    assert receive(store, "a.txt", b"other") == "a (1).txt"
    assert receive(store, "a.txt", b"other") == "a (1).txt"  # matches the numbered one
    assert sorted(p.name for p in inbox.iterdir() if p.name != ".mole") == ["a (1).txt", "a.txt"]
    assert list(parts_dir(root).iterdir()) == []


def test_hash_mismatch_deletes_part_and_leaves_no_file(root: Path, store: Store) -> None:
    data = os.urandom(100_000)
    wrong = FileMeta("x.bin", len(data), sha(b"something else"), 0.0, "x")
    inc = store.open_incoming(PEER, wrong)
    feed(inc, data)
    with pytest.raises(StoreError) as info:
        inc.finish()
    assert info.value.code == "hash_mismatch"
    assert sha(data) in str(info.value) and sha(b"something else") in str(info.value)
    assert inc.sha256_so_far == sha(data)
    assert not (root / "inbox" / "x.bin").exists()
    assert list(parts_dir(root).iterdir()) == []
    assert store.partial_for(PEER, "x.bin") is None
    inc.abort(keep=False)  # harmless after the failure


def test_too_much_data_and_truncated(root: Path, store: Store) -> None:
    inc = store.open_incoming(PEER, meta("t.bin", b"12345"))
    inc.write(memoryview(b"123"))
    with pytest.raises(StoreError) as info:
        inc.write(memoryview(b"456"))
    assert info.value.code == "too_much_data"
    with pytest.raises(StoreError) as info:
        inc.finish()
    assert info.value.code == "truncated"
    assert not (root / "inbox" / "t.bin").exists()
    assert store.partial_for(PEER, "t.bin") == (3, sha(b"12345"))  # a valid prefix: kept


def test_abort_keep_and_discard(root: Path, store: Store) -> None:
    data = os.urandom(50_000)
    inc = keep_part(store, "k.bin", data, 20_000)
    assert store.partial_for(PEER, "k.bin") == (20_000, sha(data))
    assert store.partial_for("other-peer", "k.bin") is None
    inc.abort(keep=False)  # a later cancel of the same transfer discards it
    assert store.partial_for(PEER, "k.bin") is None
    assert list(parts_dir(root).iterdir()) == []
    inc2 = store.open_incoming(PEER, meta("k.bin", data))
    feed(inc2, data[:1000])
    inc2.abort(keep=True)
    store.discard_partial(PEER, "k.bin")
    assert list(parts_dir(root).iterdir()) == []
    store.discard_partial(PEER, "never.bin")
    store.discard_partial(PEER, "../bad")


def unhashed(name: str, data: bytes, mtime: float = 1_600_000_000.5) -> FileMeta:
    """A hash-less offer's file: its sha256 comes later (Incoming.expect)."""
    return FileMeta(name, len(data), "", mtime, "x")


def test_unhashed_incoming_resumes_by_size_and_mtime_and_verifies_against_the_digest(
    root: Path, store: Store
) -> None:
    data = os.urandom(100_000)
    # A hashed part of that name, size and mtime is there: the unhashed receive resumes it.
    old = store.open_incoming(PEER, meta("u.bin", data))
    feed(old, data[:30_000])
    old.abort(keep=True)
    inc = store.open_incoming(PEER, unhashed("u.bin", data), unhashed=True)
    assert inc.offset == 30_000 and inc.reset_reason is None
    feed(inc, data[30_000:])
    assert not (root / "inbox" / "u.bin").exists()
    inc.expect(sha(data))
    assert inc.finish() == "u.bin"
    assert (root / "inbox" / "u.bin").read_bytes() == data
    assert list(parts_dir(root).iterdir()) == []
    with pytest.raises(StoreError):
        store.open_incoming(PEER, meta("v.bin", data), unhashed=True)  # takes no sha256


def test_an_unhashed_part_is_kept_and_matched_by_size_and_mtime(root: Path, store: Store) -> None:
    data = os.urandom(100_000)
    inc = store.open_incoming(PEER, unhashed("k.bin", data), unhashed=True)
    assert inc.offset == 0
    feed(inc, data[:40_000])
    inc.abort(keep=True)  # connection lost before the digest: the part stays
    assert store.partial_for(PEER, "k.bin") is None  # a pull cannot name what it holds
    again = store.open_incoming(PEER, unhashed("k.bin", data), unhashed=True)
    assert again.offset == 40_000 and again.reset_reason is None
    feed(again, data[40_000:60_000])
    again.abort(keep=True)
    # The retry offers the hash (known by then): it resumes too, and the record learns it.
    hashed = store.open_incoming(PEER, meta("k.bin", data))
    assert hashed.offset == 60_000 and hashed.reset_reason is None
    hashed.abort(keep=True)
    assert store.partial_for(PEER, "k.bin") == (60_000, sha(data))
    # Another mtime (either side unhashed) is another file: start over, and say why.
    other = store.open_incoming(PEER, unhashed("k.bin", data, mtime=7.0), unhashed=True)
    assert other.offset == 0 and other.reset_reason == "source_changed"
    feed(other, data)
    other.expect(sha(data))
    assert other.finish() == "k.bin"
    assert list(parts_dir(root).iterdir()) == []


def test_unhashed_incoming_mismatch_and_missing_digest_keep_nothing(
    root: Path, store: Store
) -> None:
    data = os.urandom(50_000)
    inc = store.open_incoming(PEER, unhashed("m.bin", data), unhashed=True)
    feed(inc, data)
    inc.expect(sha(b"other"))
    with pytest.raises(StoreError) as info:
        inc.finish()
    assert info.value.code == "hash_mismatch"
    assert not (root / "inbox" / "m.bin").exists() and list(parts_dir(root).iterdir()) == []
    inc = store.open_incoming(PEER, unhashed("m.bin", data), unhashed=True)
    feed(inc, data)
    with pytest.raises(StoreError):
        inc.finish()  # no digest: nothing to verify against, nothing placed
    assert not (root / "inbox" / "m.bin").exists() and list(parts_dir(root).iterdir()) == []


# -- resume -------------------------------------------------------------------------------------


def test_resume_across_a_new_store_instance(root: Path) -> None:
    data = os.urandom(1_000_000)
    s1 = make_store(root)
    inc = s1.open_incoming(PEER, meta("big/file.bin", data))
    assert inc.offset == 0 and inc.reset_reason is None
    feed(inc, data[:400_000])
    inc.abort(keep=True)  # connection dropped, then the process restarts
    del s1
    s2 = make_store(root)
    assert s2.partial_for(PEER, "big/file.bin") == (400_000, sha(data))
    inc = s2.open_incoming(PEER, meta("big/file.bin", data))
    assert inc.offset == 400_000 and inc.reset_reason is None
    feed(inc, data[400_000:])
    assert inc.bytes_written == 600_000 and inc.position == 1_000_000
    assert inc.finish() == "big/file.bin"
    assert (root / "inbox" / "big" / "file.bin").read_bytes() == data
    assert list(parts_dir(root).iterdir()) == []


def test_resume_catches_up_prefix_hash_during_writes(
    root: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "CATCHUP_MIN", 4096)
    monkeypatch.setattr(store_mod, "CATCHUP_MAX", 1 << 20)
    data = os.urandom(2_000_000)
    keep_part(store, "r.bin", data, 1_500_000)
    inc = store.open_incoming(PEER, meta("r.bin", data))
    assert inc._lagging
    feed(inc, data[1_500_000:1_700_000], chunk=10_000)
    assert inc._lagging and 0 < inc._hashed < 1_500_000  # spread over the writes
    feed(inc, data[1_700_000:], chunk=10_000)
    assert not inc._lagging  # caught up by the end of the data, nothing left for finish()
    assert inc.finish() == "r.bin"


def test_resume_with_corrupt_prefix_fails_verification(root: Path, store: Store) -> None:
    data = os.urandom(100_000)
    keep_part(store, "c.bin", data, 50_000)
    part = next(parts_dir(root).glob("*.part"))
    with part.open("r+b") as f:
        f.write(b"\0" * 10)
    inc = store.open_incoming(PEER, meta("c.bin", data))
    assert inc.offset == 50_000
    feed(inc, data[50_000:])
    with pytest.raises(StoreError, match="hash") as info:
        inc.finish()
    assert info.value.code == "hash_mismatch"
    assert store.partial_for(PEER, "c.bin") is None and not (root / "inbox" / "c.bin").exists()


def test_source_changed_resets_to_zero(root: Path, store: Store) -> None:
    old, new = os.urandom(80_000), os.urandom(90_000)
    keep_part(store, "s.bin", old, 30_000)
    inc = store.open_incoming(PEER, meta("s.bin", new))
    assert inc.offset == 0 and inc.reset_reason == "source_changed"
    feed(inc, new)
    assert inc.finish() == "s.bin"
    assert (root / "inbox" / "s.bin").read_bytes() == new


def test_resume_false_starts_over_without_reason(store: Store) -> None:
    data = os.urandom(10_000)
    keep_part(store, "f.bin", data, 5000)
    inc = store.open_incoming(PEER, meta("f.bin", data), resume=False)
    assert inc.offset == 0 and inc.reset_reason is None
    feed(inc, data)
    assert inc.finish() == "f.bin"


def test_overlong_part_is_truncated_to_the_file_size(root: Path, store: Store) -> None:
    data = os.urandom(1000)
    keep_part(store, "o.bin", data, 500)
    part = next(parts_dir(root).glob("*.part"))
    part.write_bytes(data + b"junk")
    inc = store.open_incoming(PEER, meta("o.bin", data))
    assert inc.offset == 1000
    assert inc.finish() == "o.bin"
    assert (root / "inbox" / "o.bin").read_bytes() == data


def test_part_without_record_or_bad_record_is_ignored(root: Path, store: Store) -> None:
    data = os.urandom(1000)
    keep_part(store, "n.bin", data, 500)
    rec = next(parts_dir(root).glob("*.json"))
    rec.write_text("{not json")
    assert store.partial_for(PEER, "n.bin") is None
    inc = store.open_incoming(PEER, meta("n.bin", data))
    assert inc.offset == 0
    feed(inc, data)
    assert inc.finish() == "n.bin"


def test_the_same_transfer_coming_back_takes_its_part_over(root: Path, store: Store) -> None:
    data = os.urandom(20_000)
    first = store.open_incoming(PEER, meta("d.bin", data), owner="t1")
    feed(first, data[:5000])
    second = store.open_incoming(PEER, meta("d.bin", data), owner="t1")  # the peer retried
    assert second.offset == 5000
    with pytest.raises(StoreError):
        first.write(memoryview(data[5000:6000]))
    first.abort(keep=False)  # the stale transfer must not delete the live part
    feed(second, data[5000:])
    assert second.finish() == "d.bin"
    assert (root / "inbox" / "d.bin").read_bytes() == data


def test_two_receives_of_the_same_file_at_once_both_finish(root: Path, store: Store) -> None:
    """A push crossing a pull of the same file, a double click: two transfers (other ids)
    stream side by side into parts of their own and both end with the one verified file."""
    data = os.urandom(20_000)
    first = store.open_incoming(PEER, meta("d.bin", data), owner="t1")
    feed(first, data[:5000])
    second = store.open_incoming(PEER, meta("d.bin", data), owner="t2")
    assert second.offset == 0 and not second.primary
    feed(second, data)
    feed(first, data[5000:])
    assert second.finish() == "d.bin"
    assert first.finish() == "d.bin"  # the same content is already there: kept as it is
    assert (root / "inbox" / "d.bin").read_bytes() == data
    assert list((root / "inbox" / ".mole" / "parts").glob("*.part")) == []


def test_a_broken_off_second_receive_keeps_no_part(root: Path, store: Store) -> None:
    data = os.urandom(20_000)
    first = store.open_incoming(PEER, meta("d.bin", data), owner="t1")
    second = store.open_incoming(PEER, meta("d.bin", data), owner="t2")
    feed(first, data[:3000])
    feed(second, data[:7000])
    second.abort(keep=True)  # not resumable: a retry resumes the first one's part
    first.abort(keep=True)
    assert store.partial_for(PEER, "d.bin") == (3000, meta("d.bin", data).sha256)
    assert len(list((root / "inbox" / ".mole" / "parts").glob("*.part"))) == 1


def test_a_reservation_holds_the_part_a_pull_asked_for(root: Path, store: Store) -> None:
    """A pull reads its resume offset when it asks; a push of the same file received before
    the answer must not change what the part holds."""
    data = os.urandom(20_000)
    inc = store.open_incoming(PEER, meta("d.bin", data), owner="old")
    feed(inc, data[:4000])
    inc.abort(keep=True)
    res = store.reserve(PEER, "d.bin", "pull1")
    assert res.primary and res.held == (4000, meta("d.bin", data).sha256)
    push = store.open_incoming(PEER, meta("d.bin", data), owner="push1")
    assert not push.primary and push.offset == 0
    feed(push, data)
    assert push.finish() == "d.bin"
    pulled = store.open_incoming(
        PEER, meta("d.bin", data), owner="pull1", reservation=res, offset=4000
    )
    assert pulled.offset == 4000
    feed(pulled, data[4000:])
    assert pulled.finish() == "d.bin"
    with pytest.raises(StoreError, match="holds"):
        res2 = store.reserve(PEER, "e.bin", "pull2")
        store.open_incoming(PEER, meta("e.bin", data), reservation=res2, offset=10)


def test_copy_in_places_held_content_under_another_name(root: Path, store: Store) -> None:
    data = os.urandom(50_000)
    inc = store.open_incoming(PEER, meta("a.bin", data))
    feed(inc, data)
    assert inc.finish() == "a.bin"
    assert store.copy_in("a.bin", meta("sub/b.bin", data)) == "sub/b.bin"
    assert (root / "inbox" / "sub" / "b.bin").read_bytes() == data
    # an independent copy, not a second name of the same file
    assert os.stat(root / "inbox" / "a.bin").st_ino != os.stat(root / "inbox/sub/b.bin").st_ino
    (root / "inbox" / "c.bin").write_bytes(b"other content")
    assert store.copy_in("a.bin", meta("c.bin", data)) == "c (1).bin"
    assert store.copy_in("a.bin", meta("c.bin", data)) == "c (1).bin"  # already there


def test_finished_incoming_abort_is_harmless(root: Path, store: Store) -> None:
    data = b"abc"
    inc = store.open_incoming(PEER, meta("h.txt", data))
    feed(inc, data)
    inc.finish()
    inc.abort(keep=False)
    assert (root / "inbox" / "h.txt").read_bytes() == data
    with pytest.raises(StoreError):
        inc.finish()


# -- disk full and short writes -----------------------------------------------------------------


def test_short_writes_are_completed(
    root: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = 0

    def short(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        return real_write(fd, memoryview(data)[:777])

    data = os.urandom(100_000)
    inc = store.open_incoming(PEER, meta("w.bin", data))
    monkeypatch.setattr(store_mod.os, "write", short)
    feed(inc, data)
    monkeypatch.undo()
    assert calls >= 100_000 // 777
    assert inc.finish() == "w.bin"
    assert (root / "inbox" / "w.bin").read_bytes() == data


def test_enospc_raises_no_space_and_nothing_under_final_name(
    root: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    budget = 150_000

    def filling(fd: int, data: bytes | memoryview) -> int:
        nonlocal budget
        if budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, memoryview(data)[: min(len(data), budget)])
        budget -= n
        return n

    data = os.urandom(400_000)
    inc = store.open_incoming(PEER, meta("full.bin", data))
    monkeypatch.setattr(store_mod.os, "write", filling)
    with pytest.raises(StoreError) as info:
        feed(inc, data)
    monkeypatch.undo()
    assert info.value.code == "no_space"
    assert inc.position == 150_000  # the part holds exactly the bytes written
    with pytest.raises(StoreError):
        inc.write(memoryview(b"x"))  # dead after the error
    inc.abort(keep=False)
    assert not (root / "inbox" / "full.bin").exists()
    assert list(parts_dir(root).iterdir()) == []


def test_refused_up_front_when_it_cannot_fit(store: Store) -> None:
    huge = FileMeta("huge.bin", store.free_space() + (1 << 40), "0" * 64, 0.0, "x")
    with pytest.raises(StoreError) as info:
        store.open_incoming(PEER, huge)
    assert info.value.code == "no_space"
    assert store.free_space() > 0


def test_enospc_on_a_real_tiny_filesystem(
    tiny_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store(tmp_path / "share", tiny_fs / "inbox", tmp_path / "state")
    data = os.urandom(2 << 20)
    monkeypatch.setattr(s, "free_space", lambda: 1 << 40)  # get past the up-front check
    inc = s.open_incoming(PEER, meta("big.bin", data))
    with pytest.raises(StoreError) as info:
        feed(inc, data)
    assert info.value.code == "no_space"
    inc.abort(keep=False)
    assert not (tiny_fs / "inbox" / "big.bin").exists()
    assert list((tiny_fs / "inbox" / ".mole" / "parts").iterdir()) == []


# -- symlinks and hostile names in the inbox ----------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    return out


def test_bad_name_refused_at_open(store: Store) -> None:
    for name in ("../escape.txt", "/etc/x", ".mole/parts/x", "a\\b"):
        with pytest.raises(BadName):
            store.open_incoming(PEER, meta(name, b"x"))


def test_symlink_dir_component_refused(root: Path, store: Store, outside: Path) -> None:
    (root / "inbox" / "docs").symlink_to(outside)
    with pytest.raises(BadName, match="symlink"):
        store.open_incoming(PEER, meta("docs/evil.txt", b"x"))
    (root / "inbox" / "real").mkdir()
    (root / "inbox" / "real" / "deeper").symlink_to(outside)
    with pytest.raises(BadName, match="symlink"):
        store.open_incoming(PEER, meta("real/deeper/x/y.txt", b"x"))
    assert list(outside.iterdir()) == []


def test_symlink_final_name_refused(root: Path, store: Store, outside: Path) -> None:
    (root / "inbox" / "victim.txt").symlink_to(outside / "victim.txt")
    with pytest.raises(BadName, match="symlink"):
        store.open_incoming(PEER, meta("victim.txt", b"x"))
    assert list(outside.iterdir()) == []


def test_symlink_planted_during_transfer_refused(root: Path, store: Store, outside: Path) -> None:
    """The race: the check at open passes, then a symlink appears before finish()."""
    data = b"payload" * 1000
    inc = store.open_incoming(PEER, meta("docs/file.txt", data))
    feed(inc, data)
    (root / "inbox" / "docs").symlink_to(outside)
    with pytest.raises(BadName):
        inc.finish()
    assert list(outside.iterdir()) == []
    inc2 = store.open_incoming(PEER, meta("plain.txt", data))
    feed(inc2, data)
    (root / "inbox" / "plain.txt").symlink_to(outside / "plain.txt")
    with pytest.raises(BadName):
        inc2.finish()
    assert list(outside.iterdir()) == []
    assert list(parts_dir(root).iterdir()) == []


def test_numbered_symlink_is_skipped_not_followed(root: Path, store: Store, outside: Path) -> None:
    (root / "inbox" / "n.txt").write_text("mine")
    (root / "inbox" / "n (1).txt").symlink_to(outside / "n.txt")
    assert receive(store, "n.txt", b"theirs") == "n (2).txt"
    assert list(outside.iterdir()) == []


def test_inbox_replaced_by_symlink(root: Path, outside: Path) -> None:
    s = make_store(root)
    inbox = root / "inbox"
    moved = root / "moved-inbox"
    inbox.rename(moved)
    inbox.symlink_to(outside)
    with pytest.raises(StoreError, match="inbox"):
        s.open_incoming(PEER, meta("x.txt", b"x"))
    assert s.partial_for(PEER, "x.txt") is None
    assert list(outside.iterdir()) == []


def test_inbox_replaced_during_transfer(root: Path, outside: Path) -> None:
    s = make_store(root)
    data = b"z" * 5000
    inc = s.open_incoming(PEER, meta("x.txt", data))
    feed(inc, data)
    inbox = root / "inbox"
    inbox.rename(root / "moved-inbox")
    inbox.symlink_to(outside)
    with pytest.raises(StoreError, match="inbox"):
        inc.finish()
    assert list(outside.iterdir()) == []


def test_mole_dir_symlink_refused(root: Path, outside: Path) -> None:
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    (inbox / ".mole").symlink_to(outside)
    with pytest.raises(StoreError, match="symlink"):
        make_store(root)
    assert list(outside.iterdir()) == []


def test_file_where_a_directory_is_needed(root: Path, store: Store) -> None:
    (root / "inbox" / "a").write_text("file")
    with pytest.raises(BadName, match="not a directory"):
        store.open_incoming(PEER, meta("a/b.txt", b"x"))


# -- inbox listing ------------------------------------------------------------------------------


def test_inbox_listing_ignores_mole_and_symlinks(root: Path, store: Store, outside: Path) -> None:
    inbox = root / "inbox"
    (outside / "o.txt").write_text("outside")
    receive(store, "got.txt", b"received")
    inc = store.open_incoming(PEER, meta("partial.bin", b"0123456789"))
    inc.write(memoryview(b"01234"))
    inc.abort(keep=True)
    (inbox / "link").symlink_to(outside)
    (inbox / "link.txt").symlink_to(outside / "o.txt")
    (inbox / "hand.txt").write_text("copied by hand")
    names = {m.name: m for m in store.inbox_files()}
    assert set(names) == {"got.txt", "hand.txt"}
    assert names["hand.txt"].sha256 == sha(b"copied by hand")
    assert store.find_existing(sha(b"copied by hand"), 14) == "hand.txt"


def test_inbox_listing_hashes_big_files_over_several_calls(
    root: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "INBOX_HASH_BUDGET", 1 << 20)
    data = os.urandom(3 << 20)
    (root / "inbox" / "big.bin").write_bytes(data)
    calls = 0
    while True:
        calls += 1
        (m,) = store.inbox_files()
        if m.sha256:
            break
        assert calls < 10
    assert m.sha256 == sha(data) and calls >= 3


def test_prune_partials_removes_only_stale_idle_ones(root: Path, store: Store) -> None:
    data = os.urandom(1000)
    old = store.open_incoming(PEER, meta("old.bin", data))
    old.write(memoryview(data[:10]))
    old.abort(keep=True)
    fresh = store.open_incoming(PEER, meta("fresh.bin", data))
    fresh.abort(keep=True)
    live = store.open_incoming("peer2", meta("live.bin", data))
    live.write(memoryview(data[:10]))
    (parts_dir(root) / "deadbeef.json.tmp").write_text("{")
    fresh_key = Store.part_key(PEER, "fresh.bin")
    for p in parts_dir(root).iterdir():
        if not p.name.startswith(fresh_key):
            os.utime(p, (1_000_000, 1_000_000))
    assert store.prune_partials(3600) == 2  # old.bin and the orphan temp record
    assert store.partial_for(PEER, "old.bin") is None
    assert store.partial_for(PEER, "fresh.bin") == (0, sha(data))
    assert not (parts_dir(root) / "deadbeef.json.tmp").exists()
    feed(live, data[10:])  # an idle-looking transfer in progress is untouched
    assert live.finish() == "live.bin"


def test_nested_share_and_inbox_do_not_prune_each_other(tmp_path: Path) -> None:
    home = tmp_path / "home"
    s = Store(home, home / ".mole-inbox", tmp_path / "state")  # inbox hidden inside the share
    data = b"received bytes"
    receive(s, "r.txt", data)
    (home / ".dotfile").write_text("dot")
    pushed = s.meta_for_path(home / ".dotfile")
    assert isinstance(pushed, HashJob)
    finish_all([pushed], s)
    s.scan_share()
    assert s.find_existing(sha(data), len(data)) == "r.txt"
    assert isinstance(s.meta_for_path(home / ".dotfile"), FileMeta)
    s.inbox_files()
    assert isinstance(s.meta_for_path(home / ".dotfile"), FileMeta)


def test_crash_between_link_and_unlink_recovers(root: Path) -> None:
    data = os.urandom(70_000)
    s1 = make_store(root)
    inc = s1.open_incoming(PEER, meta("c.bin", data))
    feed(inc, data)
    inc.abort(keep=True)
    os.link(next(parts_dir(root).glob("*.part")), root / "inbox" / "c.bin")  # then "crash"
    s2 = make_store(root)
    inc = s2.open_incoming(PEER, meta("c.bin", data))
    assert inc.offset == len(data)
    assert inc.finish() == "c.bin"
    assert sorted(p.name for p in (root / "inbox").iterdir()) == [".mole", "c.bin"]
    assert list(parts_dir(root).iterdir()) == []
