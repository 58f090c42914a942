"""The share as peers see it, kept current: incremental passes over the share directory, the
publishing of files just hashed, and the encoded `files` listing (node/store/ indexes the disk;
this decides when, from the loop's timers).

Split from node/node.py (issue 9): Node wires the parts; this is one of them, a Timed of its
own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from node.errors import LocalCode, RequestError
from node.framing import encode_header
from node.store import FileMeta

if TYPE_CHECKING:
    from node.node import Node

SCAN_BUDGET = 256  # directory entries of the share looked at per slice (a few ms)
SCAN_IDLE = 0.5  # s between looks at whether a pass is due


class ShareKeeper:
    """Walks the share a slice at a time, publishes hashes in batches, encodes the listing."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.shared = node.store.index  # what peers see: incremental, cached listing
        self._listing: tuple[int, bytes] | None = None
        self._scan_at = 0.0

    def source(self, text: str) -> Path:
        """The file (or directory) a user asks to send: `text` relative to the share, or an
        absolute path. One outside the share is refused unless the node allows it: the API
        must never read an arbitrary file for whoever reaches it (a web page, another user),
        only what the user chose to share."""
        config = self.node.config
        path = Path(text)
        if not path.is_absolute():
            path = config.share / text
        if not config.allow_outside_share and not self.node.store.in_share(path):
            raise RequestError(
                f"{text} is not in the share ({config.share}); start the node with "
                "--allow-outside-share to push other files",
                LocalCode.OUTSIDE_SHARE,
            )
        return path

    # -- Timed -----------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        if self.node.stopping:
            return None
        now = self.node.loop.time()
        # While a pass over the share is under way, a slice every loop turn (the Timers fire
        # after I/O); else a look every SCAN_IDLE s, which starts the periodic passes.
        when = now if self.shared.scanning else self._scan_at
        if self.shared.unpublished:  # finished hashes wait to be published: look again soon
            when = min(when, now + self.shared.publish_interval)
        return when

    def handle_timer(self, now: float) -> None:
        if self.node.stopping:
            return
        if now >= self._scan_at or self.shared.scanning:
            self._scan_step(now)
        elif self.shared.publish_due(now):
            self.shared.step(0, now)  # list what was hashed meanwhile, no walking

    def hashed(self, name: str, meta: FileMeta) -> None:
        """A file of the share was hashed: list it soon (the index batches publications)."""
        if self.shared.publish_due(self.node.loop.time()):
            self.shared.step(0, self.node.loop.time())
        else:
            self.node.timers.update(self)

    def _scan_step(self, now: float) -> None:
        node = self.node
        passes = self.shared.passes
        self.shared.step(SCAN_BUDGET, now)
        node.hashq.add_scan_jobs(self.shared.take_jobs())
        self._scan_at = now + SCAN_IDLE
        if self.shared.passes != passes and node.config.auto_fetch:
            for p in node.peers.all():  # a pass finished: also look at what peers share
                node.autofetch.peer_seen(p.node)

    # -- what peers ask of the share -------------------------------------------------------------
    def rescan(self) -> None:
        """A whole pass over the share now (at start; tests). The loop's passes are
        incremental (_scan_step)."""
        _, jobs = self.node.store.scan_share()
        self.node.hashq.add_scan_jobs(jobs)
        self._scan_at = self.node.loop.time() + SCAN_IDLE

    def listing_frame(self) -> bytes:
        """The `files` frame, encoded once per change of the index (not once per `list`)."""
        generation = self.shared.generation
        if self._listing is None or self._listing[0] != generation:
            body = self.shared.listing_body()
            self._listing = (generation, encode_header({"type": "files", "body": len(body)}) + body)
        return self._listing[1]

    def find_shared(self, name: str | None, sha256: str | None) -> FileMeta | None:
        if name is not None:
            meta = self.shared.lookup(name)
            if meta is not None and (sha256 is None or meta.sha256 == sha256):
                return meta
            return None
        return self.shared.by_sha(sha256) if sha256 is not None else None

    def rescan_for(self, name: str | None) -> bool:
        """A peer asked for a name we do not list: ask the index for a pass (it starts at
        most one per few seconds, whoever asks). True while a pass that may find it runs."""
        self.shared.request_rescan(self.node.loop.time())
        self.node.timers.update(self)
        return self.shared.scanning
