"""Parsing `expect:`: what must hold at the end of a run (files present or absent, discovery,
failures), into the frozen specs of lab.scenario. lab.expectations checks them during a run.
"""

from __future__ import annotations

from collections.abc import Iterable

from lab.checks import Context, join
from lab.files import inbox_on_tmpfs
from lab.scenario import (
    DiscoveryExpect,
    EventsExpect,
    Expect,
    FailureSpec,
    FileExpect,
    StatsExpect,
    numbered_name,
)
from lab.timeline import parse_event_spec
from lab.trees import TreeExpect, tree_ref


def parse_expect(v: object, ctx: Context, step_ids: Iterable[str] = ()) -> Expect:
    """`expect:` of a document whose nodes, files and steps ctx knows."""
    parser = _ExpectParser(ctx.source, ctx.refs, ctx.files)
    parser.trees = ctx.trees
    return parser.expect(v, step_ids)


class _ExpectParser(Context):
    def tree_expects(self, v: object) -> tuple[TreeExpect, ...]:
        """`expect.trees`: every node of `node`/`group` holds the whole tree (lab.trees)."""
        out = []
        for i, item in enumerate(self.list_of(v, "expect.trees")):
            p = f"expect.trees[{i}]"
            e = self.mapping(item, p, ("node", "group", "tree", "within"), ("tree",))
            nodes = self.refs.node_or_group(e, p)
            tid = tree_ref(e["tree"], self, join(p, "tree"))
            for n in nodes:
                if inbox_on_tmpfs(self.refs.by_name[n]):
                    raise self.fail(p, f"{n}'s inbox is a tmpfs: trees are checked on the host")
            within = (
                self.number(e["within"], join(p, "within"), positive=True)
                if "within" in e
                else None
            )
            out.append(TreeExpect(tid, tuple(nodes), within))
        return tuple(out)

    def expect(self, v: object, step_ids: Iterable[str] = ()) -> Expect:
        files = self.files
        keys: tuple[str, ...] = ("files", "trees", "discovery", "no_failures", "allow_failures")
        keys += ("failures", "events", "stats")
        m = self.mapping(v if v is not None else {}, "expect", keys)
        fexp: list[FileExpect] = []
        said: dict[tuple[str, str], tuple[str, bool]] = {}  # (node, file id) -> (path, absent)
        for i, item in enumerate(self.list_of(m.get("files", []), "expect.files")):
            p = f"expect.files[{i}]"
            fkeys = ("node", "group", "file", "within", "resumed", "resent_at_most", "after")
            e = self.mapping(item, p, (*fkeys, "min_seconds", "absent", "as"), ("file",))
            nodes = self.refs.node_or_group(e, p)
            names = self.file_ids(e["file"], join(p, "file"), star=False)
            absent = self.boolean(e.get("absent", False), join(p, "absent"))
            if absent:
                for k in ("resumed", "resent_at_most", "after", "min_seconds"):
                    if k in e:
                        raise self.fail(
                            join(p, k), "only for a file that must arrive, not with `absent`"
                        )
            as_name = None
            if "as" in e:
                as_name = self.file_name(e["as"], join(p, "as"))
                if len(names) != 1:
                    raise self.fail(
                        join(p, "as"), f"is the inbox name of one file, not of {len(names)}"
                    )
                decl = next(f for f in files if f.id == names[0])
                same = sum(1 for f in files if f.name == decl.name)
                can = (decl.name, *(numbered_name(decl.name, k) for k in range(1, same)))
                if as_name not in can:
                    raise self.fail(
                        join(p, "as"),
                        f"{decl.id!r} cannot arrive as {as_name!r}: {same} "
                        f"file{'s are' if same > 1 else ' is'} named {decl.name!r}, so a node "
                        f"stores it as {' or '.join(repr(c) for c in can)}",
                    )
            within = (
                self.number(e["within"], join(p, "within"), positive=True)
                if "within" in e
                else None
            )
            resumed = self.boolean(e.get("resumed", False), join(p, "resumed"))
            resent = None
            if "resent_at_most" in e:
                resent = self.fraction(e["resent_at_most"], join(p, "resent_at_most"))
            after = None
            if "after" in e:
                after = self.string(e["after"], join(p, "after"))
                if after not in step_ids:
                    known = ", ".join(sorted(step_ids)) or "none have an `id`"
                    raise self.fail(join(p, "after"), f"no step with id {after!r} ({known})")
            min_s = None
            if "min_seconds" in e:
                min_s = self.number(e["min_seconds"], join(p, "min_seconds"), positive=True)
            for n in nodes:
                for f in names:
                    other = said.get((n, f))
                    if other is not None and other[1] != absent:
                        raise self.fail(
                            join(p, "absent"),
                            f"contradicts {other[0]}, where {n} must "
                            f"{'' if absent else 'not '}end with {f!r}",
                        )
                    said.setdefault((n, f), (p, absent))
                    fexp.append(
                        FileExpect(
                            node=n,
                            file=f,
                            within=within,
                            path=p,
                            resumed=resumed,
                            resent_at_most=resent,
                            after=after,
                            min_seconds=min_s,
                            absent=absent,
                            as_name=as_name,
                        )
                    )
        disc = self.discovery(m["discovery"]) if "discovery" in m else None
        no_failures = self.boolean(m.get("no_failures", True), "expect.no_failures")
        allow = self.failure_specs(
            m.get("allow_failures", []), "expect.allow_failures", within=False
        )
        must = self.failure_specs(m.get("failures", []), "expect.failures", within=True)
        return Expect(
            trees=self.tree_expects(m.get("trees", [])),
            files=tuple(fexp),
            discovery=disc,
            no_failures=no_failures,
            allow_failures=allow,
            failures=must,
            events=self.events(m.get("events", [])),
            stats=self.stats(m.get("stats", [])),
        )

    def events(self, v: object) -> tuple[EventsExpect, ...]:
        """`events: [{node: b, event: connection_dropped, code: too_slow, at_least: 10}]`: the
        event filters of a trigger (lab.timeline), a count and a deadline."""
        out = []
        for i, item in enumerate(self.list_of(v, "expect.events")):
            p = f"expect.events[{i}]"
            keys = ("event", "node", "group", "file", "peer", "code", "progress")
            m = self.mapping(item, p, (*keys, "at_least", "within"), ("event",))
            spec = parse_event_spec({k: m[k] for k in keys if k in m}, p, self)
            at_least = self.integer(m.get("at_least", 1), join(p, "at_least"), 1, 10**9)
            within = (
                self.number(m["within"], join(p, "within"), positive=True)
                if "within" in m
                else None
            )
            out.append(EventsExpect(spec=spec, at_least=at_least, within=within, path=p))
        return tuple(out)

    def stats(self, v: object) -> tuple[StatsExpect, ...]:
        """`stats: [{node: b, key: discovery.rate_limited, at_least: 100}]`."""
        out = []
        for i, item in enumerate(self.list_of(v, "expect.stats")):
            p = f"expect.stats[{i}]"
            m = self.mapping(item, p, ("node", "group", "key", "at_least"), ("key",))
            if ("node" in m) == ("group" in m):
                raise self.fail(p, "needs one of `node` or `group`")
            ref = "node" if "node" in m else "group"
            nodes = self.refs.nodes_of(m[ref], join(p, ref), allow_single=True)
            key = self.string(m["key"], join(p, "key"))
            at_least = self.integer(m.get("at_least", 1), join(p, "at_least"), 1, 10**12)
            out.append(StatsExpect(nodes=tuple(nodes), key=key, at_least=at_least, path=p))
        return tuple(out)

    def discovery(self, v: object) -> DiscoveryExpect:
        p = "expect.discovery"
        m = self.mapping(v, p, ("within", "see", "not_see"), ("within",))
        within = self.number(m["within"], join(p, "within"), positive=True)
        if m.get("see") == "all":
            names = [n.name for n in self.refs.nodes if n.runs_node]
            see = tuple((a, b) for a in names for b in names if a != b)
        else:
            see = self.pairs(m.get("see", []), join(p, "see"))
        not_see = self.pairs(m.get("not_see", []), join(p, "not_see"))
        clash = set(see) & set(not_see)
        if clash:
            a, b = sorted(clash)[0]
            raise self.fail(join(p, "not_see"), f"{a} -> {b} is also in `see`")
        return DiscoveryExpect(within=within, see=see, not_see=not_see, path=p)

    def pairs(self, v: object, p: str) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for i, item in enumerate(self.list_of(v, p)):
            q = f"{p}[{i}]"
            items = self.list_of(item, q)
            if len(items) != 2:
                raise self.fail(
                    q, f"a pair is [node or group, node or group], not {len(items)} items"
                )
            left = self.refs.nodes_of(items[0], f"{q}[0]", allow_single=True)
            right = self.refs.nodes_of(items[1], f"{q}[1]", allow_single=True)
            for a in left:
                for b in right:
                    if a == b:
                        continue
                    for pair in ((a, b), (b, a)):
                        if pair not in out:
                            out.append(pair)
            if not any(a != b for a in left for b in right):
                raise self.fail(q, "pairs a node only with itself")
        return tuple(out)

    def failure_specs(self, v: object, p: str, *, within: bool) -> tuple[FailureSpec, ...]:
        out = []
        keys = ("node", "group", "code", "within") if within else ("node", "group", "code")
        for i, item in enumerate(self.list_of(v, p)):
            q = f"{p}[{i}]"
            m = self.mapping(item, q, keys)
            self.refs.hostile_ok = True
            try:
                nodes = self.refs.node_or_group(m, q)
            finally:
                self.refs.hostile_ok = False
            ref = str(m.get("node", m.get("group")))
            code = self.string(m["code"], join(q, "code")) if "code" in m else None
            w = (
                self.number(m["within"], join(q, "within"), positive=True)
                if "within" in m
                else None
            )
            out.append(FailureSpec(ref=ref, nodes=nodes, code=code, within=w, path=q))
        return tuple(out)
