"""Files a browser uploads to the node, to be pushed from there (the dashboard's send).

The browser cannot name a file on the node's disk, and a push reads only from the share
(docs/api.md 1.2). So the dashboard first streams the file's bytes to the node
(`POST /api/uploads?name=NAME`, node/api.py), which writes them into a staging directory inside
the share, `share/.mole-uploads/` (hidden: the share index never lists it, and peers cannot ask
for it), then pushes that path. Each upload:

- is refused before any byte is written when its name is one `node/names.py` refuses, or when
  its size does not fit: the share's free space (minus a reserve, and minus what uploads under
  way will still write) and the `--upload-quota` over everything staged;
- is written to a temporary file `<staging>/<upload id>/.upload` (O_EXCL, O_NOFOLLOW, 0600),
  one chunk at a time as the body arrives (never held in memory), and appears under its name
  only when complete: `<staging>/<upload id>/<name>` by rename (atomic);
- is removed whole (temporary file and directory) when the body does not arrive complete;
- stays until the push of it is done (`release`), or at most `MAX_AGE` (pruned at start and at
  each new upload) when no live transfer reads it.

Several files of one send (`?batch=new`, then `?batch=ID` with the id the first answer gave)
go into one upload directory, each under its own name (a folder's files keep their relative
paths), so they are pushed together as one batch whose top-level names are theirs. Each such
upload has a temporary file of its own, `<staging>/<batch id>/.upload-<upload id>`; an aborted
one removes only that file; a name already in the directory (or a file where a folder of the
name would go) is refused before any byte is written; an empty file is allowed (a batch may
hold one; a lone upload still needs a body).

Nothing is ever created outside `<staging>/<upload id>/`: the id is ours (random hex) and the
name's components were checked (no `..`, no absolute path, no `.mole`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.errors import BadName, ErrorCode, LocalCode, NotFound, RequestError
from node.names import check_depth, check_name

STAGING = ".mole-uploads"
TEMP = ".upload"
MAX_AGE = 24 * 3600.0  # s a staged upload is kept when no push took it
RESERVE = 64 << 20  # bytes of the file system an upload never takes


# shutil is imported on first use: at import it pulls in bz2, lzma and fnmatch, ~0.6 MiB of an
# idle node's RSS, for an upload that most nodes never receive.
def _rmtree(path: str | os.PathLike[str]) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _disk_free(path: str | os.PathLike[str]) -> int:
    import shutil

    return shutil.disk_usage(path).free


class NoRoom(RequestError):
    """The upload does not fit (free space, quota): answered 507 `no_space`."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.NO_SPACE)


BATCH_ID = re.compile(r"[0-9a-f]{16}")  # an upload directory's id (ours: os.urandom(8).hex())


class Upload:
    """One upload under way: `write` each chunk, then `finish` (or `abort`). `batch`: the id of
    the directory it joins (several files of one send), None for a directory of its own."""

    def __init__(
        self, owner: Uploads, uid: str, name: str, length: int, batch: str | None = None
    ) -> None:
        self.owner = owner
        self.id = uid
        self.name = name
        self.length = length
        self.received = 0
        self.batch = batch
        self.dir = owner.staging / (batch or uid)
        self.temp = self.dir / (TEMP if batch is None else f"{TEMP}-{uid}")
        self._fd: int | None = None
        self.done = False

    def open(self) -> None:
        if self.batch is None or not self.dir.exists():
            self.dir.mkdir(mode=0o700)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(self.temp, flags, 0o600)

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("upload not open")
        if self.received + len(data) > self.length:
            raise ValueError("more bytes than announced")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.received += len(data)

    def finish(self) -> dict[str, Any]:
        """Close the temporary file and give it its name; the upload's JSON."""
        if self._fd is None or self.received != self.length:
            raise RuntimeError(f"upload incomplete: {self.received}/{self.length}")
        fd, self._fd = self._fd, None
        os.close(fd)
        final = self.dir.joinpath(*self.name.split("/"))
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.batch is not None and os.path.lexists(final):  # another upload took the name
            raise FileExistsError(errno.EEXIST, "already in this send", self.name)
        os.rename(self.temp, final)  # the file appears complete or not at all
        self.done = True
        self.owner.ended(self)
        answer: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "size": self.length,
            "path": str(final),
        }
        if self.batch is not None:
            # What the push of the whole send names: the top of this file's tree.
            answer["batch"] = self.batch
            answer["root"] = str(self.dir / self.name.split("/")[0])
        return answer

    def abort(self) -> None:
        """The body did not arrive complete: nothing of it stays."""
        if self.done:
            return
        self.done = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.batch is None:
            _rmtree(self.dir)
        else:  # the send's other files stay (an empty directory goes)
            with contextlib.suppress(OSError):
                os.unlink(self.temp)
            with contextlib.suppress(OSError):
                os.rmdir(self.dir)
        self.owner.ended(self)


class Uploads:
    """The staging directory and its uploads (one per node)."""

    def __init__(
        self,
        share: Path,
        *,
        quota: int | None = None,
        reserve: int = RESERVE,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: os.urandom(8).hex(),
        free: Callable[[Path], int] | None = None,
        in_use: Callable[[], set[str]] = set,
    ) -> None:
        """`in_use`: the upload directories live transfers read (never pruned)."""
        self.share = share
        self._in_use = in_use
        self.staging = share / STAGING
        self.quota = quota
        self.reserve = reserve
        self._clock = clock
        self._new_id = new_id
        self._free = free or _disk_free
        self.open: dict[str, Upload] = {}

    def begin(self, name: str, length: int, batch: str | None = None) -> Upload:
        """A new upload of `length` bytes named `name`, its temporary file open; refused
        (RequestError) before anything is written when the name or the size is wrong.
        `batch`: "new" (the first file of a send of several), or the id the first one's answer
        gave (the same send's next files: the same directory)."""
        try:
            name = check_name(name)
            check_depth(name)
        except BadName as exc:
            raise RequestError(f"bad file name: {exc}", ErrorCode.BAD_NAME) from None
        if length < 0 or (length == 0 and batch is None):
            raise RequestError("an upload needs a body (Content-Length > 0)", LocalCode.BAD_REQUEST)
        self.prune()
        self.staging.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(self.staging)
        if not stat.S_ISDIR(st.st_mode):
            raise NoRoom(f"{self.staging} is not a directory")
        joined = None if batch is None else self._joined(batch, name)
        pending = sum(u.length - u.received for u in self.open.values())
        room = self._free(self.staging) - self.reserve - pending
        if length > room:
            raise NoRoom(
                f"no room for {length} bytes in the share (free {max(0, room)} bytes "
                f"after a {self.reserve} byte reserve)"
            )
        if self.quota is not None:
            used = self.staged_bytes() + pending
            if used + length > self.quota:
                raise NoRoom(
                    f"the upload quota ({self.quota} bytes) would be exceeded: "
                    f"{used} bytes are staged"
                )
        uid = self._new_id()
        upload = Upload(self, uid, name, length, batch=joined or (uid if batch else None))
        upload.open()
        self.open[upload.id] = upload
        return upload

    def _joined(self, batch: str, name: str) -> str | None:
        """The upload directory a file of a send joins (None: "new", its own), checked: ours
        (the id's form), a real directory (no symlink) in the staging directory, and `name`
        free in it (nothing of that name, no file where one of its folders would go)."""
        if batch == "new":
            return None
        if not BATCH_ID.fullmatch(batch):
            raise RequestError("batch must be new or an upload's batch id", LocalCode.BAD_REQUEST)
        here = self.staging / batch
        parts = name.split("/")
        for depth in range(len(parts)):
            try:
                st = os.lstat(here.joinpath(*parts[:depth]))
            except FileNotFoundError:
                if depth == 0:
                    raise NotFound(f"no upload batch {batch}", LocalCode.NOT_FOUND) from None
                return batch
            if not stat.S_ISDIR(st.st_mode):
                raise RequestError(
                    f"{name!r} clashes with a file already in this send", LocalCode.BAD_REQUEST
                )
        if os.path.lexists(here.joinpath(*parts)):
            raise RequestError(f"{name!r} is already in this send", LocalCode.BAD_REQUEST)
        return batch

    def busy_dirs(self) -> set[str]:
        """Upload directories in use: being written, or read by a live transfer."""
        return {u.dir.name for u in self.open.values()} | self._in_use()

    def dir_of(self, path: str) -> str | None:
        """The upload directory id of a staged path (None: not staged)."""
        if not self.owns(path):
            return None
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(self.staging))
        uid = rel.split(os.sep, 1)[0]
        return None if uid in ("", ".", "..") else uid

    def ended(self, upload: Upload) -> None:
        self.open.pop(upload.id, None)

    def staged_bytes(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.staging):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, f)).st_size
        return total

    def owns(self, path: str) -> bool:
        """`path` is a staged upload's file."""
        real = os.path.realpath(path)
        base = os.path.realpath(self.staging) + os.sep
        return real.startswith(base)

    def release(self, path: str) -> None:
        """The push of a staged file (or batch) is over: its upload directory goes, unless an
        upload still writes to it or a live transfer reads it."""
        uid = self.dir_of(path)
        if uid is None or uid in self.busy_dirs():
            return
        _rmtree(self.staging / uid)

    def prune(self, max_age: float = MAX_AGE) -> int:
        """Remove upload directories older than `max_age` that no upload writes now."""
        try:
            entries = list(os.scandir(self.staging))
        except FileNotFoundError:
            return 0
        removed = 0
        now = self._clock()
        busy = self.busy_dirs()
        for entry in entries:
            if entry.name in busy:
                continue
            try:
                old = now - entry.stat(follow_symlinks=False).st_mtime > max_age
            except OSError:
                continue
            if old:
                if entry.is_dir(follow_symlinks=False):
                    _rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
        return removed


__all__ = ["MAX_AGE", "STAGING", "NoRoom", "Upload", "Uploads"]
