"""Parsing a scenario document: YAML data in, a validated Scenario out, or a ScenarioError
whose message names the file and the key path (`<file>: steps[3].rate: what is wrong`), so a
typo in a 40-line scenario is found without starting a single container.

The document is read in the order its parts refer to each other: networks, nodes (and their
groups, static peers and routes), files, then steps (their timing: lab.timeline; their verb's
parameters: lab.verbs) and expectations (lab.schema_expect).
"""

from __future__ import annotations

import zlib
from types import MappingProxyType
from typing import Any

from lab import hostile, swarmspec, verbs
from lab.checks import Checks, Context, Refs, join
from lab.dense import MAX_PER_CONTAINER
from lab.scenario import (
    MAX_COUNT,
    NAME_RE,
    FileDecl,
    NodeDecl,
    Scenario,
    Step,
    parse_size,
    route_for,
    type_name,
)
from lab.schema_expect import parse_expect
from lab.timeline import check_cycles, parse_trigger
from lab.trees import parse_trees

TOP_KEYS = (
    "name", "description", "timeout", "networks", "nodes", "files", "trees", "steps", "expect",
    "nodes_per_container", "ipv6", "swarm",
)  # fmt: skip
# Verbs acting on a node's container: with several nodes in one, they would hit them all.
DENSE_REFUSED_VERBS = frozenset({"kill", "stop", "start", "restart", "pause", "unpause"})


def parse(
    data: object, *, source: str = "<string>", text: str = "", default_name: str | None = None
) -> Scenario:
    """Validate a decoded YAML document into a Scenario (or raise ScenarioError)."""
    return Parser(source).scenario(data, text, default_name)


class Topology(Checks):
    """The networks, the nodes on them, their groups, static peers and routes."""

    def networks(self, v: object) -> tuple[str, ...]:
        items = self.list_of(v, "networks")
        if not items:
            raise self.fail("networks", "needs at least one network")
        out: list[str] = []
        for i, item in enumerate(items):
            n = self.name(item, f"networks[{i}]", "network name")
            if n in out:
                raise self.fail(f"networks[{i}]", f"duplicate network {n!r}")
            out.append(n)
        return tuple(out)

    def nodes(self, v: object, networks: tuple[str, ...]) -> tuple[NodeDecl, ...]:
        items = self.list_of(v, "nodes")
        if not items:
            raise self.fail("nodes", "needs at least one node")
        out: list[NodeDecl] = []
        where: dict[str, str] = {}
        keys = (
            "name",
            "group",
            "count",
            "groups",
            "networks",
            "peers",
            "start",
            "args",
            "tmpfs",
            "env",
            "router",
            "nat",
            "forward",
            "service",
            "hostile",
        )
        for i, item in enumerate(items):
            p = f"nodes[{i}]"
            m = self.mapping(item, p, keys)
            if ("name" in m) == ("group" in m):
                raise self.fail(p, "needs exactly one of `name` (one node) or `group` (+ count)")
            if "name" in m and "count" in m:
                raise self.fail(join(p, "count"), "only with `group`")
            if "group" in m:
                group = self.name(m["group"], join(p, "group"), "group name")
                if "count" not in m:
                    raise self.fail(join(p, "count"), "is required with `group`")
                count = self.integer(m["count"], join(p, "count"), 1, MAX_COUNT)
                names = [f"{group}{k}" for k in range(1, count + 1)]
                member_of: str | None = group
            else:
                names = [self.name(m["name"], join(p, "name"), "node name")]
                member_of = None
            nets = self.node_networks(m, p, networks)
            groups = [member_of] if member_of else []
            for j, g in enumerate(self.list_of(m.get("groups", []), join(p, "groups"))):
                g = self.name(g, f"{p}.groups[{j}]", "group name")
                if g not in groups:
                    groups.append(g)
            peers = tuple(
                self.name(x, f"{p}.peers[{j}]", "node name")
                for j, x in enumerate(self.list_of(m.get("peers", []), join(p, "peers")))
            )
            args = []
            for j, a in enumerate(self.list_of(m.get("args", []), join(p, "args"))):
                if isinstance(a, bool) or not isinstance(a, (str, int, float)):
                    raise self.fail(f"{p}.args[{j}]", f"must be a string, not {type_name(a)}")
                args.append(str(a))
            tmpfs = self.str_map(m.get("tmpfs", {}), join(p, "tmpfs"), abs_keys=True)
            env = self.str_map(m.get("env", {}), join(p, "env"))
            start = self.boolean(m.get("start", True), join(p, "start"))
            router = self.boolean(m.get("router", False), join(p, "router"))
            attack = hostile.parse(self, m["hostile"], join(p, "hostile")) if "hostile" in m else ()
            if attack:
                for k in ("groups", "peers", "args", "router", "tmpfs"):
                    if k in m:
                        raise self.fail(join(p, k), "a hostile node runs no mole node: not allowed")
            nat, forward, service = self.wan_keys(m, p, nets, router)
            if service is not None:
                router = True  # runs no node, as a router
            elif router:
                for k in ("groups", "peers", "args", "group"):
                    if k in m:
                        raise self.fail(join(p, k), "a router runs no node: not allowed")
                if len(nets) < 2:
                    raise self.fail(join(p, "networks"), "a router needs two or more networks")
            for n in names:
                if n in where:
                    raise self.fail(
                        join(p, "group" if member_of else "name"),
                        f"duplicate node name {n!r} (also {where[n]})",
                    )
                where[n] = p
                if n in peers:
                    raise self.fail(join(p, "peers"), f"node {n!r} cannot be its own peer")
                out.append(
                    NodeDecl(
                        name=n,
                        networks=nets,
                        groups=tuple(groups),
                        member_of=member_of,
                        peers=peers,
                        start=start,
                        args=tuple(args),
                        tmpfs=tmpfs,
                        env=env,
                        router=router,
                        nat=nat,
                        forward=forward,
                        service=service,
                        path=p,
                        hostile=attack,
                    )
                )
        by_name = {d.name: d for d in out}
        for d in out:
            f = by_name.get(d.forward or "")
            if d.forward is not None and (
                f is None or f.router or not set(f.networks) & set(d.networks) - {d.nat}
            ):
                raise self.fail(
                    join(d.path, "forward"),
                    f"{d.forward!r} is not a node on one of the router's site networks",
                )
        return tuple(out)

    def wan_keys(
        self, m: dict[str, Any], p: str, nets: tuple[str, ...], router: bool
    ) -> tuple[str | None, str | None, str | None]:
        """`nat`/`forward` (a router's NAT onto one of its networks, TCP 47101 forwarded to a
        node) and `service` (a container of lab/services.py instead of a node)."""
        nat = forward = service = None
        if "nat" in m:
            if not router:
                raise self.fail(join(p, "nat"), "only a router (`router: true`) does NAT")
            nat = self.name(m["nat"], join(p, "nat"), "network name")
            if nat not in nets:
                raise self.fail(join(p, "nat"), f"{nat!r} is not one of the router's networks")
        if "forward" in m:
            if nat is None:
                raise self.fail(join(p, "forward"), "needs `nat`")
            forward = self.name(m["forward"], join(p, "forward"), "node name")
        if "service" in m:
            from lab.services import SERVICES

            service = m["service"]
            if service not in SERVICES:
                raise self.fail(join(p, "service"), f"one of {', '.join(SERVICES)}")
            for k in ("groups", "peers", "group", "router"):
                if k in m:
                    raise self.fail(join(p, k), "a service runs no node: not allowed")
        return nat, forward, service

    def node_networks(
        self, m: dict[str, Any], p: str, networks: tuple[str, ...]
    ) -> tuple[str, ...]:
        if "networks" not in m:
            if len(networks) > 1:
                raise self.fail(
                    join(p, "networks"), "is required when the scenario has several networks"
                )
            return networks
        nets: list[str] = []
        items = self.list_of(m["networks"], join(p, "networks"), allow_single=True)
        if not items:
            raise self.fail(join(p, "networks"), "needs at least one network")
        for j, x in enumerate(items):
            q = f"{p}.networks[{j}]"
            n = self.string(x, q)
            if n not in networks:
                raise self.fail(q, f"unknown network {n!r} (networks: {', '.join(networks)})")
            if n in nets:
                raise self.fail(q, f"network {n!r} listed twice")
            nets.append(n)
        return tuple(nets)

    def groups(self, nodes: tuple[NodeDecl, ...]) -> dict[str, tuple[str, ...]]:
        names = {n.name: n.path for n in nodes}
        groups: dict[str, list[str]] = {}
        for n in nodes:
            for g in n.groups:
                if g in names:
                    raise self.fail(n.path, f"group {g!r} has the name of node {g!r} ({names[g]})")
                groups.setdefault(g, []).append(n.name)
        return {g: tuple(v) for g, v in groups.items()}

    def static_peers(self, nodes: tuple[NodeDecl, ...], groups: dict[str, tuple[str, ...]]) -> None:
        by_name = {n.name: n for n in nodes}
        routed: dict[str, list[str]] = {}
        for n in nodes:
            for j, peer in enumerate(n.peers):
                q = f"{n.path}.peers[{j}]"
                if peer not in by_name:
                    hint = " (a group: list its nodes)" if peer in groups else ""
                    raise self.fail(q, f"unknown node {peer!r}{hint}")
                if not by_name[peer].runs_node:
                    raise self.fail(q, f"{peer!r} runs no node (a router or a hostile peer)")
                try:
                    r = route_for(nodes, n.name, peer)
                except KeyError as e:
                    raise self.fail(
                        q,
                        f"{e.args[0]}: add a node on a network of each (e.g. `router: true`)",
                    ) from None
                if r is not None:
                    if not by_name[peer].start:
                        raise self.fail(
                            q,
                            f"{peer!r} shares no network with {n.name!r}, so it is reached "
                            "by IP, which is only known once it runs: it cannot be `start: "
                            "false`",
                        )
                    routed.setdefault(n.name, []).append(peer)
        # Nodes with routed peers are created after their peers run (to know their IPs).
        for a, peers in routed.items():
            for b in peers:
                if b in routed:
                    raise self.fail(
                        by_name[a].path,
                        f"routed static peers chain {a} -> {b} -> {routed[b][0]}: a node "
                        "reached through a router must not itself have routed peers; declare "
                        "the peer on one side only (the hello tells the other side)",
                    )


class Parser(Checks):
    """The whole document; the topology, files and steps here, expectations in schema_expect."""

    def scenario(self, data: object, text: str, default_name: str | None) -> Scenario:
        top = self.mapping(
            data,
            "",
            TOP_KEYS,
            required=("nodes",),
        )
        if "name" in top:
            name = self.name(top["name"], "name", "scenario name")
        elif default_name and NAME_RE.match(default_name):
            name = default_name
        else:
            raise self.fail("name", "is required (the file name is not a valid name)")
        desc = top.get("description", "")
        if not isinstance(desc, str):
            raise self.fail("description", f"must be a string, not {type_name(desc)}")
        timeout = self.number(top.get("timeout", 60), "timeout", positive=True)
        ipv6 = top.get("ipv6", False)
        if not isinstance(ipv6, bool):
            raise self.fail("ipv6", f"must be true or false, not {type_name(ipv6)}")

        topo = Topology(self.source)
        networks = topo.networks(top.get("networks", ["lan"]))
        nodes = topo.nodes(top["nodes"], networks)
        groups = topo.groups(nodes)
        topo.static_peers(nodes, groups)
        hostile.check_targets(self, nodes)
        self.refs = Refs(self, nodes, groups)
        files = self.files(top.get("files", []))
        ctx = Context(self.source, self.refs, files)
        ctx.trees = parse_trees(ctx, top.get("trees", []))
        steps = self.steps(top.get("steps", []), ctx)
        expect = parse_expect(top.get("expect", {}), ctx, [st.id for st in steps])
        dense = self.dense(top.get("nodes_per_container", 1), nodes, steps)
        names = {**{n.name: n for n in nodes}, **groups}
        swarm = swarmspec.parse(self, top["swarm"], networks, names) if "swarm" in top else None
        return Scenario(
            name=name,
            description=desc.strip(),
            timeout=timeout,
            networks=networks,
            ipv6=ipv6,
            nodes=nodes,
            files=files,
            steps=steps,
            expect=expect,
            groups=MappingProxyType(groups),
            source=self.source,
            text=text,
            nodes_per_container=dense,
            trees=ctx.trees,
            swarm=swarm,
        )

    def dense(self, v: object, nodes: tuple[NodeDecl, ...], steps: tuple[Step, ...]) -> int:
        """`nodes_per_container`, and what dense mode cannot keep the meaning of (lab.dense)."""
        p = "nodes_per_container"
        k = self.integer(v, p, 1, MAX_PER_CONTAINER)
        if k == 1:
            return k
        for st in steps:
            if st.do in ("skew", "unskew"):
                raise self.fail(
                    join(st.path, "do"),
                    f"`{st.do}` needs the node process started under libfaketime, which a "
                    "dense pod's nodes are not (nodes_per_container > 1; use 1)",
                )
            if st.do in DENSE_REFUSED_VERBS:
                raise self.fail(
                    join(st.path, "do"),
                    f"`{st.do}` acts on a container, which holds up to {k} nodes with "
                    f"nodes_per_container: {k} (use 1)",
                )
        for n in nodes:
            if n.peers:
                raise self.fail(
                    join(n.path, "peers"),
                    "static peers are reached by container name, which packed nodes lack "
                    "(nodes_per_container > 1)",
                )
            if n.hostile:
                raise self.fail(
                    join(n.path, "hostile"),
                    "a hostile peer reaches its target by container name, which packed nodes "
                    "lack (nodes_per_container > 1)",
                )
        return k

    def files(self, v: object) -> tuple[FileDecl, ...]:
        out: list[FileDecl] = []
        by_id: dict[str, str] = {}  # id -> path of its declaration
        by_name: dict[str, list[tuple[str, bool, tuple[str, ...]]]] = {}  # (path, has id, on)
        items = self.list_of(v, "files")
        for i, item in enumerate(items):
            p = f"files[{i}]"
            keys = ("id", "name", "size", "seed", "content", "on")
            m = self.mapping(item, p, keys, ("name", "on"))
            name = self.file_name(m["name"], join(p, "name"))
            fid = self.name(m["id"], join(p, "id"), "file id") if "id" in m else name
            for other, other_has_id, _ in by_name.get(name, []):
                if not ("id" in m and other_has_id):  # a reference by name: which one?
                    missing = p if "id" not in m else other
                    raise self.fail(
                        join(missing, "id"),
                        f"is required: {other} and {p} are both named {name!r}; give each "
                        "its own `id`, and refer to it by that id",
                    )
            if fid in by_id:
                if "id" in m:
                    raise self.fail(join(p, "id"), f"duplicate file id {fid!r} (also {by_id[fid]})")
                raise self.fail(
                    join(p, "name"),
                    f"{fid!r} is the id of {by_id[fid]}: an id must not be another file's name",
                )
            by_id[fid] = p
            if ("size" in m) == ("content" in m):
                raise self.fail(p, "needs exactly one of `size` (random bytes) or `content`")
            on = self.refs.nodes_of(m["on"], join(p, "on"), allow_single=True)
            for other, _, other_on in by_name.get(name, []):
                both = [n for n in on if n in other_on]
                if both:
                    raise self.fail(
                        join(p, "on"),
                        f"node {both[0]!r} would hold two files named {name!r} in its share "
                        f"(also {other})",
                    )
            by_name.setdefault(name, []).append((p, "id" in m, on))
            if "content" in m:
                if not isinstance(m["content"], str):
                    raise self.fail(
                        join(p, "content"), f"must be text, not {type_name(m['content'])}"
                    )
                if "seed" in m:
                    raise self.fail(join(p, "seed"), "only with `size`")
                data = m["content"].encode()
                out.append(FileDecl(name=name, size=len(data), on=on, content=data, path=p, id=fid))
                continue
            try:
                size = parse_size(m["size"])
            except ValueError as e:
                raise self.fail(join(p, "size"), str(e)) from None
            if "seed" in m:
                seed = self.integer(m["seed"], join(p, "seed"), 0, 2**63 - 1)
            else:
                seed = zlib.crc32(fid.encode())  # distinct files differ by default
            out.append(FileDecl(name=name, size=size, on=on, seed=seed, path=p, id=fid))
        for f in out:
            if f.id != f.name and f.id in by_name:
                raise self.fail(
                    join(f.path, "id"),
                    f"{f.id!r} is the name of {by_name[f.id][0][0]}: an id must not be another "
                    "file's name (a reference to it would be ambiguous)",
                )
        return tuple(out)

    # -- steps

    def steps(self, v: object, ctx: Context) -> tuple[Step, ...]:
        items = self.list_of(v, "steps")
        ids: dict[str, int] = {}
        for i, item in enumerate(items):
            if isinstance(item, dict) and "id" in item:
                sid = self.name(item["id"], f"steps[{i}].id", "step id")
                if sid == "discovered":
                    raise self.fail(f"steps[{i}].id", "'discovered' is reserved for `after`")
                if sid in ids:
                    raise self.fail(
                        f"steps[{i}].id", f"duplicate step id {sid!r} (also steps[{ids[sid]}])"
                    )
                ids[sid] = i
        known = verbs.registry()
        out = [self.step(item, i, ids, ctx, known) for i, item in enumerate(items)]
        check_cycles(out, ids, ctx)
        return tuple(out)

    def step(
        self, item: object, i: int, ids: dict[str, int], ctx: Context, known: dict[str, verbs.Verb]
    ) -> Step:
        p = f"steps[{i}]"
        if not isinstance(item, dict):
            raise self.fail(p, f"must be a mapping, not {type_name(item)}")
        if "do" not in item:
            raise self.fail(join(p, "do"), "is required")
        verb = known.get(item["do"]) if isinstance(item["do"], str) else None
        if verb is None:
            raise self.fail(
                join(p, "do"),
                f"unknown verb {item['do']!r} (verbs: {', '.join(sorted(known))})",
            )
        trigger = parse_trigger(item, p, ids, i, ctx)
        duration = None
        if "duration" in item:
            if not verb.fault:
                raise self.fail(join(p, "duration"), f"only for fault verbs, not {verb.name!r}")
            duration = self.number(item["duration"], join(p, "duration"), positive=True)
        written = {k: v for k, v in item.items() if k not in verbs.COMMON_KEYS}
        return Step(
            index=i,
            id=item.get("id") or f"#{i}",
            do=verb.name,
            trigger=trigger,
            params=MappingProxyType(verb.check(written, ctx, p)),
            duration=duration,
            path=p,
            fault=verb.fault,
        )
