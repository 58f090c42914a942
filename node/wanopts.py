"""The beyond-the-LAN options of `mole serve` (`--tracker`, `--dht`, ...), kept apart from
node/config.py so that the options of the other features merge without conflicts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from node.errors import ConfigError

DHT_PORT = 6881  # the customary Mainline DHT port; `--dht-bind HOST:0` for an ephemeral one


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracker",
        action="append",
        default=None,
        help="BitTorrent tracker to rendezvous on: udp://HOST:PORT or http://HOST[:PORT]/announce"
        " (repeatable)",
    )
    p.add_argument("--dht", action="store_true", help="rendezvous on the Mainline DHT too")
    p.add_argument(
        "--dht-bootstrap",
        action="append",
        default=None,
        help="DHT node to bootstrap from, HOST:PORT (repeatable)",
    )
    p.add_argument(
        "--dht-bind",
        default=f"0.0.0.0:{DHT_PORT}",
        help=f"UDP address of the DHT socket (default 0.0.0.0:{DHT_PORT})",
    )
    p.add_argument(
        "--wan-interval",
        type=float,
        default=300.0,
        help="seconds between tracker announces and DHT lookups at most (default 300)",
    )


def from_args(
    ns: argparse.Namespace, hostport: Callable[[str, int], tuple[str, int]]
) -> dict[str, Any]:
    """The Config fields of these options (URLs are checked by node/wan.py at start)."""
    trackers = tuple(ns.tracker or ())
    for url in trackers:
        if not url.startswith(("udp://", "http://")):
            raise ConfigError(f"a tracker URL starts with udp:// or http://: {url!r}")
    if not 1.0 <= ns.wan_interval <= 86400:
        raise ConfigError("--wan-interval must be between 1 and 86400 seconds")
    if len(trackers) > 16 or len(ns.dht_bootstrap or ()) > 16:
        raise ConfigError("at most 16 trackers and 16 DHT bootstrap nodes")
    return {
        "trackers": trackers,
        "dht": ns.dht,
        "dht_bootstrap": tuple(hostport(h, DHT_PORT) for h in ns.dht_bootstrap or ()),
        "dht_bind": hostport(ns.dht_bind, DHT_PORT),
        "wan_interval": ns.wan_interval,
    }
