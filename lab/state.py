"""What a run knows while it runs, shared by the timeline, the steps and the expectations.

Report gathers the result (failures, timings) and the live progress lines from the start.
RunState exists once the nodes do: the clock (time 0), the nodes' events, what the steps did,
and the facts read from them (who saw whom, which transfer is under way, how a file arrived).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from lab.files import Inboxes
from lab.nodes import Nodes
from lab.results import Failure, Result
from lab.scenario import EventSpec, Scenario
from lab.tail import Event, EventTail, brief

# A transfer's account of itself, least to most final: at the same instant an end beats a
# start, and done beats failed.
EVENT_RANK = {"transfer_started": 0, "transfer_failed": 1, "transfer_done": 2}


class Report:
    """The run's Result as it accumulates, and its progress lines (`progress`, if any)."""

    def __init__(self, sc: Scenario, result: Result, progress: Callable[[str], None] | None):
        self.sc = sc
        self.result = result
        self.progress = progress
        self.t_start = time.monotonic()
        self.deadline = self.t_start + sc.timeout
        self.lock = threading.Lock()

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(f"[{self.sc.name} {time.monotonic() - self.t_start:6.2f}s] {msg}")

    def fail(self, what: str, message: str, nodes: Iterable[str] = ()) -> None:
        with self.lock:
            self.result.failures.append(Failure(what, message, tuple(nodes)))
        self.say(f"FAIL {what}: {message.splitlines()[0]}")

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


def latest_account(receiver: list[Event], sender: list[Event]) -> Event:
    """The event that says where a (source, destination, file) transfer stands, from both ends.

    The receiver's transfer_done wins: the bytes are in place, whatever the sender logged
    after. Otherwise the latest event of either end: a sender that gave up (transfer_failed)
    beats the receiver's older transfer_started, which no later line of the receiver ended (it
    may never log one: the connection is gone); a restarted attempt beats an older failure.
    """
    done = [e for e in receiver if e["event"] == "transfer_done"]
    if done:
        return done[-1]
    both = sorted(
        receiver + sender,
        key=lambda e: (float(e.get("ts") or 0), EVENT_RANK.get(str(e["event"]), 0)),
    )
    return both[-1]


class RunState:
    """The facts of a running scenario; also what its triggers ask (lab.timeline.TriggerFacts)."""

    def __init__(
        self, sc: Scenario, report: Report, nodes: Nodes, inboxes: Inboxes, tail: EventTail
    ) -> None:
        self.sc = sc
        self.report = report
        self.nodes = nodes
        self.inboxes = inboxes
        self.tail = tail
        self.t0: float | None = None  # monotonic time 0: every initially started node listens
        self.t0_wall: float | None = None
        self.steps_done: dict[str, float] = {}  # step id -> when its action returned
        self.steps_fired: dict[str, float] = {}  # step id -> time.time() it fired
        self._initiated: list[tuple[str, str, str, str]] = []
        self._discovered = False
        self.trees: dict[str, Any] = {}  # lab.trees.Tree by tree id (generated before t0)
        self._lock = threading.Lock()

    # -- the clock and the report

    @property
    def deadline(self) -> float:
        return self.report.deadline

    def remaining(self) -> float:
        return self.report.remaining()

    def say(self, msg: str) -> None:
        self.report.say(msg)

    def fail(self, what: str, message: str, nodes: Iterable[str] = ()) -> None:
        self.report.fail(what, message, nodes)

    def since_t0(self, now: float) -> float:
        assert self.t0 is not None
        return now - self.t0

    # -- what the steps did

    def initiated(self, transfer: dict[str, Any], sender: str, receiver: str, name: str) -> None:
        """A step started this transfer (known from the API's answer, before any event line
        of it is read)."""
        with self._lock:
            self._initiated.append((str(transfer.get("id")), sender, receiver, name))

    def sources_of(self, node: str, fid: str) -> list[str]:
        """The nodes a step sends the file to `node` from."""
        out = []
        for s in self.sc.steps:
            if s.do == "push" and node in s.params["to"] and fid in s.params["files"]:
                out.append(s.params["from"])
            pulled = s.do == "pull" and node in s.params["by"]
            if pulled and (s.params["files"] == ("*",) or fid in s.params["files"]):
                out.append(s.params["from"])
        return list(dict.fromkeys(out))

    # -- triggers (lab.timeline.TriggerFacts)

    def step_done(self, step_id: str) -> bool:
        return step_id in self.steps_done

    def discovered(self) -> bool:
        if not self._discovered:
            seen = self.seen_pairs()
            self._discovered = all(p in seen for p in self.sc.discovery_pairs())
        return self._discovered

    def event_seen(self, spec: EventSpec) -> bool:
        ids = dict(self.nodes.node_ids)
        return all(any(spec.matches(e, ids) for e in self.events(n)) for n in spec.nodes)

    # -- the nodes' events

    def events(self, name: str) -> list[Event]:
        return self.tail.events(name)

    def peer_name(self, ev: Event) -> str:
        return self.nodes.peer_name(ev)

    def seen_pairs(self, *, last: bool = False) -> dict[tuple[str, str], Event]:
        """First (or last) peer_up of each (observer, peer) by node name."""
        seen: dict[tuple[str, str], Event] = {}
        names = {n.name for n in self.sc.mole_nodes}
        for node in names:
            for ev in self.events(node):
                if ev.get("event") != "peer_up":
                    continue
                peer = self.peer_name(ev)
                if peer in names and (last or (node, peer) not in seen):
                    seen[(node, peer)] = ev
        return seen

    def listened(self) -> dict[str, float]:
        """When each node first said `listening` (its own clock, ts)."""
        out: dict[str, float] = {}
        for n in self.sc.mole_nodes:
            for ev in self.events(n.name):
                if ev.get("event") == "listening" and isinstance(ev.get("ts"), (int, float)):
                    out.setdefault(n.name, float(ev["ts"]))
        return out

    def in_flight(self, node: str, fid: str) -> str | None:
        """A transfer of the file towards `node` that has not ended yet, while both ends run;
        None if there is none. One a step started is under way until either end logs its end
        (the lines may not have been read yet when the step returns); any other one (e.g.
        --auto-fetch) while the latest account of its two ends is a start (latest_account)."""
        running = self.nodes.running
        if node not in running:
            return None
        name = self.sc.file(fid).name
        ends: dict[str, tuple[list[Event], list[Event]]] = {}  # id -> (receiver's, sender's)
        senders: dict[str, str] = {}  # id -> the other end
        for n in [d.name for d in self.sc.mole_nodes if d.name in running]:
            for ev in self.events(n):
                if ev.get("event") not in EVENT_RANK or ev.get("name") != name:
                    continue
                tid = str(ev.get("id"))
                if n == node and ev.get("role") == "receive":
                    ends.setdefault(tid, ([], []))[0].append(ev)
                    senders[tid] = self.peer_name(ev)
                elif ev.get("role") == "send" and self.peer_name(ev) == node:
                    ends.setdefault(tid, ([], []))[1].append(ev)
                    senders[tid] = n
        with self._lock:
            initiated = list(self._initiated)
        for tid, sender, receiver, what in initiated:
            if receiver == node and what == name and tid not in ends:
                # Started by a step, no line of it read yet.
                started: Event = {"event": "transfer_started", "id": tid, "name": name}
                ends[tid] = ([], [started])
                senders[tid] = sender
        for tid, (received, sent) in ends.items():
            if senders.get(tid) not in running:
                continue  # the other end is stopped: it delivers nothing now
            last = latest_account(received, sent)
            if last["event"] == "transfer_started":
                return f"transfer {tid} of {name} to {node}: {brief(last)}"
        return None

    def done_event(self, node: str, fid: str) -> Event | None:
        """The receiver's last transfer_done for the file that really carried it (not a
        dedupe): by its SHA-256 when the event has one (several files may share the name)."""
        decl = self.sc.file(fid)
        want = self.inboxes.expected_sha[fid]
        for ev in reversed(self.events(node)):
            if (
                ev.get("event") == "transfer_done"
                and ev.get("name") == decl.name
                and ev.get("role") == "receive"
                and not ev.get("skipped")
                and ev.get("sha256") in (None, want)
            ):
                return ev
        return None

    def transfer_hint(self, node: str, fid: str) -> str:
        """`; last: <the node's last event about the file>`, for a message."""
        name = self.sc.file(fid).name
        last = [
            e
            for e in self.events(node)
            if e.get("name") == name and e.get("event", "").startswith("transfer_")
        ]
        if not last:
            return f"; {node} logged no transfer of {name}"
        return f"; last: {brief(last[-1])}"
