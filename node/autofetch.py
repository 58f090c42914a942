"""--auto-fetch: pull every file a group peer shares that this node does not hold.

A peer's listing can be hostile (5,000 names): pulls are queued and at most `MAX_RUNNING` run
at once, each name once per (peer, content). Listings are asked when a peer appears and at
each rescan.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from node.events import Record
from node.query import ListClient
from node.transfer import Transfer

if TYPE_CHECKING:
    from node.node import Node

MAX_RUNNING = 4
MAX_QUEUED = 10_000  # names waiting; beyond that a listing's rest waits for the next rescan


class AutoFetch:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._fetched: set[tuple[str, str]] = set()  # (peer, sha256) asked for once
        self._queue: deque[tuple[str, str]] = deque()  # (peer, name)
        self._running: set[Transfer] = set()
        if node.config.auto_fetch:
            node.bus.subscribe(self._on_record)

    def peer_seen(self, peer_id: str) -> None:
        node = self.node
        peer = node.peers.get(peer_id)
        if peer is None:
            return
        mine = set(node.groups.names)
        if mine and not mine & set(peer.groups):
            return

        def got(status: int, body: object) -> None:
            if status != 200 or not isinstance(body, list):
                return
            for f in body:
                key = (peer_id, str(f["sha256"]))
                if key in self._fetched or node.store.find_existing(f["sha256"], f["size"]):
                    continue
                if len(self._queue) >= MAX_QUEUED:
                    break
                self._fetched.add(key)
                self._queue.append((peer_id, str(f["name"])))
            self.pump()

        node.dial(peer, ListClient(got, peer_id))

    def pump(self) -> None:
        """Start queued pulls while fewer than MAX_RUNNING of ours are live."""
        self._running = {t for t in self._running if not t.final}
        while self._queue and len(self._running) < MAX_RUNNING:
            peer_id, name = self._queue.popleft()
            if self.node.peers.get(peer_id) is None:
                continue
            self._running.add(self.node.pulls.create(peer_id, name, None))

    def _on_record(self, record: Record) -> None:
        if record.name in ("transfer_done", "transfer_failed") and self._queue:
            self.pump()
