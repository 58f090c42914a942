"""Small files received whole (node/store/whole.py): verified from memory before anything is
written, placed atomically under the inbox, never through a symlink, nothing left behind."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from node.errors import BadName, HashMismatch, StoreError
from node.store import FileMeta, Store
from node.store import whole as whole_mod
from tests.node.test_store import dirs_impl, forbid_dir_fd_calls  # noqa: F401 (autouse)

PEER = "0123456789abcdef0123456789abcdef"
MTIME = 1_700_000_000.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta(name: str, data: bytes, digest: str | None = None) -> FileMeta:
    return FileMeta(name, len(data), digest or sha(data), MTIME, "")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "share", tmp_path / "inbox", tmp_path / "state")


def parts_left(store: Store) -> list[str]:
    parts = store.inbox / ".mole" / "parts"
    return sorted(os.listdir(parts)) if parts.exists() else []


def test_places_verified_file_with_mode_mtime_and_cache(store: Store) -> None:
    data = os.urandom(5000)
    name = store.store_whole(PEER, meta("tree/sub/a.bin", data), data, 0o640)
    assert name == "tree/sub/a.bin"
    path = store.inbox / "tree" / "sub" / "a.bin"
    assert path.read_bytes() == data
    st = path.stat()
    assert st.st_mtime == MTIME
    if os.name == "posix":
        assert stat.S_IMODE(st.st_mode) == 0o640
    assert store.holds("tree/sub/a.bin", sha(data), len(data))  # recorded in the hash cache
    assert parts_left(store) == []
    store.release_whole()


def test_many_files_reuse_handles_and_empty_file(store: Store) -> None:
    for i in range(30):
        data = os.urandom(i * 7)
        store.store_whole(PEER, meta(f"t/d{i // 10}/f{i}", data), data, None)
        assert (store.inbox / "t" / f"d{i // 10}" / f"f{i}").read_bytes() == data
    assert parts_left(store) == []
    store.release_whole()


def test_hash_mismatch_writes_nothing(store: Store) -> None:
    data = b"x" * 100
    with pytest.raises(HashMismatch):
        store.store_whole(PEER, meta("t/bad.bin", data, sha(b"other")), data, None)
    with pytest.raises(StoreError) as exc:
        store.store_whole(PEER, meta("t/short.bin", data), data[:-1], None)
    assert exc.value.code == "truncated"
    assert not (store.inbox / "t").exists()
    assert parts_left(store) == []


def test_bad_names_refused(store: Store) -> None:
    data = b"y"
    for bad in ("../escape", "/abs", "a/../../b", ".mole/parts/x"):
        with pytest.raises(BadName):
            store.store_whole(PEER, meta(bad, data), data, None)
    assert not (store.inbox.parent / "escape").exists()


def test_symlinked_directory_is_not_followed(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.inbox / "t").symlink_to(outside)
    data = b"secret"
    with pytest.raises(StoreError):
        store.store_whole(PEER, meta("t/x.bin", data), data, None)
    assert os.listdir(outside) == []
    assert parts_left(store) == []


def test_symlink_swapped_in_after_directory_was_held(store: Store, tmp_path: Path) -> None:
    """The held destination is the directory opened, not a path: a directory replaced by a
    symlink (renamed away inside the inbox) is noticed at the next new directory at latest,
    and nothing is ever written through the link."""
    data = b"one"
    store.store_whole(PEER, meta("t/a.bin", data), data, None)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(store.inbox / "t", store.inbox / "moved")
    (store.inbox / "t").symlink_to(outside)
    store.release_whole()  # a new batch: handles are opened afresh
    with pytest.raises(StoreError):
        store.store_whole(PEER, meta("t/b.bin", b"two"), b"two", None)
    assert os.listdir(outside) == []


def test_replaced_inbox_is_noticed(store: Store, tmp_path: Path) -> None:
    data = b"first"
    store.store_whole(PEER, meta("t/a.bin", data), data, None)
    os.rename(store.inbox, tmp_path / "old-inbox")
    outside = tmp_path / "outside"
    outside.mkdir()
    store.inbox.symlink_to(outside)  # the inbox path now names a symlink
    with pytest.raises(StoreError):
        store.store_whole(PEER, meta("t/b.bin", b"second"), b"second", None)
    assert os.listdir(outside) == []
    assert not (tmp_path / "old-inbox" / "t" / "b.bin").exists()


def test_handles_expire(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    store.whole.clock = lambda: now[0]
    opened: list[int] = []
    real = whole_mod.open_root

    def counting(*args: object, **kw: object) -> object:
        opened.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(whole_mod, "open_root", counting)
    for i in range(3):
        store.store_whole(PEER, meta(f"t/{i}", b"%d" % i), b"%d" % i, None)
    assert len(opened) == 1
    now[0] += whole_mod.HOLD + 0.1
    store.store_whole(PEER, meta("t/late", b"late"), b"late", None)
    assert len(opened) == 2
    store.release_whole()


def test_collisions_number_or_reuse(store: Store) -> None:
    (store.inbox / "t").mkdir()
    (store.inbox / "t" / "a.txt").write_bytes(b"other content")
    data = b"mine"
    assert store.store_whole(PEER, meta("t/a.txt", data), data, None) == "t/a (1).txt"
    # The same content again: the existing file is the answer, no third copy.
    assert store.store_whole(PEER, meta("t/a.txt", data), data, None) == "t/a (1).txt"
    assert sorted(os.listdir(store.inbox / "t")) == ["a (1).txt", "a.txt"]
    assert (store.inbox / "t" / "a.txt").read_bytes() == b"other content"
    assert parts_left(store) == []


def test_no_space_refused_before_writing(tmp_path: Path) -> None:
    store = Store(tmp_path / "share", tmp_path / "inbox", tmp_path / "state", quota=1000)
    data = os.urandom(5000)
    with pytest.raises(StoreError) as exc:
        store.store_whole(PEER, meta("t/big.bin", data), data, None)
    assert exc.value.code == "no_space"
    assert not (store.inbox / "t").exists()


def test_room_measured_once_per_hold_and_charged_per_file(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One statvfs per hold, not per file: each file is charged whole blocks against it, and
    # the room is measured again when the charges use it up or a receive claims or frees space.
    measured: list[int] = []

    def free_space() -> int:
        measured.append(1)
        return 3 * whole_mod.BLOCK

    monkeypatch.setattr(store, "free_space", free_space)
    for i in range(3):
        store.store_whole(PEER, meta(f"f{i}", b"x" * 100), b"x" * 100, None)
    assert len(measured) == 1
    store.store_whole(PEER, meta("f3", b"y" * 100), b"y" * 100, None)
    assert len(measured) == 2  # the three blocks were charged: measured again
    store.receiving.ledger.keep("k" * 32, 10)  # space changed hands: measured again
    store.store_whole(PEER, meta("f4", b"z"), b"z", None)
    assert len(measured) == 3
    store.release_whole()
    store.store_whole(PEER, meta("f5", b"w"), b"w", None)
    assert len(measured) == 4  # a new hold measures afresh
    store.release_whole()


def test_without_hard_links_a_taken_name_is_not_replaced(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The link tried first falls back to the checked rename where links are unsupported.
    (store.inbox / "t").mkdir()
    (store.inbox / "t" / "a.txt").write_bytes(b"other content")
    root, _ = store.whole._open()

    def no_links(*args: object) -> None:
        raise OSError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(type(root), "link_to", no_links)
    assert store.store_whole(PEER, meta("t/a.txt", b"mine"), b"mine", None) == "t/a (1).txt"
    assert store.store_whole(PEER, meta("t/b.txt", b"new"), b"new", None) == "t/b.txt"
    assert (store.inbox / "t" / "a.txt").read_bytes() == b"other content"
    assert (store.inbox / "t" / "a (1).txt").read_bytes() == b"mine"
    assert (store.inbox / "t" / "b.txt").read_bytes() == b"new"
    assert parts_left(store) == []
    store.release_whole()
