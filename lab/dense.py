"""Dense mode (`nodes_per_container: K`): K mole nodes per container, each in its own network
namespace and address on the same Docker bridge (lab/pod.py does that inside the container).

The engine creates and starts containers one at a time (~0.25-0.5 s each), so 100 nodes cost a
minute of setup in containers of their own; packed 10 a container, the engine sees 10. What a
scenario means is kept: every node still has its own address on its LAN (broadcast discovery,
per-node iptables/tc faults run inside its namespace), its own data directory (files placed and
checked on the host), its own API and its own log. What is not kept, and so refused at load
time for a dense scenario (lab.schema): lifecycle faults (kill/stop/start/restart/pause act on
a container, which is K nodes), static `peers` and hostile targets (both reach a node by the
container name Docker's DNS knows). Nodes that cannot share a container (tmpfs, several
networks, `start: false`, routers, hostile peers) keep one of their own.

DenseCluster wraps lab.cluster.Cluster and answers for the packed nodes; everything else goes
to the wrapped cluster.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from lab.nodespec import API_PORT, LabError, NodeHandle, NodeSpec

POD = "/opt/mole-lab/pod.py"
MAX_PER_CONTAINER = 32


def packable(spec: NodeSpec) -> bool:
    """A mole node that can share a container: one network, no tmpfs, started with the rest."""
    return spec.command is None and not spec.tmpfs and len(spec.networks) == 1 and spec.start


def node_argv(spec: NodeSpec, token: str) -> list[str]:
    """The node's `serve` line with its data under /data/<name>/ (the pod's bind mount), in
    the run's group like a node of its own container (lab/cluster.py)."""
    return spec.command_line(token, group=True, root=f"/data/{spec.name}")


class DenseCluster:
    """A Cluster whose packable nodes live K to a container."""

    def __init__(self, inner: Any, per_container: int) -> None:
        if not 1 < per_container <= MAX_PER_CONTAINER:
            raise ValueError(f"nodes_per_container must be 2..{MAX_PER_CONTAINER}")
        self.inner = inner
        self.k = per_container
        self.lock = threading.Lock()
        self.handles: dict[str, NodeHandle] = {}
        self.pod_of: dict[str, tuple[str, int]] = {}  # node -> (pod container name, index)
        self.started: set[str] = set()
        self.next_host: dict[str, int] = {}  # network -> next address, counting down from .254
        self.pod_names: set[str] = set()

    # -- the wrapped cluster

    def __enter__(self) -> DenseCluster:
        self.inner.__enter__()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def close(self) -> None:
        self.inner.close()

    # -- creating

    def create_nodes(
        self, specs: list[NodeSpec], prepare: Callable[[NodeHandle], object] | None = None
    ) -> dict[str, NodeHandle]:
        """As Cluster.create_nodes: `prepare` runs for each packed node once its pod exists
        (pod.json and the node's data dir written) and before the pod starts."""
        dense = [s for s in specs if packable(s)]
        out: dict[str, NodeHandle] = {}
        rest = [s for s in specs if not packable(s)]
        if rest:
            out.update(self.inner.create_nodes(rest, prepare))
        by_net: dict[str, list[NodeSpec]] = {}
        for s in dense:
            by_net.setdefault(s.networks[0], []).append(s)
        pods: list[NodeSpec] = []
        members: dict[str, list[NodeSpec]] = {}
        for net, group in by_net.items():
            for i in range(0, len(group), self.k):
                pods.append(self._pod_spec(net))
                members[pods[-1].name] = group[i : i + self.k]

        def fill(pod: NodeHandle) -> None:
            for h in self._fill(pod, members[pod.name]).values():
                if prepare is not None:
                    prepare(h)
            with self.lock:
                self.started.add(pod.name)  # started by create_nodes: start() is a no-op

        if pods:
            self.inner.create_nodes(pods, fill)
            out.update({s.name: self.handles[s.name] for s in dense})
        return out

    def _pod_spec(self, net: str) -> NodeSpec:
        taken = set(self.inner.nodes) | self.pod_names | set(self.handles)
        i = len(self.pod_names)
        while f"pod{i}" in taken:
            i += 1
        name = f"pod{i}"
        self.pod_names.add(name)
        return NodeSpec(
            name=name,
            networks=[net],
            start=True,  # once filled (create_nodes' prepare)
            entrypoint=["python3"],
            command=[POD, "/data/pod.json"],
            cap_add=["SYS_ADMIN"],  # `ip netns add` mounts the namespace under /run/netns
            user="0:0",
        )

    def _address(self, net: str) -> tuple[str, int, str]:
        """An address the engine will not hand out: its IPAM counts up from .2 on our /24s,
        we count down from the top."""
        subnet = ipaddress.ip_network(self.inner.subnets[net])
        hosts = list(subnet.hosts())
        with self.lock:
            k = self.next_host.get(net, len(hosts) - 1)
            self.next_host[net] = k - 1
        if k < len(hosts) // 2:
            raise LabError(f"network {net}: no address left for dense nodes ({subnet})")
        return str(hosts[k]), subnet.prefixlen, str(hosts[0])

    def _fill(self, pod: NodeHandle, members: list[NodeSpec]) -> dict[str, NodeHandle]:
        entries, out = [], {}
        user = NodeSpec(name="x", networks=[]).process_user()
        for i, s in enumerate(members):
            net = s.networks[0]
            ip, prefix, gateway = self._address(net)
            token = secrets.token_hex(16)
            # The run's group secret in the node's state dir, as lab/cluster.py does.
            data = s.make_data_dir(Path(pod.data_dir), getattr(self.inner, "group_secret", None))
            entries.append(
                {"name": s.name, "ip": ip, "prefix": prefix, "gateway": gateway,
                 "argv": node_argv(s, token), "user": user}
            )  # fmt: skip
            h = NodeHandle(
                name=s.name,
                container_id=pod.container_id,
                ips={net: ip},
                api_url=f"http://{ip}:{API_PORT}",
                token=token,
                data_dir=data,
                networks=[net],
            )
            out[s.name] = h
            with self.lock:
                self.handles[s.name] = h
                self.pod_of[s.name] = (pod.name, i)
        (Path(pod.data_dir) / "pod.json").write_text(json.dumps({"nodes": entries}))
        return out

    # -- what the runner and the faults ask of a node

    def _pod(self, name: str) -> tuple[str, int] | None:
        return self.pod_of.get(name) if name in self.handles else None

    def node(self, name: str) -> NodeHandle:
        h = self.handles.get(name)
        return h if h is not None else self.inner.node(name)

    @property
    def nodes(self) -> dict[str, NodeHandle]:
        return {**self.inner.nodes, **self.handles}

    def start(self, name: str) -> None:
        p = self._pod(name)
        if p is None:
            self.inner.start(name)
            return
        with self.lock:  # the pod starts all its nodes: once
            if p[0] in self.started:
                return
            self.started.add(p[0])
        self.inner.start(p[0])

    def logs(self, name: str, tail: int | None = None) -> str:
        h = self.handles.get(name)
        if h is None:
            return str(self.inner.logs(name, tail) if tail is not None else self.inner.logs(name))
        try:
            text = (Path(h.data_dir) / "node.log").read_text(errors="replace")
        except FileNotFoundError:
            # The node never started: the pod's own output says why (e.g. `ip netns add`).
            pod = self.pod_of[name][0]
            return f"(no node.log yet; pod {pod} says:)\n" + str(self.inner.logs(pod))
        return "\n".join(text.split("\n")[-tail - 1 :]) if tail else text

    def status(self, name: str) -> str:
        p = self._pod(name)
        return str(self.inner.status(p[0] if p else name))

    def statuses(self) -> dict[str, str]:
        """Cluster.statuses(), a packed node's being its pod's."""
        found: dict[str, str] = self.inner.statuses()
        with self.lock:
            pods = dict(self.pod_of)
        return {**found, **{n: found[p] for n, (p, _) in pods.items() if p in found}}

    def exec(self, name: str, cmd: list[str]) -> tuple[int, str]:
        """In the node's own network namespace (its iptables, qdiscs and addresses)."""
        p = self._pod(name)
        if p is None:
            return self.inner.exec(name, cmd)  # type: ignore[no-any-return]
        return self.inner.exec(p[0], ["ip", "netns", "exec", f"n{p[1]}", *cmd])  # type: ignore[no-any-return]

    def _lifecycle(self, verb: str) -> Callable[..., None]:
        def refuse(name: str, *a: Any, **kw: Any) -> None:
            if name in self.handles:
                raise LabError(
                    f"{verb} acts on a container, which holds {self.k} nodes in dense mode",
                    node=name,
                    operation=verb,
                )
            getattr(self.inner, verb)(name, *a, **kw)

        return refuse

    def stop(self, name: str, timeout: float = 10) -> None:
        self._lifecycle("stop")(name, timeout=timeout)

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        self._lifecycle("kill")(name, signal=signal)

    def restart(self, name: str, timeout: float = 10) -> None:
        self._lifecycle("restart")(name, timeout=timeout)

    def pause(self, name: str) -> None:
        self._lifecycle("pause")(name)

    def unpause(self, name: str) -> None:
        self._lifecycle("unpause")(name)


def factory(inner_factory: Callable[..., Any], per_container: int) -> Callable[..., Any]:
    """A runner cluster factory (`factory(run_id, image=, workdir=)`) for dense mode."""

    def make(run_id: str, *, image: str, workdir: Path) -> DenseCluster:
        return DenseCluster(inner_factory(run_id, image=image, workdir=workdir), per_container)

    return make
