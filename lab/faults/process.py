"""Process faults: kill, stop, start, restart, pause, unpause, through the Cluster API (the
Docker lifecycle of the node's container; never the SDK directly)."""

from __future__ import annotations

import re
from typing import Any

from lab.faults.base import (
    Apply,
    ClusterLike,
    Revert,
    Targets,
    active_faults,
    docker_call,
    each_node,
    raise_first,
    register,
)
from lab.params import Where

_SIGNAL_RE = re.compile(r"^(SIG[A-Z0-9]+|[0-9]+)$")


def signal_name(value: object, where: Where, path: str) -> str:
    """`SIGKILL`, `kill`, `TERM`, `9` -> `SIGKILL`, `SIGKILL`, `SIGTERM`, `9`."""
    sig = str(value).upper()
    if not sig.isdigit() and not sig.startswith("SIG"):
        sig = "SIG" + sig
    if isinstance(value, bool) or not _SIGNAL_RE.match(sig):
        raise where.fail(path, f"is a bad signal {value!r} (e.g. SIGKILL, SIGTERM, 9)")
    return sig


def lifecycle(verb: str) -> Apply:
    """The apply function of one lifecycle verb."""

    def apply(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> Revert | None:
        return _lifecycle(cluster, verb, p, targets.nodes)

    return apply


def _lifecycle(
    cluster: ClusterLike, verb: str, p: dict[str, Any], nodes: list[str]
) -> Revert | None:
    def one(n: str) -> None:
        if verb == "kill":
            docker_call(verb, n, lambda: cluster.kill(n, signal=p["signal"]))
        elif verb == "stop":
            docker_call(verb, n, lambda: cluster.stop(n, timeout=p["timeout"]))
        elif verb == "start":
            docker_call(verb, n, lambda: cluster.start(n))
        elif verb == "restart":
            docker_call(verb, n, lambda: cluster.restart(n, timeout=p["timeout"]))
        elif verb == "pause":
            docker_call(verb, n, lambda: cluster.pause(n))
        elif verb == "unpause":
            _unpause(cluster, n)

    if verb == "unpause":
        for r in active_faults(cluster):
            if r.verb == "pause" and set(r.nodes) <= set(nodes):
                r()
    raise_first(each_node(nodes, one), verb)
    if verb != "pause":
        return None

    def undo() -> None:
        raise_first(each_node(nodes, lambda n: _unpause(cluster, n)), "unpause")

    desc = f"pause {', '.join(nodes)}"
    return register(cluster, Revert("pause", nodes, desc, undo, cluster=cluster))


def _unpause(cluster: ClusterLike, node: str) -> None:
    if cluster.status(node) == "paused":  # idempotent: an explicit unpause may have run
        docker_call("unpause", node, lambda: cluster.unpause(node))
