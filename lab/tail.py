"""The nodes' event lines, as the lab reads them: every node prints one JSON object per event
(docs/api.md) among its other output; EventTail follows each watched node's whole output."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

POLL_INTERVAL = 0.2  # event tail cadence
Event = dict[str, Any]


def parse_events(text: str) -> list[Event]:
    """The JSON event lines of a node's output (other lines, e.g. tracebacks, are skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("event"), str):
            out.append(ev)
    return out


def brief(ev: Event) -> str:
    """An event on one line, for messages."""
    keys = ("event", "name", "peer_name", "state", "bytes", "size", "addr", "reason", "message")
    bits = [f"{k}={ev[k]}" for k in keys if ev.get(k) not in (None, "")]
    err = ev.get("error")
    if isinstance(err, dict):
        bits.append(f"error={err.get('code')}: {err.get('reason')}")
    return " ".join(bits)


class EventTail:
    """Follows each watched node's output by polling `fetch(name) -> full log text`.

    Docker keeps one growing log per container (also across restarts), so the lines already
    consumed are a prefix of every later answer.
    """

    def __init__(
        self,
        fetch: Callable[[str], str],
        *,
        interval: float = POLL_INTERVAL,
        true_time: Callable[[str, float, float], float] | None = None,
    ) -> None:
        # `interval` is the fastest cadence; _loop() slows it when a round is costly (event
        # times come from the events themselves, so a slower poll costs no accuracy).
        self.fetch = fetch
        self.interval = interval
        # (node, its event's ts, when read) -> host time: a node whose clock the lab skewed
        # (lab/faults/clock.py) stamps its own time; its `ts` is moved to the host's, the
        # node's own kept as `node_ts`.
        self.true_time = true_time
        self._lock = threading.Lock()
        self._consumed: dict[str, int] = {}
        self._events: dict[str, list[Event]] = {}
        self._text: dict[str, str] = {}
        self._watch: set[str] = set()
        self._errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mole-lab-tail")

    def watch(self, name: str) -> None:
        with self._lock:
            self._watch.add(name)
            self._events.setdefault(name, [])

    def poll(self, name: str) -> None:
        text = self.fetch(name)
        with self._lock:
            self._text[name] = text
            # Only what came since the last poll is parsed (not the whole log, fifty nodes
            # five times a second); its last piece, an unfinished line, waits for the next.
            start = self._consumed.get(name, 0)  # characters of whole lines parsed
            if len(text) < start:  # the log was reset (should not happen): start over
                start = 0
                self._events[name] = []
            end = text.rfind("\n", start) + 1
            fresh = self._stamped(name, parse_events(text[start:end]))
            self._events.setdefault(name, []).extend(fresh)
            self._consumed[name] = max(start, end)
            self._errors.pop(name, None)

    def poll_all(self, names: Iterable[str] | None = None) -> None:
        with self._lock:
            todo = sorted(self._watch if names is None else set(names))
        futures = {n: self._pool.submit(self.poll, n) for n in todo}
        for n, fut in futures.items():
            try:
                fut.result()
            except Exception as e:  # a vanished container: keep what we have
                with self._lock:
                    self._errors[n] = f"{type(e).__name__}: {e}"

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mole-lab-events", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # The cadence follows what a round costs: nothing when the cluster reads the engine's
        # log files, ~1 s for fifty nodes through the logs API on a busy engine.
        took = 0.0
        while not self._stop.wait(max(self.interval, 2 * took)):
            t = time.monotonic()
            self.poll_all()
            took = time.monotonic() - t

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    def replace(self, name: str, text: str) -> None:
        """The node's complete output, read once it is over: its events are these from now."""
        with self._lock:
            self._events[name] = self._stamped(name, parse_events(text), rereading=True)
            self._text[name] = text

    def _stamped(self, name: str, events: list[Event], rereading: bool = False) -> list[Event]:
        if self.true_time is None:
            return events
        now = time.time()
        # A re-read log starts with the lines read before (the log only grows): they keep the
        # time they were given then (it depends on when they were read).
        before = self._events.get(name, []) if rereading else []
        for i, ev in enumerate(events):
            ts = ev.get("ts")
            if not isinstance(ts, int | float) or isinstance(ts, bool):
                continue
            ev["node_ts"] = ts
            old = before[i] if i < len(before) else None
            if old is not None and old.get("node_ts") == ts:
                ev["ts"] = old["ts"]
            else:
                ev["ts"] = self.true_time(name, float(ts), now)
        return events

    def events(self, name: str) -> list[Event]:
        with self._lock:
            return list(self._events.get(name, ()))

    def text(self, name: str) -> str:
        with self._lock:
            return self._text.get(name, "")

    def error(self, name: str) -> str | None:
        with self._lock:
            return self._errors.get(name)
