"""What a scenario says about Docker Swarm, free of the engine: its `swarm:` section (which
networks span the machines, where containers are placed) and what a scenario needs that the
swarm backend (lab/swarm.py) cannot give it.

    swarm:
      overlay: [wan]                       # attachable overlays: one network across machines
      place:                               # `docker service create --constraint`, by network,
        site-a: [node.labels.mole.site == a]   # node or group name
        site-b: [node.labels.mole.site == b]

Every other network is a swarm-scoped bridge: one bridge per machine, so broadcast discovery
stays on the machine it was sent on, as on a LAN (overlays carry no broadcast, moby#17814).
Without the section, or for a container no `place` entry names, the container runs on the
machine the lab runs on: a LAN split across machines would silently lose its broadcasts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lab.checks import Checks, join
from lab.scenario import NodeDecl, Scenario

KEYS = ("overlay", "place")
# `docker service create --constraint`: an attribute, == or !=, a value (docker's own syntax).
_CONSTRAINT_RE = re.compile(r"^\s*[A-Za-z0-9_.\-]+\s*(==|!=)\s*\S.*$")


@dataclass(frozen=True)
class SwarmDecl:
    overlay: tuple[str, ...] = ()  # networks that are attachable overlays
    place: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (network/node/group, constraints)

    def constraints(self, node: NodeDecl) -> tuple[str, ...]:
        """The node's constraints: those of its name, its groups and its networks, in that
        order, without repeats; () = none written (the lab's machine, lab.swarm)."""
        keys = (node.name, *node.groups, *node.networks)  # a count group's name is a group
        placed = dict(self.place)
        out: list[str] = []
        for k in keys:
            for c in placed.get(k, ()):
                if c not in out:
                    out.append(c)
        return tuple(out)

    def placed_networks(self, nodes: Iterable[NodeDecl]) -> set[str]:
        """Networks some node of which is placed by a written constraint: possibly on other
        machines, so the engine there picks the bridge's subnet (lab.swarm)."""
        return {net for n in nodes if self.constraints(n) for net in n.networks}


def parse(checks: Checks, v: object, networks: tuple[str, ...], names: Mapping[str, Any]) -> Any:
    """The `swarm:` section; `names`: node and group names (for `place` keys)."""
    m = checks.mapping(v, "swarm", KEYS)
    overlay = []
    for i, n in enumerate(checks.list_of(m.get("overlay", []), "swarm.overlay")):
        p = f"swarm.overlay[{i}]"
        n = checks.name(n, p, "network name")
        if n not in networks:
            raise checks.fail(p, f"unknown network {n!r} (networks: {', '.join(networks)})")
        overlay.append(n)
    place: list[tuple[str, tuple[str, ...]]] = []
    written = m.get("place", {})
    if not isinstance(written, dict):
        raise checks.fail("swarm.place", "must be a mapping of network, node or group names")
    for key, cons in written.items():
        p = join("swarm.place", str(key))
        if key not in networks and key not in names:
            raise checks.fail(p, "is no network, node or group of this scenario")
        out = []
        for j, c in enumerate(checks.list_of(cons, p, allow_single=True)):
            c = checks.string(c, f"{p}[{j}]")
            if not _CONSTRAINT_RE.match(c):
                raise checks.fail(
                    f"{p}[{j}]", f"{c!r} is no constraint: want e.g. node.labels.mole.site == a"
                )
            out.append(c)
        place.append((str(key), tuple(out)))
    return SwarmDecl(overlay=tuple(overlay), place=tuple(place))


def refusal(sc: Scenario) -> str | None:
    """Why the scenario cannot keep its meaning on the swarm backend; None when it can."""
    if sc.nodes_per_container > 1:
        return "dense mode (nodes_per_container > 1) runs on plain containers, not --swarm"
    if sc.ipv6:
        return "ipv6 networks are not made on --swarm (swarm-scoped bridges get IPv4 here)"
    for n in sc.nodes:
        # Docker's embedded DNS does not answer service names on swarm-scoped bridges.
        if n.peers:
            return f"node {n.name}: static peers are reached by name, which swarm bridges lack"
        if n.hostile:
            return f"node {n.name}: a hostile peer reaches its target by name (no DNS on --swarm)"
    return None


def declared(sc: Scenario) -> SwarmDecl:
    decl = getattr(sc, "swarm", None)
    return decl if isinstance(decl, SwarmDecl) else SwarmDecl()


def needs_net_admin(sc: Scenario) -> bool:
    """Some container must change its network (fault steps, routes, NAT): NET_ADMIN."""
    return any(s.is_fault for s in sc.steps) or bool(sc.routes()) or any(n.nat for n in sc.nodes)
