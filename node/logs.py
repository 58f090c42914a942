"""The node's log: its events (node/events.py) as JSON lines or as lines for people.

`--log-format json` is the machine-readable log the lab and scripts read (one event object per
line, the format of docs/api.md); `text` is the `mole watch` wording with a clock and a level,
coloured on a terminal that takes colour. `auto` (the default) is text on a terminal, JSON
otherwise (a pipe, a file, a service manager's journal: readers that parse).

`--log-level` drops events below it from the log (never from the API's event stream); every
event has one level, EVENT_LEVELS. Its default, `auto`, is `debug` for JSON (every event, as
the lab and scripts have always read them) and `info` for text (no progress chatter).
`--log-file` appends to a file created 0600 instead of writing to stdout. No event carries a
secret; `redacted` keeps it so if one ever does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from node.configfile import is_secret
from node.events import EventBus, Record

FORMATS = ("auto", "text", "json")
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
# An event's level (others are info): progress is chatter; refusals and failures need a look.
EVENT_LEVELS = {
    "transfer_progress": "debug",
    "connection_dropped": "debug",
    "warning": "warning",
    "transfer_failed": "warning",
    "transfer_refused": "warning",
    "connections_dropped": "warning",
    "peer_lines_suppressed": "warning",
}
# ANSI SGR colours of a level on a terminal.
COLOURS = {"debug": "2", "warning": "33", "error": "31"}
MASK = "<hidden>"


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default="auto",
        help="event log lines: text for people, json for programs (auto: text on a terminal)",
    )
    p.add_argument(
        "--log-level",
        choices=("auto", *LEVELS),
        default="auto",
        help="least level logged (auto: debug for json, every event; info for text)",
    )
    p.add_argument(
        "--log-file",
        metavar="FILE",
        default=None,
        help="append the log to FILE (created mode 0600) instead of stdout",
    )


def level_of(event: str) -> str:
    return EVENT_LEVELS.get(event, "info")


def redacted(data: dict[str, Any]) -> dict[str, Any] | None:
    """`data` with secret-named keys masked, or None when it has none (the usual case)."""
    if not any(is_secret(k) for k in data):
        return None
    return {k: (MASK if is_secret(k) else v) for k, v in data.items()}


def open_log_file(path: Path) -> TextIO:
    """Append to `path`, created 0600 (a log says who we talk to and what we send); an
    existing file is tightened to 0600 too."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)
    return open(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)


def wants_colour(stream: TextIO) -> bool:
    # https://no-color.org: NO_COLOR set to anything non-empty turns colour off.
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class LogLines:
    """A bus subscriber writing each record at or above `level` to `stream`."""

    def __init__(self, stream: TextIO, fmt: str = "json", level: str = "auto") -> None:
        if fmt == "auto":
            fmt = "text" if _isatty(stream) else "json"
        if level == "auto":
            level = "debug" if fmt == "json" else "info"
        self.stream = stream
        self.format = fmt
        self.level = level
        self.least = LEVELS[level]
        self.colour = fmt == "text" and wants_colour(stream)
        self.peers: dict[str, str] = {}  # node id -> name, for text lines (as `mole watch`)

    def __call__(self, record: Record) -> None:
        level = level_of(record.name)
        if LEVELS[level] < self.least:
            return
        masked = redacted(record.data)
        if self.format == "json":
            line = record.text if masked is None else json.dumps(masked, separators=(",", ":"))
        else:
            line = self.text_line(record.name, masked or record.data, level)
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stdout must never take the node down

    def text_line(self, name: str, data: dict[str, Any], level: str) -> str:
        from node.cliview import describe_event  # the words `mole watch` uses
        from node.termsafe import safe_text  # names and reasons come from peers

        ts = data.get("ts")
        clock = time.strftime("%H:%M:%S", time.localtime(ts if isinstance(ts, float) else None))
        what = safe_text(f"{name}  {describe_event(name, data, self.peers)}".rstrip())
        tag = f"{level:<7}"
        if self.colour and level in COLOURS:
            tag = f"\x1b[{COLOURS[level]}m{tag}\x1b[0m"  # our own escape around safe text
        return f"{clock} {tag} {what}"


def attach(bus: EventBus, fmt: str, level: str, log_file: Path | None) -> TextIO | None:
    """Subscribe the log to `bus`; returns the log file opened (the caller closes it)."""
    stream = open_log_file(log_file) if log_file is not None else None
    bus.subscribe(LogLines(stream or sys.stdout, fmt, level))
    if level == "debug":  # asked for: the loop's own debug lines on stderr too
        from node import transport

        transport.log.debug_enabled = True
    return stream


def close(stream: TextIO | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.close()
