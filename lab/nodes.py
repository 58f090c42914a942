"""The run's node containers: made from the scenario's nodes (static peers, routers, tmpfs),
created in waves, started, routed, and ready once they say `listening`; and what the run asks
of them (an API client, their status, a diagnosis for a failure report)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab import hostile, wan
from lab.faults import clock
from lab.files import place_file
from lab.nodeapi import ExecNodeApi, NodeApi
from lab.nodespec import GROUP_SECRET_FILE, TCP_PORT, NodeSpec
from lab.results import abbrev
from lab.scenario import NodeDecl, Scenario, route_for
from lab.tail import Event, EventTail, brief
from lab.trees import Tree, place_tree
from lab.verbs import StepError
from lab.waits import wait_until
from node.addr import hostport

READY_TIMEOUT = 30.0  # per start batch: container start -> its `listening` event
# More nodes booting at once share the same cores (a node's start costs ~0.4 CPU-seconds:
# imports, its key and certificate): the batch's deadline grows with its size.
READY_PER_NODE = 0.6
LOG_TAIL = 25
EVENTS_TAIL = 8
MAX_TAILS = 6  # nodes whose log tails go into a failure report


class NodeDied(Exception):
    pass


def tmpfs_options(value: str) -> str:
    """`64m` (a size, as scenarios write it) -> `size=64m`; full option strings pass through."""
    return value if "=" in value else f"size={value}"


class Nodes:
    """The containers of the scenario's nodes, and which of them run."""

    def __init__(
        self,
        sc: Scenario,
        cluster: Any,
        tail: EventTail,
        *,
        say: Callable[[str], None],
        remaining: Callable[[], float],
    ) -> None:
        self.sc = sc
        self.cluster = cluster
        self.tail = tail
        self.trees: dict[str, Tree] = {}  # lab.trees: generated before the nodes are made
        self.files: Mapping[str, Path] = {}  # file id -> the generated file (create_all)
        self.say = say
        self.remaining = remaining
        self.lock = threading.RLock()
        self.handles: dict[str, Any] = {}
        self.running: set[str] = set()
        self.node_ids: dict[str, str] = {}  # node id -> name
        self.past_ips: dict[str, set[tuple[str, str]]] = {}  # node -> every (network, ip) it had

    # -- creating and starting

    def create_all(self, files: Mapping[str, Path]) -> None:
        """Create every node (files placed in its share) and start those that start now.

        Nodes with a routed static peer reach it by IP, known only once the peer runs: they
        are created in a second wave.
        """
        routed = {n for n in self.sc.nodes if self._routed_peers(n)}
        wave1 = [n for n in self.sc.nodes if n not in routed]
        wave2 = [n for n in self.sc.nodes if n in routed]
        self.files = files
        # Nodes whose args name another container's address ({ip:NAME}) wait for NAME's start:
        # each of these waves holds those whose every NAME is running by then.
        for wave in (*wan.ip_waves(wave1), wave2):
            if wave:
                since = time.time()
                self._create(wave)
                self.after_start([n.name for n in wave if n.start], since=since)

    def _create(self, decls: list[NodeDecl]) -> None:
        """Create the nodes, each container started (if it starts now) as soon as it is made
        and its data dir filled: the engine's one-at-a-time starts then overlap the creates
        and the files, instead of following them."""
        for n in decls:
            if n.runs_node:
                self.tail.watch(n.name)
            elif n.hostile:
                self.node_ids[hostile.node_id(n.name)] = n.name
        if not self.tail.started:
            self.tail.start()
        specs = [dataclasses.replace(self._spec(n), start=n.start) for n in decls]
        self.handles.update(self.cluster.create_nodes(specs, self._fill))

    def _fill(self, handle: Any) -> None:
        """What a node's data dir holds before it starts: its files, trees, service files."""
        n = self.sc.node(handle.name)
        share = Path(handle.data_dir) / "share"
        for f in self.sc.files:
            if n.name in f.on:
                place_file(self.files[f.id], share / f.name)
        for t in self.sc.trees:
            if n.name in t.on:
                place_tree(self.trees[t.id], share)
        if n.service is not None:
            wan.prepare_service(n, self.sc, Path(handle.data_dir), self.cluster.group_secret)

    def _routed_peers(self, n: NodeDecl) -> list[str]:
        return [r.b for r in self.sc.routes() if r.a == n.name]

    def _spec(self, n: NodeDecl) -> NodeSpec:
        tmpfs = {k: tmpfs_options(v) for k, v in n.tmpfs}
        if n.service is not None:
            return wan.service_spec(n, tmpfs, self.handles)
        if n.hostile:  # no node: the lab's attacker (lab.hostile), against its target only
            return NodeSpec(
                name=n.name,
                networks=list(n.networks),
                entrypoint=["python3"],
                command=hostile.command(n),
                start=False,
                env=dict(n.env),
            )
        if n.router:  # no node: it only forwards packets between its networks
            return NodeSpec(
                name=n.name,
                networks=list(n.networks),
                entrypoint=["sleep"],
                command=["infinity"],
                start=False,
                env=dict(n.env),
                tmpfs=tmpfs,
            )
        args: list[str] = []
        for g in n.groups:
            # A scenario's group gets the run's secret too (its name makes it another key).
            args += ["--group", f"{g}:@/data/{GROUP_SECRET_FILE}"]
        for p in n.peers:
            # A shared network: Docker's DNS answers with the right address; else its IP.
            routed = route_for(self.sc.nodes, n.name, p) is not None
            host = self._ip_towards(p, n) if routed else p
            args += ["--peer", hostport(host, TCP_PORT)]  # [v6]:port for an IPv6 address
        args += wan.expand_ips(n.args, self.handles)
        return NodeSpec(
            name=n.name,
            networks=list(n.networks),
            args=args,
            env=dict(n.env),
            tmpfs=tmpfs,
            start=False,
            # Only where a step skews a clock: the preload is no cost worth taking elsewhere.
            entrypoint=clock.node_entrypoint() if "skew" in self.sc.fault_verbs else None,
        )

    def _ip_towards(self, name: str, other: NodeDecl) -> str:
        r = route_for(self.sc.nodes, other.name, name)
        assert r is not None
        ip = self.handles[name].ips.get(r.net_b, "")
        if not ip:
            raise StepError(f"node {name} has no address on {r.net_b} (not running?)", [name])
        return str(ip)

    def after_start(
        self, names: list[str], *, start: bool = False, since: float | None = None
    ) -> None:
        """Start (if asked) the containers concurrently, add routes, wait until every node is
        listening. `since`: wall-clock time before the containers were (re)started; a node is
        ready once its output has a `listening` event from then on."""
        if not names:
            return
        since = time.time() if since is None else since
        if start:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="mole-lab-start") as pool:
                list(pool.map(self.cluster.start, names))
        with self.lock:
            self.running.update(names)
            for n in names:  # a restarted container may get new addresses: keep the old ones
                for net, ip in self.handles[n].ips.items():
                    self.past_ips.setdefault(n, set()).add((net, ip))
        self._apply_routes(names)
        with self.lock:
            running = set(self.running)
        wan.apply_nat(self.sc, self.handles, running, names, self.cluster.exec)
        mole = [n for n in names if self.sc.node(n).runs_node]
        timeout = min(max(READY_TIMEOUT, READY_PER_NODE * len(mole)), self.remaining())
        self._wait_ready(mole, timeout, since)
        self.say(f"ready: {', '.join(abbrev(names))}")

    def _listening(self, name: str, since: float) -> bool:
        """The node's output has a `listening` event stamped `since` or later."""
        for e in reversed(self.tail.events(name)):
            if e.get("event") == "listening" and float(e.get("ts") or 0) >= since:
                if isinstance(e.get("node"), str):
                    with self.lock:
                        self.node_ids[e["node"]] = name
                return True
        return False

    def _wait_ready(self, names: list[str], timeout: float, since: float) -> None:
        """Until every node's output has a `listening` event stamped `since` or later.

        The node emits it once its transfer and API sockets listen, and the event tail already
        reads every node's output: no HTTP poll per node (fifty of them, each answered late by
        a node booting on cores the others and the engine keep busy), one waiting thread for
        all, and a container that died is noticed within a second (one engine call for all).
        """
        pending = set(names)
        last_look = [time.monotonic()]

        def ready() -> bool:
            pending.difference_update([n for n in pending if self._listening(n, since)])
            if pending and time.monotonic() - last_look[0] > 1.0:
                last_look[0] = time.monotonic()
                statuses = self.statuses(sorted(pending))
                dead = [n for n in sorted(pending) if statuses[n] in ("exited", "dead")]
                if dead:
                    raise NodeDied(
                        f"node {dead[0]}: container {statuses[dead[0]]} before it was "
                        "listening\n" + self.diagnose(dead)
                    )
            return not pending

        wait_until(
            ready,
            timeout=timeout,
            what=f"{len(names)} nodes to be listening (their `listening` event)",
            diagnose=lambda: (
                f"not listening yet: {', '.join(abbrev(sorted(pending)))}\n"
                + self.diagnose(sorted(pending))
            ),
        )

    def _apply_routes(self, started: Iterable[str]) -> None:
        started = set(started)
        for r in self.sc.routes():
            if not {r.a, r.b, r.via} & started:
                continue
            if not {r.a, r.b, r.via} <= self.running:
                continue
            for node, other, net_here, net_there in (
                (r.a, r.b, r.net_a, r.net_b),
                (r.b, r.a, r.net_b, r.net_a),
            ):
                gw = self.handles[r.via].ips.get(net_here, "")
                other_ip = self.handles[other].ips.get(net_there, "")
                if not gw or not other_ip:
                    raise StepError(
                        f"route {node} -> {other} via {r.via}: addresses unknown", [node, r.via]
                    )
                subnet = str(ipaddress.ip_interface(f"{other_ip}/24").network)
                cmd = ["ip", "route", "replace", subnet, "via", gw]
                code, out = self.cluster.exec(node, cmd)
                if code != 0:
                    raise StepError(
                        f"node {node}: `{' '.join(cmd)}` exited {code}: {out.strip()}", [node]
                    )

    # -- stopping

    def stop(self, names: list[str], timeout: float) -> None:
        """`docker stop` (SIGTERM, then SIGKILL after timeout), concurrently."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda n: self.cluster.stop(n, timeout=timeout), names))
        self.mark_down(names)

    def mark_down(self, names: Iterable[str]) -> None:
        """These nodes no longer run: nothing is asked of them until they start again."""
        with self.lock:
            self.running.difference_update(names)

    # -- asking them

    def api(self, name: str, timeout: float = 5.0) -> NodeApi:
        h = self.handles[name]
        if not h.api_url:
            raise StepError(f"node {name} has no address (is it running?)", [name])
        if h.api_exec:
            run = functools.partial(self.cluster.exec, name)
            return ExecNodeApi(run, h.token, timeout=timeout, where=f"node {name}'s container")
        return NodeApi(h.api_url, h.token, timeout=timeout)

    def status(self, name: str) -> str:
        try:
            return str(self.cluster.status(name))
        except Exception as e:
            return f"unknown ({type(e).__name__}: {e})"

    def statuses(self, names: list[str]) -> dict[str, str]:
        """status() of each, in one engine call where the cluster has one."""
        try:
            known = dict(self.cluster.statuses())
        except Exception:  # a cluster without statuses() (tests), or the call failed
            known = {}
        return {n: known[n] if n in known else self.status(n) for n in names}

    def peer_name(self, ev: Event) -> str:
        """The node an event is about: its node id's name, else `peer_name` (what the peer
        announced: a hostile peer may claim another's name with its own key, and must not pass
        for that node in the lab's checks; scenarios/hostile-impostor.yaml)."""
        by_id = self.node_ids.get(str(ev.get("peer")))
        return str(by_id or ev.get("peer_name") or ev.get("peer"))

    def diagnose(self, names: Iterable[str]) -> str:
        """Container status, last events and log tail of each node (for timeouts)."""
        out = []
        for n in list(dict.fromkeys(names))[:MAX_TAILS]:
            if n not in self.handles:
                continue
            with contextlib.suppress(Exception):
                self.tail.poll(n)
            evs = self.tail.events(n)[-EVENTS_TAIL:]
            text = self.tail.text(n)
            out.append(f"--- node {n}: container {self.status(n)} ---")
            if evs:
                out.append("last events:")
                out += [f"  {brief(e)}" for e in evs]
            tail = "\n".join(text.splitlines()[-LOG_TAIL:])
            out.append("log tail:" + ("\n" + tail if tail else " (empty)"))
        return "\n".join(out)
