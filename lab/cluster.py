"""The lab's only door to Docker: networks, node containers, images, cleanup.

Every other lab module talks to Docker through this one, so timeouts, labels and error
messages are handled in one place. Everything the lab creates carries `io.mole.lab=1`, the run
id and the owning process (`<hostname>:<pid>:<start-time>`), which lets `sweep()` tell the
leftovers of a dead run from the resources of a live one.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import logging
import os
import random
import re
import secrets
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, TypeVar

import docker
import docker.errors
import requests.exceptions

log = logging.getLogger("mole.lab.cluster")

LABEL = "io.mole.lab"  # "1" on everything the lab creates
LABEL_RUN = "io.mole.lab.run"  # run id
LABEL_OWNER = "io.mole.lab.owner"  # "<hostname>:<pid>:<start-time>" of the creating process
LABEL_NODE = "io.mole.lab.node"  # node name (containers only)

API_PORT = 47102
WORKERS = 8
# Per-request deadline of every Docker call (socket timeout of the SDK client).
TIMEOUT = float(os.environ.get("MOLE_LAB_DOCKER_TIMEOUT", "60"))
# Candidate /16 pools for lab networks, tried in order; every /24 inside is one network.
SUBNET_POOLS = ("10.213.0.0/16", "172.30.0.0/16")
LOG_TAIL = 30

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
T = TypeVar("T")


class LabError(Exception):
    """A Docker operation of the lab failed; says which node, what, the status and the logs."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        operation: str | None = None,
        status: str | None = None,
        log_tail: str | None = None,
    ) -> None:
        self.node = node
        self.operation = operation
        self.status = status
        self.log_tail = log_tail
        where = " ".join(
            p
            for p in (
                f"node {node}:" if node else "",
                f"{operation} failed" if operation else "",
                f"(container {status})" if status else "",
            )
            if p
        )
        text = f"{where}: {message}" if where else message
        if log_tail:
            text += "\n--- last log lines ---\n" + log_tail.rstrip()
        super().__init__(text)


@dataclass
class NodeSpec:
    name: str
    networks: list[str]
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    tmpfs: dict[str, str] = field(default_factory=dict)
    start: bool = True
    cap_net_admin: bool = True
    # Overrides of the image's entrypoint/command (tests, placeholder processes). With
    # `command` set, the `serve ...` command line and `args` are not used.
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    # "uid:gid" of the node process. Default: root when the lab runs as root, else the host
    # user, so the bind-mounted data dir stays removable by whoever ran the lab.
    user: str | None = None


@dataclass
class NodeHandle:
    name: str
    container_id: str
    ips: dict[str, str]  # lab network name -> IPv4 address ("" until started)
    api_url: str  # http://<ip on the first network>:47102 ("" until started)
    token: str
    data_dir: Path  # host dir bind-mounted at /data (share/, inbox/, state/ inside)
    networks: list[str] = field(default_factory=list)  # lab network names, first = primary


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
                raise LabError(
                    f"cannot reach the Docker engine ({_short(e)}); is it running and may "
                    "this user use its socket?",
                    operation="connect to docker",
                ) from e
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


def _not_found(e: BaseException) -> bool:
    return isinstance(e, docker.errors.NotFound)


# --------------------------------------------------------------------------- owner identity


def _start_time(pid: int) -> str | None:
    """Process start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields restart after ")".
    return stat.rsplit(")", 1)[1].split()[19]


def owner_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def owner_alive(owner: str) -> bool:
    """False only when the owner is certainly dead: same host, and its pid is gone or reused."""
    try:
        host, pid_s, start = owner.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return False  # unparseable: not something a live lab process wrote
    if host != socket.gethostname():
        return True  # another machine's (or container's) run: we cannot tell, leave it
    return _start_time(pid) == start


# --------------------------------------------------------------------------- subnets


def _host_route_nets() -> list[ipaddress.IPv4Network]:
    nets = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        f = line.split()
        if len(f) < 8:
            continue
        dest, mask = (struct.pack("<I", int(x, 16)) for x in (f[1], f[7]))
        if mask == b"\0\0\0\0":
            continue  # default route: overlaps everything, not a conflict
        nets.append(
            ipaddress.IPv4Network(
                f"{socket.inet_ntoa(dest)}/{socket.inet_ntoa(mask)}", strict=False
            )
        )
    return nets


def _used_nets() -> list[ipaddress.IPv4Network]:
    used = _host_route_nets()
    for net in _api().networks():
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            try:
                n = ipaddress.ip_network(cfg.get("Subnet", ""), strict=False)
            except ValueError:
                continue
            if isinstance(n, ipaddress.IPv4Network):
                used.append(n)
    return used


def _free_subnets() -> list[ipaddress.IPv4Network]:
    """Free /24s of the first pool that has any, shuffled so parallel runs rarely collide."""
    used = _used_nets()
    for pool in SUBNET_POOLS:
        free = [
            s
            for s in ipaddress.IPv4Network(pool).subnets(new_prefix=24)
            if not any(s.overlaps(u) for u in used)
        ]
        if free:
            random.shuffle(free)
            return free
    return []


# --------------------------------------------------------------------------- images


def image_id(tag: str) -> str | None:
    try:
        return str(_api().inspect_image(tag)["Id"])
    except docker.errors.ImageNotFound:
        return None
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation=f"inspect image {tag}") from e


def image_exists(tag: str) -> bool:
    return image_id(tag) is not None


def _split_tag(ref: str) -> tuple[str, str]:
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def tag_image(src: str, dst: str) -> None:
    repo, tag = _split_tag(dst)
    try:
        _api().tag(src, repo, tag, force=True)
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation=f"tag {src} as {dst}") from e


def import_rootfs(tar: Path | IO[bytes], tag: str, changes: list[str] | None = None) -> str:
    """`docker import` of a root-filesystem tar (a path, or a stream such as tar's stdout)."""
    repo, t = _split_tag(tag)

    def chunks(f: IO[bytes]) -> Iterator[bytes]:
        while block := f.read(1 << 20):
            yield block

    try:
        if isinstance(tar, Path):
            with tar.open("rb") as f:
                _api().import_image(
                    src=chunks(f), repository=repo, tag=t, changes=changes, stream_src=True
                )
        else:
            _api().import_image(
                src=chunks(tar), repository=repo, tag=t, changes=changes, stream_src=True
            )
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation=f"import {tag}") from e
    iid = image_id(tag)
    if iid is None:
        raise LabError(
            "the engine reported no error but the tag is missing", operation=f"import {tag}"
        )
    return iid


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
    iid = image_id(tag)
    if iid is None:
        raise LabError("build finished but the tag is missing", operation=f"build {tag}")
    return iid


def pull_image(ref: str) -> str:
    """Pull ref from its registry (only for an explicit MOLE_BASE); returns the image id."""
    repo, tag = _split_tag(ref)
    try:
        _api().pull(repo, tag=tag)
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation=f"pull {ref}") from e
    iid = image_id(ref)
    if iid is None:
        raise LabError("pull finished but the image is missing", operation=f"pull {ref}")
    return iid


def image_tags(repo: str) -> list[str]:
    """Every `repo:tag` present locally."""
    try:
        images = _api().images(name=repo)
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation=f"list images of {repo}") from e
    return sorted(t for i in images for t in (i.get("RepoTags") or []) if t.startswith(f"{repo}:"))


def remove_image(tag: str, *, force: bool = True) -> None:
    """Remove a tag (and its image when no other tag holds it). force=False fails when a
    container still uses the image, which is what pruning wants."""
    try:
        _api().remove_image(tag, force=force)
    except docker.errors.ImageNotFound:
        pass
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation=f"remove image {tag}") from e


# --------------------------------------------------------------------------- cluster


def _default_user() -> str:
    return "" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid {kind} {name!r}: use letters, digits, '_', '.', '-'")


class Cluster:
    """A set of node containers and bridge networks of one run; `close()` removes them all."""

    # The image helpers, for callers that hold a Cluster.
    image_exists = staticmethod(image_exists)
    image_id = staticmethod(image_id)
    import_rootfs = staticmethod(import_rootfs)
    build_image = staticmethod(build_image)
    tag_image = staticmethod(tag_image)

    def __init__(self, run_id: str, *, image: str, workdir: Path) -> None:
        _check_name("run id", run_id)
        self.run_id = run_id
        self.image = image
        self.workdir = Path(workdir)
        self.owner = owner_id()
        self.networks: dict[str, str] = {}  # lab name -> docker name
        self._network_ids: dict[str, str] = {}  # docker name -> id
        self.subnets: dict[str, str] = {}  # lab name -> "10.213.7.0/24"
        self._nodes: dict[str, NodeHandle] = {}
        self._container_ids: set[str] = set()
        self._log_files: dict[str, _LogFile | None] = {}  # container id -> follower
        self._started: set[str] = set()  # container ids this cluster asked to start
        self._lock = threading.Lock()
        self._closed = False
        self._used = False  # set before the first Docker resource is requested

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
        return {LABEL: "1", LABEL_RUN: self.run_id, LABEL_OWNER: self.owner}

    def _docker_name(self, name: str) -> str:
        return f"mole-{self.run_id}-{name}"

    # -- networks

    def add_network(self, name: str) -> str:
        """A bridge network on a free /24; returns its docker name."""
        _check_name("network name", name)
        self._check_open()
        if name in self.networks:
            raise ValueError(f"network {name!r} already exists in run {self.run_id}")
        dname = self._docker_name(name)
        last: BaseException | None = None
        for _attempt in range(20):
            try:
                subnets = _free_subnets()
            except _DOCKER_ERRORS as e:
                raise LabError(_short(e), operation=f"list networks for {dname}") from e
            if not subnets and sweep() > 0:  # dead runs' networks hold the pool: free them
                continue
            if not subnets:
                raise LabError(
                    f"no free /24 left in {', '.join(SUBNET_POOLS)}; "
                    "remove stale networks with `python3 -m lab clean`",
                    operation=f"create network {dname}",
                )
            subnet = subnets[0]
            ipam = docker.types.IPAMConfig(
                pool_configs=[
                    docker.types.IPAMPool(
                        subnet=str(subnet), gateway=str(subnet.network_address + 1)
                    )
                ]
            )
            try:
                net = _api().create_network(
                    dname,
                    driver="bridge",
                    ipam=ipam,
                    labels=self.labels,
                    attachable=True,
                    check_duplicate=True,
                )
            except docker.errors.APIError as e:
                # A parallel run took the same subnet between our listing and our create.
                if "overlap" in _short(e).lower():
                    last = e
                    time.sleep(random.uniform(0.01, 0.1))
                    continue
                raise LabError(_short(e), operation=f"create network {dname}") from e
            except _DOCKER_ERRORS as e:
                raise LabError(_short(e), operation=f"create network {dname}") from e
            with self._lock:
                self.networks[name] = dname
                self._network_ids[dname] = net["Id"]
                self.subnets[name] = str(subnet)
            return dname
        raise LabError(
            f"every subnet tried was taken by a parallel run ({_short(last) if last else ''})",
            operation=f"create network {dname}",
        )

    def _net(self, network: str) -> tuple[str, str]:
        """(lab name, docker name) for a lab network name or its docker name."""
        if network in self.networks:
            return network, self.networks[network]
        for lab, dname in self.networks.items():
            if dname == network:
                return lab, dname
        raise LabError(f"unknown network {network!r}", operation="network lookup")

    # -- nodes

    def create_nodes(self, specs: list[NodeSpec]) -> dict[str, NodeHandle]:
        """Create, connect and start every node concurrently; returns handles by node name."""
        self._check_open()
        names = [s.name for s in specs]
        dupes = {n for n in names if names.count(n) > 1 or n in self._nodes}
        if dupes:
            raise ValueError(f"duplicate node names: {sorted(dupes)}")
        for s in specs:
            _check_name("node name", s.name)
            if not s.networks:
                raise ValueError(f"node {s.name}: needs at least one network")
            for n in s.networks:
                self._net(n)
        pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mole-lab")
        futures: list[Future[NodeHandle]] = [pool.submit(self._create_one, s) for s in specs]
        try:
            errors: list[BaseException] = []
            for fut in as_completed(futures):
                try:
                    h = fut.result()
                except Exception as e:
                    errors.append(e)
                    continue
                with self._lock:
                    self._nodes[h.name] = h
            if errors:
                raise errors[0]
        except BaseException as e:
            if not isinstance(e, Exception):
                # Ctrl-C / SystemExit: stop queued creations, let in-flight calls (bounded by
                # the client timeout) finish, then remove everything of the run.
                for f in futures:
                    f.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                self.close()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return {s.name: self._nodes[s.name] for s in specs}

    def _create_one(self, spec: NodeSpec) -> NodeHandle:
        handle = self._create_container(spec)
        api = _api()
        cid = handle.container_id
        for dname in [self.networks[lab] for lab in handle.networks[1:]]:
            self._call(
                handle, f"connect to {dname}", api.connect_container_to_network, cid, dname,
                aliases=[spec.name],
            )  # fmt: skip
        if spec.start:
            self._mark_started(cid)
            self._call(handle, "start", api.start, cid)
        self._refresh(handle)
        return handle

    def _create_container(self, spec: NodeSpec) -> NodeHandle:
        """`docker create` of the node on its first network (data dir made, id recorded)."""
        api = _api()
        data_dir = (self.workdir / spec.name).resolve()
        for sub in ("share", "inbox", "state"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        nets = [self._net(n) for n in spec.networks]
        cname = self._docker_name(spec.name)
        if spec.command is not None:
            command = spec.command
        else:
            command = [
                "serve",
                "--name", spec.name,
                "--share", "/data/share",
                "--inbox", "/data/inbox",
                "--state", "/data/state",
                "--api", f"0.0.0.0:{API_PORT}",
                "--api-token", token,
                *spec.args,
            ]  # fmt: skip
        host_config = api.create_host_config(
            binds={str(data_dir): {"bind": "/data", "mode": "rw"}},
            tmpfs=dict(spec.tmpfs) or None,
            cap_add=["NET_ADMIN"] if spec.cap_net_admin else None,
        )
        first = nets[0][1]
        networking = api.create_networking_config(
            {first: api.create_endpoint_config(aliases=[spec.name])}
        )
        try:
            c = api.create_container(
                self.image,
                command=command,
                entrypoint=spec.entrypoint,
                name=cname,
                hostname=spec.name,
                labels={**self.labels, LABEL_NODE: spec.name},
                environment=dict(spec.env) or None,
                user=spec.user or _default_user(),
                host_config=host_config,
                networking_config=networking,
                detach=True,
            )
        except _DOCKER_ERRORS as e:
            raise LabError(_short(e), node=spec.name, operation="create") from e
        cid: str = c["Id"]
        with self._lock:
            self._container_ids.add(cid)
        return NodeHandle(
            name=spec.name,
            container_id=cid,
            ips={},
            api_url="",
            token=token,
            data_dir=data_dir,
            networks=[lab for lab, _ in nets],
        )

    def _call(self, h: NodeHandle, operation: str, fn: Callable[..., T], *a: Any, **kw: Any) -> T:
        try:
            return fn(*a, **kw)
        except _DOCKER_ERRORS as e:
            raise self._error(h, operation, e) from e

    def _error(self, h: NodeHandle, operation: str, e: BaseException) -> LabError:
        status = tail = None
        try:
            status = _api().inspect_container(h.container_id)["State"]["Status"]
            tail = _api().logs(h.container_id, tail=LOG_TAIL).decode("utf-8", "replace")
        except Exception:  # best effort: the error itself is what matters
            pass
        return LabError(_short(e), node=h.name, operation=operation, status=status, log_tail=tail)

    def _refresh(self, h: NodeHandle) -> None:
        """Re-read the node's addresses (they are assigned at start, and may change on restart)."""
        info = self._call(h, "inspect", _api().inspect_container, h.container_id)
        attached = info["NetworkSettings"]["Networks"] or {}
        ips = {}
        for lab in h.networks:
            ips[lab] = (attached.get(self.networks[lab]) or {}).get("IPAddress") or ""
        h.ips = ips
        primary = ips.get(h.networks[0], "") if h.networks else ""
        h.api_url = f"http://{primary}:{API_PORT}" if primary else ""

    def node(self, name: str) -> NodeHandle:
        try:
            return self._nodes[name]
        except KeyError:
            raise LabError(f"no such node in run {self.run_id}", node=name) from None

    @property
    def nodes(self) -> dict[str, NodeHandle]:
        return dict(self._nodes)

    # -- lifecycle

    def _mark_started(self, cid: str) -> None:
        with self._lock:
            self._started.add(cid)

    def start(self, name: str) -> None:
        h = self.node(name)
        self._mark_started(h.container_id)
        self._call(h, "start", _api().start, h.container_id)
        self._refresh(h)

    def stop(self, name: str, timeout: float = 10) -> None:
        h = self.node(name)
        self._call(h, "stop", _api().stop, h.container_id, timeout=max(0, round(timeout)))

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        h = self.node(name)
        self._call(h, f"kill -s {signal}", _api().kill, h.container_id, signal=signal)

    def restart(self, name: str, timeout: float = 10) -> None:
        h = self.node(name)
        self._mark_started(h.container_id)
        self._call(h, "restart", _api().restart, h.container_id, timeout=max(0, round(timeout)))
        self._refresh(h)

    def pause(self, name: str) -> None:
        h = self.node(name)
        self._call(h, "pause", _api().pause, h.container_id)

    def unpause(self, name: str) -> None:
        h = self.node(name)
        self._call(h, "unpause", _api().unpause, h.container_id)

    def exec(self, name: str, cmd: list[str]) -> tuple[int, str]:
        """Run cmd in the node's container; (exit code, stdout+stderr). Bounded by TIMEOUT."""
        h = self.node(name)
        api = _api()
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
        if tail is None:
            text = self._log_file_text(h)
            if text is not None:
                return text
        out = self._call(
            h, "logs", _api().logs, h.container_id, stdout=True, stderr=True,
            tail="all" if tail is None else tail,
        )  # fmt: skip
        return str(out.decode("utf-8", "replace"))

    def _log_file_text(self, h: NodeHandle) -> str | None:
        """The output from the engine's log file; None: not readable here, use the API."""
        cid = h.container_id
        with self._lock:
            if cid not in self._started:
                return ""  # never started (every start goes through this class): no output
            known = cid in self._log_files
            lf = self._log_files.get(cid)
        if not known:
            # The path is derived, not inspected: an inspect waits for the engine while it
            # starts other containers (seconds with fifty of them).
            root = _engine_log_root()
            if root is None or not (root / cid).is_dir():
                new = None  # another engine's container, or files we may not read
            else:
                new = _LogFile.open(root / cid / f"{cid}-json.log")
                if new is None:
                    return ""  # the engine has not got to starting it: no output yet
            with self._lock:
                lf = self._log_files.setdefault(cid, new)
            if new is not None and lf is not new:
                new.close()  # another thread was first
        return lf.read() if lf is not None else None

    def status(self, name: str) -> str:
        """Docker's state: created, running, paused, restarting, exited, dead, removing."""
        h = self.node(name)
        info = self._call(h, "inspect", _api().inspect_container, h.container_id)
        return str(info["State"]["Status"])

    def container_labels(self, name: str) -> dict[str, str]:
        h = self.node(name)
        info = self._call(h, "inspect", _api().inspect_container, h.container_id)
        return dict(info["Config"]["Labels"] or {})

    def exit_code(self, name: str) -> int | None:
        """The exit code once the container has exited, else None."""
        h = self.node(name)
        state = self._call(h, "inspect", _api().inspect_container, h.container_id)["State"]
        return None if state["Running"] or state["Status"] == "created" else int(state["ExitCode"])

    def disconnect(self, name: str, network: str) -> None:
        h = self.node(name)
        lab, dname = self._net(network)
        self._call(
            h, f"disconnect from {dname}", _api().disconnect_container_from_network,
            h.container_id, dname,
        )  # fmt: skip
        h.ips[lab] = ""

    def connect(self, name: str, network: str) -> None:
        h = self.node(name)
        lab, dname = self._net(network)
        self._call(
            h, f"connect to {dname}", _api().connect_container_to_network, h.container_id,
            dname, aliases=[name],
        )  # fmt: skip
        if lab not in h.networks:
            h.networks.append(lab)
        self._refresh(h)

    # -- teardown

    def close(self) -> None:
        """Remove every container and network of this run; never raises.

        Idempotent, and safe to call again: a later call also removes what a create that was
        in flight during an earlier call (Ctrl-C) made after it.
        """
        with self._lock:
            self._closed = True
            if not self._used:
                return
            cids = set(self._container_ids)
            nids = set(self._network_ids.values())
        try:
            flt = {"label": [f"{LABEL_RUN}={self.run_id}", f"{LABEL_OWNER}={self.owner}"]}
            api = _api()
            # The label query also finds containers whose create call had not returned yet.
            cids |= {c["Id"] for c in api.containers(all=True, filters=flt)}
            nids |= {n["Id"] for n in api.networks(filters=flt)}
        except Exception as e:
            log.warning("run %s: listing resources for cleanup failed: %s", self.run_id, e)
        _remove_all(cids, nids)
        with self._lock:
            files, self._log_files = list(self._log_files.values()), {}
            self._container_ids -= cids
            self._network_ids = {k: v for k, v in self._network_ids.items() if v not in nids}
        for lf in files:
            if lf is not None:
                lf.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_used", False):
            log.warning("Cluster %s was not closed", self.run_id)


_log_root: list[Path | None] = []  # computed once per process


def _engine_log_root() -> Path | None:
    """<engine root>/containers when the engine keeps json-file logs we can read, else None."""
    with _client_lock:
        if _log_root:
            return _log_root[0]
    root: Path | None = None
    try:
        info = _api().info()
        if info.get("LoggingDriver") == "json-file" and info.get("DockerRootDir"):
            d = Path(info["DockerRootDir"]) / "containers"
            root = d if os.access(d, os.R_OK | os.X_OK) else None
    except _DOCKER_ERRORS as e:
        log.warning("engine info failed, reading logs through the API: %s", _short(e))
    with _client_lock:
        _log_root[:] = [root]
    return root


class _LogFile:
    """Follows a container's json-file log on this host: only new bytes are read each time.

    The open file keeps following its inode when the engine rotates the log (max-size): the
    rest of the old file is read, then the new one from its start.
    """

    def __init__(self, path: str, f: IO[bytes]) -> None:
        self.path = path
        self.f = f
        self.ino = os.fstat(f.fileno()).st_ino
        self.partial = b""
        self.text = ""
        self.lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> _LogFile | None:
        """None when the file is not there (yet)."""
        try:
            return cls(str(path), path.open("rb"))
        except OSError:
            return None

    def read(self) -> str:
        with self.lock:
            if self.f.closed:  # the cluster was closed: this is the final text
                return self.text
            self._drain()
            try:
                ino = os.stat(self.path).st_ino
            except OSError:
                ino = self.ino  # removed with its container: what we have is all there is
            if ino != self.ino:  # rotated: the old file is complete, go on with the new one
                with contextlib.suppress(OSError):
                    f = open(self.path, "rb")  # noqa: SIM115
                    self.f.close()
                    self.f, self.ino, self.partial = f, os.fstat(f.fileno()).st_ino, b""
                    self._drain()
            return self.text

    def _drain(self) -> None:
        data = self.partial + self.f.read()
        lines = data.split(b"\n")
        self.partial = lines.pop()  # an entry the engine has not finished writing (or b"")
        parts = []
        for line in lines:
            try:
                parts.append(json.loads(line)["log"])
            except (ValueError, KeyError, TypeError):
                continue
        if parts:
            self.text += "".join(parts)

    def close(self) -> None:
        with self.lock:
            self.f.close()


def _remove_all(container_ids: Iterable[str], network_ids: Iterable[str]) -> int:
    """Force-remove containers (in parallel), then networks; logs failures. Returns count."""
    removed = 0
    cids = list(container_ids)
    if cids:
        try:
            with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mole-lab-rm") as pool:
                removed += sum(pool.map(_remove_container, cids))
        except RuntimeError:  # at interpreter exit (atexit) executors take no new work
            removed += sum(_remove_container(cid) for cid in cids)
    for nid in network_ids:
        removed += _remove_network(nid)
    return removed


def _remove_container(cid: str) -> bool:
    try:
        _api().remove_container(cid, force=True, v=True)
        return True
    except Exception as e:
        if not _not_found(e):
            log.warning("removing container %s failed: %s", cid[:12], _short(e))
        return False


def _remove_network(nid: str) -> bool:
    for attempt in range(5):
        try:
            _api().remove_network(nid)
            return True
        except Exception as e:
            if _not_found(e):
                return False
            # The daemon may still be releasing endpoints of just-removed containers.
            if "active endpoints" in _short(e) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            hint = ""
            if "active endpoints" in _short(e):
                # Engine 20.10 can lose count of a network's endpoints under load (moby#43286):
                # no container is attached, and the network stays until the engine restarts.
                hint = " (no container left on it? then it is Docker's stale endpoint count, "
                hint += "moby#43286: only an engine restart frees it)"
            log.warning("removing network %s failed: %s%s", nid[:12], _short(e), hint)
            return False
    return False


def resources(run_id: str | None = None) -> dict[str, list[str]]:
    """Names of lab containers and networks (of one run, or all): {"containers", "networks"}."""
    flt = {"label": [f"{LABEL_RUN}={run_id}"] if run_id else [f"{LABEL}=1"]}
    try:
        api = _api()
        containers = [c["Names"][0].lstrip("/") for c in api.containers(all=True, filters=flt)]
        networks = [n["Name"] for n in api.networks(filters=flt)]
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation="list lab resources") from e
    return {"containers": sorted(containers), "networks": sorted(networks)}


def sweep(*, everything: bool = False, run_id: str | None = None) -> int:
    """Remove lab containers and networks whose owner process is dead (or all of them).

    Returns how many were removed. Resources without the lab label (e.g. the compose demo)
    are never touched. run_id restricts the sweep to one run.
    """
    flt = {"label": [f"{LABEL}=1"] + ([f"{LABEL_RUN}={run_id}"] if run_id else [])}
    try:
        api = _api()
        containers = api.containers(all=True, filters=flt)
        networks = api.networks(filters=flt)
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation="sweep") from e

    def dead(labels: dict[str, str] | None) -> bool:
        return everything or not owner_alive((labels or {}).get(LABEL_OWNER, ""))

    cids = [c["Id"] for c in containers if dead(c.get("Labels"))]
    nids = [n["Id"] for n in networks if dead(n.get("Labels"))]
    return _remove_all(cids, nids)


# --------------------------------------------------------------------------- benchmarks


def bare_lifecycle(
    n: int,
    image: str,
    *,
    workdir: Path,
    command: list[str] | None = None,
    workers: int = WORKERS,
) -> dict[str, float]:
    """Docker's own cost for what a lab run of n nodes asks of it, without the lab around it.

    One labelled bridge network, then n containers created and started (create+start
    pipelined per container on `workers` threads) exactly as Cluster creates nodes: same
    image, same `serve` command line (or `command`), bind-mounted data dir, NET_ADMIN, alias;
    then all force-removed in parallel and the network removed. Nothing is waited for beyond
    Docker's answers (no API readiness). Returns seconds: network, create_start, remove,
    total. Everything carries the lab's labels (run id `bare-<hex>`), so a sweep removes the
    leftovers of a killed benchmark; a failure removes what was made and re-raises.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    c = Cluster(f"bare-{secrets.token_hex(4)}", image=image, workdir=workdir)
    specs = [
        NodeSpec(name=f"n{i + 1}", networks=["lan"], command=command, start=True) for i in range(n)
    ]
    times: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        c.add_network("lan")
        t1 = time.monotonic()
        times["network"] = t1 - t0

        def create_start(spec: NodeSpec) -> str:
            h = c._create_container(spec)
            c._call(h, "start", _api().start, h.container_id)
            return h.container_id

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mole-bare") as pool:
            cids = list(pool.map(create_start, specs))
        times["create_start"] = time.monotonic() - t1
    except BaseException:
        c.close()
        raise
    t2 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mole-bare-rm") as pool:
        removed = sum(pool.map(_remove_container, cids))
    times["remove"] = time.monotonic() - t2
    c.close()  # the network (and anything a failed removal left)
    times["total"] = time.monotonic() - t0
    if removed != n:
        raise LabError(f"removed {removed} of {n} containers", operation="bare lifecycle")
    return times


def _memory_cgroup_files(cid: str) -> tuple[Path, str] | None:
    """(usage file, inactive-file key of memory.stat) of a container under cgroup v1 or v2."""
    root = Path("/sys/fs/cgroup")
    for d, usage, inactive in (
        (root / "memory" / "docker" / cid, "memory.usage_in_bytes", "total_inactive_file"),
        (root / "docker" / cid, "memory.current", "inactive_file"),
        (root / "system.slice" / f"docker-{cid}.scope", "memory.current", "inactive_file"),
        (
            root / "memory" / "system.slice" / f"docker-{cid}.scope",
            "memory.usage_in_bytes",
            "total_inactive_file",
        ),
    ):
        if (d / usage).exists():
            return d / usage, inactive
    return None


def _cgroup_memory(usage_file: Path, inactive_key: str) -> int:
    usage = int(usage_file.read_text())
    for line in (usage_file.parent / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == inactive_key:
            return max(0, usage - int(value))
    return usage


def running_containers(owner: str | None = None) -> dict[str, str]:
    """Running lab containers of `owner` (default: this process): name -> container id."""
    flt = {"label": [f"{LABEL}=1", f"{LABEL_OWNER}={owner or owner_id()}"], "status": "running"}
    try:
        found = _api().containers(filters=flt)
    except _DOCKER_ERRORS as e:
        raise LabError(_short(e), operation="list running containers") from e
    return {c["Names"][0].lstrip("/"): c["Id"] for c in found}


def container_memory(cid: str) -> int | None:
    """Memory in use (bytes) of a container, counted as `docker stats` does: usage minus the
    inactive page cache; None once it is gone.

    Read from the container's cgroup files when the engine runs on this host (cheap enough to
    sample many containers several times a second, without asking the engine), else from the
    stats API.
    """
    files = _memory_cgroup_files(cid)
    try:
        if files is not None:
            return _cgroup_memory(*files)
        stats = _api().stats(cid, stream=False)["memory_stats"]
        cache = stats.get("stats", {})
        inactive = cache.get("total_inactive_file", cache.get("inactive_file", 0))
        return max(0, int(stats["usage"]) - int(inactive))
    except (OSError, ValueError, KeyError, *_DOCKER_ERRORS):
        return None  # removed meanwhile


def containers_memory(owner: str | None = None) -> dict[str, int]:
    """container_memory() of every running lab container of `owner`, by container name."""
    out: dict[str, int] = {}
    for name, cid in running_containers(owner).items():
        mem = container_memory(cid)
        if mem is not None:
            out[name] = mem
    return out


def sigterm_as_interrupt() -> None:
    """SIGTERM raises KeyboardInterrupt (main thread only), so teardown runs as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


def install_signal_cleanup(cluster: Cluster) -> None:
    """Ctrl-C and SIGTERM end the run and remove the cluster's resources.

    The signal handler only raises KeyboardInterrupt: the cluster is closed while the stack
    unwinds (create_nodes, `with Cluster`) and, for a caller that has no such block, at
    interpreter exit. Cleanup must not run inside the handler: it interrupts the main thread
    wherever it is, possibly holding a lock that cleanup needs (concurrent.futures' global
    lock inside submit(), this cluster's lock, the SDK's connection pool), and deadlocks.
    """
    atexit.register(cluster.close)
    sigterm_as_interrupt()
