"""The platform layer: every call whose availability differs between Linux, macOS/BSD and
Windows, behind a small function (or constant) with a fallback, chosen by capability.

Nothing here imports a module that may be missing (`fcntl`, `termios`, `ctypes`, `resource`)
at import time: importing `node` never fails on any platform. The choice is made by what the
running Python has (`hasattr(os, "sendfile")`, `os.supports_dir_fd`, ...), not by the name of
the platform, so a Python that lacks a call (or a test that removes it) gets the fallback.

- open() flags `O_NOFOLLOW`, `O_CLOEXEC`, `O_NONBLOCK`, `O_DIRECTORY`: 0 where missing
  (Windows: handles are not inherited anyway, PEP 446); `O_BINARY`: Windows' (text mode would
  translate bytes), 0 elsewhere.
- `pread_into`, `pread`: `os.preadv` / `os.pread`, else seek + read + seek back (the loop is
  one thread: nothing else moves the fd's position meanwhile).
- `read_into`: `os.readv`, else `os.read` + copy.
- `sendfile` where `HAS_SENDFILE` (Linux, macOS, BSD), else the caller's pread + send.
- `send_buffers`: one gathered `sendmsg`, else one `send` of the joined buffers (Windows).
- `disk_free`: `os.statvfs`, else `shutil.disk_usage`.
- `fsync_dir`: a directory opened with `O_DIRECTORY`, else nothing (Windows cannot).
- `set_reuse_address` (TCP listen): `SO_REUSEADDR` on POSIX; nothing on Windows, where it
  would let another socket bind the same port (as `socket.create_server` does).
- `set_reuse_port` (UDP): `SO_REUSEPORT` where it exists, else SO_REUSEADDR alone suffices.
- `CONNECT_PENDING`: the connect_ex() codes meaning "in progress" (Windows' WSAEWOULDBLOCK).
- `store_backend()`: "dirfd" where every dir_fd call the store uses exists (`dir_fd_missing`),
  else "path" (node/store/pathdir.py).
- interfaces: `node/plat/ifaces.py` (ioctl, getifaddrs, GetAdaptersAddresses, a fallback).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from collections.abc import Sequence
from typing import Final

__all__ = [
    "CONNECT_PENDING",
    "DIR_FD_CALLS",
    "HAS_SENDFILE",
    "HAS_SENDMSG",
    "O_BINARY",
    "O_CLOEXEC",
    "O_DIRECTORY",
    "O_NOFOLLOW",
    "O_NONBLOCK",
    "describe",
    "dir_fd_missing",
    "disk_free",
    "fsync_dir",
    "is_link_like",
    "pread",
    "pread_into",
    "read_into",
    "send_buffers",
    "set_reuse_address",
    "set_reuse_port",
    "store_backend",
    "utime_fd",
]

# -- open() flags: 0 where the platform has none --------------------------------------------
O_BINARY: Final[int] = getattr(os, "O_BINARY", 0)
O_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC: Final[int] = getattr(os, "O_CLOEXEC", 0)
O_NONBLOCK: Final[int] = getattr(os, "O_NONBLOCK", 0)
O_DIRECTORY: Final[int] = getattr(os, "O_DIRECTORY", 0)

# Windows: FILE_ATTRIBUTE_REPARSE_POINT (symlinks, junctions, mount points, cloud stubs).
_REPARSE_POINT: Final = 0x400


def is_link_like(st: os.stat_result) -> bool:
    """A symlink, or (Windows) any reparse point such as a junction: never followed."""
    return stat.S_ISLNK(st.st_mode) or bool(getattr(st, "st_file_attributes", 0) & _REPARSE_POINT)


# -- reading at an offset -------------------------------------------------------------------
_preadv = getattr(os, "preadv", None)
_pread = getattr(os, "pread", None)
_readv = getattr(os, "readv", None)


def _seek_read(fd: int, n: int, offset: int) -> bytes:
    """pread without pread: the loop is one thread, so nothing else moves this fd's position
    between the seeks; the position is restored (a file being appended to stays appendable)."""
    pos = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)
    finally:
        os.lseek(fd, pos, os.SEEK_SET)


def pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Read up to len(view) bytes at `offset` into `view` without moving the fd's position."""
    if _preadv is not None:
        return int(_preadv(fd, [view], offset))
    data = (
        _pread(fd, len(view), offset) if _pread is not None else _seek_read(fd, len(view), offset)
    )
    view[: len(data)] = data
    return len(data)


def pread(fd: int, n: int, offset: int) -> bytes:
    """Up to n bytes at `offset`, without moving the fd's position."""
    if _pread is not None:
        return bytes(_pread(fd, n, offset))
    return _seek_read(fd, n, offset)


def read_into(fd: int, view: memoryview) -> int:
    """os.readv(fd, [view]) where it exists (no copy), else os.read + copy."""
    if _readv is not None:
        return int(_readv(fd, [view]))
    data = os.read(fd, len(view))
    view[: len(data)] = data
    return len(data)


# -- sockets --------------------------------------------------------------------------------
HAS_SENDFILE: Final[bool] = hasattr(os, "sendfile")
HAS_SENDMSG: Final[bool] = hasattr(socket.socket, "sendmsg")


def sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
    """os.sendfile; callers check HAS_SENDFILE first (and fall back to pread + send)."""
    return int(os.sendfile(out_fd, in_fd, offset, count))


def send_buffers(sock: socket.socket, buffers: Sequence[memoryview]) -> int:
    """Gathered send of several buffers: one sendmsg, or one send of their concatenation."""
    if HAS_SENDMSG:
        return sock.sendmsg(buffers)
    return sock.send(b"".join(buffers))


def set_reuse_address(sock: socket.socket) -> None:
    """A listening TCP socket may bind again at once after a restart (connections of the last
    run in TIME_WAIT): SO_REUSEADDR on POSIX. Not where Winsock's semantics apply (the
    platform defines SO_EXCLUSIVEADDRUSE: Windows), where SO_REUSEADDR would let another socket
    bind the same port, and a restart binds over TIME_WAIT without it; as
    `socket.create_server` does. (SO_EXCLUSIVEADDRUSE is not set either: with it, a restart
    fails while the last run's gracefully closed connections sit in TIME_WAIT.)"""
    if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def set_reuse_port(sock: socket.socket) -> bool:
    """SO_REUSEPORT where it exists (BSD/macOS need it for several UDP listeners on one port;
    Linux and Windows share the port with SO_REUSEADDR alone). Whether it was set."""
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
    except OSError:  # defined by the headers, refused by the kernel (old WSL, some BSDs)
        return False
    return True


# Non-blocking connect_ex() results that mean "in progress" (Windows: WSAEWOULDBLOCK).
CONNECT_PENDING: Final[frozenset[int]] = frozenset(
    {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EINTR}
    | ({errno.WSAEWOULDBLOCK} if hasattr(errno, "WSAEWOULDBLOCK") else set())
)


# -- disk -----------------------------------------------------------------------------------
def disk_free(path: str) -> int:
    """Bytes available to this user on the file system holding `path` (OSError if unknown)."""
    statvfs = getattr(os, "statvfs", None)
    if statvfs is not None:
        st = statvfs(path)
        return int(st.f_bavail * st.f_frsize)
    import shutil  # only here: it costs an idle POSIX node memory for nothing

    return int(shutil.disk_usage(path).free)


def fsync_dir(path: str) -> None:
    """Make a directory's entries durable, where a directory can be opened (not Windows)."""
    if not O_DIRECTORY:
        return
    try:
        fd = os.open(path, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def utime_fd(fd: int, ns: tuple[int, int]) -> bool:
    """Set a file's times through its fd where the platform can (not Windows): whether done."""
    if os.utime not in os.supports_fd:
        return False
    os.utime(fd, ns=ns)
    return True


# -- the store's implementation -------------------------------------------------------------
# What node/store/dirfd.py calls relative to a directory fd, or without following a symlink.
DIR_FD_CALLS: Final = ("open", "stat", "mkdir", "unlink", "rename", "link")
FD_CALLS: Final = ("scandir", "listdir", "stat")
NOFOLLOW_CALLS: Final = ("stat", "link")


def dir_fd_missing() -> list[str]:
    """What the dir_fd store needs and this Python lacks (empty: use it)."""
    missing = [f"{n}(dir_fd)" for n in DIR_FD_CALLS if getattr(os, n) not in os.supports_dir_fd]
    missing += [f"{n}(fd)" for n in FD_CALLS if getattr(os, n) not in os.supports_fd]
    missing += [
        f"{n}(follow_symlinks=False)"
        for n in NOFOLLOW_CALLS
        if getattr(os, n) not in os.supports_follow_symlinks
    ]
    missing += [flag for flag in ("O_NOFOLLOW", "O_DIRECTORY") if not hasattr(os, flag)]
    return missing


def store_backend() -> str:
    """ "dirfd" where every dir_fd call the store uses exists (Linux, macOS, BSD), else "path"
    (Windows, and any Python lacking one): node/store/dirs.py picks the implementation."""
    return "path" if dir_fd_missing() else "dirfd"


def describe() -> dict[str, str]:
    """Which branch each capability takes on this Python (for `mole --version`, bug reports)."""
    return {
        "platform": sys.platform,
        "store": store_backend(),
        "sendfile": "os.sendfile" if HAS_SENDFILE else "pread+send",
        "pread": "os.preadv" if _preadv else "os.pread" if _pread else "seek+read",
        "sendmsg": "yes" if HAS_SENDMSG else "send(joined)",
        "selector": _selector_name(),
    }


def _selector_name() -> str:
    import selectors

    return selectors.DefaultSelector.__name__
