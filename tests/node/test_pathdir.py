"""node/store/pathdir.py on its own: the checks that replace dir_fd calls, and its documented
residual race (a directory swapped for a symlink between the check and the system call)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from node import plat
from node.errors import BadName, StoreError
from node.store.pathdir import PathDir, PathListing

CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    (tmp_path / "inbox" / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return tmp_path / "inbox"


def swap_for_symlink(d: Path, target: Path) -> None:
    d.rename(d.with_name(d.name + ".old"))
    d.symlink_to(target)


def test_a_component_swapped_after_it_was_opened_is_detected(inbox: Path) -> None:
    root = PathDir.root(str(inbox), "inbox")
    a = root.sub("a", create=False)
    swap_for_symlink(inbox / "a", inbox.parent / "outside")
    with pytest.raises(StoreError, match="inbox/a changed while in use"):
        a.open("x", CREATE)
    with pytest.raises(StoreError, match="changed"):
        a.lstat("x")
    assert list((inbox.parent / "outside").iterdir()) == []


def test_the_residual_race_creates_nothing_that_stays_outside(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window pathdir.py documents: the swap lands between the check and open(O_EXCL).
    The create goes through the symlink (a new file, never an existing one); the check after
    it sees the swap, fails, and removes the file it made."""
    outside = inbox.parent / "outside"
    a = PathDir.root(str(inbox), "inbox").sub("a", create=False)
    real_open = os.open

    def racing_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if str(path).endswith("victim"):
            swap_for_symlink(inbox / "a", outside)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", racing_open)
    with pytest.raises(StoreError, match="changed while in use"):
        a.open("victim", CREATE)
    monkeypatch.undo()
    assert list(outside.iterdir()) == []


def test_an_existing_file_swapped_between_lstat_and_open_is_refused(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = inbox.parent / "outside" / "secret"
    secret.write_bytes(b"not yours")
    (inbox / "a" / "part").write_bytes(b"mine")
    a = PathDir.root(str(inbox), "inbox").sub("a", create=False)
    real_open = os.open

    def racing_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if str(path).endswith("part"):
            os.unlink(path)
            os.symlink(secret, path)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", racing_open)
    monkeypatch.setattr(plat, "O_NOFOLLOW", 0)  # as on Windows
    monkeypatch.setattr("node.store.pathdir.FILE_FLAGS", plat.O_CLOEXEC)
    with pytest.raises(OSError) as info:
        a.open("part", os.O_RDWR)
    assert info.value.errno == errno.ELOOP
    monkeypatch.undo()
    assert secret.read_bytes() == b"not yours"


def test_symlinks_and_reparse_points_are_refused(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (inbox / "link").symlink_to(inbox.parent / "outside")
    (inbox / "file.lnk").symlink_to(inbox.parent / "outside" / "f")
    root = PathDir.root(str(inbox), "inbox")
    with pytest.raises(BadName, match="symlink"):
        root.sub("link", create=True)
    with pytest.raises(OSError) as info:
        root.open("file.lnk", os.O_RDONLY)
    assert info.value.errno == errno.ELOOP
    # A Windows junction: a directory whose lstat carries FILE_ATTRIBUTE_REPARSE_POINT.
    real_lstat = os.lstat
    junction = str(inbox / "a")

    def lstat(path: Any, *args: Any, **kw: Any) -> Any:
        st = real_lstat(path, *args, **kw)
        if str(path) == junction:
            return SimpleNamespace(
                st_mode=st.st_mode, st_dev=st.st_dev, st_ino=st.st_ino, st_file_attributes=0x400
            )
        return st

    monkeypatch.setattr(os, "lstat", lstat)
    assert stat.S_ISDIR(os.lstat(junction).st_mode)
    with pytest.raises(BadName, match="symlink or not a directory"):
        root.sub("a", create=False)
    with pytest.raises(StoreError, match="no longer a directory"):
        PathDir.root(junction, "inbox")
    with pytest.raises(OSError):
        PathListing(junction)


def test_no_truncating_open_and_no_create_without_excl(inbox: Path) -> None:
    root = PathDir.root(str(inbox), "inbox")
    with pytest.raises(ValueError, match="O_EXCL"):
        root.open("x", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(ValueError, match="O_TRUNC"):
        root.open("x", os.O_WRONLY | os.O_TRUNC)
    with pytest.raises(BadName):
        root.open("../x", os.O_RDONLY)


def test_a_link_is_checked_after_placement(inbox: Path) -> None:
    root = PathDir.root(str(inbox), "inbox")
    a = root.sub("a", create=False)
    fd = root.open("part", CREATE)
    os.write(fd, b"data")
    os.close(fd)
    root.link_to("part", a, "placed")
    assert (inbox / "a" / "placed").read_bytes() == b"data"
    with pytest.raises(FileExistsError):
        root.link_to("part", a, "placed")
    b = root.sub("b", create=True)
    swap_for_symlink(inbox / "b", inbox.parent / "outside")
    with pytest.raises(StoreError, match="changed"):
        root.link_to("part", b, "placed")
    assert list((inbox.parent / "outside").iterdir()) == []


def test_a_listing_of_a_directory_replaced_meanwhile_is_dropped(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (inbox / "a" / "f").write_text("x")
    listing = PathListing(str(inbox / "a"))
    assert [e.name for e in listing.entries()] == ["f"]
    listing = PathListing(str(inbox / "a"))
    swap_for_symlink(inbox / "a", inbox.parent / "outside")
    with pytest.raises(OSError):
        list(listing.entries())
