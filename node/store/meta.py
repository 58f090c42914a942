"""What the store says about a file: `FileMeta`, its media type, and path containment.

Pure: no disk access (`inside` compares strings of already resolved paths).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["DEFAULT_MIME", "FileMeta", "guess_mime", "inside", "is_sha256"]

DEFAULT_MIME = "application/octet-stream"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileMeta:
    """One file as the protocol describes it (`FileInfo`); `name` is relative, '/'-separated."""

    name: str
    size: int
    sha256: str
    mtime: float
    mime: str


def guess_mime(name: str) -> str:
    import mimetypes  # its tables are built on first use; an idle node never needs them

    return mimetypes.guess_type(name, strict=False)[0] or DEFAULT_MIME


def is_sha256(value: object) -> bool:
    """A lower-case hex SHA-256 digest, as the wire and the hash cache spell it."""
    return isinstance(value, str) and _HEX64.match(value) is not None


def inside(path: str, root: str) -> bool:
    """`path` is `root` or below it (both already resolved: no symlink, no '..')."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
