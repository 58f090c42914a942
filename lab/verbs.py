"""The step verbs of the scenario language: one registry shared by the parser and the runner.

A verb is one `Verb` entry: the parameters a step of it may have (typed, lab.params: type,
required or optional, default), the rules across them, and what the step does when it fires.
The parser checks a step with `Verb.check` (errors name the key path, `steps[3].rate`), the
runner carries it out with `Verb.run`. The core verbs (push, pull, start, stop) are declared
here; the fault verbs come from the fault backend, lab.faults, where each is one FaultVerb
entry (its parameters, whom it acts on, its implementation): adding a verb of either kind is
one entry.

The backend is found through lab.scenario.faults_module() when the registry is asked for, so a
test may stand in another one. A backend without typed declarations (only VERBS and
validate(verb, params)) still works: its steps are checked by validate() as a whole. Without a
backend the usual fault verbs still parse, and a scenario using them is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lab import scenario as sc_mod
from lab.checks import Context, join
from lab.nodeapi import ApiError
from lab.params import Param, Where, check_params
from lab.results import abbrev
from lab.scenario import Scenario, ScenarioSkip, Step
from lab.trees import tree_ref
from lab.waits import wait_until

if TYPE_CHECKING:
    from lab.faults import FaultVerb
    from lab.nodes import Nodes
    from lab.state import RunState

# Keys every step has, whatever its verb (the timeline's and the notes'), never a parameter.
COMMON_KEYS = frozenset({"id", "at", "after", "delay", "do", "duration", "note"})
# Fault verbs a scenario may name even without a fault backend (it is then skipped).
DEFAULT_FAULT_VERBS = frozenset(
    {"kill", "restart", "pause", "unpause", "partition", "heal", "loss", "bandwidth"}
)
# Keys of a backend's untyped fault steps that hold node/group names, or network names:
# checked here, so a fault step with a typo is refused like any other step.
NODE_REF_PARAMS = frozenset({"node", "nodes", "group", "groups", "from", "to", "by"})
NETWORK_REF_PARAMS = frozenset({"network", "networks"})


class StepError(Exception):
    """A step's action failed; the message says which node and why."""

    def __init__(self, message: str, nodes: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(message)
        self.nodes = tuple(nodes)


class StepContext(Protocol):
    """What a verb's action may use of the running scenario."""

    @property
    def state(self) -> RunState: ...

    @property
    def nodes(self) -> Nodes: ...

    @property
    def cluster(self) -> Any: ...

    def add_revert(self, step: Step, revert: Callable[[], object]) -> None:
        """Undo `revert` after step.duration, else at the end of the run."""
        ...


Finish = Callable[[dict[str, Any], Mapping[str, Any], Context, str], dict[str, Any]]
Check = Callable[[Mapping[str, Any], Context, str], dict[str, Any]]


@dataclass(frozen=True)
class Verb:
    name: str
    # What a step of this verb may say besides COMMON_KEYS.
    params: tuple[Param, ...]
    run: Callable[[StepContext, Step], None]
    # (checked, written, ctx, path) -> the step's params: rules across parameters, and the
    # shape the action reads (core verbs normalize; fault steps keep what was written).
    finish: Finish | None = None
    fault: bool = False  # may have `duration`; needs the fault backend to run
    loose: Check | None = None  # instead of params: the backend validates the step whole

    def check(self, written: Mapping[str, Any], ctx: Context, path: str) -> dict[str, Any]:
        """The step's parameters, checked; a problem is a ScenarioError with its key path."""
        if self.loose is not None:
            return self.loose(written, ctx, path)
        checked = check_params(self.params, written, ctx, path)
        return self.finish(checked, written, ctx, path) if self.finish else checked


def registry() -> dict[str, Verb]:
    """Every verb a scenario may use now: the fault backend's, and the core verbs."""
    backend = sc_mod.faults_module()
    specs = getattr(backend, "SPECS", None) if backend is not None else None
    if isinstance(specs, Mapping):
        faults = {name: _fault_verb(spec, backend) for name, spec in specs.items()}
    else:
        extra = getattr(backend, "VERBS", ()) if backend is not None else ()
        names = DEFAULT_FAULT_VERBS | {v for v in extra if isinstance(v, str)}
        faults = {name: _loose_verb(name, backend) for name in names}
    return {**faults, **CORE}


# --------------------------------------------------------------------------- parameter kinds


def _ctx(where: Where) -> Context:
    """Scenario kinds need the scenario (names of nodes and files): only the parser has it."""
    assert isinstance(where, Context), "a scenario parameter checked outside a scenario"
    return where


def node_ref(v: object, where: Where, path: str) -> str:
    """One node (not a group)."""
    return _ctx(where).refs.one_node(v, path)


def node_refs(v: object, where: Where, path: str) -> tuple[str, ...]:
    """Nodes and groups, one name or a list -> node names."""
    return _ctx(where).refs.nodes_of(v, path, allow_single=True)


def dests(v: object, where: Where, path: str) -> tuple[str, ...]:
    """`to:` nodes and groups; `"@group"`: one send to the group (a batch per member)."""
    if isinstance(v, str) and v.startswith("@"):
        return (v, *_ctx(where).refs.nodes_of(v[1:], path, allow_single=True))
    return node_refs(v, where, path)


def files(*, star: bool) -> Callable[[object, Where, str], tuple[str, ...]]:
    """File ids (or "*": whatever the source lists, if `star`)."""

    def check(v: object, where: Where, path: str) -> tuple[str, ...]:
        return _ctx(where).file_ids(v, path, star=star)

    return check


def node_or_hostile(v: object, where: Where, path: str) -> str:
    """One node, or a hostile peer: what a node may be asked to list (a hostile server's
    answer is the attack: scenarios/hostile-biglist.yaml)."""
    refs = _ctx(where).refs
    refs.hostile_ok = True
    try:
        return refs.one_node(v, path)
    finally:
        refs.hostile_ok = False


def text(v: object, where: Where, path: str) -> str:
    return _ctx(where).string(v, path)


def seconds(v: object, where: Where, path: str) -> float:
    return _ctx(where).number(v, path)


def _names(v: object, where: Where, path: str) -> object:
    """Nodes and groups a fault acts on; kept as written (the runner resolves them)."""
    _ctx(where).refs.nodes_of(v, path, allow_single=True)
    return v


# --------------------------------------------------------------------------- core verbs


def peer_ref(ctx: StepContext, name: str) -> str:
    """What a step asks a node for when it means node `name`: its node id once the lab read it
    (its `listening` event), else the name. A hostile peer may announce another's name with
    its own key (scenarios/hostile-impostor.yaml): then the name means the one of them that
    proves a group of the node's, or is refused as ambiguous (docs/security.md); the id is
    never ambiguous, and no squatter can be picked for it."""
    ids = [i for i, n in ctx.nodes.node_ids.items() if n == name]
    return ids[0] if len(ids) == 1 else name


def _wait_knows(ctx: StepContext, node: str, peer: str, timeout: float) -> set[str]:
    """Waits until node lists peer (by its id when known: `peer_ref`); returns every peer name
    of that listing."""
    names: set[str] = set()

    def knows() -> bool:
        names.clear()
        listing = ctx.nodes.api(node).peers()
        for p in listing:  # a name counts as known only by the id the lab knows for it
            name = str(p.get("name"))
            if peer_ref(ctx, name) in (name, p.get("node")):
                names.add(name)
        return peer in names

    wait_until(
        knows,
        timeout=min(timeout, ctx.state.remaining()),
        what=f"node {node} to know peer {peer} (GET /api/peers)",
        diagnose=lambda: ctx.nodes.diagnose([node, peer]),
    )
    return names


def _push_finish(
    p: dict[str, Any], written: Mapping[str, Any], ctx: Context, path: str
) -> dict[str, Any]:
    group = p["to"][0][1:] if p["to"][0].startswith("@") else None
    dst = tuple(x for x in p["to"] if x != p["from"] and not x.startswith("@"))
    if not dst:
        raise ctx.fail(join(path, "to"), "has no node other than the sender")
    if ("file" in p) == ("tree" in p):
        raise ctx.fail(path, "needs exactly one of `file` or `tree`")
    if "file" in p:
        ctx.held_elsewhere(p["file"], p["from"], join(path, "file"), "push")
    out = {"from": p["from"], "to": dst, "files": p.get("file", ()), "wait": p["wait"]}
    if "tree" in p:
        out["tree"] = p["tree"]
    if group is not None:
        out["group"] = group
    return out


def _push_batch(ctx: StepContext, step: Step) -> None:
    """A tree (lab.trees), to nodes or, with `to: "@group"`, as one send to the group."""
    src: str = step.params["from"]
    tree, group = step.params.get("tree") or "", step.params.get("group")
    files = [ctx.state.sc.file(fid).name for fid in step.params["files"]]
    paths = [tree] if tree else files
    known: set[str] = set()
    for dst in step.params["to"]:
        if dst not in known:
            known = _wait_knows(ctx, src, dst, step.params["wait"])
    targets = [f"@{group}"] if group else [peer_ref(ctx, d) for d in step.params["to"]]
    for peer in targets:
        try:
            answer = ctx.nodes.api(src).post("/api/push", {"peer": peer, "paths": paths})
        except ApiError as e:
            raise StepError(f"node {src}: push {paths} to {peer}: {e}", [src]) from e
        for t in answer.get("batches", [answer]):
            ctx.state.initiated(t, src, str(t.get("peer_name")), tree or files[0])
        to = ctx.nodes.node_ids.get(peer, peer)
        ctx.state.say(f"{src} pushes {tree or files} to {to} as a batch ({answer.get('id')})")


def _push(ctx: StepContext, step: Step) -> None:
    src: str = step.params["from"]
    sc = ctx.state.sc
    if step.params.get("tree") or step.params.get("group"):
        _push_batch(ctx, step)
        return
    known: set[str] = set()  # one listing serves many receivers of a fan-out
    for dst in step.params["to"]:
        if dst not in known:
            known = _wait_knows(ctx, src, dst, step.params["wait"])
        for fid in step.params["files"]:
            decl = sc.file(fid)
            # A file the sender does not share is relayed from its inbox (the scenario
            # refuses this for a name several files have: which one is there is unknown).
            path = decl.name if src in decl.on else f"/data/inbox/{decl.name}"
            try:
                t = ctx.nodes.api(src).push(peer_ref(ctx, dst), path)
            except ApiError as e:
                raise StepError(f"node {src}: push {path} to {dst}: {e}", [src, dst]) from e
            ctx.state.initiated(t, src, dst, decl.name)
            ctx.state.say(f"{src} pushes {decl.label} to {dst} (transfer {t.get('id')})")


def _pull_finish(
    p: dict[str, Any], written: Mapping[str, Any], ctx: Context, path: str
) -> dict[str, Any]:
    by = tuple(x for x in p["by"] if x != p["from"])
    if not by:
        raise ctx.fail(join(path, "by"), "has no node other than the source")
    if ("file" in p) == ("tree" in p):
        raise ctx.fail(path, "needs exactly one of `file` or `tree`")
    if p.get("file", ("*",)) != ("*",):
        ctx.held_elsewhere(p["file"], p["from"], join(path, "file"), "pull")
    files = p.get("file", ())
    out = {"by": by, "from": p["from"], "files": files, "wait": p["wait"]}
    if "tree" in p:
        out["tree"] = p["tree"]
    return out


def _pull(ctx: StepContext, step: Step) -> None:
    src: str = step.params["from"]
    for by in step.params["by"]:
        _wait_knows(ctx, by, src, step.params["wait"])
        tree = step.params.get("tree")
        if tree:  # a batch pull of the tree's directory in src's share
            try:
                t = ctx.nodes.api(by).post(
                    "/api/pull", {"peer": peer_ref(ctx, src), "prefix": f"{tree}/"}
                )
            except ApiError as e:
                raise StepError(f"node {by}: pull {tree}/ from {src}: {e}", [by, src]) from e
            ctx.state.initiated(t, src, by, tree)
            ctx.state.say(f"{by} pulls {tree}/ from {src} as a batch ({t.get('id')})")
            continue
        names = [ctx.state.sc.file(fid).name for fid in step.params["files"] if fid != "*"]
        if step.params["files"] == ("*",):
            try:
                listing = ctx.nodes.api(by, timeout=10).peer_files(peer_ref(ctx, src))
            except ApiError as e:
                raise StepError(f"node {by}: list {src}'s files: {e}", [by, src]) from e
            names = [str(f["name"]) for f in listing]
            if not names:
                raise StepError(f"node {by}: {src} shares no files", [by, src])
            ctx.state.say(f"{by} lists {src}: {', '.join(abbrev(names))}")
        for name in names:
            try:
                t = ctx.nodes.api(by).pull(peer_ref(ctx, src), name)
            except ApiError as e:
                raise StepError(f"node {by}: pull {name} from {src}: {e}", [by, src]) from e
            ctx.state.initiated(t, src, by, name)
            ctx.state.say(f"{by} pulls {name} from {src} (transfer {t.get('id')})")


def _list(ctx: StepContext, step: Step) -> None:
    """`by` asks `from` for its files over TCP (GET /api/peers/X/files). With `refused: CODE`
    the node must answer an error naming CODE (it refused the peer's answer), else the step
    fails; without, the listing must come."""
    src: str = step.params["from"]
    code = step.params.get("refused")
    for by in step.params["by"]:
        _wait_knows(ctx, by, src, step.params["wait"])
        try:
            listing = ctx.nodes.api(by, timeout=10).peer_files(peer_ref(ctx, src))
        except ApiError as e:
            if code is not None and code in str(e):
                ctx.state.say(f"{by} lists {src}: refused, as expected ({e})")
                continue
            raise StepError(f"node {by}: list {src}'s files: {e}", [by, src]) from e
        if code is not None:
            raise StepError(
                f"node {by}: listed {src} ({len(listing)} files), expected it to refuse: {code}",
                [by, src],
            )
        ctx.state.say(f"{by} lists {src}: {len(listing)} files")


def _one_of_node_group(
    p: dict[str, Any], written: Mapping[str, Any], ctx: Context, path: str
) -> dict[str, Any]:
    if ("node" in written) == ("group" in written):
        raise ctx.fail(path, "needs exactly one of `node` or `group`")
    nodes = p["node"] if "node" in written else p["group"]
    return {"nodes": nodes, **({"timeout": p["timeout"]} if "timeout" in p else {})}


def _start(ctx: StepContext, step: Step) -> None:
    ctx.nodes.after_start(list(step.params["nodes"]), start=True)


def _stop(ctx: StepContext, step: Step) -> None:
    ctx.nodes.stop(list(step.params["nodes"]), float(step.params.get("timeout", 10)))


_NODE_OR_GROUP = (Param("node", node_refs), Param("group", node_refs))
CORE: dict[str, Verb] = {
    v.name: v
    for v in (
        Verb(
            "push",
            (
                Param("from", node_ref, required=True),
                Param("to", dests, required=True),
                Param("file", files(star=False)),
                Param("tree", tree_ref),
                Param("wait", seconds, default=10),
            ),
            _push,
            _push_finish,
        ),
        Verb(
            "pull",
            (
                Param("by", node_refs, required=True),
                Param("from", node_ref, required=True),
                Param("file", files(star=True)),
                Param("tree", tree_ref),
                Param("wait", seconds, default=10),
            ),
            _pull,
            _pull_finish,
        ),
        Verb(
            "list",
            (
                Param("by", node_refs, required=True),
                Param("from", node_or_hostile, required=True),
                Param("refused", text),
                Param("wait", seconds, default=10),
            ),
            _list,
        ),
        Verb("start", _NODE_OR_GROUP, _start, _one_of_node_group),
        Verb(
            "stop",
            (*_NODE_OR_GROUP, Param("timeout", seconds, default=10)),
            _stop,
            _one_of_node_group,
        ),
    )
}


# --------------------------------------------------------------------------- fault verbs


def _message(e: Exception) -> str:
    """A FaultError's own message, without the verb and node it prefixes."""
    return str(getattr(e, "message", None) or e)


def _fault_verb(spec: FaultVerb, backend: Any) -> Verb:
    """A typed fault verb of the backend (a lab.faults.FaultVerb)."""

    def sides(v: object, where: Where, path: str) -> object:
        _ctx(where).refs.check_tree(v, path, network=False)
        try:
            backend.sides({"groups": v})  # as written: two sides or more, none shared
        except ValueError as e:
            raise where.fail(path, _message(e)) from None
        return v

    targets: tuple[Param, ...] = {
        "nodes": (Param("node", _names), Param("nodes", _names), Param("group", _names)),
        "sides": (Param("groups", sides, required=True, example="groups: [[a, b], [c]]"),),
    }.get(spec.targets, ())

    def finish(
        p: dict[str, Any], written: Mapping[str, Any], ctx: Context, path: str
    ) -> dict[str, Any]:
        if spec.targets == "nodes" and not {"node", "nodes", "group"} & set(written):
            raise ctx.fail(path, "needs `node` or `group`: the nodes it acts on")
        if spec.finish is not None:
            try:
                spec.finish({k: v for k, v in p.items() if k not in ("node", "nodes", "group")})
            except ValueError as e:
                raise ctx.fail(path, _message(e)) from None
        # As written: lab.faults.apply() checks and normalizes them itself when it runs.
        return dict(written)

    return Verb(spec.name, (*targets, *spec.params), run_fault, finish, fault=True)


def _loose_verb(name: str, backend: Any) -> Verb:
    """A fault verb of a backend without typed declarations (or of none)."""

    def check(written: Mapping[str, Any], ctx: Context, path: str) -> dict[str, Any]:
        for k, v in written.items():
            if k in NODE_REF_PARAMS:
                ctx.refs.check_tree(v, join(path, k), network=False)
            elif k in NETWORK_REF_PARAMS:
                ctx.refs.check_tree(v, join(path, k), network=True)
        validate = getattr(backend, "validate", None)
        if callable(validate):
            try:
                validate(name, dict(written))
            except ValueError as e:
                raise ctx.fail(path, str(e)) from None
        return dict(written)

    return Verb(name, (), run_fault, fault=True, loose=check)


def fault_targets(step: Step, sc: Scenario) -> dict[str, Any]:
    """Node and group names of the step resolved to node names, as lab.faults wants them."""
    p = step.params
    if step.do == "partition" or isinstance(p.get("groups"), list):
        sides = []
        for side in p.get("groups") or []:
            names: list[str] = []
            for ref in [side] if isinstance(side, str) else side:
                names += [n for n in sc.members(ref) if n not in names]
            sides.append(names)
        return {"groups": sides}
    nodes: list[str] = []
    for key in ("node", "nodes", "group"):
        refs = p.get(key)
        for ref in [refs] if isinstance(refs, str) else refs or []:
            nodes += [n for n in sc.members(ref) if n not in nodes]
    return {"node": nodes} if nodes else {}


def run_fault(ctx: StepContext, step: Step) -> None:
    backend = sc_mod.faults_module()
    if backend is None:
        raise ScenarioSkip("needs lab.faults")
    targets = fault_targets(step, ctx.state.sc)
    since = time.time()  # a restarted node is ready once it says `listening` after this
    revert = backend.apply(ctx.cluster, step.do, dict(step.params), targets=targets)
    if revert is not None:
        ctx.add_revert(step, revert)
    nodes = [n for n in targets.get("node", ()) if isinstance(n, str)]
    specs = getattr(backend, "SPECS", None)
    spec = specs.get(step.do) if isinstance(specs, Mapping) else None
    effect = getattr(spec, "lifecycle", None)
    if effect == "down":  # killed: it no longer answers, nothing is expected of it for now
        ctx.nodes.mark_down(nodes)
    elif effect == "up":  # addresses may have changed: routes again, then wait for it
        ctx.nodes.after_start(nodes, since=since)
