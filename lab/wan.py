"""The lab beyond one LAN: NAT sites and service containers (docs/scenarios.md, "NAT sites").

* A router with `nat: NET` masquerades what leaves it on network NET (a site's private
  addresses become the router's address there, as behind a home router), and with
  `forward: NODE` forwards TCP port 47101 arriving on NET to NODE (a port forward). Every node
  on the router's other networks that is not itself on NET gets its default route through it.
* A `service: opentracker` container runs lab/services.py's opentracker image, with a whitelist
  of the scenario groups' rendezvous hashes; `service: libtorrent-dht` a libtorrent DHT node
  (its `args`: the IP:PORT of nodes to bootstrap from).
* `{ip:NAME}` in a node's args is NAME's address on its first network (e.g. the tracker's on
  the wan network), substituted when the node is created, after NAME started.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from lab.nodespec import TCP_PORT, NodeHandle, NodeSpec
from lab.scenario import NodeDecl, Scenario
from lab.services import (
    ensure_libtorrent_image,
    ensure_opentracker_image,
    opentracker_command,
    whitelist,
)
from lab.verbs import StepError

_IP_REF = re.compile(r"\{ip:([A-Za-z0-9][A-Za-z0-9_.-]*)\}")

Exec = Callable[[str, list[str]], tuple[int, str]]


def ip_refs(args: Iterable[str]) -> set[str]:
    return {m for a in args for m in _IP_REF.findall(a)}


def ip_waves(decls: list[NodeDecl]) -> list[list[NodeDecl]]:
    """`decls` in creation waves: a node comes after every node its `{ip:NAME}` names (a name
    outside `decls`, or a cycle, is left to `expand_ips` to report)."""
    waves: list[list[NodeDecl]] = []
    done: set[str] = set()
    left = list(decls)
    names = {d.name for d in decls}
    while left:
        wave = [d for d in left if (ip_refs(d.args) & names) <= done]
        if not wave:  # a cycle: let the first fail with a clear message
            wave = left
        waves.append(wave)
        done |= {d.name for d in wave}
        left = [d for d in left if d not in wave]
    return waves


def expand_ips(args: Iterable[str], handles: Mapping[str, NodeHandle]) -> list[str]:
    def sub(m: re.Match[str]) -> str:
        h = handles.get(m.group(1))
        ip = h.ips.get(h.networks[0], "") if h is not None and h.networks else ""
        if not ip:
            raise StepError(f"{m.group(0)}: {m.group(1)} has no address (not running?)", [])
        return ip

    return [_IP_REF.sub(sub, a) for a in args]


def service_spec(n: NodeDecl, tmpfs: dict[str, str], handles: Mapping[str, NodeHandle]) -> NodeSpec:
    """opentracker: its ports and whitelist; libtorrent-dht: `args` are its bootstrap nodes."""
    if n.service == "opentracker":
        command, tag = opentracker_command(), ensure_opentracker_image()
    else:
        command, tag = expand_ips(n.args, handles), ensure_libtorrent_image()
    return NodeSpec(
        name=n.name,
        networks=list(n.networks),
        command=command,
        image=tag,
        start=False,
        env=dict(n.env),
        tmpfs=tmpfs,
    )


def prepare_service(n: NodeDecl, sc: Scenario, data_dir: Path, secret: str) -> None:
    """Files the service reads from /data, written before it starts (the whitelist holds the
    hashes of the scenario's groups under the run's secret, as the nodes compute them)."""
    groups = sorted({g for m in sc.nodes for g in m.groups})
    path = data_dir / "whitelist"
    path.write_text(whitelist(groups, time.time(), secret))
    path.chmod(0o644)
    data_dir.chmod(0o755)  # opentracker chroots here and reads it as "nobody"


def _ip(handles: Mapping[str, NodeHandle], name: str, net: str) -> str:
    h = handles.get(name)
    return h.ips.get(net, "") if h is not None else ""


def apply_nat(
    sc: Scenario,
    handles: Mapping[str, NodeHandle],
    running: set[str],
    started: Iterable[str],
    run: Exec,
) -> None:
    """NAT rules in the routers and default routes in the site nodes, for what runs now (every
    command is idempotent: it runs again whenever one of the parties (re)starts)."""
    started = set(started)
    for r in sc.nodes:
        if r.nat is None or r.name not in running:
            continue
        site_nets = [net for net in r.networks if net != r.nat]
        members = [
            m for m in sc.nodes
            if m.name != r.name and m.name in running and not m.router
            and r.nat not in m.networks and set(m.networks) & set(site_nets)
        ]  # fmt: skip
        if r.name not in started and not {m.name for m in members} & started:
            continue
        wan_ip = _ip(handles, r.name, r.nat)
        if not wan_ip:
            raise StepError(f"router {r.name} has no address on {r.nat} (not running?)", [r.name])
        find_if = (
            f"IF=$(ip -o -4 addr show | awk -v ip={wan_ip} 'index($4, ip \"/\") == 1 {{print $2}}')"
        )
        rules = [
            # The router's interface on the wan network: the one holding its address there. On
            # a loaded engine an address can show up a moment after the container reports
            # running, so it is looked for during up to 5 s; then what is there is reported.
            f'for i in $(seq 50); do {find_if}; [ -n "$IF" ] && break; sleep 0.1; done',
            '[ -n "$IF" ] || { echo "no interface with ' + wan_ip + ' after 5 s; addresses:";'
            " ip -o -4 addr show; exit 1; }",
            "iptables -t nat -C POSTROUTING -o $IF -j MASQUERADE 2>/dev/null"
            " || iptables -t nat -A POSTROUTING -o $IF -j MASQUERADE",
        ]
        if r.forward is not None and r.forward in running:
            net = next(n for n in handles[r.forward].networks if n in site_nets)
            to = f"{_ip(handles, r.forward, net)}:{TCP_PORT}"
            dnat = f"-i $IF -p tcp --dport {TCP_PORT} -j DNAT --to-destination {to}"
            rules.append(
                f"iptables -t nat -C PREROUTING {dnat} 2>/dev/null"
                f" || iptables -t nat -A PREROUTING {dnat}"
            )
        _run(run, r.name, ["sh", "-c", " && ".join(rules)])
        for m in members:
            net = next(n for n in m.networks if n in site_nets)
            gw = _ip(handles, r.name, net)
            _run(run, m.name, ["ip", "route", "replace", "default", "via", gw])


def _run(run: Exec, node: str, cmd: list[str]) -> None:
    code, out = run(node, cmd)
    if code != 0:
        raise StepError(f"node {node}: `{' '.join(cmd)}` exited {code}: {out.strip()}", [node])


__all__ = ["apply_nat", "expand_ips", "ip_refs", "ip_waves", "prepare_service", "service_spec"]
