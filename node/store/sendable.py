"""The files this node may send from disk: by path, by share name, by content hash.

Split out of `Store` (issue 9) because it owns a different thing: `Store` wires the share
index, the hash cache, the inbox and the receives together; `LocalFiles` answers which file on
disk a send may read (a push of a path, a peer's `get` by name or sha256, forwarding a
received file) and describes it: a FileMeta when the hash cache knows it, else a HashJob.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from node.errors import BadName, StoreError
from node.names import MOLE_DIR, check_name
from node.store.hashcache import HashCache
from node.store.hashing import HashJob
from node.store.meta import FileMeta, guess_mime, inside
from node.store.parts import PART_SUFFIX

__all__ = ["LocalFiles"]


class LocalFiles:
    """Sendable files under `share` (and received ones under the inbox), checked on disk."""

    def __init__(self, share: Path, share_real: str, inbox_real: str, cache: HashCache) -> None:
        self.share = share
        self.share_real = share_real
        self.inbox_real = inbox_real
        self.cache = cache

    def meta_or_job(
        self, path: Path, name: str, real: str, st: os.stat_result
    ) -> FileMeta | HashJob:
        sha = self.cache.get(real, st)
        if sha is not None:
            return FileMeta(name, st.st_size, sha, st.st_mtime_ns / 1e9, guess_mime(name))
        return HashJob(path, name, real=real, st=st)

    def meta_for_path(self, path: Path) -> FileMeta | HashJob:
        """Describe any readable regular file (a push of an absolute path or a share name).

        The name is the share-relative name for files in the share, else the base name.
        """
        try:
            real = os.path.realpath(path)
            st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise StoreError("not_found", f"no such file: {path}") from exc
        except OSError as exc:
            raise StoreError("io_error", f"cannot stat {path}: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise StoreError("not_found", f"{path} is not a regular file")
        if not os.access(real, os.R_OK):
            raise StoreError("io_error", f"{path} is not readable")
        name = Path(path).name
        if inside(real, self.share_real) and real != self.share_real:
            name = Path(os.path.relpath(real, self.share_real)).as_posix()
        return self.meta_or_job(Path(path), name, real, st)

    def in_share(self, path: Path) -> bool:
        """Whether `path` (after symlinks) is a file mole may send without being told: inside
        the share, or a file it received (inside the inbox, not its own `.mole` directory:
        forwarding what arrived is what a relay does)."""
        real = os.path.realpath(path)
        if inside(real, self.share_real) and real != self.share_real:
            return True
        inbox = self.inbox_real
        mole = os.path.join(inbox, MOLE_DIR)
        return inside(real, inbox) and real != inbox and not inside(real, mole)

    def resolve_shared(self, name: str | None, sha256: str | None) -> Path:
        """The path of a shared file by name (or, without a name, by cached content hash)."""
        if name is not None:
            try:
                check_name(name)
            except BadName as exc:
                raise StoreError("not_found", f"not shared: {exc}") from exc
            parts = name.split("/")
            if any(p.startswith(".") for p in parts) or name.endswith(PART_SUFFIX):
                raise StoreError("not_found", f"{name!r} is not shared")
            path = self.share.joinpath(*parts)
            real = os.path.realpath(path)
            try:
                ok = inside(real, self.share_real) and stat.S_ISREG(os.stat(real).st_mode)
            except OSError:
                ok = False
            if not ok:
                raise StoreError("not_found", f"no shared file {name!r}")
            if sha256 is not None:
                st = os.stat(real)
                if self.cache.get(real, st) != sha256:
                    raise StoreError("not_found", f"shared file {name!r} has other content")
            return path
        if sha256 is not None:
            for real in self.cache.paths_with(sha256):
                if inside(real, self.share_real) and self._still_valid(real):
                    rel = os.path.relpath(real, self.share_real)
                    if not any(p.startswith(".") for p in Path(rel).parts):
                        return self.share / rel
        raise StoreError("not_found", f"no shared file with sha256 {sha256}")

    def _still_valid(self, real: str) -> bool:
        try:
            st = os.stat(real, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and self.cache.get(real, st) is not None
