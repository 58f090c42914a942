"""The inbox's receiving side: part files, who holds them, and the space they claim.

Safety: every received byte goes to a path reached from the inbox directory through a dirs.py
`Dir` handle: `dir_fd`-relative calls and `O_NOFOLLOW` (dirfd.py) where the platform has them,
else checked paths (pathdir.py), so a symlink planted in the inbox (or an inbox replaced by a
symlink) makes the transfer fail instead of writing outside it, even under a race (pathdir.py
documents the window it leaves). Partial data lives in inbox/.mole/parts (parts.py). A name
deeper than `max_depth` components is refused (bad_name) before anything is created. Space:
space.py's ledger.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from node import plat
from node.errors import BadName, StoreError
from node.names import MAX_DEPTH, MOLE_DIR, check_depth, check_name
from node.store.dirs import Dir, backend, check_target, open_root, os_error
from node.store.hashcache import HashCache
from node.store.incoming import Incoming
from node.store.meta import FileMeta, is_sha256
from node.store.parts import (
    PART_SUFFIX,
    PARTS,
    PartInfo,
    held,
    list_parts,
    part_key,
    read_record,
    remove_part,
    same_source,
    scan_parts,
    write_record,
)
from node.store.space import DIR_COST, SpaceLedger

__all__ = ["Inbox", "Reservation"]


@dataclass
class Reservation:
    """A part file claimed for a receive that has not started yet (a pull before its `file`).

    `held` is what the part already holds, for the resume offer: (bytes, sha256) or None.
    A concurrent receive of the same (peer, name) meanwhile gets a part of its own."""

    key: str
    peer: str
    name: str
    owner: str | None
    primary: bool
    held: tuple[int, str] | None
    released: bool = False


class Inbox:
    """Receives into `real` (the resolved inbox directory): parts, reservations, space."""

    def __init__(
        self,
        real: str,
        cache: HashCache,
        *,
        room: Callable[[], int],
        fsync: bool = False,
        quota: int | None = None,
        max_depth: int = MAX_DEPTH,
        dirs: str | None = None,
    ) -> None:
        """`room`: bytes a new receive may claim (Store.free_space, looked up at each call).
        `dirs`: "dirfd" or "path" (dirs.py; None: what this Python can do)."""
        self.real = real
        self.dirs = dirs or backend()
        self.cache = cache
        self.fsync = fsync
        self.max_depth = max_depth
        self.ledger = SpaceLedger(quota)
        self._room = room
        # Part keys in use: a receive under way, or reserved for one about to start.
        self._active: dict[str, Incoming | Reservation] = {}
        with self._parts() as parts:
            for key, (nbytes, _) in scan_parts(parts).items():
                self.ledger.keep(key, nbytes)  # left by an earlier run: still held

    # -- directories -------------------------------------------------------------------------
    @contextlib.contextmanager
    def open(self) -> Iterator[Dir]:
        d = open_root(self.real, "inbox", self.dirs)
        try:
            yield d
        finally:
            d.close()

    def parts_dir(self, inbox: Dir) -> Dir:
        try:
            mole = inbox.sub(MOLE_DIR, create=True)
            try:
                return mole.sub(PARTS, create=True)
            finally:
                mole.close()
        except OSError as exc:
            raise os_error(exc, f"cannot open {self.real}/{MOLE_DIR}/{PARTS}") from exc

    @contextlib.contextmanager
    def _parts(self) -> Iterator[Dir]:
        with self.open() as inbox:
            parts = self.parts_dir(inbox)
        try:
            yield parts
        finally:
            parts.close()

    # -- space -------------------------------------------------------------------------------
    def fs_free(self) -> int:
        """Bytes available to us in the inbox's file system (0 if it cannot be determined)."""
        try:
            return plat.disk_free(self.real)
        except OSError:
            return 0

    def _check_room(self, need: int, name: str) -> None:
        """Refuse (no_space) a receive that needs more than the room left for one."""
        if need <= self._room():
            return
        quota_room = self.ledger.quota_room()
        if quota_room is not None and need > quota_room:
            raise StoreError(
                "no_space",
                f"{need} bytes for {name!r} exceed the inbox quota "
                f"({self.ledger.used()} of {self.ledger.quota} bytes in use)",
            )
        raise StoreError("no_space", f"{need} bytes do not fit in the inbox")

    # -- parts -------------------------------------------------------------------------------
    def partial_for(self, peer: str, name: str) -> tuple[int, str] | None:
        """(bytes held, sha256) of a resumable partial file from peer for name, if any."""
        try:
            name = check_name(name)
            with self._parts() as parts:
                return held(parts, part_key(peer, name), peer, name)
        except StoreError:
            return None

    def partials(self) -> list[PartInfo]:
        """Every part in the inbox (under way or kept), for the API."""
        active = {k: v.position for k, v in self._active.items() if isinstance(v, Incoming)}
        try:
            with self._parts() as parts:
                return list_parts(parts, active)
        except (StoreError, OSError):
            return []

    def remove_part(self, parts: Dir, key: str) -> None:
        remove_part(parts, key)
        self.ledger.forget(key)

    def discard_key(self, key: str) -> None:
        with contextlib.suppress(StoreError, OSError), self._parts() as parts:
            self.remove_part(parts, key)

    def discard_partial(self, peer: str, name: str) -> None:
        """Forget any partial file from peer for name (cancel). Missing is fine."""
        try:
            name = check_name(name)
        except BadName:
            return
        key = part_key(peer, name)
        active = self._active.get(key)
        if isinstance(active, Incoming):
            active.abort(keep=False)
        elif active is not None:
            self.release(active)
        self.discard_key(key)

    def prune_partials(self, max_age: float) -> int:
        """Delete partial files untouched for max_age seconds (peers that never came back).

        Transfers in progress are never touched. Returns how many partials were removed."""
        cutoff = time.time() - max_age
        try:
            with self._parts() as parts:
                found = scan_parts(parts)
                # A part of a concurrent receive ("<key>-<random>") or of a local copy never
                # resumes: one left by a crash goes at once.
                stale = [
                    k
                    for k, (_, t) in found.items()
                    if (t < cutoff or "-" in k) and k not in self._active
                ]
                for key in stale:
                    self.remove_part(parts, key)
                return len(stale)
        except StoreError:
            return 0

    # -- who writes which part ---------------------------------------------------------------
    def reserve(self, peer: str, name: str, owner: str | None) -> Reservation:
        """Claim the part a receive of `name` from `peer` will write, before it starts.

        A pull asks for its resume offset in `get` and opens the part only when the `file`
        answer arrives; a push received meanwhile must not write the part that offset was read
        from. The first claim gets the (peer, name) part, a concurrent one a part of its own
        (not resumable); `owner` (the transfer id on the wire) retrying takes its part back.
        """
        name = check_depth(check_name(name), self.max_depth)
        key, primary = self.claim_key(peer, name, owner)
        res = Reservation(key, peer, name, owner, primary, None)
        res.held = self.partial_for(peer, name) if primary else None
        self._active[key] = res
        return res

    def release(self, res: Reservation) -> None:
        """Give a reservation back (the receive never started)."""
        res.released = True
        if self._active.get(res.key) is res:
            del self._active[res.key]

    def claim_key(self, peer: str, name: str, owner: str | None) -> tuple[str, bool]:
        """The part key for a new receive: (key, primary).

        Two receives of the same (peer, name) at once (a push crossing a pull of the same file,
        a double click) each stream into a part of their own and both end verified: the second
        to finish finds the same content under the name and keeps it. Only the same transfer
        coming back (its id, `owner`, e.g. a sender that restarted while its old connection is
        half-open) takes the part over, so it resumes.
        """
        key = part_key(peer, name)
        cur = self._active.get(key)
        if cur is None:
            return key, True
        if owner is not None and cur.owner == owner:
            if isinstance(cur, Incoming):
                cur.supersede()
            else:
                self.release(cur)
            self._active.pop(key, None)
            return key, True
        return f"{key}-{os.urandom(6).hex()}", False

    def is_owner(self, incoming: Incoming) -> bool:
        other = self._active.get(incoming.key)
        return other is None or other is incoming

    def closed(self, incoming: Incoming, *, kept: int | None) -> None:
        """An Incoming ended; `kept`: bytes its part keeps on disk (None: no part left)."""
        if self._active.get(incoming.key) is incoming:
            del self._active[incoming.key]
        if incoming.claim is not None:
            self.ledger.end(incoming.claim, kept)

    # -- receiving ---------------------------------------------------------------------------
    def open_incoming(
        self,
        peer: str,
        meta: FileMeta,
        *,
        resume: bool = True,
        unhashed: bool = False,
        owner: str | None = None,
        reservation: Reservation | None = None,
        offset: int | None = None,
    ) -> Incoming:
        """Store.open_incoming (see there)."""
        name = check_depth(check_name(meta.name), self.max_depth)
        if not isinstance(meta.size, int) or meta.size < 0:
            raise StoreError("bad_message", f"bad size {meta.size!r}")
        if unhashed:
            if meta.sha256 != "":
                raise StoreError("internal", "an unhashed incoming file takes no sha256")
        elif not is_sha256(meta.sha256):
            raise StoreError("bad_message", f"bad sha256 {meta.sha256!r}")
        meta = FileMeta(name, meta.size, meta.sha256, meta.mtime, meta.mime)
        if reservation is not None and not reservation.released:
            key, primary = reservation.key, reservation.primary
            self.release(reservation)
            if key in self._active:  # cannot happen while the reservation held it; be safe
                key, primary = self.claim_key(peer, name, owner)
        else:
            key, primary = self.claim_key(peer, name, owner)
        if offset == 0 or not primary:
            resume = False
        inbox = open_root(self.real, "inbox", self.dirs)
        parts: Dir | None = None
        try:
            dirs = check_target(inbox, name)
            parts = self.parts_dir(inbox)
            fd, have, reset = self._open_part(parts, key, peer, meta, resume, dirs)
            if offset is not None and have != offset:
                os.close(fd)
                if have < offset:
                    raise StoreError(
                        "bad_message", f"the sender starts at {offset}, this part holds {have}"
                    )
                fd, have, reset = self._open_part(parts, key, peer, meta, False, dirs)
        except BaseException as exc:
            inbox.close()
            if parts is not None:
                parts.close()
            if isinstance(exc, OSError):
                raise os_error(exc, f"cannot start receiving {name!r}") from exc
            raise
        incoming = Incoming(self, key, peer, meta, inbox, parts, fd, have, reset)
        incoming.unhashed = unhashed
        incoming.owner = owner
        incoming.primary = primary
        incoming.claim = self.ledger.claim(key, meta.size, dirs, incoming)
        self._active[key] = incoming
        return incoming

    def _open_part(
        self, parts: Dir, key: str, peer: str, meta: FileMeta, resume: bool, dirs: int
    ) -> tuple[int, int, str | None]:
        """(fd, bytes held, reset reason) of the part to receive into, after the space check."""
        part = key + PART_SUFFIX
        rec = read_record(parts, key)
        same = same_source(rec, peer, meta)
        reset = "source_changed" if rec is not None and not same else None
        if resume and same:
            try:
                fd = parts.open(part, os.O_RDWR)
            except FileNotFoundError:
                fd = -1
            except OSError as exc:
                raise os_error(exc, "cannot open the partial file") from exc
            if fd >= 0:
                try:
                    have = _resume_at(fd, meta)
                    self._check_room(meta.size - have + dirs * DIR_COST, meta.name)
                    if rec is not None and meta.sha256 != rec["sha256"] and meta.sha256:
                        write_record(parts, key, peer, meta)  # now we know the hash
                    return fd, have, None
                except BaseException:
                    os.close(fd)
                    raise
        self.remove_part(parts, key)
        self._check_room(meta.size + dirs * DIR_COST, meta.name)
        try:
            fd = parts.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            write_record(parts, key, peer, meta)
        except OSError as exc:
            raise os_error(exc, "cannot create the partial file") from exc
        return fd, 0, reset

    def open_local(self, meta: FileMeta) -> Incoming:
        """An Incoming for a copy made here (received.py copy_in): a part of its own, never
        resumed, from no peer."""
        key = f"copy-{os.urandom(8).hex()}"
        res = Reservation(key, "", meta.name, None, False, None)
        self._active[key] = res
        return self.open_incoming("", meta, reservation=res, offset=0)


def _resume_at(fd: int, meta: FileMeta) -> int:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise StoreError("io_error", "partial file is not a regular file")
    have = st.st_size
    if have > meta.size:
        os.ftruncate(fd, meta.size)
        have = meta.size
    os.lseek(fd, have, os.SEEK_SET)
    return have
