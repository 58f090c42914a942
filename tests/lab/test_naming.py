"""lab.naming: the labels, names and filters lab.cluster marks Docker resources with (no
engine needed)."""

from __future__ import annotations

import ipaddress

from lab import naming
from lab.host import owner_id


def test_a_run_is_marked_and_found_by_its_labels() -> None:
    labels = naming.run_labels("r1", "h:1:2")
    assert labels == {naming.LABEL: "1", naming.LABEL_RUN: "r1", naming.LABEL_OWNER: "h:1:2"}
    assert naming.run_filter("r1", "h:1:2") == [f"{k}={v}" for k, v in list(labels.items())[1:]]
    assert naming.sweep_filter() == ["io.mole.lab=1"]
    assert naming.sweep_filter("r1") == ["io.mole.lab=1", "io.mole.lab.run=r1"]
    assert naming.owner_filter("h:1:2") == ["io.mole.lab=1", "io.mole.lab.owner=h:1:2"]
    assert naming.docker_name("r1", "lan") == "mole-r1-lan"


def test_only_a_dead_owners_resources_are_leftovers() -> None:
    mine = {"Labels": {naming.LABEL_OWNER: owner_id()}}
    dead = {"Labels": {naming.LABEL_OWNER: f"{owner_id().split(':')[0]}:{2**22 + 7}:1"}}
    assert not naming.is_leftover(mine)
    assert naming.is_leftover(mine, everything=True)
    assert naming.is_leftover(dead)
    assert naming.is_leftover({"Labels": None})  # no owner: nobody alive claims it


def test_network_subnets_reads_ipv4_ipam_configs_only() -> None:
    listing = [
        {"IPAM": {"Config": [{"Subnet": "10.213.7.0/24"}, {"Subnet": "fd6d::/64"}]}},
        {"IPAM": {"Config": [{"Subnet": "not a net"}, {}]}},
        {"IPAM": None},
        {},
    ]
    assert naming.network_subnets(listing) == [ipaddress.IPv4Network("10.213.7.0/24")]
