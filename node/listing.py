"""What this node shares, as peers see it: the files by name, and the `files` frame built once.

A `list` request is answered with one shared, pre-encoded frame, rebuilt only after the share
changed: a flood of pipelined `list`s costs a write of the same bytes each (the transport
keeps references, not copies), not a fresh JSON encoding and a new buffer per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from node.messages import FileInfo, Files, encode_message
from node.store import FileMeta


class Listing:
    def __init__(self) -> None:
        self._files: dict[str, FileMeta] = {}
        self.generation = 0
        self._frame: bytes | None = None

    # -- the mapping the node reads --------------------------------------------------------------
    def __getitem__(self, name: str) -> FileMeta:
        return self._files[name]

    def __setitem__(self, name: str, meta: FileMeta) -> None:
        if self._files.get(name) != meta:
            self._files[name] = meta
            self._changed()

    def __contains__(self, name: object) -> bool:
        return name in self._files

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def get(self, name: str) -> FileMeta | None:
        return self._files.get(name)

    def values(self) -> Iterable[FileMeta]:
        return self._files.values()

    def replace(self, metas: Iterable[FileMeta]) -> None:
        """A rescan's result: the whole share."""
        new = {m.name: m for m in metas}
        if new != self._files:
            self._files = new
            self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self._frame = None

    # -- the frame ---------------------------------------------------------------------------------
    def frame(self) -> bytes:
        """The whole `files` frame (header and body) for the current share."""
        if self._frame is None:
            infos = tuple(
                FileInfo(m.name, m.size, m.sha256, m.mtime, m.mime)
                for m in sorted(self._files.values(), key=lambda m: m.name)
            )
            self._frame = encode_message(Files(infos))
        return self._frame
