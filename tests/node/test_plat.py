"""node/plat/__init__.py: each fallback gives what the call it replaces gives."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from node import plat


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 64)
    return path


@pytest.mark.parametrize("missing", [(), ("_preadv",), ("_preadv", "_pread")])
def test_pread_fallbacks_read_at_an_offset_and_keep_the_position(
    blob: Path, missing: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in missing:
        monkeypatch.setattr(plat, name, None)
    data = blob.read_bytes()
    fd = os.open(blob, os.O_RDWR | plat.O_BINARY)
    try:
        os.lseek(fd, 100, os.SEEK_SET)
        buf = bytearray(1000)
        assert plat.pread_into(fd, memoryview(buf), 5000) == 1000
        assert bytes(buf) == data[5000:6000]
        assert plat.pread(fd, 10, len(data) - 4) == data[-4:]
        assert plat.pread(fd, 10, len(data) + 10) == b""
        assert os.lseek(fd, 0, os.SEEK_CUR) == 100  # a writer appending here is undisturbed
    finally:
        os.close(fd)


@pytest.mark.parametrize("readv", [True, False])
def test_read_into_with_and_without_readv(
    blob: Path, readv: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not readv:
        monkeypatch.setattr(plat, "_readv", None)
    fd = os.open(blob, os.O_RDONLY)
    try:
        buf = bytearray(300)
        assert plat.read_into(fd, memoryview(buf)) == 300
        assert bytes(buf) == blob.read_bytes()[:300]
    finally:
        os.close(fd)


def test_disk_free_without_statvfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    assert plat.disk_free(str(tmp_path)) > 0
    asked: list[str] = []

    def disk_usage(path: str) -> tuple[int, int, int]:  # Windows: GetDiskFreeSpaceExW
        asked.append(path)
        return shutil._ntuple_diskusage(100, 40, 60)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    monkeypatch.delattr(os, "statvfs")
    assert plat.disk_free(str(tmp_path)) == 60 and asked == [str(tmp_path)]


def test_utime_fd_and_fsync_dir_where_the_platform_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert plat.utime_fd(fd, (0, 10**18))
        assert os.stat(tmp_path / "f").st_mtime_ns == 10**18
        monkeypatch.setattr(os, "supports_fd", set())
        assert not plat.utime_fd(fd, (0, 1))
    finally:
        os.close(fd)
    plat.fsync_dir(str(tmp_path))
    monkeypatch.setattr(plat, "O_DIRECTORY", 0)
    plat.fsync_dir(str(tmp_path))  # a no-op, as on Windows
    plat.fsync_dir(str(tmp_path / "missing"))  # never raises


def test_reuse_options(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        plat.set_reuse_address(s)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    monkeypatch.setattr(socket, "SO_EXCLUSIVEADDRUSE", -5, raising=False)  # Winsock semantics
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        plat.set_reuse_address(s)
        assert not s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    monkeypatch.undo()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert plat.set_reuse_port(s) == hasattr(socket, "SO_REUSEPORT")
    monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert not plat.set_reuse_port(s)
    assert errno.EINPROGRESS in plat.CONNECT_PENDING


def test_store_backend_by_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plat.store_backend() == "dirfd"  # Linux has every dir_fd call
    assert plat.dir_fd_missing() == []
    monkeypatch.setattr(os, "supports_dir_fd", set())
    assert plat.store_backend() == "path"
    assert "open(dir_fd)" in plat.dir_fd_missing()
    monkeypatch.undo()
    monkeypatch.delattr(os, "O_NOFOLLOW")
    assert plat.dir_fd_missing() == ["O_NOFOLLOW"]


def test_describe_names_every_branch() -> None:
    d = plat.describe()
    assert d["store"] == "dirfd" and d["sendfile"] == "os.sendfile"
    assert set(d) == {"platform", "store", "sendfile", "pread", "sendmsg", "selector"}


def test_reparse_points_count_as_links(tmp_path: Path) -> None:
    class WinStat:
        st_mode = 0o040755
        st_file_attributes = 0x400

    assert plat.is_link_like(WinStat())  # type: ignore[arg-type]
    (tmp_path / "l").symlink_to(tmp_path)
    assert plat.is_link_like(os.lstat(tmp_path / "l"))
    assert not plat.is_link_like(os.lstat(tmp_path))
