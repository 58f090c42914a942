"""Fault injection for lab scenarios: lifecycle, partitions, packet loss, shaping, disk full.

The scenario runner calls `apply(cluster, verb, params, targets=...)` for each fault step.
Lifecycle verbs act through the Cluster API (never the docker SDK directly); network faults run
`iptables` / `tc` inside the target containers (they have NET_ADMIN) through `Cluster.exec`,
one `sh -c` script per node so a fault lands in one round trip per container.

Every verb is one entry of SPECS (FaultVerb): its typed parameters (lab.params), whom it acts
on, the kernel features it needs, what it does to the node's process, and its implementation,
which lives with what it owns: lab.faults.process (Docker lifecycle), lab.faults.netfilter
(iptables: partition, loss), lab.faults.shaping (tc: bandwidth, latency), lab.faults.disk
(fill), lab.faults.clock (skew: libfaketime in the node process). lab.verbs turns these
entries into scenario verbs; validate() and apply() check a direct call against the same
declarations.

Faults that must be undone return a `Revert`: a callable, idempotent, thread-safe undo with a
`describe()`. Steps with `duration: N` are reverted by the runner N seconds after apply (it
owns the clock); everything still active is undone newest first at the end of the run. The
explicit undo verbs (`heal`, `unloss`, `unshape`, `unpause`, `unfill`, `unskew`) revert the matching
active faults of the same cluster, so a later timed or final revert finds nothing left to do.

Everything we add inside a container is recognisable, so reverts and sweeps touch nothing
else: iptables chains are named MOLE-* and qdiscs carry the root handle 6d6f: ("mo").
See docs/faults.md for the verbs, their parameters and the design choices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lab.faults import clock, disk, netfilter, process, shaping
from lab.faults.base import NET_INFO_CMD as NET_INFO_CMD
from lab.faults.base import PRELUDE as PRELUDE
from lab.faults.base import QDISC_HANDLE as QDISC_HANDLE
from lab.faults.base import REFUSED as REFUSED
from lab.faults.base import Apply, Targets
from lab.faults.base import ClusterLike as ClusterLike
from lab.faults.base import FaultError as FaultError
from lab.faults.base import FaultParamError as FaultParamError
from lab.faults.base import FaultSet as FaultSet
from lab.faults.base import NetInfo as NetInfo
from lab.faults.base import Revert as Revert
from lab.faults.base import active_faults as active_faults
from lab.faults.base import parse_net_info as parse_net_info
from lab.faults.base import script as script
from lab.faults.disk import FILL_FILE as FILL_FILE
from lab.faults.disk import fill_add_lines as fill_add_lines
from lab.faults.disk import fill_del_lines as fill_del_lines
from lab.faults.netfilter import loss_add_lines as loss_add_lines
from lab.faults.netfilter import loss_del_lines as loss_del_lines
from lab.faults.netfilter import partition_add_lines as partition_add_lines
from lab.faults.netfilter import partition_del_lines as partition_del_lines
from lab.faults.shaping import parse_rate as parse_rate
from lab.faults.shaping import parse_size as parse_size
from lab.faults.shaping import shape_add_lines as shape_add_lines
from lab.faults.shaping import shape_del_lines as shape_del_lines
from lab.params import Param, Where, check_params, choice, number, parsed

TargetKind = Literal["nodes", "sides", "none"]


def _none(params: Mapping[str, Any]) -> set[str]:
    return set()


def _iptables(params: Mapping[str, Any]) -> set[str]:
    return {"iptables"}


@dataclass(frozen=True)
class FaultVerb:
    """One fault verb: what the scenario parser, the runner and apply() need to know of it."""

    name: str
    apply: Apply
    params: tuple[Param, ...] = ()
    # Whom it acts on: `node`/`group` (nodes), `groups: [[a, b], [c]]` (sides), nobody (none).
    targets: TargetKind = "nodes"
    # Kernel features it needs (lab.probe's names), given its parameters as written.
    needs: Callable[[Mapping[str, Any]], set[str]] = _none
    # Rules across parameters, derived values (after each parameter was checked).
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # What it does to the node's process: "down" (it no longer answers), "up" (started again:
    # wait until it listens; its addresses may have changed).
    lifecycle: Literal["down", "up"] | None = None


_TIMEOUT = Param("timeout", number(ge=0), default=10)
_PATH = Param("path", disk.container_dir, default="/data/inbox")

SPECS: dict[str, FaultVerb] = {
    v.name: v
    for v in (
        FaultVerb(
            "kill",
            process.lifecycle("kill"),
            (Param("signal", process.signal_name, default="SIGKILL"),),
            lifecycle="down",
        ),
        FaultVerb("stop", process.lifecycle("stop"), (_TIMEOUT,), lifecycle="down"),
        FaultVerb("start", process.lifecycle("start"), lifecycle="up"),
        FaultVerb("restart", process.lifecycle("restart"), (_TIMEOUT,), lifecycle="up"),
        FaultVerb("pause", process.lifecycle("pause")),
        FaultVerb("unpause", process.lifecycle("unpause")),
        FaultVerb("partition", netfilter.partition, targets="sides", needs=_iptables),
        FaultVerb("heal", netfilter.heal, targets="none", needs=_iptables),
        FaultVerb(
            "loss",
            netfilter.loss,
            (
                Param("percent", number(gt=0, le=100), required=True, example="percent: 5"),
                Param("direction", choice("both", "in", "out"), default="both"),
            ),
            needs=lambda p: {"iptables", "iptables_statistic"},
        ),
        FaultVerb("unloss", netfilter.unloss, needs=_iptables),
        FaultVerb(
            "bandwidth",
            shaping.shape("bandwidth"),
            (
                Param("rate", parsed(shaping.rate_bits), required=True, example="rate: 10mbit"),
                Param("burst", parsed(shaping.burst_bytes)),
                Param("direction", choice("out", "in", "both"), default="out"),
                Param("qdisc", choice("auto", "tbf", "htb"), default="auto"),
            ),
            needs=shaping.bandwidth_needs,
            finish=shaping.bandwidth_finish,
        ),
        FaultVerb("unshape", shaping.unshape),
        FaultVerb(
            "latency",
            shaping.shape("latency"),
            (
                Param("ms", number(gt=0), required=True, example="ms: 80"),
                Param("jitter", number(ge=0), default=0),
            ),
            needs=lambda p: {"netem"},
        ),
        FaultVerb(
            "reorder",
            shaping.shape("reorder"),
            (
                Param("percent", number(gt=0, le=100), required=True, example="percent: 25"),
                Param("ms", number(gt=0), default=10),
            ),
            needs=lambda p: {"netem"},
        ),
        FaultVerb(
            "duplicate",
            netfilter.duplicate,
            (Param("percent", number(gt=0, le=100), required=True, example="percent: 5"),),
            needs=lambda p: {"iptables", "iptables_statistic", "tee"},
        ),
        FaultVerb("unduplicate", netfilter.unduplicate, needs=_iptables),
        FaultVerb(
            "dns_fail",
            netfilter.dns_fail,
            (Param("mode", choice("drop", "refuse"), default="drop"),),
            needs=_iptables,
        ),
        FaultVerb("dns_heal", netfilter.dns_heal, needs=_iptables),
        FaultVerb(
            "fill", disk.fill, (_PATH, Param("leave", parsed(shaping.byte_count), default=0))
        ),
        FaultVerb("unfill", disk.unfill, (_PATH,)),
        FaultVerb(
            "skew",
            clock.skew,
            (Param("seconds", clock.skew_seconds, required=True, example="seconds: -10800"),),
            needs=lambda p: {"faketime"},
        ),
        FaultVerb("unskew", clock.unskew, needs=lambda p: {"faketime"}),
    )
}
LIFECYCLE_VERBS = frozenset({"kill", "stop", "start", "restart", "pause", "unpause"})
FAULT_VERBS: frozenset[str] = frozenset(SPECS)
VERBS = FAULT_VERBS  # the name lab.scenario's fault hook looks for
# Keys of a scenario step that are the runner's business (timing, role resolution), not a
# verb parameter: the runner may pass the whole step and we ignore these.
STEP_KEYS = frozenset(
    {"id", "at", "after", "delay", "do", "duration", "node", "nodes", "group", "groups", "note"}
)


@dataclass(frozen=True)
class _Direct:
    """How a problem with the parameters of a direct call is told: FaultParamError."""

    verb: str

    def fail(self, path: str, message: str) -> Exception:
        return FaultParamError(f"{path} {message}", verb=self.verb)

    def missing(self, path: str, example: str) -> Exception:
        hint = f" (e.g. {example})" if example else ""
        return FaultParamError(f"missing parameter {path!r}{hint}", verb=self.verb)

    def unknown(self, path: str, keys: Sequence[str], allowed: Sequence[str]) -> Exception:
        listed = ", ".join(allowed) or "none"
        return FaultParamError(
            f"unknown parameter(s) {', '.join(keys)} (allowed: {listed})", verb=self.verb
        )


# --------------------------------------------------------------------------- public entry points


def spec(verb: str) -> FaultVerb:
    try:
        return SPECS[verb]
    except KeyError:
        known = ", ".join(sorted(FAULT_VERBS))
        raise FaultParamError(f"unknown fault verb {verb!r}; known: {known}") from None


def requirements(verb: str, params: Mapping[str, Any]) -> set[str]:
    """Kernel features (Capabilities field names, see lab.probe) the verb needs.

    "shaping" means tbf or htb (bandwidth falls back from tbf to htb).
    """
    return spec(verb).needs(params)


def parse(
    verb: str, params: Mapping[str, Any], where: Where | None = None, path: str = ""
) -> dict[str, Any]:
    """The verb's parameters checked and normalized (e.g. rate -> bits). Problems are told
    through `where` (default: FaultParamError); target and step keys are not looked at."""
    s = spec(verb)
    p = check_params(s.params, params, where or _Direct(verb), path, ignore=STEP_KEYS)
    return s.finish(p) if s.finish else p


def validate(verb: str, params: Mapping[str, Any]) -> None:
    """Raise FaultParamError (a ValueError) when the verb is unknown or a parameter is missing,
    unknown or bad. Node names are not checked here: the scenario parser resolves them."""
    parse(verb, params)
    if spec(verb).targets == "sides" and "groups" in params:
        sides(params)


def apply(
    cluster: ClusterLike,
    verb: str,
    params: Mapping[str, Any],
    *,
    targets: Mapping[str, Sequence[Any]],
) -> Revert | None:
    """Apply one fault now; returns its Revert, or None for one-shot verbs.

    targets: node names per role key, already resolved by the runner: {"node": ["n3"]} for
    node verbs (several names apply the fault to each), {"groups": [["a", "b"], ["c"]]} for
    partition. When a key is absent the same key of params is used (direct calls, tests).
    One-shot verbs (kill, stop, start, restart, unpause, heal, unloss, unshape, unfill, unskew)
    return None. A step's `duration` is not handled here: the runner calls the returned Revert after
    that many seconds, and undoes whatever is still active at the end.
    """
    s = spec(verb)
    p = parse(verb, params)
    if s.targets == "sides":
        return s.apply(cluster, p, Targets(sides=sides(params, targets)))
    if s.targets == "nodes":
        return s.apply(cluster, p, Targets(nodes=_target_nodes(verb, targets, params)))
    return s.apply(cluster, p, Targets())


def _target_nodes(
    verb: str, targets: Mapping[str, Sequence[Any]], params: Mapping[str, Any]
) -> list[str]:
    raw: Any = None
    for source in (targets, params):
        for key in ("node", "nodes", "group"):
            raw = raw or source.get(key)
    if isinstance(raw, str):
        raw = [raw]
    nodes = [str(n) for n in raw or []]
    if not nodes:
        raise FaultParamError("no target node (give `node: NAME`)", verb=verb)
    return list(dict.fromkeys(nodes))


def sides(
    params: Mapping[str, Any], targets: Mapping[str, Sequence[Any]] | None = None
) -> list[list[str]]:
    """partition's groups (resolved `targets`, else as written in `params`): two or more
    non-empty lists of node names, no node in two of them."""
    raw: Any = (targets or {}).get("groups") or params.get("groups")
    if not isinstance(raw, list | tuple) or not all(isinstance(g, list | tuple) for g in raw):
        raise FaultParamError(
            f"groups must be a list of node lists, e.g. [[a, b], [c]]; got {raw!r}",
            verb="partition",
        )
    groups = [[str(n) for n in g] for g in raw]
    if len(groups) < 2 or any(not g for g in groups):
        raise FaultParamError(
            f"need at least two non-empty groups to partition; got {groups}", verb="partition"
        )
    seen: dict[str, int] = {}
    for i, g in enumerate(groups):
        for n in g:
            if n in seen and seen[n] != i:
                raise FaultParamError(f"node {n} is in two groups: {groups}", verb="partition")
            seen[n] = i
    return [list(dict.fromkeys(g)) for g in groups]
