"""The transfer matrix: one row per (source, destination, file), in the latest state either end
logged, with the lab's own hash verdict. Expectations add the rows of files expected and never
seen on the way (lab.expectations); lab.results renders them."""

from __future__ import annotations

from lab.results import TransferRow
from lab.scenario import FileDecl
from lab.state import RunState, latest_account
from lab.tail import Event

ENDS = ("transfer_started", "transfer_done", "transfer_failed")


def decl_for(state: RunState, source: str, name: str) -> FileDecl | None:
    """The declared file a transfer of `name` from `source` carries: the only one of that
    name, else the one `source` shares."""
    named = state.sc.files_named(name)
    if len(named) == 1:
        return named[0]
    return next((f for f in named if source in f.on), None)


def transfer_rows(state: RunState) -> list[TransferRow]:
    """Every transfer either end logged, as a row in its latest state."""
    by_key: dict[tuple[str, str, str], dict[bool, list[Event]]] = {}
    progress: dict[tuple[str, str], int] = {}  # (node, transfer id) -> bytes
    for n in state.sc.mole_nodes:
        for ev in state.events(n.name):
            kind = ev.get("event")
            if kind == "transfer_progress":
                progress[(n.name, str(ev.get("id")))] = int(ev.get("bytes") or 0)
            if kind not in ENDS:
                continue
            receiving = ev.get("role") == "receive"
            peer = state.peer_name(ev)
            src, dst = (peer, n.name) if receiving else (n.name, peer)
            key = (src, dst, str(ev.get("name")))
            by_key.setdefault(key, {True: [], False: []})[receiving].append({**ev, "_node": n.name})
    rows: list[TransferRow] = []
    for (src, dst, name), sides in by_key.items():
        ev = latest_account(sides[True], sides[False])
        decl = decl_for(state, src, name)
        size = decl.size if decl is not None else ev.get("size")
        row = TransferRow(source=src, dest=dst, file=name, size=size)
        row.bytes = int(ev.get("bytes") or 0)
        row.attempts = max(
            (int(e.get("attempts") or 0) for e in sides[True] + sides[False]), default=0
        )
        if ev["event"] == "transfer_done":
            row.state = "done"
            row.seconds = ev.get("seconds")
            row.resumed_from = int(ev.get("offset") or 0)
        elif ev["event"] == "transfer_failed":
            row.state = "failed"
            err = ev.get("error") or {}
            if isinstance(err, dict):
                row.error = f"{err.get('code')}: {err.get('reason')}"
            if ev.get("finished") and ev.get("started"):
                row.seconds = round(float(ev["finished"]) - float(ev["started"]), 6)
        else:
            row.state = "active"
            row.bytes = progress.get((ev["_node"], str(ev.get("id"))), row.bytes)
        if decl is not None and dst in state.nodes.handles:
            row.hash_ok = state.inboxes.verdict(dst, decl)
        rows.append(row)
    return rows
