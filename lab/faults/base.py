"""What every fault shares: its errors, its undo (Revert, FaultSet), the registry of the faults
active on each cluster, and running one `sh -c` script per node inside the containers.

Scripts stop at their first failing command and say which one (`run`); a script that finds
its fault already active exits REFUSED having changed nothing. Everything a fault adds is
recognisable (iptables chains MOLE-*, root qdiscs with handle 6d6f:), so undos and sweeps
touch nothing else.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shlex
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("mole.lab.faults")

REFUSED = 4  # script exit code: a fault of this kind is already active, nothing was changed
QDISC_HANDLE = "6d6f:"  # "mo": marks the root qdiscs we add, so we never delete anyone else's

# Shell helpers every script starts with. `run` stops the script at the first failing command
# and prints which one failed with its output; `has` is a silent test; `ours DEV` is true when
# DEV's root qdisc is one we added.
PRELUDE = f"""\
run() {{ _o=$("$@" 2>&1) || {{ _r=$?; printf 'command failed (exit %s): %s\\n%s\\n' \
"$_r" "$*" "$_o"; exit 3; }}; }}
has() {{ "$@" >/dev/null 2>&1; }}
ours() {{ tc qdisc show dev "$1" root 2>/dev/null | grep -q " {QDISC_HANDLE} "; }}
"""


class FaultError(Exception):
    """A fault could not be applied or reverted: which verb, which node, which command, output."""

    def __init__(
        self,
        message: str,
        *,
        verb: str | None = None,
        node: str | None = None,
        command: str | None = None,
        output: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        self.message = message  # without the verb, node, command and output around it
        self.verb = verb
        self.node = node
        self.command = command
        self.output = output
        self.exit_code = exit_code
        where = " ".join(p for p in (verb or "", f"on node {node}" if node else "") if p)
        text = f"{where}: {message}" if where else message
        if command:
            text += f"\n--- command ---\n{command}"
        if output and output.strip():
            text += f"\n--- output ---\n{output.rstrip()}"
        super().__init__(text)


class FaultParamError(FaultError, ValueError):
    """Unknown verb or bad parameters: the scenario is wrong, nothing was touched."""


class ClusterLike(Protocol):
    """What this module needs of lab.cluster.Cluster (a fake in unit tests)."""

    def node(self, name: str) -> Any: ...
    def exec(self, name: str, cmd: list[str]) -> tuple[int, str]: ...
    def status(self, name: str) -> str: ...
    def start(self, name: str) -> None: ...
    def stop(self, name: str, timeout: float = 10) -> None: ...
    def kill(self, name: str, signal: str = "SIGKILL") -> None: ...
    def restart(self, name: str, timeout: float = 10) -> None: ...
    def pause(self, name: str) -> None: ...
    def unpause(self, name: str) -> None: ...


@dataclass(frozen=True)
class Targets:
    """The nodes a fault acts on, names resolved by the caller: `nodes` for node verbs,
    `sides` for partition (each side cut off from the others)."""

    nodes: list[str] = field(default_factory=list)
    sides: list[list[str]] = field(default_factory=list)


# How a verb is carried out: its checked parameters, the nodes it acts on.
Apply = Callable[[ClusterLike, dict[str, Any], Targets], "Revert | None"]


# --------------------------------------------------------------------------- reverts


class Revert:
    """The undo of one applied fault. Calling it twice does nothing the second time.

    A failing undo raises FaultError and stays pending, so it may be retried.
    """

    def __init__(
        self,
        verb: str,
        nodes: Sequence[str],
        description: str,
        undo: Callable[[], None],
        *,
        cluster: ClusterLike | None = None,
    ) -> None:
        self.verb = verb
        self.nodes = tuple(nodes)
        self._description = description
        self._undo = undo
        self._cluster = cluster
        self._lock = threading.Lock()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def describe(self) -> str:
        return self._description

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._undo()
            self._done = True
        if self._cluster is not None:
            _unregister(self._cluster, self)

    def __repr__(self) -> str:
        return f"<Revert {self._description}{' (done)' if self._done else ''}>"


class FaultSet:
    """Active faults of one run; `revert_all()` undoes them newest first and never raises."""

    def __init__(self) -> None:
        self._reverts: list[Revert] = []
        self._lock = threading.Lock()

    def add(self, revert: Revert) -> None:
        with self._lock:
            self._reverts.append(revert)

    def active(self) -> list[Revert]:
        with self._lock:
            return [r for r in self._reverts if not r.done]

    def revert_all(self) -> list[str]:
        """Undo every fault still active (newest first); returns one message per failure."""
        with self._lock:
            pending, self._reverts = self._reverts[::-1], []
        errors = []
        for r in pending:
            try:
                r()
            except Exception as e:
                msg = f"reverting {r.describe()} failed: {e}"
                log.error("%s", msg)
                errors.append(msg)
        return errors

    def __enter__(self) -> FaultSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.revert_all()


# Active reverts per cluster, so `heal`/`unloss`/`unshape`/`unpause` find what to undo.
_registry: weakref.WeakKeyDictionary[Any, list[Revert]] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def register(cluster: ClusterLike, revert: Revert) -> Revert:
    with _registry_lock:
        _registry.setdefault(cluster, []).append(revert)
    return revert


def _unregister(cluster: ClusterLike, revert: Revert) -> None:
    with _registry_lock:
        active = _registry.get(cluster, [])
        if revert in active:
            active.remove(revert)


def active_faults(cluster: ClusterLike) -> list[Revert]:
    """Faults applied to this cluster and not reverted yet, oldest first."""
    with _registry_lock:
        return list(_registry.get(cluster, []))


def undo_kind(
    cluster: ClusterLike,
    verb: str,
    kinds: set[str],
    nodes: list[str],
    sweep: Callable[[ClusterLike, str], None],
) -> None:
    """unloss / unshape: revert the matching active faults, then sweep the nodes so nothing
    of ours is left even when a fault covered more nodes or was applied by someone else."""
    for r in active_faults(cluster):
        if r.verb in kinds and set(r.nodes) <= set(nodes):
            r()
    raise_first(each_node(nodes, lambda n: sweep(cluster, n)), verb)


# --------------------------------------------------------------------------- scripts in containers


def run_line(cmd: Sequence[str]) -> str:
    return "run " + shlex.join(cmd)


def ensure_line(check: Sequence[str], cmd: Sequence[str]) -> str:
    """Run cmd unless check succeeds (add a rule only once)."""
    return f"has {shlex.join(check)} || {run_line(cmd)}"


def if_line(check: Sequence[str], cmd: Sequence[str]) -> str:
    """Run cmd only when check succeeds (delete only what exists: reverts are idempotent)."""
    return f"! has {shlex.join(check)} || {run_line(cmd)}"


def refuse_line(check: Sequence[str], message: str) -> str:
    """Fail the script with message when check succeeds."""
    return f"! has {shlex.join(check)} || {{ echo {shlex.quote(message)}; exit {REFUSED}; }}"


def script(lines: Iterable[str]) -> str:
    return PRELUDE + "\n".join(lines) + "\nexit 0\n"


def exec_script(cluster: ClusterLike, node: str, verb: str, lines: Sequence[str]) -> str:
    body = "\n".join(lines)
    try:
        code, out = cluster.exec(node, ["sh", "-c", script(lines)])
    except Exception as e:
        raise FaultError(f"exec failed: {e}", verb=verb, node=node, command=body) from e
    if code == REFUSED:  # the script's own one-line reason; nothing was changed
        reason = out.strip().splitlines()[-1] if out.strip() else "refused"
        raise FaultError(reason, verb=verb, node=node, exit_code=code)
    if code != 0:
        raise FaultError(
            f"script exited with {code}",
            verb=verb,
            node=node,
            command=body,
            output=out,
            exit_code=code,
        )
    return out


def exec_if_up(cluster: ClusterLike, node: str, verb: str, lines: Sequence[str]) -> None:
    """For reverts: a container that is not running lost its netns, and our rules with it."""
    try:
        status = cluster.status(node)
    except Exception as e:
        raise FaultError(f"cannot read the container status: {e}", verb=verb, node=node) from e
    if status in ("created", "exited", "dead", "removing"):
        log.info("%s on %s: container %s, nothing to undo", verb, node, status)
        return
    if status == "paused":
        raise FaultError(
            "the container is paused, so its rules cannot be removed; unpause it first",
            verb=verb,
            node=node,
        )
    exec_script(cluster, node, verb, lines)


def each_node(nodes: Sequence[str], fn: Callable[[str], object]) -> dict[str, Exception]:
    """fn(node) for every node concurrently (the fault lands on all nodes at about the same
    time); returns the failures by node."""
    errors: dict[str, Exception] = {}
    if not nodes:
        return errors
    if len(nodes) == 1:
        try:
            fn(nodes[0])
        except Exception as e:
            errors[nodes[0]] = e
        return errors
    with ThreadPoolExecutor(max_workers=min(16, len(nodes)), thread_name_prefix="mole-fault") as ex:
        futures = {n: ex.submit(fn, n) for n in nodes}
    for n, f in futures.items():
        err = f.exception()
        if isinstance(err, Exception):
            errors[n] = err
        elif err is not None:
            raise err
    return errors


def raise_first(errors: Mapping[str, Exception], verb: str) -> None:
    if not errors:
        return
    first = next(iter(errors.values()))
    if len(errors) == 1:
        raise first
    others = ", ".join(sorted(errors))
    raise FaultError(f"failed on nodes {others}; first error:\n{first}", verb=verb) from first


def apply_each(
    cluster: ClusterLike,
    verb: str,
    undo_verb: str,
    nodes: list[str],
    add: Callable[[str], None],
    undo: Callable[[str], None],
    desc: str,
) -> Revert:
    """add(n) on every node at once. If it fails anywhere, what landed elsewhere is taken back
    and the first error raised; else the registered Revert runs undo(n) on every node."""
    applied: list[str] = []

    def one(n: str) -> None:
        add(n)
        applied.append(n)

    def undo_on(which: Sequence[str]) -> None:
        raise_first(each_node(which, undo), undo_verb)

    errors = each_node(nodes, one)
    if errors:
        best_effort(lambda: undo_on(applied))
        raise_first(errors, verb)
    return register(cluster, Revert(verb, nodes, desc, lambda: undo_on(nodes), cluster=cluster))


def best_effort(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as e:
        log.warning("cleanup after a failed fault also failed: %s", e)


def docker_call(verb: str, node: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except FaultError:
        raise
    except Exception as e:
        raise FaultError(str(e), verb=verb, node=node) from e


@dataclass(frozen=True)
class NetInfo:
    """A container's eth* devices and the host's addresses on its networks."""

    devices: tuple[str, ...]
    gateways: tuple[str, ...]


NET_INFO_CMD = "ip -4 -o addr show; echo @@; ip -4 route show default"
_ADDR_RE = re.compile(r"^\d+:\s+(\S+)\s+inet\s+(\d+\.\d+\.\d+\.\d+/\d+)")


def parse_net_info(out: str) -> NetInfo:
    """Parse NET_INFO_CMD output. The host is the bridge gateway: the default route's next hop
    and, on every other network, the subnet's first address (Docker's choice, and lab.cluster
    sets it explicitly)."""
    addrs, _, routes = out.partition("@@")
    devices: list[str] = []
    gateways: list[str] = []
    for line in addrs.splitlines():
        m = _ADDR_RE.match(line.strip())
        if not m:
            continue
        dev = m.group(1).split("@")[0]
        if not dev.startswith("eth"):
            continue
        if dev not in devices:
            devices.append(dev)
        net = ipaddress.IPv4Interface(m.group(2)).network
        if net.num_addresses >= 4:
            gateways.append(str(net.network_address + 1))
    for line in routes.splitlines():
        words = line.split()
        if "via" in words[:-1]:
            gateways.insert(0, words[words.index("via") + 1])
    return NetInfo(tuple(devices), tuple(dict.fromkeys(gateways)))


def net_info(cluster: ClusterLike, node: str, verb: str) -> NetInfo:
    info = parse_net_info(exec_script(cluster, node, verb, [NET_INFO_CMD]))
    if not info.devices:
        raise FaultError(
            "the container has no eth* interface with an IPv4 address", verb=verb, node=node
        )
    return info
