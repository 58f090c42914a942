"""The `mole` command: `mole serve` runs a node; every other command talks to one over its API.

Client commands are blocking HTTP through node/apiclient.py against the node's control API
(docs/api.md); `send`, `get` and `watch` follow its event stream (GET /api/events). Exit status:
0 success, 1 a failed transfer or an error from the node, 2 usage, 3 no node is listening at
--api. Every failure is one line on stderr, starting with "mole: ". Everything printed passes
through node/termsafe.py first: names and reasons come from peers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.parse import quote

from node import clibatch, clitrust
from node.addr import hostport
from node.termsafe import safe_json, safe_text
from node.units import format_size

if TYPE_CHECKING:
    from node.apiclient import ApiEvent, ApiFailure, EventStream, Token

# node.apiclient (http.client, with ssl and email) and shutil are imported where a client
# command uses them: `mole serve` never does, and they would cost an idle node about 3 MiB.

DEFAULT_API = "http://127.0.0.1:47102"
POLL_INTERVAL = 0.2  # seconds between GET /api/transfers/{id}, for a node without /api/events
REQUEST_TIMEOUT = 30.0  # a peer file list may take a connect timeout (10 s) and more
FINAL_STATES = frozenset({"done", "failed", "cancelled"})
# The events send/get follow; each carries the transfer's `id`.
TRANSFER_EVENTS = (
    "transfer_started",
    "transfer_progress",
    "transfer_resumed",
    "transfer_reset",
    "transfer_retry",
    "transfer_done",
    "transfer_failed",
)
# Whole transfer objects (docs/api.md): they replace what we know of the transfer.
WHOLE_TRANSFER_EVENTS = frozenset({"transfer_started", "transfer_done", "transfer_failed"})

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_NODE = 0, 1, 2, 3

# Transfer error codes (transfer["error"]["code"]) -> the one line we print.
TRANSFER_ERRORS = {
    "hash_mismatch": "hash mismatch: {name}",
    "not_found": "file missing: {name}",
    "file_missing": "file missing: {name}",
    "cancelled": "cancelled: {name}",
    "policy": "refused by {peer}: {name} ({reason})",
    "not_authorized": "not authorized by {peer}: {name} ({reason})",
    "too_large": "too large for {peer}: {name} ({reason})",
    "no_space": "no space left: {name} ({reason})",
    "unreachable": "peer unreachable: {peer} ({reason})",
    "source_changed": "file changed while sending: {name}",
    # A node running --insecure-plaintext and a TLS node (docs/security.md): neither retries.
    "tls_required": "peer requires TLS: {peer} (this node runs --insecure-plaintext): {name}",
    "version_mismatch": "incompatible peer: {peer}: {name} ({reason})",
}


class CliError(Exception):
    """Ends the command with `mole: <message>` on stderr and `status`."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the node said
        self.status = status


# -- printing --------------------------------------------------------------------------------


def print_line(stream: TextIO, line: str) -> None:
    """Every line mole prints goes through here (or print_block): peer-controlled text may hold
    terminal escape sequences, which safe_text turns into visible `\\x1b`-style escapes."""
    stream.write(safe_text(line) + "\n")


def print_block(stream: TextIO, text: str) -> None:
    """Several lines of our own making (a table), each made safe like print_line."""
    for line in text.split("\n"):
        print_line(stream, line)


def print_error(message: str) -> None:
    print_line(sys.stderr, f"mole: {message}")


# -- talking to the node ---------------------------------------------------------------------


class Client:
    """node.apiclient.ApiClient with the node's failures worded for a person."""

    def __init__(self, url: str, token: Token, timeout: float) -> None:
        from node.apiclient import ApiClient

        try:
            self.api = ApiClient(url, token.value, timeout=timeout)
        except ValueError:
            raise CliError(f"bad --api URL {url!r}: want http://HOST:PORT", EXIT_USAGE) from None
        self.url = self.api.url
        self.timeout = timeout
        self.token_info = token

    def close(self) -> None:
        self.api.close()

    def request(self, method: str, path: str, body: object = None) -> Any:
        with self.translated():
            return self.api.request(method, path, body)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: object = None) -> Any:
        return self.request("POST", path, body)

    def subscribe(self, types: Sequence[str] | None, **kw: Any) -> EventStream:
        """GET /api/events, connected before this returns (see ApiClient.events)."""
        with self.translated():
            return self.api.events(types, **kw)

    def next_event(self, stream: EventStream) -> ApiEvent:
        """The stream's next event, its failures worded like a request's. DeadlineExpired is
        left to the caller, who knows what it was waiting for."""
        with self.translated():
            return next(stream)

    def unauthorized(self) -> str:
        """What to do about a 401: where the token came from, and where it could come from."""
        t = self.token_info
        head = f"unauthorized: the node at {self.url}"
        if t.value:
            return f"{head} refused the token from {t.source}: pass its token with --token"
        text = f"{head} wants its API token: pass --token or set MOLE_API_TOKEN"
        if t.file is None:  # not a local node: its token file is not ours to read
            return text
        why = f"{t.file}: {t.problem}" if t.problem else f"no {t.file.name} in {t.file.parent}"
        return f"{text}, or point --state at the node's state directory ({why})"

    @contextmanager
    def translated(self) -> Iterator[None]:
        import http.client

        from node.apiclient import ApiFailure, BadAnswer, DeadlineExpired, StreamLost

        try:
            yield
        except ApiFailure as exc:
            if exc.status == 401:
                raise CliError(self.unauthorized()) from None
            raise
        except DeadlineExpired:
            raise
        except StreamLost as exc:
            raise CliError(f"lost the node at {self.url}: {exc}") from None
        except ConnectionRefusedError:
            raise CliError(f"node not running at {self.url}", EXIT_NO_NODE) from None
        except TimeoutError:
            message = f"no answer from the node at {self.url} within {self.timeout:g} s"
            raise CliError(message) from None
        except BadAnswer as exc:
            raise CliError(str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(f"cannot talk to the node at {self.url}: {exc}") from None


def explain(exc: ApiFailure, *, peer: str | None = None, item: str | None = None) -> CliError:
    """The node's error in the words of the command the user typed."""
    if exc.code == "unknown_peer" and peer is not None:
        return CliError(f"peer unknown: {peer}")
    if exc.code == "file_missing" and item is not None:
        return CliError(f"file missing: {item}")
    if exc.code == "peer_unreachable" and peer is not None:
        return CliError(f"peer unreachable: {peer} ({exc.message})")
    if exc.code == "peer_error":
        return CliError(f"peer error: {exc.message}")
    return CliError(exc.message or exc.code)


def transfer_error(t: dict[str, Any]) -> str:
    err = t.get("error") or {}
    code = str(err.get("code") or t.get("state") or "failed")
    reason = str(err.get("reason") or "")
    fields = {"name": t.get("name") or t.get("id"), "peer": peer_label(t), "reason": reason}
    template = TRANSFER_ERRORS.get(code, "transfer failed: {name}: {code}: {reason}")
    return " ".join(template.format(code=code, **fields).split())


# -- formatting ------------------------------------------------------------------------------


# Sizes are shown in the one IEC format of node/units.py ("1000 B", "4.5 MiB").
human_size = format_size


def human_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def human_age(then: object, now: float) -> str:
    # last_seen is a unix time; anything else (a missing or monotonic value) shows as "-".
    if not isinstance(then, int | float) or then < 1e9 or then > now + 60:
        return "-"
    age = max(0.0, now - then)
    if age < 120:
        return f"{age:.0f}s ago"
    if age < 7200:
        return f"{age / 60:.0f}m ago"
    return f"{age / 3600:.0f}h ago"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[str] = ()
) -> str:
    """Columns padded to their widest cell; columns named in `right` are right-aligned."""
    # Cells are made safe before they are measured, so the escapes keep the columns straight.
    cells = [list(headers), *[[safe_text(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [
            c.rjust(w) if h in right else c.ljust(w)
            for c, w, h in zip(r, widths, headers, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def peer_label(t: dict[str, Any]) -> str:
    return str(t.get("peer_name") or str(t.get("peer") or "")[:8] or "-")


def percent(t: dict[str, Any]) -> float:
    size = int(t.get("size") or 0)
    got = int(t.get("bytes") or 0)
    if size <= 0:
        return 100.0 if t.get("state") == "done" else 0.0
    return min(100.0, 100.0 * got / size)


def peers_table(peers: list[dict[str, Any]], now: float) -> str:
    rows = [
        (
            p.get("name", ""),
            str(p.get("node", ""))[:8],
            hostport(str(p.get("addr", "?")), p.get("port", "?")),
            ",".join(p.get("groups") or []) or "-",
            "static" if p.get("static") else human_age(p.get("last_seen"), now),
            str(p.get("found_by") or ("static" if p.get("static") else "lan")),
        )
        for p in peers
    ]
    return table(["NAME", "NODE", "ADDRESS", "GROUPS", "SEEN", "FOUND BY"], rows)


def files_table(files: list[dict[str, Any]]) -> str:
    rows = [
        (f.get("name", ""), human_size(int(f.get("size") or 0)), str(f.get("sha256") or "")[:12])
        for f in files
    ]
    return table(["NAME", "SIZE", "SHA256"], rows, right=["SIZE"])


def transfers_table(transfers: list[dict[str, Any]]) -> str:
    rows = []
    for t in sorted(transfers, key=lambda t: float(t.get("started") or 0)):
        state = str(t.get("state", ""))
        if state in ("failed", "cancelled") and t.get("error"):
            state = f"{state}: {t['error'].get('code', '')}"
        progress = (
            f"{percent(t):3.0f}% {human_size(int(t.get('bytes') or 0))}"
            f"/{human_size(int(t.get('size') or 0))}"
        )
        rate = float(t.get("rate") or 0)
        active = t.get("state") not in FINAL_STATES and rate > 0
        name = str(t.get("name", "")) + batch_files(t)
        if t.get("path") and t["path"] != name:
            name = f"{name} -> {t['path']}"  # the name it got on the receiver
        rows.append(
            (
                t.get("id", ""),
                "out" if t.get("role") == "send" else "in",
                peer_label(t),
                name,
                progress,
                f"{human_size(rate)}/s" if active else "-",
                state,
            )
        )
    return table(["ID", "DIR", "PEER", "NAME", "PROGRESS", "RATE", "STATE"], rows)


def batch_files(t: dict[str, Any]) -> str:
    """ " (12/40 files)" after a batch's name."""
    if t.get("kind") != "batch":
        return ""
    return f" ({int(t.get('files_done') or 0)}/{int(t.get('files') or 0)} files)"


def progress_line(t: dict[str, Any], columns: int, position: str = "") -> str:
    """One redrawable line: [i/n] name [####....] 45% 4.5 MiB/10.0 MiB 1.2 MiB/s ETA 0:05."""
    size = int(t.get("size") or 0)
    got = int(t.get("bytes") or 0)
    rate = float(t.get("rate") or 0)
    state = str(t.get("state", ""))
    if state == "active" and rate > 0:
        tail = f"{human_size(rate)}/s ETA {human_duration(max(0, size - got) / rate)}"
    elif state == "active":
        tail = "ETA --:--"
    else:
        tail = state
    numbers = f"{percent(t):3.0f}% {human_size(got)}/{human_size(size)} {tail}"
    bar_len = max(10, min(30, columns // 4))
    filled = int(bar_len * percent(t) / 100)
    bar = "[" + "#" * filled + "." * (bar_len - filled) + "]"
    room = columns - 1 - len(position) - len(bar) - len(numbers) - 3
    name = safe_text(t.get("name") or t.get("id") or "") + batch_files(t)  # measured as printed
    if room < len(name):
        name = name[: max(0, room - 1)] + "…" if room > 1 else ""
    return " ".join(p for p in (position.strip(), name, bar, numbers) if p)[: columns - 1]


class ProgressBar:
    """A one-line live view on a terminal, redrawn in place with carriage returns."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False
        self.line = ""

    def update(self, transfers: list[dict[str, Any]]) -> None:
        running = [t for t in transfers if t.get("state") not in FINAL_STATES]
        if not running:
            return
        t = running[0]
        position = ""
        if len(transfers) > 1:
            position = f"[{transfers.index(t) + 1}/{len(transfers)}]"
        import shutil

        columns = shutil.get_terminal_size((80, 24)).columns
        line = safe_text(progress_line(t, columns, position))
        if self.drawn and line == self.line:
            return  # an event that changes nothing shown (a transfer_started echo, a retry)
        # Our own \r and erase-line wrap a line made safe: nothing of a peer's is sent raw.
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self.drawn, self.line = True, line

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn, self.line = False, ""


# -- commands --------------------------------------------------------------------------------


def emit_json(value: object, out: TextIO, *, indent: int | None = 2) -> None:
    # ensure_ascii=False keeps names readable; safe_json then escapes what a terminal would
    # act on (json.dumps writes DEL, C1 and bidi controls raw), and the JSON stays equal.
    separators = None if indent else (",", ":")
    text = json.dumps(value, indent=indent, ensure_ascii=False, separators=separators)
    out.write(safe_json(text) + "\n")


def cmd_peers(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    peers = client.get("/api/peers")
    if getattr(args, "group", None):
        peers = [p for p in peers if args.group in (p.get("groups") or [])]
    if args.json:
        emit_json(peers, out)
    else:
        print_block(out, peers_table(peers, time.time()) if peers else "no peers yet")
    return EXIT_OK


def cmd_peer(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """`mole peer add|remove|list HOST:PORT`: static peers (names allowed), kept by the node."""
    if args.action == "list":
        statics = client.get("/api/peers/static")
        if args.json:
            emit_json(statics, out)
        else:
            rows = [
                (str(s["peer"]), ",".join(s["addrs"]) or "-", str(s["node"] or "-")[:8])
                for s in statics
            ]
            print_block(out, table(["PEER", "RESOLVED", "NODE"], rows) if rows else "none")
        return EXIT_OK
    if not args.address:
        raise SystemExit(f"mole peer {args.action}: give HOST:PORT")
    path = "/api/peers/static" + ("/remove" if args.action == "remove" else "")
    answer = client.post(path, {"peer": args.address})
    if args.json:
        emit_json(answer, out)
    else:
        out.write(f"{'added' if args.action == 'add' else 'removed'} {safe_text(args.address)}\n")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    from node.apiclient import ApiFailure

    if args.peer is None:
        files = client.get("/api/files")
    else:
        try:
            files = client.get(f"/api/peers/{quote(args.peer, safe='')}/files")
        except ApiFailure as exc:
            raise explain(exc, peer=args.peer) from None
    if getattr(args, "dir", None) is not None:
        return clibatch.print_tree(args, files, out)
    return print_files(args, files, out, "no shared files")


def cmd_inbox(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    return print_files(args, client.get("/api/inbox"), out, "the inbox is empty")


def print_files(
    args: argparse.Namespace, files: list[dict[str, Any]], out: TextIO, empty: str
) -> int:
    if args.json:
        emit_json(files, out)
    else:
        print_block(out, files_table(files) if files else empty)
    return EXIT_OK


def cmd_transfers(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    transfers = client.get("/api/transfers")
    if args.json:
        emit_json(transfers, out)
    else:
        print_block(out, transfers_table(transfers) if transfers else "no transfers")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    from node.apiclient import ApiFailure

    try:
        t = client.post(f"/api/transfers/{quote(args.id, safe='')}/cancel")
    except ApiFailure as exc:
        if exc.code == "not_found":
            raise CliError(f"no such transfer: {args.id}") from None
        raise
    if args.json:
        emit_json(t, out)
    else:
        print_line(out, f"{t.get('id')}  {t.get('name', '')}  {t.get('state')}")
    return EXIT_OK


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


def cmd_send(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    from node.apiclient import ApiFailure

    paths = [(typed, os.path.abspath(os.path.expanduser(typed))) for typed in args.paths]
    for typed, path in paths:  # before asking the node: nothing starts if one path is wrong
        # An absolute path we cannot see may still be the node's own (a node in a container,
        # its API published on this host): that node checks it and answers file_missing.
        seen = os.path.isfile(path) or os.path.isdir(path)
        if not seen and not (os.path.isabs(typed) and not os.path.exists(path)):
            raise CliError(f"file missing: {typed}")
    if (
        args.peer.startswith("@")
        or args.links != "refuse"
        or any(os.path.isdir(p) for _, p in paths)
    ):
        return clibatch.send_batch(args, client, [p for _, p in paths], out, run_transfers)

    def start() -> list[dict[str, Any]]:
        started = []
        for typed, path in paths:
            try:
                started.append(client.post("/api/push", {"peer": args.peer, "path": path}))
            except ApiFailure as exc:
                raise explain(exc, peer=args.peer, item=typed) from None
        return started

    return run_transfers(args, client, start, out)


def cmd_get(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    from node.apiclient import ApiFailure

    if args.glob is not None or any(n.endswith("/") for n in args.names):
        return clibatch.get_batch(args, client, out, run_transfers)
    if not args.names:
        raise CliError("get needs a NAME, a DIR/ or --glob PATTERN")

    def start() -> list[dict[str, Any]]:
        started = []
        for name in args.names:
            try:
                started.append(client.post("/api/pull", {"peer": args.peer, "name": name}))
            except ApiFailure as exc:
                raise explain(exc, peer=args.peer, item=name) from None
        return started

    return run_transfers(args, client, start, out)


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
    # One read each catches what happened before the node took our subscription in.
    refresh(client, current)
    while True:
        if bar is not None:
            bar.update(list(current.values()))
        running = [tid for tid, t in current.items() if t.get("state") not in FINAL_STATES]
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
    while True:
        if bar is not None:
            bar.update(list(current.values()))
        running = [tid for tid, t in current.items() if t.get("state") not in FINAL_STATES]
        if not running:
            return list(current.values())
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(timed_out(timeout, [current[tid] for tid in running]))
        sleep(POLL_INTERVAL)
        for tid in running:
            current[tid] = client.get(f"/api/transfers/{quote(tid, safe='')}")


def done_line(t: dict[str, Any]) -> str:
    name, peer = f"{t.get('name', '')}{batch_files(t)}", peer_label(t)
    size = human_size(int(t.get("size") or 0))
    path = str(t.get("path") or name)
    if t.get("skipped"):
        where = f"on {peer}" if t.get("role") == "send" else "here"
        return f"{name}: already held {where}, now as {path} (no bytes sent)"
    seconds = max(0.0, float(t.get("finished") or 0) - float(t.get("started") or 0))
    speed = f", {human_size(int(t.get('sent') or 0) / seconds)}/s" if seconds > 0 else ""
    timing = f"{size} in {seconds:.1f} s{speed}"
    # The final name differs when the receiver had the name taken by other content.
    where = f" as {path}" if path != name else ""
    if t.get("role") == "send":
        return f"sent {name} to {peer}{where} ({timing})"
    return f"received {name} from {peer}{where} ({timing})"


# -- watch -----------------------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Print the node's events as they come, until Ctrl-C (exit 0)."""
    from node.apiclient import ApiFailure, describe

    def on_retry(attempt: int, error: BaseException, delay: float) -> None:
        if attempt == 1:  # once per outage: the stream says when it is back (a reset, or not)
            print_error(f"lost the event stream ({describe(error)}); reconnecting")

    try:
        stream = client.subscribe(args.types, retry_for=args.timeout, on_retry=on_retry)
    except ApiFailure as exc:
        if exc.status == 404:
            message = f"the node at {client.url} has no event stream (GET /api/events)"
            raise CliError(message) from None
        raise
    peers: dict[str, str] = {}  # node id -> display name, from the peer events seen
    try:
        with stream:
            while True:
                ev = client.next_event(stream)
                if args.json:
                    emit_json(event_record(ev), out, indent=None)
                else:
                    print_line(out, watch_line(ev, peers))
                out.flush()
    except KeyboardInterrupt:
        return EXIT_OK


def event_record(ev: ApiEvent) -> object:
    """The node's own event line (the stream's data); a `reset` gets its `event` key added."""
    if isinstance(ev.data, dict) and "event" not in ev.data:
        return {"event": ev.event, **ev.data}
    return ev.data


def watch_line(ev: ApiEvent, peers: dict[str, str]) -> str:
    """`HH:MM:SS event  what happened`, in the words the other commands use."""
    d: dict[str, Any] = ev.data if isinstance(ev.data, dict) else {"data": ev.data}
    ts = d.get("ts")
    clock = time.strftime("%H:%M:%S", time.localtime(ts if isinstance(ts, int | float) else None))
    return f"{clock} {ev.event}  {describe_event(ev.event, d, peers)}".rstrip()


def describe_event(name: str, d: dict[str, Any], peers: dict[str, str]) -> str:
    tid = f"[{d.get('id')}]"
    if name == "reset":
        return f"the stream started over ({d.get('reason')}): events may have been missed"
    if name == "listening":
        return f"{d.get('name')} listening (tcp {d.get('tcp_port')}, api {d.get('api')})"
    if name == "peer_up":
        peers[str(d.get("peer"))] = str(d.get("peer_name") or "")
        how = "static" if d.get("static") else ",".join(d.get("groups") or []) or "-"
        where = hostport(str(d.get("addr")), d.get("port", "?"))
        return f"{peer_name(d, peers)} at {where} ({how})"
    if name == "peer_down":
        return f"{peer_name(d, peers)} ({d.get('reason')})"
    if name == "transfer_started":
        way = "to" if d.get("role") == "send" else "from"
        size = human_size(int(d.get("size") or 0))
        return f"{d.get('name')} {way} {peer_label(d)} ({size}) {tid}"
    if name == "transfer_progress":
        rate = f" {human_size(float(d.get('rate') or 0))}/s" if d.get("rate") else ""
        got, size = human_size(int(d.get("bytes") or 0)), human_size(int(d.get("size") or 0))
        return f"{d.get('name')} {percent(d):3.0f}% {got}/{size}{rate} {tid}"
    if name == "transfer_resumed":
        return f"{d.get('name')} resumes after {human_size(int(d.get('offset') or 0))} {tid}"
    if name == "transfer_reset":
        return f"{d.get('name')} starts over ({d.get('reason')}) {tid}"
    if name == "transfer_retry":
        return (
            f"attempt {d.get('attempt')} failed ({d.get('code')}: {d.get('reason')}); "
            f"retrying in {d.get('delay')} s {tid}"
        )
    if name == "transfer_refused":
        return f"{d.get('name')} from {peer_name(d, peers)} ({d.get('code')}: {d.get('reason')})"
    if name == "transfer_done":
        return f"{done_line(d)} {tid}"
    if name == "transfer_failed":
        return f"{transfer_error(d)} {tid}"
    if name == "warning":
        return str(d.get("message"))
    rest = {k: v for k, v in d.items() if k not in ("ts", "event", "node")}
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in rest.items())


def peer_name(d: dict[str, Any], peers: dict[str, str]) -> str:
    node = str(d.get("peer") or "")
    return str(d.get("peer_name") or peers.get(node) or node[:8] or "-")


def dashboard_url(api_url: str) -> str:
    """The web dashboard's address for an API URL (the page is served at its root)."""
    return api_url.rstrip("/") + "/"


def cmd_open(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Open the node's web dashboard in a browser (it asks for the token: `mole token`)."""
    import webbrowser

    url = dashboard_url(client.url)
    print_line(out, url)
    if not webbrowser.open(url):
        raise CliError(f"no web browser found here: open {url} yourself")
    return EXIT_OK


def cmd_token(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Print the API token this client would send (what the dashboard's login asks for)."""
    if not client.token_info.value:
        raise CliError(client.unauthorized())
    out.write(client.token_info.value + "\n")  # a token is ASCII we made, printed as is
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from node.cli_config import serve_config
    from node.errors import ConfigError
    from node.node import run_node

    config, _ = serve_config(args, argv)
    try:
        return run_node(config)
    except ConfigError as exc:  # e.g. identity files that cannot be used
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(str(exc)) from None


def cmd_id(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Print the node's id in its human form and as hex: what a peer compares to verify it."""
    info = client.get("/api/node")
    print_line(out, f"{info.get('node_human', '')}")
    print_line(out, f"{info.get('node', '')}")
    return EXIT_OK


# -- argument parsing ------------------------------------------------------------------------


def _columns() -> int:
    """The terminal's width as `shutil.get_terminal_size` finds it ($COLUMNS, then the tty,
    else 80), without importing shutil: argparse would, for every parser it builds, and a
    node's RSS would carry shutil (and bz2, lzma, fnmatch) for its whole life (~0.6 MiB)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Width:
    """A help formatter mixin that passes argparse the width it would ask shutil for."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            prog, indent_increment, max_help_position, _columns() - 2 if width is None else width
        )


class _Help(_Width, argparse.HelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"mole: {message}\n")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def add_client_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    # The same options before or after the command; a subcommand's copies default to SUPPRESS
    # so they do not overwrite what was given before the command.
    def d(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument(
        "--api", metavar="URL", default=d(os.environ.get("MOLE_API") or DEFAULT_API),
        help=f"the node's API (env MOLE_API, default {DEFAULT_API})",
    )  # fmt: skip
    p.add_argument(
        "--token", default=d(None),
        help="API bearer token (default: env MOLE_API_TOKEN, else a local node's token file)",
    )  # fmt: skip
    p.add_argument(
        "--state", metavar="DIR", default=d(None),
        help="the local node's state directory, where its api_token file is read "
        "(default: env MOLE_STATE, else ~/.mole/state)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", default=d(False), help="print JSON")
    p.add_argument(
        "--no-wait", action="store_true", default=d(False),
        help="send/get: return once the transfers are queued",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=positive_float, metavar="SECONDS", default=d(None),
        help="give up waiting for the node or a transfer after SECONDS (watch: on a node gone "
        "for SECONDS)",
    )  # fmt: skip


class _ServeHelp(_Width, argparse.ArgumentDefaultsHelpFormatter):
    """`serve --help` shows each default, except a token's (a secret) and unset ones."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest == "api_token" or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


DISTRIBUTION = "mole-p2p"  # the name on PyPI (`mole` there is another project)


def version_text() -> str:
    """`mole --version`: the version, then which branch of node/plat each capability took."""
    import platform

    from node import __version__, plat
    from node.plat import ifaces

    caps = plat.describe()
    caps["interfaces"] = ifaces.scan().backend
    py = f"Python {platform.python_version()} on {caps.pop('platform')}"
    return (
        f"mole {__version__} ({DISTRIBUTION}; {py}; "
        + ", ".join(f"{k} {v}" for k, v in caps.items())
        + ")"
    )


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_text())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mole", description="peer-to-peer LAN file sharing")
    parser.add_argument("--version", action=_Version)
    add_client_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    serve = sub.add_parser(
        "serve",
        help="run a node",
        formatter_class=_ServeHelp,
        epilog="Every option can also be set as MOLE_<OPTION> (e.g. MOLE_MAX_SIZE) or in the "
        'config file (max-size = "2GiB"); the command line wins, then the environment, then '
        "the file. `mole config` shows what applies (docs/config.md).",
    )
    from node.config import add_serve_arguments

    add_serve_arguments(serve)
    config = sub.add_parser(
        "config",
        help="print the effective serve options and where each comes from",
        formatter_class=_ServeHelp,
    )
    add_serve_arguments(config)
    config.add_argument("--json", action="store_true", help="print JSON")

    def client_cmd(name: str, run: object, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        add_client_options(p, top=False)
        p.set_defaults(run=run)
        return p

    client_cmd("id", cmd_id, "print this node's id (compare it with a peer's to verify it)")
    peers = client_cmd("peers", cmd_peers, "list the peers this node knows")
    clitrust.add_commands(client_cmd)
    peers.add_argument("--group", metavar="G", help="only the members of group G")
    peer = client_cmd("peer", cmd_peer, "add, remove or list static peers (HOST:PORT, names too)")
    peer.add_argument("action", choices=["add", "remove", "list"])
    peer.add_argument("address", nargs="?", metavar="HOST:PORT")
    ls = client_cmd("ls", cmd_ls, "list own shared files, or a peer's (a DIR/ as a tree)")
    ls.add_argument("peer", nargs="?", metavar="PEER")
    ls.add_argument("dir", nargs="?", metavar="DIR/")
    send = client_cmd("send", cmd_send, "push files to a peer")
    send.add_argument("peer", metavar="PEER")
    send.add_argument("paths", nargs="+", metavar="PATH")
    clibatch.send_options(send)
    get = client_cmd("get", cmd_get, "pull files from a peer by name, a DIR/ or --glob")
    get.add_argument("peer", metavar="PEER")
    get.add_argument("names", nargs="*", metavar="NAME")
    get.add_argument("--glob", metavar="PATTERN", help="every shared file matching it, as a batch")
    client_cmd("transfers", cmd_transfers, "list transfers")
    cancel = client_cmd("cancel", cmd_cancel, "cancel a transfer")
    cancel.add_argument("id", metavar="ID")
    client_cmd("inbox", cmd_inbox, "list received files")
    client_cmd("open", cmd_open, "open the node's web dashboard in a browser")
    client_cmd("token", cmd_token, "print the node's API token (the dashboard's login)")
    watch = client_cmd("watch", cmd_watch, "print the node's events as they happen")
    watch.add_argument(
        "--type", dest="types", action="append", metavar="NAME",
        help="only events of this name, e.g. transfer_done (repeatable)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "serve":
            return cmd_serve(args, argv)
        if args.command == "config":
            from node.cli_config import cmd_config

            return cmd_config(args, argv, sys.stdout)
        # A tiny --timeout bounds the wait for transfers; single answers still get a second.
        http_timeout = REQUEST_TIMEOUT if args.timeout is None else max(1.0, args.timeout)
        from node.apiclient import ApiFailure, find_token

        token = find_token(args.token, api_url=args.api, state=args.state)
        client = Client(args.api, token, http_timeout)
        try:
            status: int = args.run(args, client, sys.stdout)
            return status
        except ApiFailure as exc:
            raise explain(exc) from None
        finally:
            client.close()
    except CliError as exc:
        print_error(exc.message)
        return exc.status
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:  # `mole peers | head`
        return EXIT_FAILED
