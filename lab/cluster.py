"""The lab's door to Docker: networks, node containers, images, cleanup (lab.swarm: services).

Every other lab module talks to Docker through this one, so timeouts, labels and error
messages are handled in one place. Everything the lab creates carries `io.mole.lab=1`, the run
id and the owning process (`<hostname>:<pid>:<start-time>`, lab.host), which lets `sweep()`
tell the leftovers of a dead run from the resources of a live one. What needs no engine lives
beside it: lab.nodespec (NodeSpec, NodeHandle), lab.naming (labels, names, subnet pools),
lab.logfile (the engine's log files), lab.host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from lab import naming
from lab.host import free_subnets, owner_id, route_nets
from lab.logfile import EngineLogRoot, LogFollowers
from lab.nodespec import LabError as LabError  # the door's error: callers catch it from here
from lab.nodespec import NodeHandle, NodeSpec, check_name, check_specs, split_image_ref
from lab.parallel import each

log = logging.getLogger("mole.lab.cluster")

WORKERS = 8
# Per-request deadline of every Docker call (socket timeout of the SDK client).
TIMEOUT = float(os.environ.get("MOLE_LAB_DOCKER_TIMEOUT", "60"))
LOG_TAIL = 30

_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
T = TypeVar("T")

# --------------------------------------------------------------------------- docker client

_client_lock = threading.Lock()
_client: docker.DockerClient | None = None


def client() -> docker.DockerClient:
    """The shared SDK client (thread-safe: its connection pool is sized for our workers)."""
    global _client
    with _client_lock:
        if _client is None:
            try:
                c = docker.from_env(timeout=int(TIMEOUT), max_pool_size=4 * WORKERS)
                c.ping()
            except _DOCKER_ERRORS as e:
                why = f"cannot reach the Docker engine ({_short(e)}); is it running and may "
                why += "this user use its socket?"
                raise LabError(why, operation="connect to docker") from e
            _client = c
        return _client


def _api() -> Any:
    return client().api


def docker_unavailable() -> str | None:
    """None when Docker answers, else a one-line reason (for pytest skips)."""
    try:
        client()
    except LabError as e:
        return str(e)
    return None


def _short(e: BaseException) -> str:
    if isinstance(e, docker.errors.APIError):
        return str(e.explanation or e)
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _engine(operation: str, fn: Callable[..., T], *a: Any, **kw: Any) -> T:
    """fn(*a, **kw), an engine call that concerns no node: a failure names the operation."""
    try:
        return fn(*a, **kw)
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation=operation) from e


def _image_call(operation: str, fn: Callable[..., T], *a: Any, **kw: Any) -> T | None:
    """_engine() for an image that may be missing: None then."""
    try:
        return _engine(operation, fn, *a, **kw)
    except LabError as e:
        if isinstance(e.__cause__, docker.errors.ImageNotFound):
            return None
        raise


# --------------------------------------------------------------------------- subnets


def _used_nets() -> list[ipaddress.IPv4Network]:
    return route_nets() + naming.network_subnets(_api().networks())


def _create_network(
    dname: str,
    labels: dict[str, str],
    *,
    ipv6: bool = False,
    options: dict[str, str] | None = None,
    create: Callable[[Any], Any] | None = None,
) -> tuple[str, str]:
    """A bridge network on a free /24 of naming.SUBNET_POOLS: (its id, its subnet). With `ipv6`,
    Docker's `enable_ipv6` and a /64 besides (containers get link-local addresses too);
    `options`: the bridge driver's options; `create(ipam)`: another kind (lab.swarm's)."""
    op, last = f"create network {dname}", ""
    for _attempt in range(20):
        subnets = free_subnets(
            naming.SUBNET_POOLS, _engine(f"list networks for {dname}", _used_nets)
        )
        if not subnets and sweep() > 0:  # dead runs' networks hold the pool: free them
            continue
        if not subnets:
            raise LabError(
                f"no free /24 left in {', '.join(naming.SUBNET_POOLS)}; "
                "remove stale networks with `python3 -m lab clean`",
                operation=op,
            )
        gateway = str(subnets[0].network_address + 1)
        pool = docker.types.IPAMPool(subnet=str(subnets[0]), gateway=gateway)
        pools = [pool]
        if ipv6:
            pools.append(docker.types.IPAMPool(subnet=naming.ipv6_subnet(subnets[0])))
        ipam = docker.types.IPAMConfig(pool_configs=pools)
        try:
            net = create(ipam) if create else _api().create_network(
                dname, driver="bridge", ipam=ipam, labels=labels, attachable=True,
                check_duplicate=True, enable_ipv6=ipv6, options=options,
            )  # fmt: skip
        except _DOCKER_ERRORS as e:
            # A parallel run took the same subnet between our listing and our create.
            if isinstance(e, docker.errors.APIError) and "overlap" in _short(e).lower():
                last = _short(e)
                time.sleep(random.uniform(0.01, 0.1))
                continue
            raise LabError(_short(e), operation=op) from e
        return str(net["Id"]), str(subnets[0])
    raise LabError(f"every subnet tried was taken by a parallel run ({last})", operation=op)


# --------------------------------------------------------------------------- images


def image_id(tag: str) -> str | None:
    info = _image_call(f"inspect image {tag}", _api().inspect_image, tag)
    return None if info is None else str(info["Id"])


def image_exists(tag: str) -> bool:
    return image_id(tag) is not None


def _made(ref: str, operation: str) -> str:
    """The id of the image `operation` just made (the engine said nothing went wrong)."""
    iid = image_id(ref)
    if iid is None:
        raise LabError(f"finished, but the engine has no image {ref}", operation=operation)
    return iid


def tag_image(src: str, dst: str) -> None:
    repo, tag = split_image_ref(dst)
    _engine(f"tag {src} as {dst}", _api().tag, src, repo, tag, force=True)


def import_rootfs(tar: Path | IO[bytes], tag: str, changes: list[str] | None = None) -> str:
    """`docker import` of a root-filesystem tar (a path, or a stream such as tar's stdout)."""
    repo, t = split_image_ref(tag)
    with tar.open("rb") if isinstance(tar, Path) else contextlib.nullcontext(tar) as f:
        _engine(
            f"import {tag}", _api().import_image, src=iter(lambda: f.read(1 << 20), b""),
            repository=repo, tag=t, changes=changes, stream_src=True,
        )  # fmt: skip
    return _made(tag, f"import {tag}")


def build_image(context_dir: Path, tag: str, buildargs: dict[str, str] | None = None) -> str:
    """Build context_dir/Dockerfile as tag (never pulls); returns the image id."""
    lines: list[str] = []
    try:
        stream = _api().build(
            path=str(context_dir),
            tag=tag,
            buildargs=buildargs or None,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            timeout=max(TIMEOUT, 600),
        )
        for chunk in stream:
            if "stream" in chunk:
                lines.extend(chunk["stream"].splitlines())
            if "error" in chunk:
                raise LabError(
                    chunk["error"].strip(),
                    operation=f"build {tag}",
                    log_tail="\n".join(lines[-LOG_TAIL:]),
                )
    except _DOCKER_ERRORS as e:
        raise LabError(
            _short(e), operation=f"build {tag}", log_tail="\n".join(lines[-LOG_TAIL:])
        ) from e
    return _made(tag, f"build {tag}")


def pull_image(ref: str) -> str:
    """Pull ref from its registry (only for an explicit MOLE_BASE); returns the image id."""
    repo, tag = split_image_ref(ref)
    _engine(f"pull {ref}", _api().pull, repo, tag=tag)
    return _made(ref, f"pull {ref}")


def image_tags(repo: str) -> list[str]:
    """Every `repo:tag` present locally."""
    images = _engine(f"list images of {repo}", _api().images, name=repo)
    return sorted(t for i in images for t in (i.get("RepoTags") or []) if t.startswith(f"{repo}:"))


def remove_image(tag: str, *, force: bool = True) -> None:
    """Remove a tag (its image if no other tag holds it); force=False: not while in use."""
    _image_call(f"remove image {tag}", _api().remove_image, tag, force=force)


# --------------------------------------------------------------------------- cluster


class _Containers:
    """The containers of one run, by node name, and what is done to one of them (split from
    Cluster, which creates and removes them). Every call names the node; a Docker failure
    becomes a LabError with the container's status and log tail."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.networks: dict[str, str] = {}  # lab name -> docker name
        self._nodes: dict[str, NodeHandle] = {}
        self._lock = threading.Lock()
        # Container id -> the follower of its engine log file (or None: use the logs API).
        self._log_files = LogFollowers(_engine_log_root)

    def node(self, name: str) -> NodeHandle:
        try:
            return self._nodes[name]
        except KeyError:
            raise LabError(f"no such node in run {self.run_id}", node=name) from None

    @property
    def nodes(self) -> dict[str, NodeHandle]:
        return dict(self._nodes)

    def _net(self, network: str) -> tuple[str, str]:
        """(lab name, docker name) for a lab network name or its docker name."""
        for lab, dname in self.networks.items():
            if network in (lab, dname):  # (docker names are mole-<run>-<lab>: never a lab's)
                return lab, dname
        raise LabError(f"unknown network {network!r}", operation="network lookup")

    def _api_of(self, h: NodeHandle) -> Any:
        """The client of the engine that runs the node's container (lab.swarm: its machine's)."""
        return _api()

    def _call(self, h: NodeHandle, operation: str, fn: Callable[..., T], *a: Any, **kw: Any) -> T:
        try:
            return fn(*a, **kw)
        except _DOCKER_ERRORS as e:
            raise self._error(h, operation, e) from e

    def _error(self, h: NodeHandle, operation: str, e: BaseException) -> LabError:
        status = tail = None
        with contextlib.suppress(Exception):  # best effort: the error itself is what matters
            api = self._api_of(h)
            status = api.inspect_container(h.container_id)["State"]["Status"]
            tail = api.logs(h.container_id, tail=LOG_TAIL).decode("utf-8", "replace")
        return LabError(_short(e), node=h.name, operation=operation, status=status, log_tail=tail)

    def _refresh(self, h: NodeHandle) -> None:
        """Re-read the node's addresses (they are assigned at start, and may change on restart)."""
        info = self._call(h, "inspect", self._api_of(h).inspect_container, h.container_id)
        h.set_addresses(info["NetworkSettings"]["Networks"] or {}, self.networks)

    # -- lifecycle

    def _do(self, name: str, operation: str, method: str, **kw: Any) -> NodeHandle:
        """The engine's `method` on the node's container (e.g. "stop"), errors with context."""
        h = self.node(name)
        if method in ("start", "restart"):
            self._log_files.started(h.container_id)  # it writes output from now on
        self._call(h, operation, getattr(self._api_of(h), method), h.container_id, **kw)
        return h

    def start(self, name: str) -> None:
        self._refresh(self._do(name, "start", "start"))

    def stop(self, name: str, timeout: float = 10) -> None:
        self._do(name, "stop", "stop", timeout=max(0, round(timeout)))

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        self._do(name, f"kill -s {signal}", "kill", signal=signal)

    def restart(self, name: str, timeout: float = 10) -> None:
        self._refresh(self._do(name, "restart", "restart", timeout=max(0, round(timeout))))

    def pause(self, name: str) -> None:
        self._do(name, "pause", "pause")

    def unpause(self, name: str) -> None:
        self._do(name, "unpause", "unpause")

    def exec(self, name: str, cmd: list[str]) -> tuple[int, str]:
        """Run cmd in the node's container; (exit code, stdout+stderr). Bounded by TIMEOUT."""
        h = self.node(name)
        api = self._api_of(h)
        op = f"exec {cmd!r}"
        # Always root: fault injection (iptables, tc) needs it whoever runs the node.
        ex = self._call(
            h, op, api.exec_create, h.container_id, cmd, stdout=True, stderr=True, user="0"
        )
        out = self._call(h, op, api.exec_start, ex["Id"])
        code = self._call(h, op, api.exec_inspect, ex["Id"])["ExitCode"]
        return int(code if code is not None else -1), out.decode("utf-8", "replace")

    def logs(self, name: str, tail: int | None = None) -> str:
        """The node's whole output (stdout and stderr, all its starts), or its last lines.

        The whole output comes from the engine's json-file log when this process can read it
        (engine on this host, run as root): followed incrementally, so polling every node
        costs the engine nothing while it is busy starting containers. Else the logs API.
        """
        h = self.node(name)
        text = self._log_files.text(h.container_id) if tail is None else None
        if text is not None:
            return text
        out = self._call(
            h, "logs", self._api_of(h).logs, h.container_id, stdout=True, stderr=True,
            tail="all" if tail is None else tail,
        )  # fmt: skip
        return str(out.decode("utf-8", "replace"))

    def _inspect(self, name: str) -> Any:
        h = self.node(name)
        return self._call(h, "inspect", self._api_of(h).inspect_container, h.container_id)

    def status(self, name: str) -> str:
        """Docker's state: created, running, paused, restarting, exited, dead, removing."""
        return str(self._inspect(name)["State"]["Status"])

    def _listed(self) -> dict[str, Any]:
        """The run's containers by node name, from one list call (as `docker ps` shows them:
        state, addresses), where an inspect each would wait behind a busy engine's starts."""
        flt = {"label": [f"{naming.LABEL_RUN}={self.run_id}"]}
        found = _engine("list containers", _api().containers, all=True, filters=flt)
        return {c["Labels"].get(naming.LABEL_NODE, ""): c for c in found}

    def statuses(self) -> dict[str, str]:
        """status() of every node by name, in one call."""
        return {n: str(c["State"]) for n, c in self._listed().items()}

    def container_labels(self, name: str) -> dict[str, str]:
        return dict(self._inspect(name)["Config"]["Labels"] or {})

    def exit_code(self, name: str) -> int | None:
        """The exit code once the container has exited, else None."""
        state = self._inspect(name)["State"]
        return None if state["Running"] or state["Status"] == "created" else int(state["ExitCode"])

    def disconnect(self, name: str, network: str) -> None:
        h = self.node(name)
        lab, dname = self._net(network)
        self._call(
            h, f"disconnect from {dname}", self._api_of(h).disconnect_container_from_network,
            h.container_id, dname,
        )  # fmt: skip
        h.ips[lab] = ""

    def connect(self, name: str, network: str) -> None:
        h = self.node(name)
        lab, dname = self._net(network)
        self._call(
            h, f"connect to {dname}", self._api_of(h).connect_container_to_network,
            h.container_id, dname, aliases=[name],
        )  # fmt: skip
        if lab not in h.networks:
            h.networks.append(lab)
        self._refresh(h)


class Cluster(_Containers):
    """A set of node containers and bridge networks of one run; `close()` removes them all."""

    def __init__(self, run_id: str, *, image: str, workdir: Path) -> None:
        check_name("run id", run_id)
        super().__init__(run_id)
        self.image = image
        self.workdir = Path(workdir)
        self.owner = owner_id()
        self._network_ids: dict[str, str] = {}  # docker name -> id
        self.subnets: dict[str, str] = {}  # lab name -> "10.213.7.0/24"
        self._container_ids: set[str] = set()
        self._closed = False
        self._used = False  # set before the first Docker resource is requested
        # One random group secret per run, never committed nor shown: the run's nodes prove
        # membership to each other (default policies let group members push and pull).
        self.group_secret = secrets.token_hex(16)

    # -- context manager

    def __enter__(self) -> Cluster:
        try:
            client()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        with self._lock:
            if self._closed:
                raise LabError(f"cluster {self.run_id} is closed")
            self._used = True

    @property
    def labels(self) -> dict[str, str]:
        return naming.run_labels(self.run_id, self.owner)

    def _docker_name(self, name: str) -> str:
        return naming.docker_name(self.run_id, name)

    # -- networks

    def add_network(self, name: str, *, ipv6: bool = False, host_nat: bool = True) -> str:
        """A bridge network on a free /24 (and with `ipv6`, the /64 of naming.ipv6_subnet);
        returns its docker name. host_nat=False: the host does not masquerade what leaves it
        (with bridge netfilter on, it would also rewrite packets a router container forwards
        onto the bridge: lab/wan.py's NAT sites)."""
        check_name("network name", name)
        self._check_open()
        if name in self.networks:
            raise ValueError(f"network {name!r} already exists in run {self.run_id}")
        dname = self._docker_name(name)
        options = None if host_nat else {"com.docker.network.bridge.enable_ip_masquerade": "false"}
        nid, subnet = _create_network(dname, self.labels, ipv6=ipv6, options=options)
        with self._lock:
            self.networks[name] = dname
            self._network_ids[dname] = nid
            self.subnets[name] = subnet
        return dname

    # -- nodes

    def create_nodes(
        self, specs: list[NodeSpec], prepare: Callable[[NodeHandle], object] | None = None
    ) -> dict[str, NodeHandle]:
        """Create and connect every node, then `prepare(handle)` (its data dir exists) and
        start it if its spec says so, pipelined per node on WORKERS threads (the engine starts
        one container at a time: the first boot while the last are made); handles by name."""
        self._check_open()
        check_specs(specs, taken=self._nodes)
        for s in specs:
            for n in s.networks:
                self._net(n)
        # Ctrl-C: queued creations are dropped, those in flight (bounded by the client
        # timeout) finish, then everything of the run is removed.
        handles, errors = each(
            lambda s: self._create_one(s, prepare), specs, workers=WORKERS, name="mole-lab",
            on_interrupt=self.close,
        )  # fmt: skip
        with self._lock:
            self._nodes.update((h.name, h) for h in handles)
        if errors:
            raise errors[0]
        started = [self._nodes[s.name] for s in specs if s.start]
        listed = self._listed() if started else {}  # their addresses, all in one call
        for h in started:
            if h.name in listed:
                h.set_addresses(listed[h.name]["NetworkSettings"]["Networks"] or {}, self.networks)
            else:
                self._refresh(h)
        return {s.name: self._nodes[s.name] for s in specs}

    def _create_one(
        self, spec: NodeSpec, prepare: Callable[[NodeHandle], object] | None
    ) -> NodeHandle:
        handle = self.create_container(spec)
        for dname in [self.networks[lab] for lab in handle.networks[1:]]:
            self._call(
                handle, f"connect to {dname}", _api().connect_container_to_network,
                handle.container_id, dname, aliases=[spec.name],
            )  # fmt: skip
        if prepare is not None:
            prepare(handle)
        if spec.start:  # its addresses: create_nodes asks for all at once
            self._log_files.started(handle.container_id)
            self._call(handle, "start", _api().start, handle.container_id)
        return handle

    def create_container(self, spec: NodeSpec, *, start: bool = False) -> NodeHandle:
        """`docker create` of the node on its first network (data dir made, handle recorded),
        then `docker start` if asked; nothing more (no other network, no inspect: the handle
        has no addresses). create_nodes() builds on it; bench_support times it bare."""
        self._check_open()
        api = _api()
        data_dir = spec.make_data_dir(self.workdir, self.group_secret)
        token = secrets.token_hex(16)
        nets = [self._net(n) for n in spec.networks]
        host_config = api.create_host_config(
            binds={str(data_dir): {"bind": "/data", "mode": "rw"}},
            tmpfs=dict(spec.tmpfs) or None,
            cap_add=(["NET_ADMIN"] if spec.cap_net_admin else []) + list(spec.cap_add) or None,
        )
        first = nets[0][1]
        networking = api.create_networking_config(
            {first: api.create_endpoint_config(aliases=[spec.name])}
        )
        try:
            c = api.create_container(
                spec.image or self.image,
                command=spec.command_line(token, group=True),
                entrypoint=spec.entrypoint,
                name=self._docker_name(spec.name),
                hostname=spec.name,
                labels={**self.labels, naming.LABEL_NODE: spec.name},
                environment=dict(spec.env) or None,
                user=spec.process_user(),
                host_config=host_config,
                networking_config=networking,
                detach=True,
            )
        except _DOCKER_ERRORS as e:
            raise LabError(_short(e), node=spec.name, operation="create") from e
        cid: str = c["Id"]
        labs = [lab for lab, _ in nets]  # addresses come with the start (an inspect then)
        handle = NodeHandle(spec.name, cid, dict.fromkeys(labs, ""), "", token, data_dir, labs)
        with self._lock:
            self._container_ids.add(cid)
            self._nodes[spec.name] = handle  # logs() reads it from now on
        if start:
            self._log_files.started(cid)
            self._call(handle, "start", api.start, cid)
        return handle

    # -- teardown

    def close(self) -> None:
        """Remove every container and network of this run; never raises. Idempotent, and safe
        to call again: a later call also removes what a create that was in flight during an
        earlier call (Ctrl-C) made after it."""
        with self._lock:
            self._closed = True
            if not self._used:
                return
            cids = set(self._container_ids)
            nids = set(self._network_ids.values())
        try:
            flt = {"label": naming.run_filter(self.run_id, self.owner)}
            api = _api()
            # The label query also finds containers whose create call had not returned yet.
            cids |= {c["Id"] for c in api.containers(all=True, filters=flt)}
            nids |= {n["Id"] for n in api.networks(filters=flt)}
        except Exception as e:
            log.warning("run %s: listing resources for cleanup failed: %s", self.run_id, e)
        _remove_all(cids, nids)
        with self._lock:
            self._container_ids -= cids
            self._network_ids = {k: v for k, v in self._network_ids.items() if v not in nids}
        self._log_files.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_used", False):
            log.warning("Cluster %s was not closed", self.run_id)


# The engine's log directory (if readable here), looked up once per process.
_engine_log_root = EngineLogRoot(lambda: dict(_api().info()))


# --------------------------------------------------------------------------- removal, sweep


def remove_containers(container_ids: Iterable[str], *, workers: int = WORKERS) -> int:
    """Force-remove containers in parallel (with their volumes); returns how many went."""
    cids = list(container_ids)
    if not cids:
        return 0
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mole-lab-rm") as pool:
            return sum(pool.map(_remove_container, cids))
    except RuntimeError:  # at interpreter exit (atexit) executors take no new work
        return sum(_remove_container(cid) for cid in cids)


def _remove_all(container_ids: Iterable[str], network_ids: Iterable[str]) -> int:
    """Force-remove containers (in parallel), then networks; logs failures. Returns count."""
    removed = remove_containers(container_ids)
    for nid in network_ids:
        removed += _remove_network(nid)
    return removed


def _remove_container(cid: str) -> bool:
    try:
        _api().remove_container(cid, force=True, v=True)
        return True
    except Exception as e:
        if not isinstance(e, docker.errors.NotFound):
            log.warning("removing container %s failed: %s", cid[:12], _short(e))
        return False


def _remove_network(nid: str) -> bool:
    for attempt in range(5):
        try:
            _api().remove_network(nid)
            return True
        except Exception as e:
            if isinstance(e, docker.errors.NotFound):
                return False
            # The daemon may still be releasing endpoints of just-removed containers.
            if "active endpoints" in _short(e) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            # Engine 20.10 can lose count of a network's endpoints under load (moby#43286):
            # no container is attached, and the network stays until the engine restarts.
            stale = " (no container left on it? then it is Docker's stale endpoint count, "
            stale += "moby#43286: only an engine restart frees it)"
            hint = stale if "active endpoints" in _short(e) else ""
            log.warning("removing network %s failed: %s%s", nid[:12], _short(e), hint)
            return False
    return False


def _labelled(operation: str, labels: list[str]) -> tuple[list[Any], list[Any]]:
    """(containers, networks) that carry every one of these labels."""
    flt = {"label": labels}
    containers = _engine(operation, _api().containers, all=True, filters=flt)
    return containers, _engine(operation, _api().networks, filters=flt)


def resources(run_id: str | None = None) -> dict[str, list[str]]:
    """Names of lab containers and networks (of one run, or all): {"containers", "networks"}."""
    labels = [f"{naming.LABEL_RUN}={run_id}"] if run_id else [f"{naming.LABEL}=1"]
    containers, networks = _labelled("list lab resources", labels)
    return {
        "containers": sorted(c["Names"][0].lstrip("/") for c in containers),
        "networks": sorted(n["Name"] for n in networks),
    }


def sweep(*, everything: bool = False, run_id: str | None = None) -> int:
    """Remove lab containers and networks whose owner process is dead (or all of them, or
    of one run); returns how many. Resources without the lab label are never touched."""
    containers, networks = _labelled("sweep", naming.sweep_filter(run_id))
    cids = [c["Id"] for c in containers if naming.is_leftover(c, everything=everything)]
    nids = [n["Id"] for n in networks if naming.is_leftover(n, everything=everything)]
    return _remove_all(cids, nids)


# --------------------------------------------------------------------------- measurements


def running_containers(owner: str | None = None) -> dict[str, str]:
    """Running lab containers of `owner` (default: this process): name -> container id."""
    flt = {"label": naming.owner_filter(owner or owner_id()), "status": "running"}
    found = _engine("list running containers", _api().containers, filters=flt)
    return {c["Names"][0].lstrip("/"): c["Id"] for c in found}


def memory_stats(cid: str) -> dict[str, Any] | None:
    """The engine's `memory_stats` of a container (one stats call), None once it is gone."""
    try:
        return dict(_api().stats(cid, stream=False)["memory_stats"])
    except (KeyError, *_DOCKER_ERRORS):
        return None
