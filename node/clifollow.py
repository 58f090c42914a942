"""Following transfers that `mole send` / `mole get` started, to their ends: on the node's
event stream (GET /api/events), or by polling a node without one.

Split from node/cli.py (issue 9): this is the waiting, with its timeout and its recovery from
a lost stream; cli.py keeps the commands that start the transfers.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from node.cliview import (
    EXIT_FAILED,
    EXIT_OK,
    FINAL_STATES,
    CliError,
    ProgressBar,
    done_line,
    emit_json,
    print_block,
    print_error,
    print_line,
    transfer_error,
    transfers_table,
)
from node.termsafe import safe_text

if TYPE_CHECKING:
    from node.apiclient import ApiEvent, EventStream
    from node.cli import Client

POLL_INTERVAL = 0.2  # seconds between GET /api/transfers/{id}, for a node without /api/events

# The events send/get follow; each carries the transfer's `id`.
TRANSFER_EVENTS = (
    "transfer_started",
    "transfer_progress",
    "transfer_resumed",
    "transfer_reset",
    "transfer_retry",
    "transfer_done",
    "transfer_failed",
    "batch_fallback",
)
# Whole transfer objects (docs/api.md): they replace what we know of the transfer.
WHOLE_TRANSFER_EVENTS = frozenset({"transfer_started", "transfer_done", "transfer_failed"})


def tell_fallback(t: dict[str, Any], told: set[str]) -> None:
    """Say once that a batch goes as plain pushes (its peer does not speak batches)."""
    tid = str(t.get("id"))
    kids = t.get("fallback")
    if not kids or tid in told:
        return
    told.add(tid)
    who = t.get("peer_name") or str(t.get("peer", ""))[:8]
    print_line(
        sys.stderr,
        f"{who} does not speak batches (an older node): sending the "
        f"{t.get('files') or len(kids)} files one by one",
    )


def show_running(
    current: dict[str, dict[str, Any]], told: set[str], bar: ProgressBar | None
) -> list[str]:
    """Show where the transfers stand (a batch's fallback once, the bar); the ids not final.
    One step of both ways of following them: the event stream (`follow`) and the poll
    (`wait_for`)."""
    for t in current.values():
        tell_fallback(t, told)
    if bar is not None:
        bar.update(list(current.values()))
    return [tid for tid, t in current.items() if t.get("state") not in FINAL_STATES]


def timed_out(timeout: float | None, running: list[dict[str, Any]]) -> str:
    """The give-up line: what is still waiting, and why its last attempt failed (a retried
    transfer's error says, e.g., that the peer's certificate is not the id we meant)."""
    names = ", ".join(str(t.get("name")) for t in running)
    line = f"timed out after {timeout:g} s waiting for {names}"
    errors = [t["error"] for t in running if isinstance(t.get("error"), dict)]
    if errors:
        last = errors[-1]
        line += f" (last attempt: {last.get('code')}: {last.get('reason')})"
    return safe_text(line)


def run_transfers(
    args: argparse.Namespace,
    client: Client,
    start: Callable[[], list[dict[str, Any]]],
    out: TextIO,
) -> int:
    """Start the transfers and, unless --no-wait, follow them to their ends."""
    if args.no_wait:
        final = start()
    else:
        # Subscribe first: every event of the transfers we are about to start is then ours.
        stream = subscribe_transfers(client)
        bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        try:
            started = start()
            if stream is None:
                final = wait_for(client, started, args.timeout, bar)
            else:
                final = follow(client, stream, started, args.timeout, bar)
        finally:
            if stream is not None:
                stream.close()
            if bar is not None:
                bar.finish()
    if args.json:
        emit_json(final, out)
    elif args.no_wait:
        print_block(out, transfers_table(final))
    else:
        for t in final:
            if t.get("state") == "done":
                print_line(out, done_line(t))
    failed = [t for t in final if not args.no_wait and t.get("state") != "done"]
    for t in failed:
        print_error(transfer_error(t))
    return EXIT_FAILED if failed else EXIT_OK


def subscribe_transfers(client: Client) -> EventStream | None:
    """The transfer events of GET /api/events, or None from a node without it (404): then
    send/get poll instead. An outage of the stream is borne as long as a request's timeout."""
    from node.apiclient import ApiFailure

    try:
        return client.subscribe(TRANSFER_EVENTS, retry_for=client.timeout)
    except ApiFailure as exc:
        if exc.status == 404:
            return None
        raise


def follow(
    client: Client,
    stream: EventStream,
    transfers: list[dict[str, Any]],
    timeout: float | None,
    bar: ProgressBar | None,
) -> list[dict[str, Any]]:
    """Follow the transfers on the event stream until all are done, failed or cancelled."""
    from node.apiclient import DeadlineExpired

    stream.deadline = None if timeout is None else time.monotonic() + timeout
    current = {str(t["id"]): dict(t) for t in transfers}
    told: set[str] = set()
    # One read each catches what happened before the node took our subscription in.
    refresh(client, current)
    while True:
        running = show_running(current, told, bar)
        if not running:
            return list(current.values())
        try:
            ev = client.next_event(stream)
        except DeadlineExpired:
            with contextlib.suppress(Exception):  # the latest error, if the node still answers
                refresh(client, current)
            raise CliError(timed_out(timeout, [current[tid] for tid in running])) from None
        if ev.event == "reset":
            # Events were lost (the node restarted, or we were away longer than its buffer):
            # what the node says now replaces what we know; the buffer it replays follows.
            refresh(client, current)
        else:
            apply_event(current, ev)


def refresh(client: Client, current: dict[str, dict[str, Any]]) -> None:
    """Read each unfinished transfer once (GET /api/transfers/{id})."""
    from node.apiclient import ApiFailure

    for tid, t in current.items():
        if t.get("state") in FINAL_STATES:
            continue
        try:
            current[tid] = client.get(f"/api/transfers/{quote(tid, safe='')}")
        except ApiFailure as exc:
            if exc.code != "not_found":
                raise
            # A node that restarted without this transfer in its journal.
            reason = "the node no longer knows this transfer (did it restart?)"
            t.update(state="failed", error={"code": "lost", "reason": reason})


def apply_event(current: dict[str, dict[str, Any]], ev: ApiEvent) -> None:
    """Fold one transfer event into the transfer it names (docs/api.md section 2)."""
    data = ev.data
    if not isinstance(data, dict):
        return
    t = current.get(str(data.get("id")))
    if t is None or t.get("state") in FINAL_STATES:
        return  # not ours; or a final state already known (a replay after a reset)
    # Only the transfer's own keys: an event adds ts, event, node, seconds, ... around them.
    known = {k: v for k, v in data.items() if k in t and k not in ("id", "wire_id")}
    if ev.event in WHOLE_TRANSFER_EVENTS:
        t.update(known)
    elif ev.event == "transfer_progress":
        t.update(known, state="active")  # the node reports progress of active transfers only
    elif ev.event == "transfer_retry":
        t.update(state="retrying", attempts=data.get("attempt", t.get("attempts")))
    elif ev.event == "transfer_resumed":
        t.update(offset=data.get("offset", t.get("offset")))
    elif ev.event == "transfer_reset":
        t.update(bytes=0, offset=0)  # the partial data was discarded: it starts over
    elif ev.event == "batch_fallback":
        t.update(fallback=data.get("transfers"))


def wait_for(
    client: Client,
    transfers: list[dict[str, Any]],
    timeout: float | None,
    bar: ProgressBar | None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Poll each unfinished transfer until all are done, failed or cancelled (the fallback for
    a node without GET /api/events)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    current = {str(t["id"]): t for t in transfers}
    told: set[str] = set()
    while True:
        running = show_running(current, told, bar)
        if not running:
            return list(current.values())
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(timed_out(timeout, [current[tid] for tid in running]))
        sleep(POLL_INTERVAL)
        for tid in running:
            current[tid] = client.get(f"/api/transfers/{quote(tid, safe='')}")
