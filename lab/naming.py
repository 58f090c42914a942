"""How the lab names and marks what it creates in Docker, free of the engine: the labels every
resource carries, container and network names, the subnets lab networks are cut from.

Apart from lab.cluster (the only module that imports `docker`) so the conventions a sweep, a
test or a reader of `docker ps` relies on are stated in one place with nothing else (issue 9's
size rule: cluster.py owns the engine calls, this what they name and mark).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from lab.host import owner_alive

LABEL = "io.mole.lab"  # "1" on everything the lab creates
LABEL_RUN = "io.mole.lab.run"  # run id
LABEL_OWNER = "io.mole.lab.owner"  # "<hostname>:<pid>:<start-time>" of the creating process
LABEL_NODE = "io.mole.lab.node"  # node name (containers only)

# Candidate /16 pools for lab networks, tried in order; every /24 inside is one network.
SUBNET_POOLS = ("10.213.0.0/16", "172.30.0.0/16")


def run_labels(run_id: str, owner: str) -> dict[str, str]:
    """The labels on every container and network of one run."""
    return {LABEL: "1", LABEL_RUN: run_id, LABEL_OWNER: owner}


def run_filter(run_id: str, owner: str) -> list[str]:
    """The engine's label filter for the resources one run of one owner made."""
    return [f"{LABEL_RUN}={run_id}", f"{LABEL_OWNER}={owner}"]


def docker_name(run_id: str, name: str) -> str:
    """The engine's name of a run's container or network called `name` in the scenario."""
    return f"mole-{run_id}-{name}"


def sweep_filter(run_id: str | None = None) -> list[str]:
    """The engine's label filter for every lab resource, or those of one run."""
    return [f"{LABEL}=1"] + ([f"{LABEL_RUN}={run_id}"] if run_id else [])


def owner_filter(owner: str) -> list[str]:
    """The engine's label filter for the lab resources one process made."""
    return [f"{LABEL}=1", f"{LABEL_OWNER}={owner}"]


def is_leftover(resource: Mapping[str, Any], *, everything: bool = False) -> bool:
    """A resource (an engine listing's entry) a sweep may remove: its owner process is gone,
    or `everything`."""
    labels = resource.get("Labels") or {}
    return everything or not owner_alive(str(labels.get(LABEL_OWNER, "")))


def ipv6_subnet(v4: ipaddress.IPv4Network) -> str:
    """The IPv6 /64 of a lab network: a unique local prefix (RFC 4193, fd00::/8) made of its
    IPv4 /24, so that the two are free or taken together."""
    a, b, c, _ = v4.network_address.packed
    return f"fd6d:6f6c:{a:02x}{b:02x}:{c:02x}00::/64"


def network_subnets(listing: Iterable[Mapping[str, Any]]) -> list[ipaddress.IPv4Network]:
    """The IPv4 subnets of an engine's network listing (its IPAM configs): taken for a new
    lab network."""
    used = []
    for net in listing:
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            try:
                n = ipaddress.ip_network(cfg.get("Subnet", ""), strict=False)
            except ValueError:
                continue
            if isinstance(n, ipaddress.IPv4Network):
                used.append(n)
    return used
