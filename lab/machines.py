"""Which engine runs a swarm node's container, and a client for each (lab run --swarm).

Once a service's task runs, its container belongs to the engine of the machine the task was
placed on, and only that engine can exec in it, read its logs, stop, pause or inspect it. The
lab learns each machine's engine endpoint from, first, `MOLE_SWARM_ENGINES` (`NODE=URL,...`,
which `lab run --swarm-engine NODE=URL` adds to; NODE is the machine's swarm hostname or node
id), then the machine's node label `mole.engine` (`docker node update --label-add
mole.engine=ssh://lab@m2 m2`, set once by the operator on the manager). URLs are what the
docker SDK takes: `tcp://HOST:2375`, `ssh://USER@HOST` (through the system's ssh client: no
Python dependency), `unix:///path`. The machine the lab runs on needs none: its own engine.

Free of Docker: the engine connections are made by a function it is given (lab.swarm's).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from lab.nodespec import LabError

ENV = "MOLE_SWARM_ENGINES"
LABEL = "mole.engine"
SCHEMES = ("tcp://", "ssh://", "unix://", "http://", "https://")


def parse(text: str, where: str = ENV) -> dict[str, str]:
    """`NODE=URL[,NODE=URL...]` -> {node: url}; ValueError naming the bad item."""
    out: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        node, eq, url = item.partition("=")
        node, url = node.strip(), url.strip()
        if not eq or not node or not url.startswith(SCHEMES):
            raise ValueError(
                f"{where}: {item!r} is not NODE=URL (URL one of {', '.join(SCHEMES)}...)"
            )
        out[node] = url
    return out


def written(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The endpoints the operator wrote in the environment (MOLE_SWARM_ENGINES)."""
    return parse((os.environ if environ is None else environ).get(ENV, ""))


def endpoint(node: Mapping[str, Any], given: Mapping[str, str]) -> str:
    """The engine URL of a swarm node (an entry of `docker node ls`'s API listing): written by
    its id or hostname, else its `mole.engine` label; "" = not said."""
    nid = str(node.get("ID", ""))
    host = str((node.get("Description") or {}).get("Hostname", ""))
    for key in (nid, host):
        if key and key in given:
            return given[key]
    return str(((node.get("Spec") or {}).get("Labels") or {}).get(LABEL, ""))


class Machines:
    """Engine clients by swarm node id: this machine's own (`local()`), the others' made once
    by `connect(url)` from their endpoints (`nodes()`: the swarm's node listing)."""

    def __init__(
        self,
        here: str,
        *,
        local: Callable[[], Any],
        nodes: Callable[[], list[dict[str, Any]]],
        connect: Callable[[str], Any],
        given: Mapping[str, str] | None = None,
    ) -> None:
        self.here = here
        self._local = local
        self._nodes = nodes
        self._connect = connect
        try:
            self._given = dict(written() if given is None else given)
        except ValueError as e:
            raise LabError(str(e), operation="read the swarm machines' engines") from None
        self._apis: dict[str, Any] = {}
        self._names: dict[str, str] = {}  # node id -> hostname, for messages
        self._lock = threading.Lock()

    def is_local(self, node_id: str) -> bool:
        return not node_id or node_id == self.here

    def name(self, node_id: str) -> str:
        return self._names.get(node_id, node_id[:12])

    def api(self, node_id: str) -> Any:
        """The low-level client of the engine of the machine `node_id` (LabError: its endpoint
        is unknown or does not answer, saying how to give it)."""
        if self.is_local(node_id):
            return self._local()
        with self._lock:
            if node_id in self._apis:
                return self._apis[node_id]
        listing = {str(n.get("ID", "")): n for n in self._nodes()}
        node = listing.get(node_id, {})
        host = str((node.get("Description") or {}).get("Hostname", "")) or node_id[:12]
        self._names[node_id] = host
        url = endpoint(node, self._given)
        if not url:
            raise LabError(
                f"no engine endpoint for swarm machine {host} ({node_id[:12]}): set "
                f"`docker node update --label-add {LABEL}=tcp://HOST:2375 {host}` (or "
                f"ssh://USER@HOST), or {ENV}={host}=URL / lab run --swarm-engine {host}=URL"
            )
        api = self._connect(url)
        with self._lock:
            return self._apis.setdefault(node_id, api)
