"""What `mole` prints: tables, the progress bar, sizes and durations for a person, one-line
descriptions of transfers and events, and the error that ends a command (exit status and the
`mole: ...` line).

Split from node/cli.py (issue 9) so the commands there read as what they ask of the node, and
this, what a person sees of the answer, can be read (and used by node/logs.py) on its own.
Everything printed passes through node/termsafe.py: names and reasons come from peers.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from node.addr import hostport
from node.termsafe import safe_json, safe_text
from node.units import format_size

if TYPE_CHECKING:
    from node.apiclient import ApiEvent

FINAL_STATES = frozenset({"done", "failed", "cancelled"})

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


def transfer_error(t: dict[str, Any]) -> str:
    err = t.get("error") or {}
    code = str(err.get("code") or t.get("state") or "failed")
    reason = str(err.get("reason") or "")
    name = str(t.get("name") or t.get("id"))
    if t.get("kind") == "batch":  # its name is only its first path: say what failed
        lacking = [str(m.get("path")) for m in t.get("missing") or () if m.get("code") != "skipped"]
        if lacking:
            more = len(lacking) - 3
            name = ", ".join(lacking[:3]) + (f" and {more} more" if more > 0 else "")
        elif t.get("files"):
            name += f" (batch of {t['files']} files)"
    fields = {"name": name, "peer": peer_label(t), "reason": reason}
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
    """One row per peer at the address it is dialled at first, then one row per further
    address it is known by (in dial order); VIA: how each address was found."""
    rows: list[tuple[str, ...]] = []
    for p in peers:
        fallback = {"addr": p.get("addr", "?"), "port": p.get("port", "?")}
        first, *more = p.get("addrs") or [fallback]
        rows.append(
            (
                str(p.get("name", "")),
                str(p.get("node", ""))[:8],
                hostport(str(first.get("addr", "?")), first.get("port", "?")),
                _via(first),
                ",".join(p.get("groups") or []) or "-",
                "static" if p.get("static") else human_age(p.get("last_seen"), now),
                str(p.get("found_by") or ("static" if p.get("static") else "lan")),
            )
        )
        rows.extend(
            ("", "", hostport(str(a.get("addr", "?")), a.get("port", "?")), _via(a), "", "", "")
            for a in more
        )
    return table(["NAME", "NODE", "ADDRESS", "VIA", "GROUPS", "SEEN", "FOUND BY"], rows)


def _via(a: dict[str, Any]) -> str:
    via = ",".join(a.get("sources") or []) or "-"
    failures = int(a.get("failures") or 0)
    return f"{via} ({failures} failed)" if failures else via


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


def emit_json(value: object, out: TextIO, *, indent: int | None = 2) -> None:
    # ensure_ascii=False keeps names readable; safe_json then escapes what a terminal would
    # act on (json.dumps writes DEL, C1 and bidi controls raw), and the JSON stays equal.
    separators = None if indent else (",", ":")
    text = json.dumps(value, indent=indent, ensure_ascii=False, separators=separators)
    out.write(safe_json(text) + "\n")


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
