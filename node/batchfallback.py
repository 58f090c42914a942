"""A batch push to a peer that does not speak batches: one plain push per file.

An older node, or a minimal implementation of docs/protocol.md, says `hello` without the
"batch" feature. A batch of plain top-level files (`mole send PEER a b c`, several files from
the dashboard) still reaches it: each file goes as a plain push of its own (named as its
manifest entry), retried and resumed on its own as any single push is. The batch's record stays
as their parent: `fallback` lists their ids, its bytes and files are theirs, and it ends when
they all have (done when every one is; failed, naming the first failure, otherwise; cancelling
it cancels them). A batch with a tree (directories, files below the top, links) cannot be sent
this way (a plain push has no directories) and still fails with the clear reason.

At most `WINDOW` of a batch's plain pushes are under way at once (each is a connection of its
own; a batch of thousands must not dial thousands): the next starts as one ends. What the ended
ones did is kept here, so the batch's totals do not depend on the manager's history.

After a restart the batch (its journal row stays until it ends) falls back again and takes up
its plain pushes the journal restored (their rows carry the batch's id as `job`) instead of
starting them twice; the files that had arrived are offered again and answered as held.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from node.batchmsg import Batch
from node.errors import RequestError
from node.events import BatchFallback, Record
from node.transfer import TEvent, Transfer, TState

if TYPE_CHECKING:
    from node.node import Node

NO_BATCHES = "the peer does not speak batches"
WINDOW = 4  # plain pushes of one batch under way at once


def plain_files(batch: Batch) -> bool:
    """Every entry is a file at the top of the batch (no directory, no link, no tree)."""
    return all(e.kind == "file" and "/" not in e.path for e in batch.entries)


@dataclass
class OneByOne:
    """One batch sent as plain pushes: those still to start, those under way, the ended."""

    todo: deque[tuple[str, str]]  # (name, source path)
    live: set[str] = field(default_factory=set)
    bytes: int = 0  # of the ended ones
    sent: int = 0
    done: int = 0
    lost: list[dict[str, str]] = field(default_factory=list)


class Fallbacks:
    """The batches sent as plain pushes (`node.fallbacks`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.batches: dict[str, OneByOne] = {}  # the batch's id -> how it goes
        self.parent_of: dict[str, str] = {}  # a live plain push's id -> its batch's id
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
        node.manager.move(t, TEvent.STREAM)
        # Its plain pushes of before a restart (the journal's), still to finish: taken up.
        ours = {
            k.name: k
            for k in node.manager.transfers.values()
            if k.job == t.id and k.kind == "file" and k.initiator and not k.final
        }
        state = OneByOne(
            deque((e.path, sources[e.path]) for e in batch.entries if e.path not in ours)
        )
        for kid in ours.values():
            t.fallback = (*t.fallback, kid.id)
            state.live.add(kid.id)
            self.parent_of[kid.id] = t.id
        self.batches[t.id] = state
        node.manager.watch(t, lambda: self._sum(t, state))
        self._fill(t, state)
        files = len(batch.entries)
        node.bus.publish(BatchFallback(t.id, t.peer, t.name, files, list(t.fallback)))
        self._check(t, state)

    def cancel(self, t: Transfer) -> None:
        """The batch was cancelled: so are its plain pushes (none starts any more)."""
        state = self.batches.pop(t.id, None)
        if state is None:
            return
        state.todo.clear()
        for kid in list(state.live):
            self.parent_of.pop(kid, None)
            other = self.node.manager.transfers.get(kid)
            if other is not None and not other.final:
                self.node.manager.cancel(kid)

    def _fill(self, t: Transfer, state: OneByOne) -> None:
        while state.todo and len(state.live) < WINDOW:
            name, source = state.todo.popleft()
            try:
                kid = self.node.pushes.create(t.peer, source, name)
            except RequestError as exc:  # gone since it was walked: the others still go
                state.lost.append({"path": name, "code": str(exc.code), "reason": str(exc)})
                continue
            kid.job = t.id
            t.fallback = (*t.fallback, kid.id)
            if not kid.final:  # (a push that failed at once is counted below)
                state.live.add(kid.id)
                self.parent_of[kid.id] = t.id
                self.node.manager.save(kid)  # its journal row names the batch (a restart)
            else:
                self._ended(state, kid)

    def _ended(self, state: OneByOne, kid: Transfer) -> None:
        state.live.discard(kid.id)
        self.parent_of.pop(kid.id, None)
        state.bytes += kid.bytes
        state.sent += kid.sent
        if kid.state is TState.DONE:
            state.done += 1
            return
        err = kid.error or {}
        state.lost.append({"path": kid.name, "code": err.get("code", kid.state.value),
                           "reason": err.get("reason", kid.state.value)})  # fmt: skip

    def _sum(self, t: Transfer, state: OneByOne) -> None:
        transfers = self.node.manager.transfers
        live = [transfers[k] for k in state.live if k in transfers]
        t.bytes = state.bytes + sum(k.bytes for k in live)
        t.sent = state.sent + sum(k.sent for k in live)
        t.files_done = state.done

    def _on_event(self, record: Record) -> None:
        if record.name not in ("transfer_done", "transfer_failed"):
            return
        kid_id = str(record.data.get("id"))
        parent = self.parent_of.get(kid_id)
        state = self.batches.get(parent) if parent is not None else None
        t = self.node.manager.transfers.get(parent) if parent is not None else None
        kid = self.node.manager.transfers.get(kid_id)
        if state is None or t is None or kid is None:
            return
        self._ended(state, kid)
        self._fill(t, state)
        self._check(t, state)

    def _check(self, t: Transfer, state: OneByOne) -> None:
        """The batch ends when every plain push has."""
        if t.final or state.todo or state.live:
            return
        del self.batches[t.id]
        self._sum(t, state)
        if not state.lost:
            self.node.manager.finish(t)
            return
        t.missing = (t.missing or []) + state.lost
        first = state.lost[0]
        reason = (
            f"{len(state.lost)} of {t.files} files not sent: {first['path']}: {first['reason']}"
        )
        self.node.manager.fail(t, first["code"], reason, retry=False)
