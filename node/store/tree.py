"""What a batch receive needs of the inbox beyond single files: whether a tree path already
holds given content (a resumed batch skips it), empty directories, and links that stay inside
the tree. Everything goes through `Dir` handles (node/store/dirs.py): nothing outside the
inbox, no symlink followed on the way."""

from __future__ import annotations

import contextlib
import os
import stat

from node import plat
from node.errors import BadName, StoreError
from node.names import check_depth, check_name
from node.store.dirs import Dir, make_dirs, open_root, os_error
from node.store.inbox import Inbox

# Permission bits a received file or directory may get: never set-id or sticky, never writable
# by group or others (the sender's umask is not ours to trust), always the owner's to manage.
MODE_MASK = 0o755
MODE_OWNER = 0o600


def safe_mode(mode: int, *, directory: bool = False) -> int:
    return (mode & MODE_MASK) | (0o700 if directory else MODE_OWNER)


def _walk(root: Dir, comps: list[str]) -> Dir | None:
    """The directory holding the last component, or None when a component is missing."""
    d = root
    for comp in comps:
        try:
            nxt = d.sub(comp, create=False)
        except OSError:
            if d is not root:
                d.close()
            return None
        if d is not root:
            d.close()
        d = nxt
    return d


def holds(inbox: Inbox, name: str, sha256: str, size: int) -> bool:
    """The inbox has a regular file at exactly `name` with this content (by the hash cache,
    which records every placed file)."""
    try:
        name = check_depth(check_name(name), inbox.max_depth)
    except BadName:
        return False
    parts = name.split("/")
    try:
        root = open_root(inbox.real, "inbox", inbox.dirs)
    except (OSError, StoreError):
        return False
    try:
        d = _walk(root, parts[:-1])
        if d is None:
            return False
        try:
            st = d.lstat(parts[-1])
        except OSError:
            return False
        finally:
            if d is not root:
                d.close()
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
        real = os.path.join(inbox.real, *parts)
        return inbox.cache.lookup(real, st.st_size, st.st_mtime_ns) == sha256
    finally:
        root.close()


def has_entry(inbox: Inbox, name: str) -> bool:
    try:
        root = open_root(inbox.real, "inbox", inbox.dirs)
    except (OSError, StoreError):
        return True  # cannot tell: look file by file
    try:
        root.lstat(name)
        return True
    except OSError:
        return False
    finally:
        root.close()


def make_dir(inbox: Inbox, name: str, mode: int) -> None:
    """Create the directory `name` (and its parents) under the inbox."""
    name = check_depth(check_name(name), inbox.max_depth)
    root = open_root(inbox.real, "inbox", inbox.dirs)
    try:
        d = make_dirs(root, name.split("/"))
        fd = getattr(d, "fd", -1)
        if fd >= 0 and hasattr(os, "fchmod"):
            with contextlib.suppress(OSError):
                os.fchmod(fd, safe_mode(mode, directory=True))
        if d is not root:
            d.close()
    except OSError as exc:
        raise os_error(exc, f"cannot create directory {name!r}") from exc
    finally:
        root.close()


def make_link(inbox: Inbox, name: str, target: str) -> None:
    """Create the link `name` -> `target` (the caller checked it stays inside the tree). Only
    where directories are held by fd (no window for a swapped parent); an existing entry of
    that name is left alone."""
    name = check_depth(check_name(name), inbox.max_depth)
    parts = name.split("/")
    root = open_root(inbox.real, "inbox", inbox.dirs)
    try:
        d = make_dirs(root, parts[:-1])
        try:
            fd = getattr(d, "fd", -1)
            if fd < 0 or os.symlink not in os.supports_dir_fd or not plat.O_NOFOLLOW:
                raise StoreError("policy", "this node cannot create links here")
            try:
                os.symlink(target, parts[-1], dir_fd=fd)
            except FileExistsError:
                st = d.lstat(parts[-1])
                if not stat.S_ISLNK(st.st_mode) or os.readlink(parts[-1], dir_fd=fd) != target:
                    raise StoreError("io_error", f"{name!r} exists and is not that link") from None
        finally:
            if d is not root:
                d.close()
    except OSError as exc:
        raise os_error(exc, f"cannot create link {name!r}") from exc
    finally:
        root.close()
