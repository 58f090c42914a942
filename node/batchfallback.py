"""A batch push to a peer that does not speak batches: one plain push per file.

An older node, or a minimal implementation of docs/protocol.md, says `hello` without the
"batch" feature. A batch of plain top-level files (`mole send PEER a b c`, several files from
the dashboard) still reaches it: each file goes as a plain push of its own (named as its
manifest entry), retried and resumed on its own as any single push is. The batch's record stays
as their parent: `fallback` lists their ids, its bytes and files are theirs, and it ends when
they all have (done when every one is; failed, naming the first failure, otherwise; cancelling
it cancels them). A batch with a tree (directories, files below the top, links) cannot be sent
this way (a plain push has no directories) and still fails with the clear reason.

The batch's journal row goes when it falls back: the plain pushes are journaled themselves, and
a restart resumes them alone (the batch's record is then gone, its files are not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.batchmsg import Batch
from node.errors import ErrorCode, RequestError
from node.events import BatchFallback, Record
from node.transfer import TEvent, Transfer, TState

if TYPE_CHECKING:
    from node.node import Node

NO_BATCHES = "the peer does not speak batches"


def plain_files(batch: Batch) -> bool:
    """Every entry is a file at the top of the batch (no directory, no link, no tree)."""
    return all(e.kind == "file" and "/" not in e.path for e in batch.entries)


class Fallbacks:
    """The batches sent as plain pushes: parent id -> its children's ids (`node.fallbacks`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.parents: dict[str, tuple[str, ...]] = {}
        self.parent_of: dict[str, str] = {}
        node.bus.subscribe(self._on_event)

    def refusal(self, batch: Batch) -> str | None:
        """Why this batch cannot fall back to plain pushes (None: it can)."""
        if plain_files(batch):
            return None
        return (
            f"{NO_BATCHES}: a directory or a tree cannot be sent to it (an older node); "
            "send its files one by one"
        )

    def start(self, t: Transfer, batch: Batch, sources: dict[str, str]) -> None:
        """Send each entry of `batch` (plain top-level files) as a plain push of its own."""
        node = self.node
        node.manager.journal.delete(t.id)  # the plain pushes are journaled: they resume alone
        node.manager.move(t, TEvent.STREAM)
        kids: list[Transfer] = []
        for entry in batch.entries:
            try:
                kid = node.pushes.create(t.peer, sources[entry.path], entry.path)
            except RequestError as exc:  # gone since it was walked: the others still go
                t.missing = [*(t.missing or []), {"path": entry.path, "code": str(exc.code),
                                                  "reason": str(exc)}]  # fmt: skip
                continue
            kid.job = t.id
            kids.append(kid)
            self.parent_of[kid.id] = t.id
        t.fallback = tuple(k.id for k in kids)
        self.parents[t.id] = t.fallback
        node.manager.watch(t, lambda: self._sum(t))
        node.bus.publish(BatchFallback(t.id, t.peer, t.name, len(batch.entries), list(t.fallback)))
        self._check(t)

    def cancel(self, t: Transfer) -> None:
        """The batch was cancelled: so are its plain pushes."""
        for kid in self.parents.pop(t.id, ()):
            self.parent_of.pop(kid, None)
            other = self.node.manager.transfers.get(kid)
            if other is not None and not other.final:
                self.node.manager.cancel(kid)

    def _kids(self, t: Transfer) -> list[Transfer]:
        transfers = self.node.manager.transfers
        return [transfers[k] for k in self.parents.get(t.id, ()) if k in transfers]

    def _sum(self, t: Transfer) -> None:
        kids = self._kids(t)
        t.bytes = sum(k.bytes for k in kids)
        t.sent = sum(k.sent for k in kids)
        t.files_done = sum(1 for k in kids if k.state is TState.DONE)

    def _on_event(self, record: Record) -> None:
        if record.name not in ("transfer_done", "transfer_failed"):
            return
        parent = self.parent_of.get(str(record.data.get("id")))
        t = self.node.manager.transfers.get(parent) if parent is not None else None
        if t is not None:
            self._check(t)

    def _check(self, t: Transfer) -> None:
        """The batch ends when every plain push has."""
        if t.final:
            return
        kids = self._kids(t)
        self._sum(t)
        if any(not k.final for k in kids):
            return
        for kid in self.parents.pop(t.id, ()):
            self.parent_of.pop(kid, None)
        manager = self.node.manager
        failed = [k for k in kids if k.state is not TState.DONE]
        lost = list(t.missing or [])
        for k in failed:
            err = k.error or {}
            lost.append({"path": k.name, "code": err.get("code", "failed"),
                         "reason": err.get("reason", k.state.value)})  # fmt: skip
        if not lost and len(kids) == t.files:
            manager.finish(t)
            return
        t.missing = lost
        first = lost[0] if lost else {"path": t.name, "code": ErrorCode.IO_ERROR, "reason": "?"}
        reason = f"{len(lost)} of {t.files} files not sent: {first['path']}: {first['reason']}"
        manager.fail(t, first["code"], reason, retry=False)
