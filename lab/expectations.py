"""What must hold, one class per kind: `expect:` of a scenario, and what the lab always asks.

Each expectation is looked at every tick (`check(now, state) -> Verdict`: PENDING until it is
met or fails; it reports its own failure, with its key path), once more when the run ends
(`final(state)`, the containers still up) and after teardown (`after_teardown`), and adds
what it knows to the result's tables (`contribute(state, result)`: the rows lab.results
renders). A run ends when every step ran and every expectation is resolved.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Any

from lab.files import inbox_on_tmpfs
from lab.nodeapi import ApiError
from lab.results import DiscoveryRow, Result, TransferRow
from lab.scenario import (
    DiscoveryExpect,
    EventsExpect,
    FailureSpec,
    FileExpect,
    Scenario,
    StatsExpect,
    event_code,
)
from lab.state import RunState
from lab.tail import Event, brief
from lab.trees import tree_expectations
from lab.verbs import StepError

EVENT_GRACE = 5.0  # s an arrived file may wait for its transfer_done line to be read


class Verdict(Enum):
    PENDING = "pending"
    MET = "met"
    FAILED = "failed"


def _verdict(ok: bool | None) -> Verdict:
    return Verdict.PENDING if ok is None else Verdict.MET if ok else Verdict.FAILED


class Expectation:
    """One thing that must hold. The defaults: nothing to look at, nothing to add."""

    path = ""

    def check(self, now: float, state: RunState) -> Verdict:
        return Verdict.MET

    def final(self, state: RunState) -> None:
        """The end of the run: the last look, containers still up."""

    def after_teardown(self, state: RunState) -> None:
        """The containers are gone (and their processes with them)."""

    def contribute(self, state: RunState, result: Result) -> None:
        """What this adds to the matrix and the discovery grid."""


def expectations(sc: Scenario) -> list[Expectation]:
    """The scenario's expectations, in the order they are looked at (and report)."""
    files = [FileAbsent(fe) if fe.absent else FileArrives(fe) for fe in sc.expect.files]
    arrivals = [e for e in files if isinstance(e, FileArrives)]
    return [
        ContentIntact(),
        NoFailures(sc),
        *files,
        *tree_expectations(sc),
        InboxListing(arrivals),
        *(FailureHappens(spec) for spec in sc.expect.failures),
        *(EventsHappen(e) for e in sc.expect.events),
        *(StatsReach(e) for e in sc.expect.stats),
        Discovery(sc.expect.discovery),
    ]


# --------------------------------------------------------------------------- files


class _FileExpectation(Expectation):
    def __init__(self, fe: FileExpect) -> None:
        self.fe = fe
        self.path = fe.path
        self.ok: bool | None = None  # met / failed / not resolved

    def label(self, state: RunState) -> str:
        return state.sc.file(self.fe.file).label

    def involved(self, state: RunState) -> list[str]:
        return [self.fe.node, *state.sources_of(self.fe.node, self.fe.file)]

    def holds(self, state: RunState, as_name: str | None = None) -> bool | None:
        return state.inboxes.holds(self.fe.node, self.fe.file, as_name)


_PENDING = object()  # the receiver's transfer_done line has not been read yet


class FileArrives(_FileExpectation):
    """`files[i]`: the node's inbox holds the file (its SHA-256, checked by the lab), by
    `within`, under `as` if given; and it arrived as asked (resumed, resent_at_most, after,
    min_seconds)."""

    @property
    def extras(self) -> bool:
        fe = self.fe
        return (
            fe.resumed
            or fe.resent_at_most is not None
            or fe.after is not None
            or (fe.min_seconds is not None)
        )

    def check(self, now: float, state: RunState) -> Verdict:
        if self.ok is not None:
            return _verdict(self.ok)
        fe = self.fe
        assert state.t0 is not None
        limit = state.deadline if fe.within is None else state.t0 + fe.within
        ok = self.holds(state, fe.as_name)
        if ok and self.extras:
            problem = self.extras_problem(state)
            if problem is _PENDING:
                # The file is there; its transfer_done line may not have been read yet.
                if now <= limit + EVENT_GRACE:
                    return Verdict.PENDING
                problem = f"{fe.node} has {self.label(state)} but logged no transfer_done for it"
            if problem:
                self.ok = False
                state.fail(fe.path, str(problem), self.involved(state))
                return Verdict.FAILED
        if ok is not None:  # False: wrong bytes, which ContentIntact reports
            self.ok = ok
            if ok:
                at = state.inboxes.found_at.get((fe.node, fe.file))
                where = "" if at == state.sc.file(fe.file).name else f" as {at!r}"
                state.say(f"{fe.node} has {self.label(state)}{where} (sha256 ok{self.said()})")
            return _verdict(ok)
        if now <= limit:
            return Verdict.PENDING
        self.ok = False
        state.fail(
            fe.path,
            f"{fe.node} has no {self.label(state)}{self.elsewhere(state)} after "
            f"{state.since_t0(now):.1f} s"
            + (f" (within {fe.within:g} s)" if fe.within else "")
            + state.transfer_hint(fe.node, fe.file),
            self.involved(state),
        )
        return Verdict.FAILED

    def final(self, state: RunState) -> None:
        fe = self.fe
        if self.ok is None and self.holds(state, fe.as_name):
            problem = self.extras_problem(state) if self.extras else None
            if problem is _PENDING:
                problem = f"{fe.node} has {self.label(state)} but logged no transfer_done for it"
            self.ok = not problem
            if problem:
                state.fail(fe.path, str(problem), [fe.node])
        if self.ok is None and self.holds(state, fe.as_name) is None:
            self.ok = False
            took = state.since_t0(time.monotonic())
            state.fail(
                fe.path,
                f"{fe.node} has no {self.label(state)}{self.elsewhere(state)} at the end of the "
                f"run ({took:.1f} s)" + state.transfer_hint(fe.node, fe.file),
                self.involved(state),
            )

    def contribute(self, state: RunState, result: Result) -> None:
        """A row for a file expected here that no transfer line speaks of."""
        decl = state.sc.file(self.fe.file)
        unique = len(state.sc.files_named(decl.name)) == 1
        if any(
            r.dest == self.fe.node and r.file == decl.name and (unique or r.source in decl.on)
            for r in result.transfers
        ):
            return
        known = self.fe.node in state.nodes.handles
        ok = state.inboxes.verdict(self.fe.node, decl) if known else None
        result.transfers.append(
            TransferRow(
                source=(state.sources_of(self.fe.node, self.fe.file) or ["?"])[0],
                dest=self.fe.node,
                file=decl.name,
                size=decl.size,
                hash_ok=ok,
                state="done" if ok else "missing",
            )
        )

    def elsewhere(self, state: RunState) -> str:
        """` as 'x'` for a file expected under another inbox name than the one it has."""
        fe = self.fe
        if fe.as_name is None or not self.holds(state):
            return ""
        return f" as {fe.as_name!r} (it is there as {state.inboxes.found_at[(fe.node, fe.file)]!r})"

    def said(self) -> str:
        fe = self.fe
        bits = []
        if fe.resumed:
            bits.append("resumed")
        if fe.resent_at_most is not None:
            bits.append(f"re-sent <= {100 * fe.resent_at_most:g}%")
        if fe.after:
            bits.append(f"after {fe.after}")
        if fe.min_seconds is not None:
            bits.append(f"took >= {fe.min_seconds:g} s")
        return "".join(f", {b}" for b in bits)

    def extras_problem(self, state: RunState) -> str | object | None:
        """What is wrong with how the file arrived (resume, re-sent share, timing), None if
        nothing, _PENDING while the receiver's transfer_done has not been read."""
        fe = self.fe
        ev = state.done_event(fe.node, fe.file)
        if ev is None:
            return _PENDING
        size = int(ev.get("size") or state.sc.file(fe.file).size or 1)
        offset = int(ev.get("offset") or 0)
        if fe.resumed and offset <= 0:
            return (
                f"{fe.node} got {fe.file} without resuming: the completing attempt started at "
                f"offset 0 ({brief(ev)})"
            )
        carried = (size - offset) / size
        if fe.resent_at_most is not None and carried > fe.resent_at_most + 1e-9:
            return (
                f"{fe.node}: the completing attempt re-sent {100 * carried:.1f}% of {fe.file} "
                f"(resumed at byte {offset} of {size}), more than {100 * fe.resent_at_most:g}%"
            )
        if fe.after is not None:
            fired = state.steps_fired.get(fe.after)
            ts = float(ev.get("ts") or 0)
            if fired is None or ts < fired:
                t0 = state.t0_wall or ts
                when = "had not run yet" if fired is None else f"ran at {fired - t0:.2f} s"
                return (
                    f"{fe.node} got {fe.file} at {ts - t0:.2f} s, before step {fe.after} ran "
                    f"(it {when}): the fault did not hold the transfer back"
                )
        seconds = ev.get("seconds")
        if fe.min_seconds is not None and float(seconds or 0) < fe.min_seconds:
            return (
                f"{fe.node} received {fe.file} in {float(seconds or 0):.2f} s, less than "
                f"{fe.min_seconds:g} s: the fault did not slow it down"
            )
        return None


class FileAbsent(_FileExpectation):
    """`files[i]` with `absent: true`: no copy of the file in the node's inbox, ever. It fails
    the moment one is there; it is settled once its `within` window is over and no transfer of
    it towards the node is under way; looked at again at the end and after teardown."""

    def check(self, now: float, state: RunState) -> Verdict:
        if self.ok is False:
            return Verdict.FAILED
        if self.holds(state, self.fe.as_name):
            self.failed(state)
            return Verdict.FAILED
        assert state.t0 is not None
        if self.fe.within is not None and now < state.t0 + self.fe.within:
            return Verdict.PENDING
        return (
            Verdict.MET
            if state.in_flight(self.fe.node, self.fe.file) is None
            else (Verdict.PENDING)
        )

    def final(self, state: RunState) -> None:
        fe = self.fe
        if self.ok is False:
            return
        if self.holds(state, fe.as_name):
            self.failed(state)
            return
        flight = state.in_flight(fe.node, fe.file)
        if flight is not None:
            self.ok = False
            took = state.since_t0(time.monotonic())
            state.fail(
                fe.path + ".absent",
                f"{fe.node} has no {self.label(state)}, but a transfer of it was still under "
                f"way at the end of the run ({took:.1f} s), so whether it would stay away is "
                f"unknown: {flight}",
                self.involved(state),
            )

    def after_teardown(self, state: RunState) -> None:
        """A late arrival. Inboxes on a tmpfs are gone with their containers."""
        fe = self.fe
        if self.ok is False or fe.node not in state.nodes.handles:
            return
        if inbox_on_tmpfs(state.sc.node(fe.node)):
            return
        if self.holds(state, fe.as_name):
            self.failed(state, when=" once the run was over")

    def failed(self, state: RunState, when: str = "") -> None:
        fe = self.fe
        self.ok = False
        if not when:
            with contextlib.suppress(Exception):  # the event lines of its arrival, for the hint
                state.tail.poll(fe.node)
        at = state.inboxes.found_at.get((fe.node, fe.file))
        state.fail(
            fe.path + ".absent",
            f"{fe.node} has {self.label(state)} in its inbox{when} (as {at!r}), which it must "
            "not" + state.transfer_hint(fe.node, fe.file),
            self.involved(state),
        )


class InboxListing(Expectation):
    """Each running node's `GET /api/inbox` lists every expected file it holds, under the name
    and with the SHA-256 the lab found on disk (odd names must survive the API's JSON too). A
    node that does not answer (paused, going away) is left out."""

    def __init__(self, arrivals: list[FileArrives]) -> None:
        self.arrivals = arrivals

    def final(self, state: RunState) -> None:
        met: dict[str, list[tuple[FileExpect, str]]] = {}
        for a in self.arrivals:
            fe = a.fe
            at = state.inboxes.found_at.get((fe.node, fe.file))
            if a.ok and at and fe.node in state.nodes.running:
                met.setdefault(fe.node, []).append((fe, at))
        if not met:
            return

        def listing(node: str) -> dict[str, str] | None:
            try:
                api = state.nodes.api(node, 3)
                return {str(f.get("name")): str(f.get("sha256")) for f in api.inbox()}
            except (ApiError, OSError, ValueError, StepError) as e:
                state.say(f"{node}: GET /api/inbox not checked: {e}")
                return None

        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="mole-lab-inbox") as pool:
            listings = dict(zip(met, pool.map(listing, met), strict=True))
        for node, items in met.items():
            listed = listings[node]
            if listed is None:
                continue
            for fe, at in items:
                want = state.inboxes.expected_sha[fe.file]
                if listed.get(at) != want:
                    shown = ", ".join(repr(n) for n in sorted(listed)[:8]) or "nothing"
                    state.fail(
                        fe.path,
                        f"{node}'s GET /api/inbox does not list {at!r} with sha256 {want}, "
                        f"which its inbox holds (it lists {shown}"
                        + (f", sha256 {listed[at]}" if at in listed else "")
                        + ")",
                        [node],
                    )


class ContentIntact(Expectation):
    """Always: bytes under a name a scenario file arrives under are one of the files declared
    with that name (lab.files.Inboxes judges every look and reports `content`)."""

    def final(self, state: RunState) -> None:
        state.inboxes.sweep()  # files that arrived since the last tick


# --------------------------------------------------------------------------- failures


class NoFailures(Expectation):
    """`no_failures` (default true): no transfer_failed on any node, but those `allow_failures`
    or `failures` name (either end of the transfer)."""

    def __init__(self, sc: Scenario) -> None:
        self.exp = sc.expect
        self.path = "expect.no_failures"
        self.reported: set[tuple[str, int]] = set()

    def check(self, now: float, state: RunState) -> Verdict:
        self._scan(state)
        return Verdict.MET

    def final(self, state: RunState) -> None:
        self._scan(state)

    def _scan(self, state: RunState) -> None:
        exp = self.exp
        for node in [n.name for n in state.sc.mole_nodes if n.name in state.nodes.handles]:
            for k, ev in enumerate(state.events(node)):
                if ev.get("event") != "transfer_failed" or (node, k) in self.reported:
                    continue
                self.reported.add((node, k))
                err = ev.get("error") or {}
                code = event_code(ev)
                peer = state.peer_name(ev)
                specs = (*exp.allow_failures, *exp.failures)
                allowed = any(s.matches(node, code, peer) for s in specs)
                note = " (allowed)" if allowed else ""
                state.say(f"{node}: transfer {ev.get('name')} failed: {code}{note}")
                if exp.no_failures and not allowed:
                    state.fail(
                        self.path,
                        f"{node}: transfer {ev.get('id')} ({ev.get('direction')}, "
                        f"{ev.get('role')}) of {ev.get('name')} with {peer} failed: {code}: "
                        f"{err.get('reason') if isinstance(err, dict) else err}",
                        [node, peer],
                    )


class FailureHappens(Expectation):
    """`failures[i]`: a transfer_failed (or a receiver's transfer_refused) at either end that
    the spec names, by `within`."""

    def __init__(self, spec: FailureSpec) -> None:
        self.spec = spec
        self.path = spec.path
        self.ok: bool | None = None

    def happened(self, state: RunState) -> bool:
        for n in state.sc.mole_nodes:
            for ev in state.events(n.name):
                if ev.get("event") not in ("transfer_failed", "transfer_refused"):
                    continue
                if self.spec.matches(n.name, event_code(ev), state.peer_name(ev)):
                    return True
        return False

    def check(self, now: float, state: RunState) -> Verdict:
        if self.ok is not None:
            return _verdict(self.ok)
        spec = self.spec
        if self.happened(state):
            self.ok = True
            return Verdict.MET
        assert state.t0 is not None
        limit = state.deadline if spec.within is None else state.t0 + spec.within
        if now <= limit:
            return Verdict.PENDING
        self.ok = False
        state.fail(
            spec.path,
            f"expected a transfer failure on {spec.ref}"
            + (f" with code {spec.code}" if spec.code else "")
            + ", none happened",
            spec.nodes,
        )
        return Verdict.FAILED

    def final(self, state: RunState) -> None:
        if self.ok is None and not self.happened(state):
            self.ok = False
            state.fail(
                self.spec.path, f"expected a transfer failure on {self.spec.ref}, none happened"
            )


# --------------------------------------------------------------------------- events


class EventsHappen(Expectation):
    """`events[i]`: each node named emitted at least `at_least` matching events by `within`.
    A `connection_dropped` line counts the drops it stands for (1 + its `suppressed`: the node
    rate-limits these lines during a flood)."""

    def __init__(self, e: EventsExpect) -> None:
        self.e = e
        self.path = e.path
        self.ok: bool | None = None

    def counts(self, state: RunState) -> dict[str, int]:
        ids = dict(state.nodes.node_ids)
        out = {}
        for n in self.e.spec.nodes:
            total = 0
            for ev in state.events(n):
                if self.e.spec.matches(ev, ids):
                    extra = ev.get("suppressed") if ev.get("event") == "connection_dropped" else 0
                    total += 1 + (extra if isinstance(extra, int) and extra > 0 else 0)
            out[n] = total
        return out

    def _short(self, counts: dict[str, int]) -> list[str]:
        return [n for n, c in counts.items() if c < self.e.at_least]

    def check(self, now: float, state: RunState) -> Verdict:
        if self.ok is not None:
            return _verdict(self.ok)
        counts = self.counts(state)
        if not self._short(counts):
            self.ok = True
            return Verdict.MET
        assert state.t0 is not None
        limit = state.deadline if self.e.within is None else state.t0 + self.e.within
        if now <= limit:
            return Verdict.PENDING
        self._fail(state, counts)
        return Verdict.FAILED

    def final(self, state: RunState) -> None:
        if self.ok is None:
            counts = self.counts(state)
            if self._short(counts):
                self._fail(state, counts)
            else:
                self.ok = True

    def _fail(self, state: RunState, counts: dict[str, int]) -> None:
        self.ok = False
        short = self._short(counts)
        state.fail(
            self.path,
            f"expected at least {self.e.at_least} × {self.e.spec.describe()}; "
            + ", ".join(f"{n} had {counts[n]}" for n in short[:10]),
            short,
        )


# --------------------------------------------------------------------------- discovery


def pair_seconds(ev: Event | None, listened: dict[str, float], a: str, b: str) -> float | None:
    """Seconds from the later of the two `listening` events to a's peer_up for b."""
    if ev is None or a not in listened or b not in listened:
        return None
    ts = ev.get("ts")
    if not isinstance(ts, (int, float)):
        return None
    return round(max(0.0, float(ts) - max(listened[a], listened[b])), 6)


class StatsReach(Expectation):
    """`expect.stats[i]`: read from each node's GET /api/node at the end of the run."""

    def __init__(self, e: StatsExpect) -> None:
        self.e = e

    def final(self, state: RunState) -> None:
        e = self.e
        for node in e.nodes:
            try:
                value: Any = state.nodes.api(node, 3).node().get("stats", {})
            except (ApiError, OSError, ValueError, StepError) as exc:
                state.fail(e.path, f"{node}: GET /api/node failed: {exc}", [node])
                continue
            for part in e.key.split("."):
                value = value.get(part, 0) if isinstance(value, dict) else 0
            if not isinstance(value, int) or value < e.at_least:
                state.fail(
                    e.path, f"{node}: stats.{e.key} is {value!r}, expected >= {e.at_least}", [node]
                )


class Discovery(Expectation):
    """`discovery`: each `see` pair saw each other within `within` s of both listening, no
    `not_see` pair ever did. Without one, nothing is checked but the grid is still drawn (the
    pairs `after: discovered` waits for, and every pair seen)."""

    def __init__(self, d: DiscoveryExpect | None) -> None:
        self.d = d
        self.path = d.path if d is not None else "expect.discovery"
        self.forbidden_reported: set[tuple[str, str]] = set()

    def check(self, now: float, state: RunState) -> Verdict:
        d = self.d
        if d is None:
            return Verdict.MET
        seen = state.seen_pairs()
        listened = state.listened()
        wall = time.time()
        done = True
        for pair in d.not_see:
            if pair in seen and pair not in self.forbidden_reported:
                self.forbidden_reported.add(pair)
                ev = seen[pair]
                state.fail(
                    d.path + ".not_see",
                    f"{pair[0]} saw {pair[1]} (at {ev.get('addr')}), which it must not",
                    pair,
                )
            a, b = pair
            if a in listened and b in listened:
                if wall < max(listened[a], listened[b]) + d.within:
                    done = False  # keep watching for the whole window
            elif {a, b} <= state.nodes.running:
                done = False  # its `listening` event has not been read yet
        for pair in d.see:
            if pair in seen:
                continue
            a, b = pair
            if a in listened and b in listened:
                if wall <= max(listened[a], listened[b]) + d.within:
                    done = False
            elif now < state.deadline:
                done = False  # a node not started yet (a later step starts it)
        return Verdict.MET if done else Verdict.PENDING

    def final(self, state: RunState) -> None:
        d = self.d
        if d is None:
            return
        seen = state.seen_pairs()
        listened = state.listened()
        for a, b in d.see:
            if (a, b) not in seen:
                state.fail(d.path + ".see", f"{a} never saw {b}", [a, b])
                continue
            late = pair_seconds(seen[(a, b)], listened, a, b)
            if late is not None and late > d.within:
                state.fail(
                    d.path + ".see",
                    f"{a} saw {b} after {late:.2f} s, more than {d.within:g} s",
                    [a, b],
                )
        for a, b in d.not_see:
            if (a, b) in seen and (a, b) not in self.forbidden_reported:
                state.fail(d.path + ".not_see", f"{a} saw {b}, which it must not", [a, b])

    def contribute(self, state: RunState, result: Result) -> None:
        """The observer x peer grid: the pairs expected either way, then every pair seen."""
        d = self.d
        seen = state.seen_pairs()
        # The address is judged on the latest sighting: a peer heard over IPv6 first (its
        # link-local address) is reached over IPv4 as soon as that is heard (protocol.md 1.6).
        latest = state.seen_pairs(last=True)
        listened = state.listened()
        pairs: list[tuple[tuple[str, str], str]] = []
        if d is not None:
            pairs += [(p, "see") for p in d.see] + [(p, "not_see") for p in d.not_see]
            result.discovery_within = d.within
        else:
            pairs += [(p, "") for p in state.sc.discovery_pairs()]
        checked = len(pairs)
        # Pairs seen without being expected either way are drawn too (seen, not "not seen").
        listed = {p for p, _ in pairs}
        pairs += [(p, "") for p in sorted(seen) if p not in listed]
        rows = []
        for k, ((a, b), kind) in enumerate(pairs):
            ev = seen.get((a, b))
            rows.append(
                DiscoveryRow(
                    observer=a,
                    peer=b,
                    seconds=pair_seconds(ev, listened, a, b) if ev else None,
                    expected=kind,  # type: ignore[arg-type]
                    addr=latest[(a, b)].get("addr") if ev else None,
                    static=ev.get("static") if ev else None,
                )
            )
            if ev and kind != "not_see" and k < checked:
                self.check_addr(state, a, b, latest[(a, b)])
        result.discovery = rows

    def check_addr(self, state: RunState, observer: str, peer: str, ev: Event) -> None:
        """A peer must be seen at one of its own addresses, on a network the observer is on."""
        h = state.nodes.handles.get(peer)
        if h is None or not ev.get("addr"):
            return
        sc = state.sc
        shared = [n for n in sc.node(peer).networks if n in sc.node(observer).networks]
        had = state.nodes.past_ips.get(peer, set()) | set(h.ips.items())
        had |= {(net, ip) for net, ips in getattr(h, "ips6", {}).items() for ip in ips}
        allowed = {ip for net, ip in had if net in shared or not shared}
        # Behind a NAT router (lab/wan.py) a peer is seen at the router's address on the NAT
        # network: what its traffic is masqueraded to, and where its port is forwarded from.
        for r in sc.nodes:
            rh = state.nodes.handles.get(r.name)
            if r.nat and rh is not None and set(r.networks) & set(sc.node(peer).networks):
                allowed.add(rh.ips.get(r.nat, ""))
        # A link-local IPv6 address carries the observer's zone (`fe80::1%eth0`): not the peer's.
        if str(ev["addr"]).partition("%")[0] not in allowed:
            state.fail(
                "discovery.addr",
                f"{observer} saw {peer} at {ev['addr']}, expected "
                + (" or ".join(sorted(a for a in allowed if a)) or "?"),
                [observer, peer],
            )
