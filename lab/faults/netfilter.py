"""Network faults made with iptables inside the containers: partition / heal, loss / unloss.

partition: each node of each side gets a chain MOLE-PARTITION (jumped from the top of INPUT
and OUTPUT) dropping every address of the nodes of the other sides. loss: chains MOLE-LOSS-IN
and MOLE-LOSS-OUT ending in a `statistic --mode random` DROP, with the host's addresses exempt
so the lab's own API calls are never the ones losing packets. See docs/faults.md.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from typing import Any

from lab.faults.base import (
    REFUSED,
    ClusterLike,
    FaultError,
    Revert,
    Targets,
    active_faults,
    apply_each,
    best_effort,
    each_node,
    ensure_line,
    exec_if_up,
    exec_script,
    if_line,
    net_info,
    raise_first,
    refuse_line,
    register,
    run_line,
    undo_kind,
)

PARTITION_CHAIN = "MOLE-PARTITION"
# direction -> (built-in chain, interface option, our chain, address option that names the host)
LOSS_CHAINS: dict[str, tuple[str, str, str, str]] = {
    "in": ("INPUT", "-i", "MOLE-LOSS-IN", "-s"),
    "out": ("OUTPUT", "-o", "MOLE-LOSS-OUT", "-d"),
}
IPT = ("iptables", "-w", "5")  # -w: concurrent faults in one container wait for the xtables lock


# --------------------------------------------------------------------------- partition


def _ips(cluster: ClusterLike, node: str) -> list[str]:
    try:
        handle = cluster.node(node)
    except Exception as e:
        raise FaultError(str(e), verb="partition", node=node) from e
    ips = [ip for ip in dict(handle.ips).values() if ip]
    if not ips:
        raise FaultError(
            "the node has no IP address (was it ever started?)", verb="partition", node=node
        )
    return list(dict.fromkeys(ips))


def partition_rules(peer_ips: Sequence[str]) -> list[list[str]]:
    """Rule specs (without the -A/-D) that cut one node off from these peers."""
    rules = []
    for ip in peer_ips:
        rules.append(["-s", ip, "-j", "DROP"])
        rules.append(["-d", ip, "-j", "DROP"])
    return rules


def partition_add_lines(peer_ips: Sequence[str]) -> list[str]:
    c = PARTITION_CHAIN
    lines = [ensure_line([*IPT, "-S", c], [*IPT, "-N", c])]
    for rule in partition_rules(peer_ips):
        lines.append(run_line([*IPT, "-A", c, *rule]))
    # Jump last: the chain is complete before it sees traffic.
    for parent in ("INPUT", "OUTPUT"):
        lines.append(ensure_line([*IPT, "-C", parent, "-j", c], [*IPT, "-I", parent, "1", "-j", c]))
    return lines


def partition_del_lines(peer_ips: Sequence[str]) -> list[str]:
    """Delete one copy of each rule (overlapping partitions share the chain), then the chain
    itself once no rule is left."""
    c = PARTITION_CHAIN
    lines = [
        if_line([*IPT, "-C", c, *rule], [*IPT, "-D", c, *rule])
        for rule in partition_rules(peer_ips)
    ]
    lines.append(f'if [ "$({shlex.join([*IPT, "-S", c])} 2>/dev/null | wc -l)" -eq 1 ]; then')
    for parent in ("INPUT", "OUTPUT"):
        lines.append("  " + if_line([*IPT, "-C", parent, "-j", c], [*IPT, "-D", parent, "-j", c]))
    lines.append("  " + run_line([*IPT, "-X", c]))
    lines.append("fi")
    return lines


def partition(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> Revert:
    groups = targets.sides
    ips = {n: _ips(cluster, n) for g in groups for n in g}
    plan: dict[str, list[str]] = {}
    for i, g in enumerate(groups):
        others = [ip for j, h in enumerate(groups) if j != i for n in h for ip in ips[n]]
        for n in g:
            plan[n] = list(dict.fromkeys(others))
    nodes = list(plan)
    desc = "partition " + " | ".join(",".join(g) for g in groups)

    def undo() -> None:
        errors = each_node(
            nodes, lambda n: exec_if_up(cluster, n, "heal", partition_del_lines(plan[n]))
        )
        raise_first(errors, "heal")

    errors = each_node(
        nodes, lambda n: exec_script(cluster, n, "partition", partition_add_lines(plan[n]))
    )
    if errors:
        # Half a partition is worse than none: take back what landed (the failed nodes too: a
        # script may stop after some rules), then report.
        each_node(nodes, lambda n: exec_if_up(cluster, n, "heal", partition_del_lines(plan[n])))
        raise_first(errors, "partition")
    return register(cluster, Revert("partition", nodes, desc, undo, cluster=cluster))


def heal(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> None:
    failures = []
    for r in active_faults(cluster):
        if r.verb == "partition":
            try:
                r()
            except FaultError as e:
                failures.append(str(e))
    if failures:
        raise FaultError("could not heal every partition:\n" + "\n".join(failures), verb="heal")


# --------------------------------------------------------------------------- loss


def _probability(percent: float) -> str:
    return format(percent / 100, ".6g")


def loss_add_lines(percent: float, direction: str, gateways: Sequence[str]) -> list[str]:
    lines = []
    for d in ("in", "out") if direction == "both" else (direction,):
        parent, dev_opt, chain, addr_opt = LOSS_CHAINS[d]
        lines.append(
            refuse_line(
                [*IPT, "-S", chain],
                f"loss ({d}) is already active on this node; unloss it first",
            )
        )
        lines.append(run_line([*IPT, "-N", chain]))
        for gw in gateways:  # the host (the lab's API calls) is never the one losing packets
            lines.append(run_line([*IPT, "-A", chain, addr_opt, gw, "-j", "RETURN"]))
        lines.append(
            run_line(
                [*IPT, "-A", chain, "-m", "statistic", "--mode", "random",
                 "--probability", _probability(percent), "-j", "DROP"]
            )
        )  # fmt: skip
        lines.append(run_line([*IPT, "-I", parent, "1", dev_opt, "eth+", "-j", chain]))
    return lines


def loss_del_lines(direction: str = "both") -> list[str]:
    """Remove our loss chains (also what unloss runs: safe on a node without loss)."""
    lines = []
    for d in ("in", "out") if direction == "both" else (direction,):
        parent, dev_opt, chain, _ = LOSS_CHAINS[d]
        jump = [parent, dev_opt, "eth+", "-j", chain]
        lines.append(f"while has {shlex.join([*IPT, '-D', *jump])}; do :; done")
        lines.append(
            f"! has {shlex.join([*IPT, '-S', chain])} || "
            f"{{ {run_line([*IPT, '-F', chain])}; {run_line([*IPT, '-X', chain])}; }}"
        )
    return lines


def _scripted_fault(
    cluster: ClusterLike,
    verbs: tuple[str, str],
    nodes: list[str],
    add_lines: Callable[[str], list[str]],
    del_lines: list[str],
    desc: str,
) -> Revert:
    """A netfilter fault applied by one script per node and reverted by another. A failed
    add is rolled back on that node unless the script refused (the fault was already active
    there: the refusal changed nothing and the active one stays)."""
    verb, unverb = verbs

    def add(n: str) -> None:
        try:
            exec_script(cluster, n, verb, add_lines(n))
        except FaultError as e:
            if e.exit_code != REFUSED:
                best_effort(lambda: exec_script(cluster, n, unverb, del_lines))
            raise

    def undo(n: str) -> None:
        exec_if_up(cluster, n, unverb, del_lines)

    return apply_each(cluster, verb, unverb, nodes, add, undo, desc)


def loss(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> Revert:
    nodes = targets.nodes
    percent, direction = p["percent"], p["direction"]

    def lines(n: str) -> list[str]:
        return loss_add_lines(percent, direction, net_info(cluster, n, "loss").gateways)

    desc = f"loss {percent:g}% ({direction}) on {', '.join(nodes)}"
    return _scripted_fault(
        cluster, ("loss", "unloss"), nodes, lines, loss_del_lines(direction), desc
    )


def unloss(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> None:
    undo_kind(cluster, "unloss", {"loss"}, targets.nodes, _loss_sweep)


def _loss_sweep(cluster: ClusterLike, node: str) -> None:
    exec_if_up(cluster, node, "unloss", loss_del_lines("both"))


# --------------------------------------------------------------------------- duplicate

DUP_CHAIN = "MOLE-DUP"
DNS_CHAIN = "MOLE-DNS"
DOCKER_DNS = "127.0.0.11"  # Docker's embedded resolver, in every container on a user network


def duplicate_add_lines(percent: float, peer_ips: Sequence[str]) -> list[str]:
    """TEE (mangle POSTROUTING) clones `percent` of the packets to each peer and sends the
    clone to that same peer: it receives the packet twice. Per peer, because TEE's gateway is
    one fixed address."""
    m = [*IPT, "-t", "mangle"]
    lines = [
        refuse_line([*m, "-S", DUP_CHAIN], "duplicate is already active; unduplicate it first"),
        run_line([*m, "-N", DUP_CHAIN]),
    ]
    for ip in peer_ips:
        lines.append(
            run_line(
                [*m, "-A", DUP_CHAIN, "-d", ip, "-m", "statistic", "--mode", "random",
                 "--probability", _probability(percent), "-j", "TEE", "--gateway", ip]
            )
        )  # fmt: skip
    lines.append(run_line([*m, "-I", "POSTROUTING", "1", "-o", "eth+", "-j", DUP_CHAIN]))
    return lines


def duplicate_del_lines() -> list[str]:
    m = [*IPT, "-t", "mangle"]
    jump = ["POSTROUTING", "-o", "eth+", "-j", DUP_CHAIN]
    return [
        f"while has {shlex.join([*m, '-D', *jump])}; do :; done",
        f"! has {shlex.join([*m, '-S', DUP_CHAIN])} || "
        f"{{ {run_line([*m, '-F', DUP_CHAIN])}; {run_line([*m, '-X', DUP_CHAIN])}; }}",
    ]


def _other_ips(cluster: ClusterLike, node: str) -> list[str]:
    """Every address of every other node of the run (the peers a node may talk to)."""
    listing = getattr(cluster, "nodes", None)
    if listing is None:
        raise FaultError("the cluster cannot list its nodes", verb="duplicate", node=node)
    out = []
    handles = listing() if callable(listing) else listing  # Cluster.nodes is a property
    for name, h in dict(handles).items():
        if name != node:
            out += [ip for ip in dict(h.ips).values() if ip]
    return list(dict.fromkeys(out))


def duplicate(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> Revert:
    nodes, percent = targets.nodes, p["percent"]

    def lines(n: str) -> list[str]:
        return duplicate_add_lines(percent, _other_ips(cluster, n))

    desc = f"duplicate {percent:g}% (out) on {', '.join(nodes)}"
    verbs = ("duplicate", "unduplicate")
    return _scripted_fault(cluster, verbs, nodes, lines, duplicate_del_lines(), desc)


def unduplicate(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> None:
    undo_kind(
        cluster,
        "unduplicate",
        {"duplicate"},
        targets.nodes,
        lambda c, n: exec_if_up(c, n, "unduplicate", duplicate_del_lines()),
    )


# --------------------------------------------------------------------------- DNS failure


def dns_add_lines(mode: str) -> list[str]:
    """Every query to Docker's resolver dropped (lookups time out) or refused (they fail at
    once). Matched on the address: Docker's own NAT rules change only the port."""
    target = ["DROP"] if mode == "drop" else ["REJECT"]
    return [
        refuse_line([*IPT, "-S", DNS_CHAIN], "dns_fail is already active; dns_heal it first"),
        run_line([*IPT, "-N", DNS_CHAIN]),
        run_line([*IPT, "-A", DNS_CHAIN, "-d", DOCKER_DNS, "-j", *target]),
        run_line([*IPT, "-I", "OUTPUT", "1", "-j", DNS_CHAIN]),
    ]


def dns_del_lines() -> list[str]:
    return [
        f"while has {shlex.join([*IPT, '-D', 'OUTPUT', '-j', DNS_CHAIN])}; do :; done",
        f"! has {shlex.join([*IPT, '-S', DNS_CHAIN])} || "
        f"{{ {run_line([*IPT, '-F', DNS_CHAIN])}; {run_line([*IPT, '-X', DNS_CHAIN])}; }}",
    ]


def dns_fail(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> Revert:
    nodes, mode = targets.nodes, p["mode"]
    desc = f"dns_fail ({mode}) on {', '.join(nodes)}"
    return _scripted_fault(
        cluster,
        ("dns_fail", "dns_heal"),
        nodes,
        lambda n: dns_add_lines(mode),
        dns_del_lines(),
        desc,
    )


def dns_heal(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> None:
    undo_kind(
        cluster,
        "dns_heal",
        {"dns_fail"},
        targets.nodes,
        lambda c, n: exec_if_up(c, n, "dns_heal", dns_del_lines()),
    )
