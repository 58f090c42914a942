"""Scenario files: YAML in, frozen dataclasses out, every mistake refused before anything runs.

The whole language is documented in docs/scenarios.md. This module holds the model (the frozen
dataclasses a run reads), the file-name rules, sizes and loading; the parser that checks a
document is lab.schema (with lab.checks, lab.timeline for step timing, lab.verbs for verb
parameters, lab.schema_expect). Errors read `<file>: <key.path[3].like.this>: what is wrong`,
so a typo in a 40-line scenario is found without starting a single container.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
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
    # Beyond the LAN (docs/scenarios.md "NAT sites"): a router's NAT onto network `nat` with
    # TCP port 47101 forwarded to node `forward`; a service container (`service`) runs no node.
    nat: str | None = None
    forward: str | None = None
    service: str | None = None
    path: str = ""
    hostile: tuple[tuple[str, str], ...] = ()  # runs lab/attacker.py with these (lab.hostile)

    @property
    def runs_node(self) -> bool:
        """A mole node runs in it (not a router, not a hostile peer)."""
        return not self.router and not self.hostile


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

    @property
    def label(self) -> str:
        """The file as messages name it: its name, and its id when it has another one."""
        return self.name if self.id == self.name else f"{self.id} ({self.name!r})"


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
    # Fault verbs: the step's other keys as written (read-only): lab.faults checks them again.
    # lab.verbs declares each verb's parameters.
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    duration: float | None = None  # fault verbs: revert after this many seconds
    path: str = ""
    fault: bool = False  # a fault verb (the runner needs lab.faults for it)

    @property
    def is_fault(self) -> bool:
        return self.fault

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
class EventsExpect:
    """`expect.events[i]`: every node of `spec` emitted at least `at_least` such events by
    `within` s after time 0 (e.g. a hostile peer's connections dropped)."""

    spec: EventSpec
    at_least: int = 1
    within: float | None = None
    path: str = ""


@dataclass(frozen=True)
class Expect:
    files: tuple[FileExpect, ...] = ()
    trees: tuple[Any, ...] = ()  # lab.trees.TreeExpect
    discovery: DiscoveryExpect | None = None
    no_failures: bool = True
    allow_failures: tuple[FailureSpec, ...] = ()
    failures: tuple[FailureSpec, ...] = ()
    events: tuple[EventsExpect, ...] = ()
    stats: tuple[StatsExpect, ...] = ()


@dataclass(frozen=True)
class StatsExpect:
    """`expect.stats[i]`: at the end of the run, each node's `GET /api/node` counter at
    `key` (a dotted path into `stats`, e.g. `discovery.rate_limited`) is at least `at_least`
    (what a node counts but logs no line for, such as refused discovery datagrams)."""

    nodes: tuple[str, ...]
    key: str
    at_least: int = 1
    path: str = ""


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
    nodes_per_container: int = 1  # dense mode (lab.dense) when > 1
    ipv6: bool = False  # every network also gets an IPv6 /64 (ULA) besides its IPv4 /24
    trees: tuple[Any, ...] = ()  # lab.trees.TreeDecl: directories sent as batches
    swarm: Any = None  # lab.swarmspec.SwarmDecl: the `swarm:` section (`lab run --swarm`)

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
        """Nodes that run a mole node (every node but routers and hostile peers)."""
        return tuple(n for n in self.nodes if n.runs_node)

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
        if via.name in (a, b) or via.hostile:  # never route honest traffic through an attacker
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
        raise ValueError(f"a size is an int or a string like '10MiB', not {type_name(value)}")
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
    from lab import schema  # the parser builds on this module's model

    return schema.parse(data, source=source, text=text, default_name=default_name)


def type_name(v: object) -> str:
    """A written value's YAML type, as a problem names it ("must be a list, not a string")."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "empty (null)",
    }.get(type(v), type(v).__name__)


# --------------------------------------------------------------------------- lab.faults hooks


def faults_module() -> Any | None:
    """The fault backend: lab.faults (a test may stand in another), None where there is none:
    scenarios with fault steps are then skipped. lab.verbs builds the fault verbs from it."""
    try:
        import lab.faults as faults
    except ModuleNotFoundError as e:
        if e.name not in ("lab.faults",):
            raise
        return None
    return faults
