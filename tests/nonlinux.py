"""Run `mole` as on a system without Linux's extras: `python tests/nonlinux.py ARGS...`.

What Windows' Python lacks is made unavailable before `node` is imported, so the node must
take every fallback of node/plat (and the path-based store) to start, discover and transfer:

- the modules `fcntl`, `termios`, `tty`, `pty`, `resource`, `grp`, `pwd` cannot be imported
  (a `sys.meta_path` finder refuses them);
- `os.sendfile`, `os.pread`, `os.preadv`, `os.pwrite`, `os.readv`, `os.writev`, `os.statvfs`
  are gone (`shutil.disk_usage` answers as Windows' does, without statvfs), and so are
  `os.O_NOFOLLOW`, `O_CLOEXEC`, `O_NONBLOCK`, `O_DIRECTORY`;
- `os.supports_dir_fd` and `os.supports_fd` are empty, `os.supports_follow_symlinks` holds
  only `os.stat` (as on Windows);
- `socket.socket.sendmsg` and `socket.SO_REUSEPORT` are gone; `selectors.DefaultSelector` is
  `SelectSelector` (Windows' only one).

It is a simulation on Linux, not Windows: paths, text encodings, file locking and the kernel
stay Linux's. `MOLE_SIMULATE=macos` instead keeps the dir_fd calls and sendfile (macOS has
them) and removes only `fcntl`'s ioctl route, so interfaces come from getifaddrs.
"""

from __future__ import annotations

import importlib.abc
import os
import selectors
import shutil
import socket
import sys
from collections.abc import Sequence
from types import ModuleType

REFUSED = frozenset({"fcntl", "termios", "tty", "pty", "resource", "grp", "pwd"})


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        if fullname in REFUSED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (simulated)", name=fullname)
        return None


class _Missing:
    """A class attribute that reads as absent (hasattr() is False)."""

    def __get__(self, obj: object, owner: type | None = None) -> None:
        raise AttributeError("sendmsg (simulated: not on this platform)")


def simulate(kind: str) -> None:
    for name in REFUSED if kind == "windows" else {"fcntl"}:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, Refuse() if kind == "windows" else _OnlyFcntl())
    if kind != "windows":
        return
    statvfs = os.statvfs

    def disk_usage(path: str) -> object:
        st = statvfs(path)
        total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        return shutil._ntuple_diskusage(total, total - free, free)  # type: ignore[attr-defined]

    shutil.disk_usage = disk_usage  # type: ignore[assignment]
    for name in (
        "sendfile", "pread", "preadv", "pwrite", "readv", "writev", "statvfs",
        "O_NOFOLLOW", "O_CLOEXEC", "O_NONBLOCK", "O_DIRECTORY",
    ):  # fmt: skip
        if hasattr(os, name):
            delattr(os, name)
    os.supports_dir_fd.clear()
    os.supports_fd.clear()
    os.supports_follow_symlinks.clear()
    os.supports_follow_symlinks.add(os.stat)
    socket.socket.sendmsg = _Missing()  # type: ignore[assignment,method-assign]
    if hasattr(socket, "SO_REUSEPORT"):
        delattr(socket, "SO_REUSEPORT")
    selectors.DefaultSelector = selectors.SelectSelector  # type: ignore[misc]


class _OnlyFcntl(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        if fullname == "fcntl":
            raise ModuleNotFoundError("No module named 'fcntl' (simulated)", name=fullname)
        return None


def main() -> int:
    simulate(os.environ.get("MOLE_SIMULATE", "windows"))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from node.cli import main as mole

    return mole(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
