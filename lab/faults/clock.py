"""Clock skew: a node's wall clock off by `seconds`, set and reverted while it runs.

Containers share the host's clock (Linux time namespaces offset only the monotonic clocks, and
CAP_SYS_TIME would set the host's), so the skew is made in the node process: in a scenario that
uses `skew`, every node's process starts under libfaketime (`LD_PRELOAD`, installed in the node
image) reading its offset from a file (`FAKETIME_TIMESTAMP_FILE`), re-read at most once a second
(`FAKETIME_CACHE_DURATION=1`: a jump lands within a second, without re-reading it on every
clock call). The file is in the node's bind-mounted data directory, written from the host: the
fault works on a stopped node too (the skew holds from its next start, as a machine's wrong
clock does), and its revert never needs the container. See docs/faults.md.

What stays true: the monotonic clocks (`FAKETIME_DONT_FAKE_MONOTONIC=1`: the node's deadlines
and expiries run on them on purpose), file times as the kernel records them (`NO_FAKE_STAT=1`:
otherwise every mtime of the share would move with each jump and look like a changed file), and
every process `docker exec` starts (the preload is on the node's command line, not in the
container's environment: libfaketime 0.9.10 breaks Python's `time.sleep` with
FAKETIME_DONT_FAKE_MONOTONIC, which only the node's CLI uses).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from lab.faults.base import (
    REFUSED,
    ClusterLike,
    FaultError,
    Revert,
    Targets,
    apply_each,
    exec_script,
    undo_kind,
)
from lab.params import Where

PRELOAD = "/usr/local/lib/libfaketime.so.1"  # lab/Dockerfile links it there
SKEW_NAME = ".mole-skew"  # in the node's data directory (/data in the container)
SKEW_FILE = f"/data/{SKEW_NAME}"
FAKETIME_ENV: dict[str, str] = {
    "LD_PRELOAD": PRELOAD,
    "FAKETIME_TIMESTAMP_FILE": SKEW_FILE,
    "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    "FAKETIME_CACHE_DURATION": "1",
    "NO_FAKE_STAT": "1",
}
MAX_SKEW = 10 * 365 * 86400.0  # s: a decade either way; more is a typo
# s either side of a change in which the node may still stamp with the offset before it
# (libfaketime re-reads the file at most once a second) or the lab's own clock reads differ.
SLACK = 2.0


# --------------------------------------------------------------------------- the lab's view


class ClockLog:
    """Which offset each node's clock had since when (host time), for the lab's reading of
    the node's event times: a skewed node stamps its events with its own clock, while every
    wait and expectation of the lab is on the host's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changes: dict[str, list[tuple[float, float]]] = {}

    def set(self, node: str, offset: float, since: float | None = None) -> None:
        with self._lock:
            self._changes.setdefault(node, []).append(
                (time.time() if since is None else since, offset)
            )

    def true_time(self, node: str, ts: float, read_at: float) -> float:
        """The host time of an event the node stamped `ts` and the lab read at `read_at`: the
        newest offset under which it falls between that offset's start and the next change
        (or the reading). Offsets of hours make this unambiguous; a ts no offset explains is
        taken under the newest."""
        with self._lock:
            changes = list(self._changes.get(node, ()))
        if not changes:
            return ts
        ends = [t for t, _ in changes[1:]] + [read_at]
        for (since, offset), end in zip(reversed(changes), reversed(ends), strict=True):
            if since - SLACK <= ts - offset <= end + SLACK:
                return ts - offset
        if ts <= changes[0][0] + SLACK:
            return ts  # before the first skew: the true clock
        return ts - changes[-1][1]


_logs: weakref.WeakKeyDictionary[Any, ClockLog] = weakref.WeakKeyDictionary()
_logs_lock = threading.Lock()


def clock_log(cluster: Any) -> ClockLog:
    """The cluster's ClockLog (made on first use)."""
    with _logs_lock:
        log = _logs.get(cluster)
        if log is None:
            log = _logs[cluster] = ClockLog()
        return log


def node_entrypoint() -> list[str]:
    """The node's entrypoint under libfaketime: `env K=V ... python3 -m node` (the image's
    entrypoint with the preload for this process only)."""
    return ["env", *(f"{k}={v}" for k, v in FAKETIME_ENV.items()), "python3", "-m", "node"]


def skew_seconds(value: object, where: Where, path: str) -> float:
    """A non-zero offset in seconds, + ahead, - behind, at most MAX_SKEW either way."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise where.fail(path, f"must be seconds (e.g. 10800 or -10800), not {value!r}")
    if value == 0 or abs(value) > MAX_SKEW:
        raise where.fail(path, f"must be non-zero and within {MAX_SKEW:.0f} s, not {value}")
    return float(value)


def offset_text(seconds: float) -> str:
    """libfaketime's relative offset: `+10800`, `-3600.5`."""
    return f"{seconds:+.6f}".rstrip("0").rstrip(".")


def _data_dir(cluster: ClusterLike, node: str, verb: str) -> Path:
    try:
        return Path(cluster.node(node).data_dir)
    except Exception as e:
        raise FaultError(f"no data directory: {e}", verb=verb, node=node) from e


def write_offset(data_dir: Path, text: str) -> None:
    """Atomically: libfaketime may read it at any moment."""
    tmp = data_dir / f"{SKEW_NAME}.tmp"
    tmp.write_text(text + "\n")
    tmp.chmod(0o644)  # the node may run as another user than the lab
    os.replace(tmp, data_dir / SKEW_NAME)


def check_lines() -> list[str]:
    """Refuse unless the node's process (PID 1) was started under libfaketime reading our file:
    a skew nobody reads would pass silently (a hostile, service or dense container)."""
    why = (
        "the node process does not run under libfaketime (only the mole nodes of a scenario "
        "with a skew step do; not dense pods, hostile peers or services)"
    )
    return [
        f"grep -qz '^FAKETIME_TIMESTAMP_FILE={SKEW_FILE}$' /proc/1/environ"
        f" && grep -q libfaketime /proc/1/maps || {{ echo '{why}'; exit {REFUSED}; }}"
    ]


def skew(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> Revert:
    nodes = targets.nodes
    seconds: float = p["seconds"]

    def add(n: str) -> None:
        if cluster.status(n) == "running":
            exec_script(cluster, n, "skew", check_lines())
        path = _data_dir(cluster, n, "skew")
        clock_log(cluster).set(n, seconds)  # before the write: the node cannot be earlier
        write_offset(path, offset_text(seconds))

    def undo(n: str) -> None:
        _unskew_on(cluster, n)

    desc = f"clock {offset_text(seconds)} s on {', '.join(nodes)}"
    return apply_each(cluster, "skew", "unskew", nodes, add, undo, desc)


def unskew(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> None:
    undo_kind(cluster, "unskew", {"skew"}, targets.nodes, _unskew_on)


def _unskew_on(cluster: ClusterLike, node: str) -> None:
    # "+0" rather than removing the file: libfaketime's cache would keep the last offset it
    # read until the file is back.
    path = _data_dir(cluster, node, "unskew")
    clock_log(cluster).set(node, 0.0)
    write_offset(path, "+0")
