"""Partial data on disk: `inbox/.mole/parts/<key>.part` and its JSON record `<key>.json`.

The key of a resumable part is sha256(peer NUL name)[:32]; a part of a concurrent second
receive of the same (peer, name) is "<key>-<random>" and a local copy's "copy-<random>":
neither resumes. Both files survive restarts. Every call here goes through the parts
directory's handle (dirs.py `Dir`) and never follows a symlink.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass
from typing import Any, Final

from node.errors import StoreError
from node.store.dirs import Dir
from node.store.hashing import new_sha256
from node.store.meta import FileMeta
from node.store.walk import PART_SUFFIX

__all__ = [
    "PARTS",
    "PART_SUFFIX",
    "RECORD_SUFFIX",
    "PartInfo",
    "held",
    "list_parts",
    "part_key",
    "read_record",
    "remove_part",
    "same_source",
    "scan_parts",
    "write_record",
]

PARTS: Final = "parts"
RECORD_SUFFIX: Final = ".json"
RECORD_MAX_BYTES: Final = 64 << 10


@dataclass(frozen=True)
class PartInfo:
    """One part for the API: whose, of what, how far, and whether a receive is writing it."""

    key: str
    peer: str  # "" when its record is missing or damaged (such a part is never resumed)
    name: str
    held: int  # bytes in the part file
    size: int  # bytes of the whole file (0 when unknown)
    sha256: str  # "" for a hash-less push's part
    mtime: float  # last write (unix time)
    active: bool  # a receive under way writes it; else it is kept for a resume


def part_key(peer: str, name: str) -> str:
    h = new_sha256()
    h.update(f"{peer}\0{name}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


def read_record(parts: Dir, key: str) -> dict[str, Any] | None:
    try:
        fd = parts.open(key + RECORD_SUFFIX, os.O_RDONLY)
    except (OSError, StoreError):
        return None
    try:
        rec = json.loads(os.read(fd, RECORD_MAX_BYTES))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(rec, dict):
        return None
    types = {"peer": str, "name": str, "sha256": str, "size": int}
    if not all(isinstance(rec.get(k), t) for k, t in types.items()):
        return None
    return rec


def held(parts: Dir, key: str, peer: str, name: str) -> tuple[int, str] | None:
    """(bytes, sha256) of the part under key when it resumes a receive of name from peer."""
    rec = read_record(parts, key)
    if rec is None or rec["peer"] != peer or rec["name"] != name or not rec["sha256"]:
        return None  # a hash-less push's part: a pull cannot name what it holds
    try:
        st = parts.lstat(key + PART_SUFFIX)
    except (OSError, StoreError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return min(st.st_size, int(rec["size"])), str(rec["sha256"])


def same_source(rec: dict[str, Any] | None, peer: str, meta: FileMeta) -> bool:
    """Whether a part's record describes the file now offered, so the part may resume.

    Both sha256s known: they decide. Either unknown (a hash-less push's part, or a hash-less
    offer): size and mtime decide. That is a guess, not a proof; the final sha256 check of
    the whole file catches a wrong one, and the part then goes.
    """
    if rec is None or rec["peer"] != peer or rec["name"] != meta.name:
        return False
    if rec["size"] != meta.size:
        return False
    if rec["sha256"] and meta.sha256:
        return bool(rec["sha256"] == meta.sha256)
    return bool(rec.get("mtime") == meta.mtime)


def write_record(parts: Dir, key: str, peer: str, meta: FileMeta) -> None:
    rec = {
        "peer": peer,
        "name": meta.name,
        "sha256": meta.sha256,
        "size": meta.size,
        "mtime": meta.mtime,
        "mime": meta.mime,
    }
    tmp = key + RECORD_SUFFIX + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        parts.unlink(tmp)  # left by a crash: O_EXCL below, never O_TRUNC through a link
    fd = parts.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        data = json.dumps(rec).encode()
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)
    parts.replace(tmp, key + RECORD_SUFFIX)


def remove_part(parts: Dir, key: str) -> None:
    for suffix in (PART_SUFFIX, RECORD_SUFFIX, RECORD_SUFFIX + ".tmp"):
        with contextlib.suppress(FileNotFoundError):
            parts.unlink(key + suffix)


def scan_parts(parts: Dir) -> dict[str, tuple[int, float]]:
    """key -> (bytes of its .part file, newest mtime of its files), for every key present
    (a record or temp file without a part counts 0 bytes)."""
    found: dict[str, tuple[int, float]] = {}
    for entry in parts.listdir():
        key = entry.split(".", 1)[0]
        try:
            st = parts.lstat(entry)
        except OSError:
            continue
        size, mtime = found.get(key, (0, 0.0))
        if entry == key + PART_SUFFIX and stat.S_ISREG(st.st_mode):
            size = st.st_size
        found[key] = (size, max(mtime, st.st_mtime))
    return found


def list_parts(parts: Dir, active: dict[str, int]) -> list[PartInfo]:
    """Every part in the directory; `active`: key -> bytes written for receives under way."""
    out: list[PartInfo] = []
    for key, (size_on_disk, mtime) in sorted(scan_parts(parts).items()):
        rec = read_record(parts, key) or {}
        nbytes = active.get(key, size_on_disk)
        out.append(
            PartInfo(
                key=key,
                peer=str(rec.get("peer", "")),
                name=str(rec.get("name", "")),
                held=nbytes,
                size=int(rec.get("size", 0)),
                sha256=str(rec.get("sha256", "")),
                mtime=mtime,
                active=key in active,
            )
        )
    return out
