"""What a user may ask of the node (the API's operations), with no HTTP in it.

Methods return plain JSON-able values and raise `RequestError`s (node/errors.py) for refusals;
node/api.py routes HTTP requests here and maps errors to statuses. One method answers later:
`peer_files` has to ask the peer over TCP and calls `reply(status, body)` when it knows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import __version__
from node.errors import LocalCode, NotFound, RequestError
from node.events import Record
from node.identity import format_id
from node.transfer import TState
from node.trustapi import TrustService
from node.upload import Upload, Uploads

if TYPE_CHECKING:
    from node.node import Node
    from node.query import Reply


def meta_json(name: str, size: int, sha256: str, mtime: float, mime: str) -> dict[str, Any]:
    return {"name": name, "size": size, "sha256": sha256, "mtime": mtime, "mime": mime}


class Service:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.trust = TrustService(node)  # trust store, pending offers (node/trustapi.py)
        # Files the dashboard uploads, staged in the share to be pushed (node/upload.py).
        self.uploads = Uploads(
            node.config.share, quota=node.config.upload_quota, in_use=self._staged_in_use
        )
        node.bus.subscribe(self._on_event)

    def info(self) -> dict[str, Any]:
        n = self.node
        return {
            "node": n.node_id,
            "node_human": format_id(n.node_id),
            "name": n.config.name,
            "version": __version__,
            "tcp_port": n.tcp_port,
            "discovery_port": n.config.discovery_port,
            "groups": list(n.groups.names),
            "group_tags": n.groups.public_json(),
            "accept": n.config.accept,
            "share_to": n.config.share_to,
            "group_only": n.config.group_only,
            "trusted": len(n.trust),
            "share": str(n.config.share),
            "inbox": str(n.config.inbox),
            "stats": {
                "discovery": dict(n.peers.table.counters),
                "connections": len(n.conns),
                "dropped": dict(n.drop_counts),
                "uptime": round(n.loop.time() - n.started, 3),
                # Passes over the share started (a `get` of an unknown name asks for one, at
                # most one per RESCAN_MIN_GAP s): shows a peer cannot make it rescan at will.
                "share_passes": n.shared.passes_started,
            },
            "wan": n.wan_info(),
        }

    def peers(self) -> list[dict[str, Any]]:
        return self.node.peers.list_json()

    def static_peers(self) -> list[dict[str, Any]]:
        wan = self.node.built("wan")
        return [] if wan is None else wan.static_json()  # none added: no WAN part built

    def add_static_peer(self, text: str) -> dict[str, Any]:
        return self.node.wan.add_static(text)

    def remove_static_peer(self, text: str) -> None:
        self.node.wan.remove_static(text)

    def files(self) -> list[dict[str, Any]]:
        metas = self.node.shared.files()
        return [meta_json(m.name, m.size, m.sha256, m.mtime, m.mime) for m in metas]

    def skipped(self) -> dict[str, Any]:
        """Files in the share that are not shared, and why (names no node may store, links out
        of the share, unreadable files)."""
        index = self.node.shared
        return {
            "total": index.skipped_total,
            "files": [
                {"name": s.name, "reason": s.reason, "detail": s.detail} for s in index.skipped()
            ],
        }

    def partials(self) -> dict[str, Any]:
        """Partial data in the inbox (hidden .part files): resumable receives, and the quota."""
        store = self.node.store
        return {
            "usage": asdict(store.inbox_usage()),
            "partials": [asdict(p) for p in store.partials()],
        }

    def inbox(self) -> list[dict[str, Any]]:
        return [
            meta_json(m.name, m.size, m.sha256, m.mtime, m.mime)
            for m in self.node.store.inbox_files()
        ]

    def transfers(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in self.node.manager.transfers.values()]

    def transfer(self, tid: str) -> dict[str, Any] | None:
        t = self.node.manager.transfers.get(tid)
        return t.to_json() if t else None

    def push(self, peer: str, path: str, name: str | None = None) -> dict[str, Any]:
        full = Path(path) if Path(path).is_absolute() else self.node.config.share / path
        if name is None and full.is_dir():
            return self.push_batch(peer, [path], "refuse")  # a directory is a batch
        return self.node.pushes.create(peer, path, name).to_json()

    def push_batch(
        self, peer: str, paths: list[str], links: str, include_late: bool = False
    ) -> dict[str, Any]:
        if peer.startswith("@"):  # a group: one batch per member (docs/api.md)
            send = self.node.batches.create_group_push(
                peer[1:], paths, links, include_late=include_late
            )
            return send.to_json()
        return self.node.batches.create_push(peer, paths, links).to_json()

    def pull_batch(
        self, peer: str, prefix: str | None, glob: str | None, names: list[str] | None = None
    ) -> dict[str, Any]:
        return self.node.batches.create_pull(peer, prefix, glob, names).to_json()

    def pull(self, peer: str, name: str | None, sha256: str | None) -> dict[str, Any]:
        return self.node.pulls.create(peer, name, sha256).to_json()

    def cancel(self, tid: str) -> dict[str, Any]:
        manager = self.node.manager
        t = manager.transfers.get(tid)
        if t is None:
            raise NotFound(f"no transfer {tid}", LocalCode.NOT_FOUND)
        if t.state is TState.FAILED and t.role == "receive":
            # A broken receive keeps its partial data for the sender's retry; cancelling it
            # says no retry is wanted.
            self.node.cancel_failed_receive(t)
        return manager.cancel(tid).to_json()

    def retry(self, tid: str) -> dict[str, Any]:
        """A new transfer of the same file with the same peer, for one that failed or was
        cancelled (one this node started: the peer retries its own)."""
        t = self.node.manager.transfers.get(tid)
        if t is None:
            raise NotFound(f"no transfer {tid}", LocalCode.NOT_FOUND)
        if not t.initiator:
            raise RequestError(
                f"transfer {tid} was started by the peer: only it can send it again",
                LocalCode.NOT_RETRYABLE,
            )
        if t.state not in (TState.FAILED, TState.CANCELLED):
            raise RequestError(
                f"transfer {tid} is {t.state.value}: only a failed or cancelled transfer is "
                "retried",
                LocalCode.NOT_RETRYABLE,
            )
        if t.kind == "batch":
            if t.direction == "push":
                return self.push_batch(t.peer, list(t.sources), t.links)
            if t.names:
                return self.pull_batch(t.peer, None, None, list(t.names))
            q = t.query or {}
            return self.pull_batch(t.peer, q.get("prefix"), q.get("glob"))
        if t.direction == "push":
            if t.source is None:
                raise RequestError(f"transfer {tid} has no source file", LocalCode.NOT_RETRYABLE)
            return self.push(t.peer, t.source, t.name)
        name = t.name or None
        return self.pull(t.peer, name, None if name else t.sha256)

    def begin_upload(self, name: str, length: int, batch: str | None = None) -> Upload:
        """A file of `length` bytes the dashboard streams in, staged under the share; `batch`:
        one of several files of a send ("new", then the id the first answer gave)."""
        return self.uploads.begin(name, length, batch)

    def _staged_in_use(self) -> set[str]:
        """The upload directories that live pushes read (never released or pruned)."""
        used = set()
        for t in self.node.manager.transfers.values():
            if t.final or t.direction != "push":
                continue
            for path in (t.source, *t.sources):
                uid = self.uploads.dir_of(path) if path else None
                if uid is not None:
                    used.add(uid)
        return used

    def _on_event(self, record: Record) -> None:
        """A push of a staged upload is done, or a batch of staged uploads ended (done,
        failed or cancelled): the staged copies go, unless a live push still reads them."""
        if record.name not in ("transfer_done", "batch_done"):
            return
        t = self.node.manager.transfers.get(str(record.data.get("id")))
        if t is None or t.direction != "push" or not t.initiator:
            return
        if t.kind == "batch" and record.name == "batch_done":
            paths: tuple[str, ...] = t.sources
        elif t.kind != "batch" and t.source is not None:
            paths = (t.source,)
        else:
            return
        for path in paths:
            self.uploads.release(path)

    def peer_files(self, peer: str, reply: Reply) -> None:
        """Ask the peer for its file list; `reply(status, body)` exactly once, maybe later."""
        p = self.node.peers.resolve(peer)
        from node.query import ListClient  # the transfer machinery: at its first use

        self.node.dial(p, ListClient(reply, p.node))

    # -- the event stream --------------------------------------------------------------------
    def events_since(self, last_id: str | None) -> tuple[bool, list[Record]]:
        return self.node.bus.since(last_id)

    def subscribe(self, callback: Callable[[Record], None]) -> Callable[[], None]:
        return self.node.bus.subscribe(callback)
