"""Scenario files: YAML in, frozen dataclasses out, every mistake refused before anything runs.

The whole language is documented in docs/scenarios.md. Errors read
`<file>: <key.path[3].like.this>: what is wrong`, so a typo in a 40-line scenario is found
without starting a single container.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

from node import units
from node.errors import BadName
from node.events import REGISTRY
from node.names import check_name, numbered

# Names end up in Docker container names, DNS aliases and `--name`: keep them boring.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
MAX_FILE_SIZE = 1 << 40
MAX_COUNT = 200

# The node's event names: its registry is the one source (node/events.py).
EVENTS = frozenset(REGISTRY)
CORE_VERBS = frozenset({"push", "pull", "start", "stop"})
FAULT_VERBS = frozenset(
    {"kill", "restart", "pause", "unpause", "partition", "heal", "loss", "bandwidth"}
)
# Parameter names of fault steps that hold node/group names, or network names: checked here,
# so a fault step with a typo is refused like any other step.
NODE_REF_PARAMS = frozenset({"node", "nodes", "group", "groups", "from", "to", "by"})
NETWORK_REF_PARAMS = frozenset({"network", "networks"})
STEP_KEYS = frozenset({"id", "at", "after", "delay", "do", "duration", "note"})


def file_name_problem(name: str) -> str | None:
    """Why a node could not share or store `name` (NFC already) as one file at the top of a
    share, or None. The rules are the node's own (node/names.py, docs/protocol.md 2.8), plus
    what the lab needs: one file (no '/'), not the lab's `.mole-*` ballast, not a `.part`."""
    try:
        check_name(name)
    except BadName as exc:
        return f"is refused by the node: {exc.message}"
    if "/" in name:
        return "is one file, without '/'"
    if name.casefold().startswith(".mole-"):
        return "is reserved (.mole-* is the lab's fill ballast)"
    if name.endswith(".part"):
        return "ends with .part (the node's partial files: never shared)"
    return None


def numbered_name(name: str, n: int) -> str:
    """The name a node gives the n-th other file of this name in its inbox (the node's own
    rule, node/names.py): `report.txt`, 1 -> `report (1).txt`; `a.tar.gz` -> `a (1).tar.gz`."""
    return numbered(name, n)


class ScenarioError(ValueError):
    """The scenario is invalid; the message is `<file>: <key path>: what is wrong`."""


class ScenarioSkip(Exception):
    """The scenario cannot run here (e.g. a kernel feature is missing); the message says why.

    Raised by the runner (e.g. a fault step needs a kernel feature lab.probe did not find).
    """


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class NodeDecl:
    name: str
    networks: tuple[str, ...]
    groups: tuple[str, ...] = ()  # mole groups (`--group`); a count group's name is the first
    member_of: str | None = None  # the `{group: g, count: n}` entry it came from
    peers: tuple[str, ...] = ()  # static peers (node names)
    start: bool = True
    args: tuple[str, ...] = ()
    tmpfs: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    router: bool = False  # runs no node: only forwards packets between its networks
    path: str = ""


@dataclass(frozen=True)
class FileDecl:
    name: str  # in the share, and as offered to receivers (NFC)
    size: int
    on: tuple[str, ...]  # node names (groups expanded)
    seed: int | None = None  # random content: random.Random(seed).randbytes in 1 MiB chunks
    content: bytes | None = None  # or this literal content
    path: str = ""
    id: str = ""  # what steps and expectations call it; "" = its name

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", self.name)


@dataclass(frozen=True)
class EventSpec:
    """`{event: transfer_done, node: b, file: x}`: every node of `nodes` emitted such an event."""

    event: str
    ref: str  # the node or group name as written
    nodes: tuple[str, ...]
    file: str | None = None
    peer: str | None = None
    code: str | None = None
    progress: float | None = None  # transfer_progress only: bytes/size reached at least this

    def matches(self, ev: Mapping[str, Any], names: Mapping[str, str] | None = None) -> bool:
        """`names` maps node ids to names (for events that carry only the peer's id)."""
        if ev.get("event") != self.event:
            return False
        if self.progress is not None:
            size, done = ev.get("size"), ev.get("bytes")
            if not isinstance(size, int) or not isinstance(done, int) or size <= 0:
                return False
            if done / size < self.progress:
                return False
        if self.file is not None and ev.get("name") != self.file:
            return False
        if self.peer is not None:
            peer_id = str(ev.get("peer"))
            seen_as = {ev.get("peer_name"), peer_id, (names or {}).get(peer_id)}
            if self.peer not in seen_as:
                return False
        return self.code is None or event_code(ev) == self.code

    def describe(self) -> str:
        extra = "".join(
            f" {k}={v}"
            for k, v in (
                ("file", self.file),
                ("peer", self.peer),
                ("code", self.code),
                ("progress", self.progress),
            )
            if v is not None
        )
        return f"{self.event} on {self.ref}{extra}"


def event_code(ev: Mapping[str, Any]) -> str | None:
    """The error code of a failure event: `error.code`, or `code` (transfer_refused)."""
    err = ev.get("error")
    if isinstance(err, Mapping) and err.get("code") is not None:
        return str(err["code"])
    code = ev.get("code")
    return str(code) if code is not None else None


@dataclass(frozen=True)
class Trigger:
    kind: Literal["at", "step", "event", "discovered"]
    at: float = 0.0  # kind "at": seconds after the timeline starts
    step: str | None = None  # kind "step": that step's id
    event: EventSpec | None = None  # kind "event"
    delay: float = 0.0  # extra wait after a step/event/discovered trigger

    def describe(self) -> str:
        if self.kind == "at":
            return f"at {self.at:g} s"
        what = {
            "step": f"step {self.step}",
            "event": self.event.describe() if self.event else "?",
            "discovered": "discovery",
        }[self.kind]
        return f"after {what}" + (f" + {self.delay:g} s" if self.delay else "")


@dataclass(frozen=True)
class Step:
    index: int
    id: str
    do: str
    trigger: Trigger
    # Core verbs: normalized (push: from, to=(nodes), files=(names), wait; pull: by=(nodes),
    # from, files=(names) or ("*",), wait; start/stop: nodes=(names), timeout).
    # Fault verbs: the step's other keys as written (read-only).
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    duration: float | None = None  # fault verbs: revert after this many seconds
    path: str = ""

    @property
    def is_fault(self) -> bool:
        return self.do not in CORE_VERBS

    def describe(self) -> str:
        bits = []
        for k, v in self.params.items():
            text = ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
            bits.append(f"{k}={text}")
        return f"{self.id}: {self.do} {' '.join(bits)}".rstrip()


@dataclass(frozen=True)
class FileExpect:
    node: str
    file: str  # the file's id (its name unless declared with `id`)
    within: float | None  # seconds after the timeline starts; None = the run's deadline
    path: str = ""
    absent: bool = False  # the node must end without this file; `within`: watch this long
    as_name: str | None = None  # `as`: the exact inbox name it must arrive under
    resumed: bool = False  # the completing attempt started at an offset > 0
    resent_at_most: float | None = None  # fraction of the file the completing attempt carried
    after: str | None = None  # a step id: the file must arrive after that step ran
    min_seconds: float | None = None  # the receiver's transfer took at least this long


@dataclass(frozen=True)
class DiscoveryExpect:
    within: float  # per ordered pair: seconds from the later `listening` to the `peer_up`
    see: tuple[tuple[str, str], ...]  # ordered (observer, peer) pairs
    not_see: tuple[tuple[str, str], ...]
    path: str = "expect.discovery"


@dataclass(frozen=True)
class FailureSpec:
    ref: str
    nodes: tuple[str, ...]
    code: str | None = None
    within: float | None = None  # expected failures only
    path: str = ""

    def matches(self, node: str, code: str | None, peer: str | None = None) -> bool:
        """A failure logged by `node` in a transfer with `peer`: either end may be named."""
        ends = node in self.nodes or (peer is not None and peer in self.nodes)
        return ends and (self.code is None or self.code == code)


@dataclass(frozen=True)
class Expect:
    files: tuple[FileExpect, ...] = ()
    discovery: DiscoveryExpect | None = None
    no_failures: bool = True
    allow_failures: tuple[FailureSpec, ...] = ()
    failures: tuple[FailureSpec, ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    timeout: float
    networks: tuple[str, ...]
    nodes: tuple[NodeDecl, ...]
    files: tuple[FileDecl, ...]
    steps: tuple[Step, ...]
    expect: Expect
    groups: Mapping[str, tuple[str, ...]]  # group name -> member node names
    source: str = "<string>"
    text: str = ""  # the YAML as written (copied into the artifacts)

    def node(self, name: str) -> NodeDecl:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def file(self, file_id: str) -> FileDecl:
        """The file declared with this id (its name, unless it has an `id`)."""
        for f in self.files:
            if f.id == file_id:
                return f
        raise KeyError(file_id)

    def files_named(self, name: str) -> tuple[FileDecl, ...]:
        """Every file declared with this name (several: different content on other nodes)."""
        return tuple(f for f in self.files if f.name == name)

    def inbox_names(self, f: FileDecl) -> tuple[str, ...]:
        """The names f may arrive under in an inbox: its name, and when n other files share
        that name, also the node's numbered names `name (1)` .. `name (n)` (whichever of them
        reaches a node first takes the plain name)."""
        n = len(self.files_named(f.name))
        return (f.name, *(numbered_name(f.name, k) for k in range(1, n)))

    def members(self, ref: str) -> tuple[str, ...]:
        """A node name -> (it,); a group name -> its members."""
        if ref in self.groups:
            return self.groups[ref]
        self.node(ref)
        return (ref,)

    @property
    def mole_nodes(self) -> tuple[NodeDecl, ...]:
        """Nodes that run a mole node (every node but routers)."""
        return tuple(n for n in self.nodes if not n.router)

    @property
    def fault_verbs(self) -> frozenset[str]:
        return frozenset(s.do for s in self.steps if s.is_fault)

    def discovery_pairs(self) -> tuple[tuple[str, str], ...]:
        """The pairs `after: discovered` waits for: expect.discovery.see, or else every ordered
        pair of initially started nodes that share a network."""
        if self.expect.discovery is not None:
            return self.expect.discovery.see
        started = [n for n in self.mole_nodes if n.start]
        return tuple(
            (a.name, b.name)
            for a in started
            for b in started
            if a.name != b.name and set(a.networks) & set(b.networks)
        )

    def routes(self) -> tuple[Route, ...]:
        """Static-peer pairs that share no network, and the node that forwards between them."""
        out = []
        for n in self.nodes:
            for p in n.peers:
                r = route_for(self.nodes, n.name, p)
                if r is not None:
                    out.append(r)
        return tuple(out)


@dataclass(frozen=True)
class Route:
    """`a` reaches `b` (and back) through `via`: a.net_a <-> via <-> b.net_b."""

    a: str
    b: str
    via: str
    net_a: str  # network of a (and via)
    net_b: str  # network of b (and via)


def route_for(nodes: Iterable[NodeDecl], a: str, b: str) -> Route | None:
    """None if a and b share a network; else the route through the first node (routers
    first) that is on a network of each. Raises KeyError when there is none."""
    by_name = {n.name: n for n in nodes}
    na, nb = by_name[a], by_name[b]
    if set(na.networks) & set(nb.networks):
        return None
    candidates = sorted(by_name.values(), key=lambda n: not n.router)
    for via in candidates:
        if via.name in (a, b):
            continue
        ka = [net for net in na.networks if net in via.networks]
        kb = [net for net in nb.networks if net in via.networks]
        if ka and kb:
            return Route(a=a, b=b, via=via.name, net_a=ka[0], net_b=kb[0])
    raise KeyError(f"{a} and {b} share no network and no node is on a network of each")


# --------------------------------------------------------------------------- sizes


def parse_size(value: object) -> int:
    """4096 (YAML int) or a string of node/units.py's table: "1MiB", "1.5GiB", "2MB", "4k"."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '10MiB', not a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        n = units.parse_size(value)  # UnitError is a ValueError naming the text
    else:
        raise ValueError(f"a size is an int or a string like '10MiB', not {_tname(value)}")
    if n < 0:
        raise ValueError(f"size {value!r} is negative")
    if n > MAX_FILE_SIZE:
        raise ValueError(f"size {value!r} is larger than 1 TiB")
    return n


def format_size(n: int) -> str:
    return units.format_size(n).replace(".0 ", " ")  # "10 MiB", "1.5 KiB", "12 B"


# --------------------------------------------------------------------------- loading


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{p}: not UTF-8 text: {e}") from e
    return loads(text, source=str(p), default_name=p.stem)


def loads(text: str, *, source: str = "<string>", default_name: str | None = None) -> Scenario:
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except ScenarioError as e:
        raise ScenarioError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<yaml>"
        problem = getattr(e, "problem", None) or str(e)
        raise ScenarioError(f"{source}: {where}: invalid YAML: {problem}") from None
    if default_name is None and not source.startswith("<"):
        default_name = Path(source).stem
    return parse(data, source=source, text=text, default_name=default_name)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ScenarioError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


# YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans: `on: [a]` would be `True: [a]`. Only
# true/false are booleans here (as in YAML 1.2).
_StrictLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse(
    data: object,
    *,
    source: str = "<string>",
    text: str = "",
    default_name: str | None = None,
) -> Scenario:
    """Validate a decoded YAML document into a Scenario (or raise ScenarioError)."""
    return _Parser(source).scenario(data, text, default_name)


def _tname(v: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "empty (null)",
    }.get(type(v), type(v).__name__)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {path or '<top>'}: {msg}")

    # -- primitive checks

    def mapping(
        self, v: object, path: str, keys: Iterable[str], required: Iterable[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(path, f"must be a mapping, not {_tname(v)}")
        allowed = set(keys)
        for k in v:
            if not isinstance(k, str):
                raise self.fail(path, f"key {k!r} must be a string")
            if k not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(_join(path, k), f"unknown key (allowed: {hint})")
        for k in required:
            if k not in v:
                raise self.fail(_join(path, k), "is required")
        return v

    def list_of(self, v: object, path: str, *, allow_single: bool = False) -> list[Any]:
        if allow_single and isinstance(v, str):
            return [v]
        if not isinstance(v, list):
            raise self.fail(path, f"must be a list, not {_tname(v)}")
        return v

    def string(self, v: object, path: str) -> str:
        if not isinstance(v, str) or not v:
            raise self.fail(path, f"must be a non-empty string, not {_tname(v)}")
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
            raise self.fail(path, f"must be a number of seconds, not {_tname(v)}")
        if v < 0 or (positive and v == 0):
            raise self.fail(path, f"must be {'> 0' if positive else '>= 0'}, not {v}")
        return float(v)

    def boolean(self, v: object, path: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(path, f"must be true or false, not {_tname(v)}")
        return v

    def integer(self, v: object, path: str, lo: int, hi: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(path, f"must be an integer, not {_tname(v)}")
        if not lo <= v <= hi:
            raise self.fail(path, f"must be between {lo} and {hi}, not {v}")
        return v

    # -- the document

    def scenario(self, data: object, text: str, default_name: str | None) -> Scenario:
        top = self.mapping(
            data,
            "",
            ("name", "description", "timeout", "networks", "nodes", "files", "steps", "expect"),
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
            raise self.fail("description", f"must be a string, not {_tname(desc)}")
        timeout = self.number(top.get("timeout", 60), "timeout", positive=True)

        networks = self.networks(top.get("networks", ["lan"]))
        nodes = self.nodes(top["nodes"], networks)
        groups = self.groups(nodes)
        self.static_peers(nodes, groups)
        self.refs = _Refs(self, nodes, groups)
        files = self.files(top.get("files", []))
        steps = self.steps(top.get("steps", []), files)
        expect = self.expect(top.get("expect", {}), files, [st.id for st in steps])
        return Scenario(
            name=name,
            description=desc.strip(),
            timeout=timeout,
            networks=networks,
            nodes=nodes,
            files=files,
            steps=steps,
            expect=expect,
            groups=MappingProxyType(groups),
            source=self.source,
            text=text,
        )

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
        )
        for i, item in enumerate(items):
            p = f"nodes[{i}]"
            m = self.mapping(item, p, keys)
            if ("name" in m) == ("group" in m):
                raise self.fail(p, "needs exactly one of `name` (one node) or `group` (+ count)")
            if "name" in m and "count" in m:
                raise self.fail(_join(p, "count"), "only with `group`")
            if "group" in m:
                group = self.name(m["group"], _join(p, "group"), "group name")
                if "count" not in m:
                    raise self.fail(_join(p, "count"), "is required with `group`")
                count = self.integer(m["count"], _join(p, "count"), 1, MAX_COUNT)
                names = [f"{group}{k}" for k in range(1, count + 1)]
                member_of: str | None = group
            else:
                names = [self.name(m["name"], _join(p, "name"), "node name")]
                member_of = None
            nets = self.node_networks(m, p, networks)
            groups = [member_of] if member_of else []
            for j, g in enumerate(self.list_of(m.get("groups", []), _join(p, "groups"))):
                g = self.name(g, f"{p}.groups[{j}]", "group name")
                if g not in groups:
                    groups.append(g)
            peers = tuple(
                self.name(x, f"{p}.peers[{j}]", "node name")
                for j, x in enumerate(self.list_of(m.get("peers", []), _join(p, "peers")))
            )
            args = []
            for j, a in enumerate(self.list_of(m.get("args", []), _join(p, "args"))):
                if isinstance(a, bool) or not isinstance(a, (str, int, float)):
                    raise self.fail(f"{p}.args[{j}]", f"must be a string, not {_tname(a)}")
                args.append(str(a))
            tmpfs = self.str_map(m.get("tmpfs", {}), _join(p, "tmpfs"), abs_keys=True)
            env = self.str_map(m.get("env", {}), _join(p, "env"))
            start = self.boolean(m.get("start", True), _join(p, "start"))
            router = self.boolean(m.get("router", False), _join(p, "router"))
            if router:
                for k in ("groups", "peers", "args", "group"):
                    if k in m:
                        raise self.fail(_join(p, k), "a router runs no node: not allowed")
                if len(nets) < 2:
                    raise self.fail(_join(p, "networks"), "a router needs two or more networks")
            for n in names:
                if n in where:
                    raise self.fail(
                        _join(p, "group" if member_of else "name"),
                        f"duplicate node name {n!r} (also {where[n]})",
                    )
                where[n] = p
                if n in peers:
                    raise self.fail(_join(p, "peers"), f"node {n!r} cannot be its own peer")
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
                        path=p,
                    )
                )
        return tuple(out)

    def node_networks(
        self, m: dict[str, Any], p: str, networks: tuple[str, ...]
    ) -> tuple[str, ...]:
        if "networks" not in m:
            if len(networks) > 1:
                raise self.fail(
                    _join(p, "networks"), "is required when the scenario has several networks"
                )
            return networks
        nets: list[str] = []
        items = self.list_of(m["networks"], _join(p, "networks"), allow_single=True)
        if not items:
            raise self.fail(_join(p, "networks"), "needs at least one network")
        for j, x in enumerate(items):
            q = f"{p}.networks[{j}]"
            n = self.string(x, q)
            if n not in networks:
                raise self.fail(q, f"unknown network {n!r} (networks: {', '.join(networks)})")
            if n in nets:
                raise self.fail(q, f"network {n!r} listed twice")
            nets.append(n)
        return tuple(nets)

    def str_map(
        self, v: object, path: str, *, abs_keys: bool = False
    ) -> tuple[tuple[str, str], ...]:
        if not isinstance(v, dict):
            raise self.fail(path, f"must be a mapping, not {_tname(v)}")
        out = []
        for k, val in v.items():
            if not isinstance(k, str) or not k:
                raise self.fail(path, f"key {k!r} must be a string")
            if abs_keys and not k.startswith("/"):
                raise self.fail(_join(path, k), "must be an absolute path in the container")
            if isinstance(val, bool) or not isinstance(val, (str, int)):
                raise self.fail(_join(path, k), f"must be a string, not {_tname(val)}")
            out.append((k, str(val)))
        return tuple(out)

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
                if by_name[peer].router:
                    raise self.fail(q, f"{peer!r} is a router, it runs no node")
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

    # -- files

    def files(self, v: object) -> tuple[FileDecl, ...]:
        out: list[FileDecl] = []
        by_id: dict[str, str] = {}  # id -> path of its declaration
        by_name: dict[str, list[tuple[str, bool, tuple[str, ...]]]] = {}  # (path, has id, on)
        items = self.list_of(v, "files")
        for i, item in enumerate(items):
            p = f"files[{i}]"
            keys = ("id", "name", "size", "seed", "content", "on")
            m = self.mapping(item, p, keys, ("name", "on"))
            name = self.file_name(m["name"], _join(p, "name"))
            fid = self.name(m["id"], _join(p, "id"), "file id") if "id" in m else name
            for other, other_has_id, _ in by_name.get(name, []):
                if not ("id" in m and other_has_id):  # a reference by name: which one?
                    missing = p if "id" not in m else other
                    raise self.fail(
                        _join(missing, "id"),
                        f"is required: {other} and {p} are both named {name!r}; give each "
                        "its own `id`, and refer to it by that id",
                    )
            if fid in by_id:
                if "id" in m:
                    raise self.fail(
                        _join(p, "id"), f"duplicate file id {fid!r} (also {by_id[fid]})"
                    )
                raise self.fail(
                    _join(p, "name"),
                    f"{fid!r} is the id of {by_id[fid]}: an id must not be another file's name",
                )
            by_id[fid] = p
            if ("size" in m) == ("content" in m):
                raise self.fail(p, "needs exactly one of `size` (random bytes) or `content`")
            on = self.refs.nodes_of(m["on"], _join(p, "on"), allow_single=True)
            for other, _, other_on in by_name.get(name, []):
                both = [n for n in on if n in other_on]
                if both:
                    raise self.fail(
                        _join(p, "on"),
                        f"node {both[0]!r} would hold two files named {name!r} in its share "
                        f"(also {other})",
                    )
            by_name.setdefault(name, []).append((p, "id" in m, on))
            if "content" in m:
                if not isinstance(m["content"], str):
                    raise self.fail(
                        _join(p, "content"), f"must be text, not {_tname(m['content'])}"
                    )
                if "seed" in m:
                    raise self.fail(_join(p, "seed"), "only with `size`")
                data = m["content"].encode()
                out.append(FileDecl(name=name, size=len(data), on=on, content=data, path=p, id=fid))
                continue
            try:
                size = parse_size(m["size"])
            except ValueError as e:
                raise self.fail(_join(p, "size"), str(e)) from None
            if "seed" in m:
                seed = self.integer(m["seed"], _join(p, "seed"), 0, 2**63 - 1)
            else:
                seed = zlib.crc32(fid.encode())  # distinct files differ by default
            out.append(FileDecl(name=name, size=size, on=on, seed=seed, path=p, id=fid))
        for f in out:
            if f.id != f.name and f.id in by_name:
                raise self.fail(
                    _join(f.path, "id"),
                    f"{f.id!r} is the name of {by_name[f.id][0][0]}: an id must not be another "
                    "file's name (a reference to it would be ambiguous)",
                )
        return tuple(out)

    def file_name(self, v: object, path: str) -> str:
        name = unicodedata.normalize("NFC", self.string(v, path))
        problem = file_name_problem(name)
        if problem:
            raise self.fail(path, f"bad file name {name!r}: it {problem}")
        return name

    # -- steps

    def steps(self, v: object, files: tuple[FileDecl, ...]) -> tuple[Step, ...]:
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
        out = [self.step(item, i, ids, files) for i, item in enumerate(items)]
        self.check_cycles(out, ids)
        return tuple(out)

    def step(self, item: object, i: int, ids: dict[str, int], files: tuple[FileDecl, ...]) -> Step:
        p = f"steps[{i}]"
        if not isinstance(item, dict):
            raise self.fail(p, f"must be a mapping, not {_tname(item)}")
        if "do" not in item:
            raise self.fail(_join(p, "do"), "is required")
        verb = item["do"]
        verbs = CORE_VERBS | FAULT_VERBS | _extra_fault_verbs()
        if not isinstance(verb, str) or verb not in verbs:
            raise self.fail(
                _join(p, "do"), f"unknown verb {verb!r} (verbs: {', '.join(sorted(verbs))})"
            )
        sid = item.get("id") or f"#{i}"
        if "at" in item and "after" in item:
            raise self.fail(p, "has both `at` and `after`: use one")
        if "delay" in item and "after" not in item:
            raise self.fail(_join(p, "delay"), "only with `after` (use `at` for absolute times)")
        if "after" in item:
            trigger = self.after(item["after"], _join(p, "after"), ids, i)
            delay = self.number(item.get("delay", 0), _join(p, "delay"))
            trigger = Trigger(trigger.kind, step=trigger.step, event=trigger.event, delay=delay)
        else:
            trigger = Trigger("at", at=self.number(item.get("at", 0), _join(p, "at")))
        params = {k: v for k, v in item.items() if k not in STEP_KEYS}
        duration = None
        if verb in CORE_VERBS:
            if "duration" in item:
                raise self.fail(_join(p, "duration"), f"only for fault verbs, not {verb!r}")
            norm = getattr(self, f"verb_{verb}")(params, p, files)
        else:
            if "duration" in item:
                duration = self.number(item["duration"], _join(p, "duration"), positive=True)
            norm = self.fault_params(verb, params, p)
        return Step(
            index=i,
            id=sid,
            do=verb,
            trigger=trigger,
            params=MappingProxyType(norm),
            duration=duration,
            path=p,
        )

    def after(self, v: object, p: str, ids: dict[str, int], i: int) -> Trigger:
        if v == "discovered":
            return Trigger("discovered")
        if isinstance(v, str):
            if v not in ids:
                known = ", ".join(sorted(ids)) or "none have an `id`"
                raise self.fail(p, f"no step with id {v!r} (step ids: {known})")
            if ids[v] == i:
                raise self.fail(p, "a step cannot wait for itself")
            return Trigger("step", step=v)
        m = self.mapping(
            v, p, ("event", "node", "group", "file", "peer", "code", "progress"), ("event",)
        )
        ev = self.string(m["event"], _join(p, "event"))
        if ev not in EVENTS:
            raise self.fail(
                _join(p, "event"), f"unknown event {ev!r} (events: {', '.join(sorted(EVENTS))})"
            )
        if ("node" in m) == ("group" in m):
            raise self.fail(p, "needs exactly one of `node` or `group`")
        key = "node" if "node" in m else "group"
        ref = self.string(m[key], _join(p, key))
        nodes = self.refs.resolve(ref, _join(p, key), kind=key)
        file = None
        if "file" in m:
            file = self.string(m["file"], _join(p, "file"))
        peer = None
        if "peer" in m:
            peer = self.string(m["peer"], _join(p, "peer"))
            self.refs.resolve(peer, _join(p, "peer"), kind="node")
        code = self.string(m["code"], _join(p, "code")) if "code" in m else None
        progress = None
        if "progress" in m:
            if ev != "transfer_progress":
                raise self.fail(_join(p, "progress"), "only for event: transfer_progress")
            progress = self.fraction(m["progress"], _join(p, "progress"))
        spec = EventSpec(
            event=ev, ref=ref, nodes=nodes, file=file, peer=peer, code=code, progress=progress
        )
        return Trigger("event", event=spec)

    def check_cycles(self, steps: list[Step], ids: dict[str, int]) -> None:
        deps = {
            s.index: ids[s.trigger.step]
            for s in steps
            if s.trigger.kind == "step" and s.trigger.step
        }
        for start in deps:
            chain = [start]
            cur = start
            while cur in deps:
                cur = deps[cur]
                if cur in chain:
                    cycle = [*chain[chain.index(cur) :], cur]
                    names = " -> ".join(steps[k].id for k in cycle)
                    raise self.fail(
                        f"steps[{start}].after", f"steps wait for each other in a cycle: {names}"
                    )
                chain.append(cur)

    def files_param(
        self, v: object, p: str, files: tuple[FileDecl, ...], *, star: bool
    ) -> tuple[str, ...]:
        if star and v == "*":
            return ("*",)
        names = self.list_of(v, p, allow_single=True)
        if not names:
            raise self.fail(p, "needs at least one file")
        known = {f.id for f in files}
        out = []
        for j, n in enumerate(names):
            q = p if isinstance(v, str) else f"{p}[{j}]"
            n = unicodedata.normalize("NFC", self.string(n, q))
            if n not in known:
                named = [f for f in files if f.name == n]
                if named:
                    ids = " or ".join(repr(f.id) for f in named)
                    raise self.fail(
                        q, f"{n!r} names {len(named)} files, refer to one by its id: {ids}"
                    )
                hint = ", ".join(sorted(known)) or "no `files` declared"
                raise self.fail(q, f"unknown file {n!r} (files: {hint})")
            out.append(n)
        return tuple(out)

    def held_elsewhere(
        self, ids: tuple[str, ...], node: str, p: str, files: tuple[FileDecl, ...], verb: str
    ) -> None:
        """A push (pull) of a file the sender (source) does not share goes by its name, from
        the inbox (share) of that node: when several files have that name, which one it holds
        under it is not known."""
        for j, fid in enumerate(ids):
            f = next(f for f in files if f.id == fid)
            same = [g for g in files if g.name == f.name]
            if node not in f.on and len(same) > 1:
                q = p if len(ids) == 1 else f"{p}[{j}]"
                where = "inbox" if verb == "push" else "share"
                raise self.fail(
                    q,
                    f"{node} does not share {fid!r} (on: {', '.join(f.on)}), and "
                    f"{len(same)} files are named {f.name!r}: which one {node}'s {where} "
                    "holds under that name is not known",
                )

    def verb_push(
        self, params: dict[str, Any], p: str, files: tuple[FileDecl, ...]
    ) -> dict[str, Any]:
        self.mapping(params, p, ("from", "to", "file", "wait"), ("from", "to", "file"))
        src = self.refs.one_node(params["from"], _join(p, "from"))
        dst = tuple(
            x
            for x in self.refs.nodes_of(params["to"], _join(p, "to"), allow_single=True)
            if x != src
        )
        if not dst:
            raise self.fail(_join(p, "to"), "has no node other than the sender")
        names = self.files_param(params["file"], _join(p, "file"), files, star=False)
        self.held_elsewhere(names, src, _join(p, "file"), files, "push")
        wait = self.number(params.get("wait", 10), _join(p, "wait"))
        return {"from": src, "to": dst, "files": names, "wait": wait}

    def verb_pull(
        self, params: dict[str, Any], p: str, files: tuple[FileDecl, ...]
    ) -> dict[str, Any]:
        self.mapping(params, p, ("by", "from", "file", "wait"), ("by", "from", "file"))
        src = self.refs.one_node(params["from"], _join(p, "from"))
        by = tuple(
            x
            for x in self.refs.nodes_of(params["by"], _join(p, "by"), allow_single=True)
            if x != src
        )
        if not by:
            raise self.fail(_join(p, "by"), "has no node other than the source")
        names = self.files_param(params["file"], _join(p, "file"), files, star=True)
        if names != ("*",):
            self.held_elsewhere(names, src, _join(p, "file"), files, "pull")
        wait = self.number(params.get("wait", 10), _join(p, "wait"))
        return {"by": by, "from": src, "files": names, "wait": wait}

    def verb_start(
        self, params: dict[str, Any], p: str, files: tuple[FileDecl, ...]
    ) -> dict[str, Any]:
        self.mapping(params, p, ("node", "group"))
        return {"nodes": self.node_or_group(params, p)}

    def verb_stop(
        self, params: dict[str, Any], p: str, files: tuple[FileDecl, ...]
    ) -> dict[str, Any]:
        self.mapping(params, p, ("node", "group", "timeout"))
        timeout = self.number(params.get("timeout", 10), _join(p, "timeout"))
        return {"nodes": self.node_or_group(params, p), "timeout": timeout}

    def node_or_group(self, params: dict[str, Any], p: str) -> tuple[str, ...]:
        if ("node" in params) == ("group" in params):
            raise self.fail(p, "needs exactly one of `node` or `group`")
        key = "node" if "node" in params else "group"
        return self.refs.nodes_of(params[key], _join(p, key), allow_single=True)

    def fault_params(self, verb: str, params: dict[str, Any], p: str) -> dict[str, Any]:
        for k, v in params.items():
            if k in NODE_REF_PARAMS:
                self.refs.check_tree(v, _join(p, k), network=False)
            elif k in NETWORK_REF_PARAMS:
                self.refs.check_tree(v, _join(p, k), network=True)
        validate = _faults_attr("validate")
        if validate is not None:
            try:
                validate(verb, dict(params))
            except ValueError as e:
                raise self.fail(p, str(e)) from None
        return dict(params)

    # -- expectations

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

    def expect(
        self, v: object, files: tuple[FileDecl, ...], step_ids: Iterable[str] = ()
    ) -> Expect:
        keys = ("files", "discovery", "no_failures", "allow_failures", "failures")
        m = self.mapping(v if v is not None else {}, "expect", keys)
        fexp: list[FileExpect] = []
        said: dict[tuple[str, str], tuple[str, bool]] = {}  # (node, file id) -> (path, absent)
        for i, item in enumerate(self.list_of(m.get("files", []), "expect.files")):
            p = f"expect.files[{i}]"
            fkeys = ("node", "group", "file", "within", "resumed", "resent_at_most", "after")
            e = self.mapping(item, p, (*fkeys, "min_seconds", "absent", "as"), ("file",))
            nodes = self.node_or_group(e, p)
            names = self.files_param(e["file"], _join(p, "file"), files, star=False)
            absent = self.boolean(e.get("absent", False), _join(p, "absent"))
            if absent:
                for k in ("resumed", "resent_at_most", "after", "min_seconds"):
                    if k in e:
                        raise self.fail(
                            _join(p, k), "only for a file that must arrive, not with `absent`"
                        )
            as_name = None
            if "as" in e:
                as_name = self.file_name(e["as"], _join(p, "as"))
                if len(names) != 1:
                    raise self.fail(
                        _join(p, "as"), f"is the inbox name of one file, not of {len(names)}"
                    )
                decl = next(f for f in files if f.id == names[0])
                same = sum(1 for f in files if f.name == decl.name)
                can = (decl.name, *(numbered_name(decl.name, k) for k in range(1, same)))
                if as_name not in can:
                    raise self.fail(
                        _join(p, "as"),
                        f"{decl.id!r} cannot arrive as {as_name!r}: {same} "
                        f"file{'s are' if same > 1 else ' is'} named {decl.name!r}, so a node "
                        f"stores it as {' or '.join(repr(c) for c in can)}",
                    )
            within = (
                self.number(e["within"], _join(p, "within"), positive=True)
                if "within" in e
                else None
            )
            resumed = self.boolean(e.get("resumed", False), _join(p, "resumed"))
            resent = None
            if "resent_at_most" in e:
                resent = self.fraction(e["resent_at_most"], _join(p, "resent_at_most"))
            after = None
            if "after" in e:
                after = self.string(e["after"], _join(p, "after"))
                if after not in step_ids:
                    known = ", ".join(sorted(step_ids)) or "none have an `id`"
                    raise self.fail(_join(p, "after"), f"no step with id {after!r} ({known})")
            min_s = None
            if "min_seconds" in e:
                min_s = self.number(e["min_seconds"], _join(p, "min_seconds"), positive=True)
            for n in nodes:
                for f in names:
                    other = said.get((n, f))
                    if other is not None and other[1] != absent:
                        raise self.fail(
                            _join(p, "absent"),
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
            files=tuple(fexp),
            discovery=disc,
            no_failures=no_failures,
            allow_failures=allow,
            failures=must,
        )

    def discovery(self, v: object) -> DiscoveryExpect:
        p = "expect.discovery"
        m = self.mapping(v, p, ("within", "see", "not_see"), ("within",))
        within = self.number(m["within"], _join(p, "within"), positive=True)
        if m.get("see") == "all":
            names = [n.name for n in self.refs.nodes if not n.router]
            see = tuple((a, b) for a in names for b in names if a != b)
        else:
            see = self.pairs(m.get("see", []), _join(p, "see"))
        not_see = self.pairs(m.get("not_see", []), _join(p, "not_see"))
        clash = set(see) & set(not_see)
        if clash:
            a, b = sorted(clash)[0]
            raise self.fail(_join(p, "not_see"), f"{a} -> {b} is also in `see`")
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
            nodes = self.node_or_group(m, q)
            ref = str(m.get("node", m.get("group")))
            code = self.string(m["code"], _join(q, "code")) if "code" in m else None
            w = (
                self.number(m["within"], _join(q, "within"), positive=True)
                if "within" in m
                else None
            )
            out.append(FailureSpec(ref=ref, nodes=nodes, code=code, within=w, path=q))
        return tuple(out)


class _Refs:
    """Resolves node and group names written in files, steps and expectations."""

    def __init__(
        self, parser: _Parser, nodes: tuple[NodeDecl, ...], groups: dict[str, tuple[str, ...]]
    ) -> None:
        self.p = parser
        self.nodes = nodes
        self.by_name = {n.name: n for n in nodes}
        self.groups = groups
        self.networks = {net for n in nodes for net in n.networks}

    def resolve(self, ref: object, path: str, *, kind: str = "node or group") -> tuple[str, ...]:
        name = self.p.string(ref, path)
        if kind in ("node", "node or group") and name in self.by_name:
            if self.by_name[name].router:
                raise self.p.fail(path, f"{name!r} is a router, it runs no node")
            return (name,)
        if kind in ("group", "node or group") and name in self.groups:
            return tuple(n for n in self.groups[name] if not self.by_name[n].router)
        raise self.p.fail(path, f"unknown {kind} {name!r}{self.hint(name, kind)}")

    def hint(self, name: str, kind: str) -> str:
        if kind == "node" and name in self.groups:
            return " (it is a group: use `group:`)"
        if kind == "group" and name in self.by_name:
            return " (it is a node: use `node:`)"
        known = sorted(self.groups) + [n for n in self.by_name if not self.by_name[n].router]
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
            raise self.p.fail(path, f"must be a name or a list of names, not {_tname(v)}")


# --------------------------------------------------------------------------- lab.faults hooks


def faults_module() -> Any | None:
    """lab.faults if it exists (it is optional: scenarios with fault steps need it)."""
    try:
        import lab.faults as faults
    except ModuleNotFoundError as e:
        if e.name not in ("lab.faults",):
            raise
        return None
    return faults


def _faults_attr(name: str) -> Callable[..., Any] | None:
    mod = faults_module()
    fn = getattr(mod, name, None) if mod is not None else None
    return fn if callable(fn) else None


def _extra_fault_verbs() -> frozenset[str]:
    mod = faults_module()
    verbs = getattr(mod, "VERBS", ()) if mod is not None else ()
    return frozenset(v for v in verbs if isinstance(v, str)) - CORE_VERBS
