"""The scenario parser's vocabulary: how a written value is checked, and how a problem is told
with its key path (`<file>: steps[3].rate: what is wrong`); node, group and file references.

`Checks` is also the lab.params `Where` of the parser: a verb's typed parameters report here.
`Context` adds what steps and expectations refer to (nodes, groups, files), once those parts
of the document are known.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from lab.scenario import (
    NAME_RE,
    FileDecl,
    NodeDecl,
    ScenarioError,
    file_name_problem,
    type_name,
)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Checks:
    """Primitive checks of written values; every failure names the file and the key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {path or '<top>'}: {message}")

    def missing(self, path: str, example: str) -> ScenarioError:
        return self.fail(path, "is required" + (f" (e.g. {example})" if example else ""))

    def unknown(self, path: str, keys: Sequence[str], allowed: Sequence[str]) -> ScenarioError:
        listed = ", ".join(allowed) or "none"
        return self.fail(join(path, keys[0]), f"unknown key (allowed: {listed})")

    def mapping(
        self, v: object, path: str, keys: Iterable[str], required: Iterable[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(path, f"must be a mapping, not {type_name(v)}")
        allowed = set(keys)
        for k in v:
            if not isinstance(k, str):
                raise self.fail(path, f"key {k!r} must be a string")
            if k not in allowed:
                raise self.unknown(path, [k], sorted(allowed))
        for k in required:
            if k not in v:
                raise self.fail(join(path, k), "is required")
        return v

    def list_of(self, v: object, path: str, *, allow_single: bool = False) -> list[Any]:
        if allow_single and isinstance(v, str):
            return [v]
        if not isinstance(v, list):
            raise self.fail(path, f"must be a list, not {type_name(v)}")
        return v

    def string(self, v: object, path: str) -> str:
        if not isinstance(v, str) or not v:
            raise self.fail(path, f"must be a non-empty string, not {type_name(v)}")
        return v

    def name(self, v: object, path: str, kind: str = "name") -> str:
        s = self.string(v, path)
        if not NAME_RE.match(s):
            raise self.fail(
                path, f"bad {kind} {s!r}: use letters, digits, '_', '.', '-' (at most 48)"
            )
        return s

    def number(self, v: object, path: str, *, positive: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(path, f"must be a number of seconds, not {type_name(v)}")
        if v < 0 or (positive and v == 0):
            raise self.fail(path, f"must be {'> 0' if positive else '>= 0'}, not {v}")
        return float(v)

    def boolean(self, v: object, path: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(path, f"must be true or false, not {type_name(v)}")
        return v

    def integer(self, v: object, path: str, lo: int, hi: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(path, f"must be an integer, not {type_name(v)}")
        if not lo <= v <= hi:
            raise self.fail(path, f"must be between {lo} and {hi}, not {v}")
        return v

    def fraction(self, v: object, path: str) -> float:
        """`60%` or a number in (0, 1] (0.6) -> 0.6."""
        if isinstance(v, str) and v.strip().endswith("%"):
            try:
                f = float(v.strip()[:-1]) / 100
            except ValueError:
                raise self.fail(path, f"bad percentage {v!r}: want e.g. 60%") from None
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            f = float(v)
        else:
            raise self.fail(path, f"want a percentage like 60% or a fraction like 0.6, not {v!r}")
        if not 0 < f <= 1:
            raise self.fail(path, f"{v!r} is not in (0%, 100%]")
        return f

    def str_map(
        self, v: object, path: str, *, abs_keys: bool = False
    ) -> tuple[tuple[str, str], ...]:
        if not isinstance(v, dict):
            raise self.fail(path, f"must be a mapping, not {type_name(v)}")
        out = []
        for k, val in v.items():
            if not isinstance(k, str) or not k:
                raise self.fail(path, f"key {k!r} must be a string")
            if abs_keys and not k.startswith("/"):
                raise self.fail(join(path, k), "must be an absolute path in the container")
            if isinstance(val, bool) or not isinstance(val, (str, int)):
                raise self.fail(join(path, k), f"must be a string, not {type_name(val)}")
            out.append((k, str(val)))
        return tuple(out)

    def file_name(self, v: object, path: str) -> str:
        name = unicodedata.normalize("NFC", self.string(v, path))
        problem = file_name_problem(name)
        if problem:
            raise self.fail(path, f"bad file name {name!r}: it {problem}")
        return name


class Refs:
    """Resolves node and group names written in files, steps and expectations."""

    def __init__(
        self, checks: Checks, nodes: tuple[NodeDecl, ...], groups: dict[str, tuple[str, ...]]
    ) -> None:
        self.p = checks
        self.nodes = nodes
        self.by_name = {n.name: n for n in nodes}
        self.groups = groups
        self.networks = {net for n in nodes for net in n.networks}
        # Hostile peers may be named only as the other end of a failure (lab.hostile).
        self.hostile_ok = False

    def _named(self, n: NodeDecl) -> bool:
        return n.runs_node or (self.hostile_ok and bool(n.hostile))

    def resolve(self, ref: object, path: str, *, kind: str = "node or group") -> tuple[str, ...]:
        name = self.p.string(ref, path)
        if kind in ("node", "node or group") and name in self.by_name:
            if self.by_name[name].router:
                raise self.p.fail(path, f"{name!r} is a router, it runs no node")
            if not self._named(self.by_name[name]):
                raise self.p.fail(
                    path,
                    f"{name!r} is a hostile peer: only failures and the `peer` of an event may "
                    "name it",
                )
            return (name,)
        if kind in ("group", "node or group") and name in self.groups:
            return tuple(n for n in self.groups[name] if self._named(self.by_name[n]))
        raise self.p.fail(path, f"unknown {kind} {name!r}{self.hint(name, kind)}")

    def hint(self, name: str, kind: str) -> str:
        if kind == "node" and name in self.groups:
            return " (it is a group: use `group:`)"
        if kind == "group" and name in self.by_name:
            return " (it is a node: use `node:`)"
        known = sorted(self.groups) + [n for n in self.by_name if self.by_name[n].runs_node]
        return f" (known: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''})"

    def nodes_of(self, v: object, path: str, *, allow_single: bool) -> tuple[str, ...]:
        items = self.p.list_of(v, path, allow_single=allow_single)
        if not items:
            raise self.p.fail(path, "needs at least one node or group")
        out: list[str] = []
        for j, ref in enumerate(items):
            q = path if isinstance(v, str) else f"{path}[{j}]"
            for n in self.resolve(ref, q):
                if n not in out:
                    out.append(n)
        return tuple(out)

    def one_node(self, v: object, path: str) -> str:
        return self.resolve(v, path, kind="node")[0]

    def node_or_group(self, m: dict[str, Any], path: str) -> tuple[str, ...]:
        """Exactly one of `node` and `group` in m: its node names."""
        if ("node" in m) == ("group" in m):
            raise self.p.fail(path, "needs exactly one of `node` or `group`")
        key = "node" if "node" in m else "group"
        return self.nodes_of(m[key], join(path, key), allow_single=True)

    def check_tree(self, v: object, path: str, *, network: bool) -> None:
        """Every string in a (nested) list is a known node/group (or network) name."""
        if isinstance(v, str):
            if network:
                if v not in self.networks:
                    raise self.p.fail(path, f"unknown network {v!r}")
            else:
                self.resolve(v, path)
        elif isinstance(v, list):
            for j, x in enumerate(v):
                self.check_tree(x, f"{path}[{j}]", network=network)
        else:
            raise self.p.fail(path, f"must be a name or a list of names, not {type_name(v)}")


class Context(Checks):
    """What a step or an expectation is checked against: the nodes, groups and files declared
    before it. It is the `Where` that verbs' typed parameters report to."""

    def __init__(self, source: str, refs: Refs, files: tuple[FileDecl, ...]) -> None:
        super().__init__(source)
        self.refs = refs
        self.files = files
        self.trees: tuple[Any, ...] = ()  # lab.trees.TreeDecl, once parsed

    def file_ids(self, v: object, p: str, *, star: bool) -> tuple[str, ...]:
        """File references (ids, or the name of a file declared once; `"*"` if `star`)."""
        if star and v == "*":
            return ("*",)
        names = self.list_of(v, p, allow_single=True)
        if not names:
            raise self.fail(p, "needs at least one file")
        known = {f.id for f in self.files}
        out = []
        for j, n in enumerate(names):
            q = p if isinstance(v, str) else f"{p}[{j}]"
            n = unicodedata.normalize("NFC", self.string(n, q))
            if n not in known:
                named = [f for f in self.files if f.name == n]
                if named:
                    ids = " or ".join(repr(f.id) for f in named)
                    raise self.fail(
                        q, f"{n!r} names {len(named)} files, refer to one by its id: {ids}"
                    )
                hint = ", ".join(sorted(known)) or "no `files` declared"
                raise self.fail(q, f"unknown file {n!r} (files: {hint})")
            out.append(n)
        return tuple(out)

    def held_elsewhere(self, ids: tuple[str, ...], node: str, p: str, verb: str) -> None:
        """A push (pull) of a file the sender (source) does not share goes by its name, from
        the inbox (share) of that node: when several files have that name, which one it holds
        under it is not known."""
        for j, fid in enumerate(ids):
            f = next(f for f in self.files if f.id == fid)
            same = [g for g in self.files if g.name == f.name]
            if node not in f.on and len(same) > 1:
                q = p if len(ids) == 1 else f"{p}[{j}]"
                where = "inbox" if verb == "push" else "share"
                raise self.fail(
                    q,
                    f"{node} does not share {fid!r} (on: {', '.join(f.on)}), and "
                    f"{len(same)} files are named {f.name!r}: which one {node}'s {where} "
                    "holds under that name is not known",
                )
