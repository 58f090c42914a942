"""Fault injection for lab scenarios: lifecycle, partitions, packet loss, shaping, latency.

The scenario runner calls `apply(cluster, verb, params, targets=...)` for each `do:` step.
Lifecycle verbs act through the Cluster API (never the docker SDK directly); network faults run
`iptables` / `tc` inside the target containers (they have NET_ADMIN) through `Cluster.exec`,
one `sh -c` script per node so a fault lands in one round trip per container.

Faults that must be undone return a `Revert`: a callable, idempotent, thread-safe undo with a
`describe()`. Steps with `duration: N` are reverted by the runner N seconds after apply (it
owns the clock); everything still active is undone by `FaultSet.revert_all()` in its finally.
The explicit undo verbs (`heal`, `unloss`, `unshape`, `unpause`) revert the matching active
faults of the same cluster, so a later timed or final revert finds nothing left to do.

Everything we add inside a container is recognisable, so reverts and sweeps touch nothing
else: iptables chains are named MOLE-* and qdiscs carry the root handle 6d6f: ("mo").
See docs/faults.md for the verbs, their parameters and the design choices.
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
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("mole.lab.faults")

LIFECYCLE_VERBS = frozenset({"kill", "stop", "start", "restart", "pause", "unpause"})
FAULT_VERBS: frozenset[str] = LIFECYCLE_VERBS | frozenset(
    {"partition", "heal", "loss", "unloss", "bandwidth", "unshape", "latency", "fill", "unfill"}
)
VERBS = FAULT_VERBS  # the name lab.scenario looks for
# Keys of a scenario step that are the runner's business (timing, role resolution), not a
# verb parameter: the runner may pass the whole step and we ignore these.
STEP_KEYS = frozenset(
    {"id", "at", "after", "delay", "do", "duration", "node", "nodes", "group", "groups", "note"}
)
# Allowed parameters per verb (validation catches typos such as `precent`).
PARAMS: dict[str, frozenset[str]] = {
    "kill": frozenset({"signal"}),
    "stop": frozenset({"timeout"}),
    "start": frozenset(),
    "restart": frozenset({"timeout"}),
    "pause": frozenset(),
    "unpause": frozenset(),
    "partition": frozenset(),
    "heal": frozenset(),
    "loss": frozenset({"percent", "direction"}),
    "unloss": frozenset(),
    "bandwidth": frozenset({"rate", "burst", "direction", "qdisc"}),
    "unshape": frozenset(),
    "latency": frozenset({"ms", "jitter"}),
    "fill": frozenset({"path", "leave"}),
    "unfill": frozenset({"path"}),
}
FILL_FILE = ".mole-fill"  # the ballast `fill` writes; a dot file, so nodes never list it

PARTITION_CHAIN = "MOLE-PARTITION"
# direction -> (built-in chain, interface option, our chain, address option that names the host)
LOSS_CHAINS: dict[str, tuple[str, str, str, str]] = {
    "in": ("INPUT", "-i", "MOLE-LOSS-IN", "-s"),
    "out": ("OUTPUT", "-o", "MOLE-LOSS-OUT", "-d"),
}
REFUSED = 4  # script exit code: a fault of this kind is already active, nothing was changed
QDISC_HANDLE = "6d6f:"  # "mo": marks the root qdiscs we add, so we never delete anyone else's
IPT = ("iptables", "-w", "5")  # -w: concurrent faults in one container wait for the xtables lock
TBF_LATENCY = "200ms"  # max queueing delay in tbf before it drops (TCP then backs off)
MIN_BURST = 16000  # bytes: >= 10 full frames; tbf segments larger GSO packets itself

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)?\s*$", re.IGNORECASE)
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|k|kb|m|mb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 1 << 20, "mb": 1 << 20}
_SIGNAL_RE = re.compile(r"^(SIG[A-Z0-9]+|[0-9]+)$")

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


def _register(cluster: ClusterLike, revert: Revert) -> Revert:
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


# --------------------------------------------------------------------------- public entry points


def requirements(verb: str, params: Mapping[str, Any]) -> set[str]:
    """Kernel features (Capabilities field names, see lab.probe) the verb needs.

    "shaping" means tbf or htb (bandwidth falls back from tbf to htb).
    """
    if verb not in FAULT_VERBS:
        raise FaultParamError(
            f"unknown fault verb {verb!r}; known: {', '.join(sorted(FAULT_VERBS))}"
        )
    if verb in ("partition", "heal", "unloss"):
        return {"iptables"}
    if verb == "loss":
        return {"iptables", "iptables_statistic"}
    if verb == "bandwidth":
        qdisc = params.get("qdisc", "auto")
        return {qdisc} if qdisc in ("tbf", "htb") else {"shaping"}
    if verb == "latency":
        return {"netem"}
    return set()


def validate(verb: str, params: Mapping[str, Any]) -> None:
    """Raise FaultParamError (a ValueError) when the verb is unknown or a parameter is missing,
    unknown or bad. Node names are not checked here: the scenario parser resolves them."""
    _parse(verb, params)
    if verb == "partition" and "groups" in params:
        _target_groups({}, params)


def apply(
    cluster: ClusterLike,
    verb: str,
    params: Mapping[str, Any],
    *,
    targets: Mapping[str, Sequence[Any]],
) -> Revert | None:
    """Apply one fault now; returns its Revert, or None for one-shot verbs.

    targets: node names per role key, already resolved by the runner: {"node": ["n3"]} for
    node verbs (several names apply the fault to each), {"groups": [["a", "b"], ["c"]]} for
    partition. When a key is absent the same key of params is used (direct calls, tests).
    One-shot verbs (kill, stop, start, restart, unpause, heal, unloss, unshape) return None.
    A step's `duration` is not handled here: the runner calls the returned Revert after that
    many seconds, and FaultSet.revert_all() undoes whatever is still active at the end.
    """
    p = _parse(verb, params)
    if verb in LIFECYCLE_VERBS:
        return _lifecycle(cluster, verb, p, _target_nodes(verb, targets, params))
    if verb == "partition":
        return _partition(cluster, _target_groups(targets, params))
    if verb == "heal":
        _heal(cluster)
        return None
    if verb == "loss":
        return _loss(cluster, p, _target_nodes(verb, targets, params))
    if verb == "unloss":
        _undo_kind(cluster, "unloss", {"loss"}, _target_nodes(verb, targets, params), _loss_sweep)
        return None
    if verb in ("bandwidth", "latency"):
        return _shape(cluster, verb, p, _target_nodes(verb, targets, params))
    if verb == "unshape":
        nodes = _target_nodes(verb, targets, params)
        _undo_kind(cluster, "unshape", {"bandwidth", "latency"}, nodes, _shape_sweep)
        return None
    if verb == "fill":
        return _fill(cluster, p, _target_nodes(verb, targets, params))
    if verb == "unfill":
        nodes = _target_nodes(verb, targets, params)
        _undo_kind(cluster, "unfill", {"fill"}, nodes, lambda c, n: _unfill_on(c, n, p["path"]))
        return None
    raise AssertionError(verb)  # every verb of FAULT_VERBS is handled above


# --------------------------------------------------------------------------- parameters


def _parse(verb: str, params: Mapping[str, Any]) -> dict[str, Any]:
    if verb not in FAULT_VERBS:
        raise FaultParamError(
            f"unknown fault verb {verb!r}; known: {', '.join(sorted(FAULT_VERBS))}"
        )
    unknown = sorted(set(params) - PARAMS[verb] - STEP_KEYS)
    if unknown:
        allowed = ", ".join(sorted(PARAMS[verb])) or "none"
        raise FaultParamError(
            f"unknown parameter(s) {', '.join(unknown)} (allowed: {allowed})", verb=verb
        )
    try:
        parser = _PARSERS.get(verb)
        return parser(params) if parser else {}
    except (TypeError, ValueError) as e:
        raise FaultParamError(str(e), verb=verb) from e


def _number(params: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = params.get(key, default)
    if value is None:
        raise ValueError(f"missing parameter {key!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, not {value!r}")
    return float(value)


def _parse_kill(params: Mapping[str, Any]) -> dict[str, Any]:
    sig = str(params.get("signal", "SIGKILL")).upper()
    if not sig.isdigit() and not sig.startswith("SIG"):
        sig = "SIG" + sig
    if not _SIGNAL_RE.match(sig):
        raise ValueError(f"bad signal {params.get('signal')!r} (e.g. SIGKILL, SIGTERM, 9)")
    return {"signal": sig}


def _parse_timeout(params: Mapping[str, Any]) -> dict[str, Any]:
    timeout = _number(params, "timeout", 10)
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, not {timeout}")
    return {"timeout": timeout}


def _parse_loss(params: Mapping[str, Any]) -> dict[str, Any]:
    percent = _number(params, "percent")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], not {percent}")
    direction = params.get("direction", "both")
    if direction not in ("both", "in", "out"):
        raise ValueError(f"direction must be both, in or out, not {direction!r}")
    return {"percent": percent, "direction": direction}


def parse_rate(rate: object) -> int:
    """tc rate ("10mbit", "500kbit", "1gbit", "64000bit" or a bare number) -> bits/s."""
    if isinstance(rate, int) and not isinstance(rate, bool):
        bits = rate
    else:
        m = _RATE_RE.match(str(rate))
        if not m:
            raise ValueError(
                f"bad rate {rate!r}: use <number><unit> with unit bit, kbit, mbit or gbit "
                "(bits per second; tc's kbps/mbps would be bytes, so they are not accepted)"
            )
        bits = int(float(m.group(1)) * _RATE_UNITS[(m.group(2) or "bit").lower()])
    if bits < 8000:
        raise ValueError(f"rate {rate!r} is below 8kbit, which would stall even one frame")
    return bits


def parse_size(size: object) -> int:
    """Byte count: an int, or "32k", "64kb", "1m" (binary multiples, as tc reads them)."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    m = _SIZE_RE.match(str(size))
    if not m:
        raise ValueError(f"bad size {size!r}: use bytes, or <n>k / <n>kb / <n>m")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]


def _parse_bandwidth(params: Mapping[str, Any]) -> dict[str, Any]:
    if "rate" not in params:
        raise ValueError("missing parameter 'rate' (e.g. rate: 10mbit)")
    bits = parse_rate(params["rate"])
    # 10 ms worth of the rate covers any timer granularity (HZ >= 100).
    burst = parse_size(params["burst"]) if "burst" in params else max(MIN_BURST, bits // 800)
    if burst < 1600:
        raise ValueError(f"burst {burst} bytes is smaller than one frame; use >= 1600")
    direction = params.get("direction", "out")
    if direction == "in" or direction == "both":
        raise ValueError(
            "ingress shaping is not supported (it needs an ifb device and tc mirred redirect); "
            "shape the sender's egress instead: direction: out on the sending node"
        )
    if direction != "out":
        raise ValueError(f"direction must be out, not {direction!r}")
    qdisc = params.get("qdisc", "auto")
    if qdisc not in ("auto", "tbf", "htb"):
        raise ValueError(f"qdisc must be auto, tbf or htb, not {qdisc!r}")
    return {"bits": bits, "burst": burst, "qdisc": qdisc}


def _parse_latency(params: Mapping[str, Any]) -> dict[str, Any]:
    ms = _number(params, "ms")
    jitter = _number(params, "jitter", 0)
    if ms <= 0 or jitter < 0:
        raise ValueError(f"need ms > 0 and jitter >= 0, got ms={ms}, jitter={jitter}")
    return {"ms": ms, "jitter": jitter}


def _parse_fill(params: Mapping[str, Any]) -> dict[str, Any]:
    path = params.get("path", "/data/inbox")
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"path must be an absolute directory in the container, not {path!r}")
    leave = parse_size(params.get("leave", 0))
    if leave < 0:
        raise ValueError(f"leave must be >= 0 bytes, not {leave}")
    return {"path": path.rstrip("/") or "/", "leave": leave}


_PARSERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "fill": _parse_fill,
    "unfill": _parse_fill,
    "kill": _parse_kill,
    "stop": _parse_timeout,
    "restart": _parse_timeout,
    "loss": _parse_loss,
    "bandwidth": _parse_bandwidth,
    "latency": _parse_latency,
}


def _target_nodes(
    verb: str, targets: Mapping[str, Sequence[Any]], params: Mapping[str, Any]
) -> list[str]:
    raw: Any = None
    for source in (targets, params):
        for key in ("node", "nodes", "group"):
            raw = raw or source.get(key)
    if isinstance(raw, str):
        raw = [raw]
    nodes = [str(n) for n in raw or []]
    if not nodes:
        raise FaultParamError("no target node (give `node: NAME`)", verb=verb)
    return list(dict.fromkeys(nodes))


def _target_groups(
    targets: Mapping[str, Sequence[Any]], params: Mapping[str, Any]
) -> list[list[str]]:
    raw: Any = targets.get("groups") or params.get("groups")
    if not isinstance(raw, list | tuple) or not all(isinstance(g, list | tuple) for g in raw):
        raise FaultParamError(
            f"groups must be a list of node lists, e.g. [[a, b], [c]]; got {raw!r}",
            verb="partition",
        )
    groups = [[str(n) for n in g] for g in raw]
    if len(groups) < 2 or any(not g for g in groups):
        raise FaultParamError(
            f"need at least two non-empty groups to partition; got {groups}", verb="partition"
        )
    seen: dict[str, int] = {}
    for i, g in enumerate(groups):
        for n in g:
            if n in seen and seen[n] != i:
                raise FaultParamError(f"node {n} is in two groups: {groups}", verb="partition")
            seen[n] = i
    return [list(dict.fromkeys(g)) for g in groups]


# --------------------------------------------------------------------------- exec helpers


def _run_line(cmd: Sequence[str]) -> str:
    return "run " + shlex.join(cmd)


def _ensure_line(check: Sequence[str], cmd: Sequence[str]) -> str:
    """Run cmd unless check succeeds (add a rule only once)."""
    return f"has {shlex.join(check)} || {_run_line(cmd)}"


def _if_line(check: Sequence[str], cmd: Sequence[str]) -> str:
    """Run cmd only when check succeeds (delete only what exists: reverts are idempotent)."""
    return f"! has {shlex.join(check)} || {_run_line(cmd)}"


def _refuse_line(check: Sequence[str], message: str) -> str:
    """Fail the script with message when check succeeds."""
    return f"! has {shlex.join(check)} || {{ echo {shlex.quote(message)}; exit {REFUSED}; }}"


def script(lines: Iterable[str]) -> str:
    return PRELUDE + "\n".join(lines) + "\nexit 0\n"


def _exec(cluster: ClusterLike, node: str, verb: str, lines: Sequence[str]) -> str:
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


def _exec_if_up(cluster: ClusterLike, node: str, verb: str, lines: Sequence[str]) -> None:
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
    _exec(cluster, node, verb, lines)


def _each(nodes: Sequence[str], fn: Callable[[str], object]) -> dict[str, Exception]:
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


def _raise_first(errors: Mapping[str, Exception], verb: str) -> None:
    if not errors:
        return
    first = next(iter(errors.values()))
    if len(errors) == 1:
        raise first
    others = ", ".join(sorted(errors))
    raise FaultError(f"failed on nodes {others}; first error:\n{first}", verb=verb) from first


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


def _net_info(cluster: ClusterLike, node: str, verb: str) -> NetInfo:
    info = parse_net_info(_exec(cluster, node, verb, [NET_INFO_CMD]))
    if not info.devices:
        raise FaultError(
            "the container has no eth* interface with an IPv4 address", verb=verb, node=node
        )
    return info


# --------------------------------------------------------------------------- lifecycle


def _docker(verb: str, node: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except FaultError:
        raise
    except Exception as e:
        raise FaultError(str(e), verb=verb, node=node) from e


def _lifecycle(
    cluster: ClusterLike, verb: str, p: dict[str, Any], nodes: list[str]
) -> Revert | None:
    def one(n: str) -> None:
        if verb == "kill":
            _docker(verb, n, lambda: cluster.kill(n, signal=p["signal"]))
        elif verb == "stop":
            _docker(verb, n, lambda: cluster.stop(n, timeout=p["timeout"]))
        elif verb == "start":
            _docker(verb, n, lambda: cluster.start(n))
        elif verb == "restart":
            _docker(verb, n, lambda: cluster.restart(n, timeout=p["timeout"]))
        elif verb == "pause":
            _docker(verb, n, lambda: cluster.pause(n))
        elif verb == "unpause":
            _unpause(cluster, n)

    if verb == "unpause":
        for r in active_faults(cluster):
            if r.verb == "pause" and set(r.nodes) <= set(nodes):
                r()
    _raise_first(_each(nodes, one), verb)
    if verb != "pause":
        return None

    def undo() -> None:
        _raise_first(_each(nodes, lambda n: _unpause(cluster, n)), "unpause")

    desc = f"pause {', '.join(nodes)}"
    return _register(cluster, Revert("pause", nodes, desc, undo, cluster=cluster))


def _unpause(cluster: ClusterLike, node: str) -> None:
    if cluster.status(node) == "paused":  # idempotent: an explicit unpause may have run
        _docker("unpause", node, lambda: cluster.unpause(node))


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
    lines = [_ensure_line([*IPT, "-S", c], [*IPT, "-N", c])]
    for rule in partition_rules(peer_ips):
        lines.append(_run_line([*IPT, "-A", c, *rule]))
    # Jump last: the chain is complete before it sees traffic.
    for parent in ("INPUT", "OUTPUT"):
        lines.append(
            _ensure_line([*IPT, "-C", parent, "-j", c], [*IPT, "-I", parent, "1", "-j", c])
        )
    return lines


def partition_del_lines(peer_ips: Sequence[str]) -> list[str]:
    """Delete one copy of each rule (overlapping partitions share the chain), then the chain
    itself once no rule is left."""
    c = PARTITION_CHAIN
    lines = [
        _if_line([*IPT, "-C", c, *rule], [*IPT, "-D", c, *rule])
        for rule in partition_rules(peer_ips)
    ]
    lines.append(f'if [ "$({shlex.join([*IPT, "-S", c])} 2>/dev/null | wc -l)" -eq 1 ]; then')
    for parent in ("INPUT", "OUTPUT"):
        lines.append("  " + _if_line([*IPT, "-C", parent, "-j", c], [*IPT, "-D", parent, "-j", c]))
    lines.append("  " + _run_line([*IPT, "-X", c]))
    lines.append("fi")
    return lines


def _partition(cluster: ClusterLike, groups: list[list[str]]) -> Revert:
    ips = {n: _ips(cluster, n) for g in groups for n in g}
    plan: dict[str, list[str]] = {}
    for i, g in enumerate(groups):
        others = [ip for j, h in enumerate(groups) if j != i for n in h for ip in ips[n]]
        for n in g:
            plan[n] = list(dict.fromkeys(others))
    nodes = list(plan)
    desc = "partition " + " | ".join(",".join(g) for g in groups)

    def undo() -> None:
        errors = _each(
            nodes, lambda n: _exec_if_up(cluster, n, "heal", partition_del_lines(plan[n]))
        )
        _raise_first(errors, "heal")

    errors = _each(nodes, lambda n: _exec(cluster, n, "partition", partition_add_lines(plan[n])))
    if errors:
        # Half a partition is worse than none: take back what landed (the failed nodes too: a
        # script may stop after some rules), then report.
        _each(nodes, lambda n: _exec_if_up(cluster, n, "heal", partition_del_lines(plan[n])))
        _raise_first(errors, "partition")
    return _register(cluster, Revert("partition", nodes, desc, undo, cluster=cluster))


def _heal(cluster: ClusterLike) -> None:
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
            _refuse_line(
                [*IPT, "-S", chain],
                f"loss ({d}) is already active on this node; unloss it first",
            )
        )
        lines.append(_run_line([*IPT, "-N", chain]))
        for gw in gateways:  # the host (the lab's API calls) is never the one losing packets
            lines.append(_run_line([*IPT, "-A", chain, addr_opt, gw, "-j", "RETURN"]))
        lines.append(
            _run_line(
                [*IPT, "-A", chain, "-m", "statistic", "--mode", "random",
                 "--probability", _probability(percent), "-j", "DROP"]
            )
        )  # fmt: skip
        lines.append(_run_line([*IPT, "-I", parent, "1", dev_opt, "eth+", "-j", chain]))
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
            f"{{ {_run_line([*IPT, '-F', chain])}; {_run_line([*IPT, '-X', chain])}; }}"
        )
    return lines


def _loss(cluster: ClusterLike, p: dict[str, Any], nodes: list[str]) -> Revert:
    percent, direction = p["percent"], p["direction"]

    def add(n: str) -> None:
        info = _net_info(cluster, n, "loss")
        try:
            _exec(cluster, n, "loss", loss_add_lines(percent, direction, info.gateways))
        except FaultError as e:
            if e.exit_code != REFUSED:  # a refusal changed nothing; the active loss stays
                _best_effort(lambda: _exec(cluster, n, "unloss", loss_del_lines(direction)))
            raise

    def undo(n: str) -> None:
        _exec_if_up(cluster, n, "unloss", loss_del_lines(direction))

    desc = f"loss {percent:g}% ({direction}) on {', '.join(nodes)}"
    return _apply_each(cluster, "loss", "unloss", nodes, add, undo, desc)


def _apply_each(
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
        _raise_first(_each(which, undo), undo_verb)

    errors = _each(nodes, one)
    if errors:
        _best_effort(lambda: undo_on(applied))
        _raise_first(errors, verb)
    return _register(cluster, Revert(verb, nodes, desc, lambda: undo_on(nodes), cluster=cluster))


def _best_effort(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as e:
        log.warning("cleanup after a failed fault also failed: %s", e)


def _loss_sweep(cluster: ClusterLike, node: str) -> None:
    _exec_if_up(cluster, node, "unloss", loss_del_lines("both"))


# --------------------------------------------------------------------------- shaping / latency


def tbf_cmd(dev: str, bits: int, burst: int) -> list[str]:
    return ["tc", "qdisc", "add", "dev", dev, "root", "handle", QDISC_HANDLE,
            "tbf", "rate", f"{bits}bit", "burst", str(burst), "latency", TBF_LATENCY]  # fmt: skip


def htb_cmds(dev: str, bits: int, burst: int) -> list[list[str]]:
    cls = QDISC_HANDLE + "1"
    return [
        ["tc", "qdisc", "add", "dev", dev, "root", "handle", QDISC_HANDLE, "htb", "default", "1"],
        ["tc", "class", "add", "dev", dev, "parent", QDISC_HANDLE, "classid", cls,
         "htb", "rate", f"{bits}bit", "burst", str(burst), "cburst", str(burst)],
    ]  # fmt: skip


def netem_cmd(dev: str, ms: float, jitter: float) -> list[str]:
    cmd = ["tc", "qdisc", "add", "dev", dev, "root", "handle", QDISC_HANDLE,
           "netem", "delay", f"{ms:g}ms"]  # fmt: skip
    return cmd + ([f"{jitter:g}ms"] if jitter else [])


def shape_add_lines(verb: str, p: Mapping[str, Any], devices: Sequence[str]) -> list[str]:
    lines = [
        f"! ours {dev} || {{ echo {shlex.quote(f'{dev} already has a mole qdisc (bandwidth or latency); unshape it first')}; exit {REFUSED}; }}"  # noqa: E501
        for dev in devices
    ]
    for dev in devices:
        if verb == "latency":
            lines.append(_run_line(netem_cmd(dev, p["ms"], p["jitter"])))
        elif p["qdisc"] == "tbf":
            lines.append(_run_line(tbf_cmd(dev, p["bits"], p["burst"])))
        elif p["qdisc"] == "htb":
            lines.extend(_run_line(c) for c in htb_cmds(dev, p["bits"], p["burst"]))
        else:  # auto: tbf, or htb where the kernel lacks sch_tbf
            htb = "; ".join(_run_line(c) for c in htb_cmds(dev, p["bits"], p["burst"]))
            lines.append(f"has {shlex.join(tbf_cmd(dev, p['bits'], p['burst']))} || {{ {htb}; }}")
    return lines


def shape_del_lines(devices: Sequence[str] | None = None) -> list[str]:
    """Delete our root qdiscs (of these devices, or of every eth*); others are left alone."""
    if devices is None:
        return [
            "for dev in $(ls /sys/class/net); do case $dev in eth*) "
            '! ours "$dev" || run tc qdisc del dev "$dev" root;; esac; done'
        ]
    return [
        f"! ours {dev} || {_run_line(['tc', 'qdisc', 'del', 'dev', dev, 'root'])}"
        for dev in devices
    ]


def _shape(cluster: ClusterLike, verb: str, p: dict[str, Any], nodes: list[str]) -> Revert:
    devices: dict[str, tuple[str, ...]] = {}

    def add(n: str) -> None:
        info = _net_info(cluster, n, verb)
        try:
            _exec(cluster, n, verb, shape_add_lines(verb, p, info.devices))
        except FaultError as e:
            if e.exit_code != REFUSED:  # a refusal changed nothing; the active qdisc stays
                _best_effort(lambda: _exec(cluster, n, "unshape", shape_del_lines(info.devices)))
            raise
        devices[n] = info.devices

    def undo(n: str) -> None:
        _exec_if_up(cluster, n, "unshape", shape_del_lines(devices.get(n)))

    if verb == "latency":
        what = f"latency {p['ms']:g}ms" + (f" ±{p['jitter']:g}ms" if p["jitter"] else "")
    else:
        what = f"bandwidth {_fmt_rate(p['bits'])} egress ({p['qdisc']})"
    return _apply_each(cluster, verb, "unshape", nodes, add, undo, f"{what} on {', '.join(nodes)}")


def _fmt_rate(bits: int) -> str:
    for unit, k in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= k and bits % k == 0:
            return f"{bits // k}{unit}"
    return f"{bits}bit"


def _shape_sweep(cluster: ClusterLike, node: str) -> None:
    _exec_if_up(cluster, node, "unshape", shape_del_lines(None))


# --------------------------------------------------------------------------- disk full


def fill_add_lines(path: str, leave: int) -> list[str]:
    """Fill the filesystem of `path` up to `leave` free bytes with one ballast file.

    Only a tmpfs is ever filled: any other filesystem in a node container is the host's disk
    (the bind-mounted data directory, the image layers), which a lab run must never fill.
    """
    ballast = shlex.quote(f"{path}/{FILL_FILE}")
    qpath = shlex.quote(path)
    return [
        f'[ "$(stat -f -c %T {qpath} 2>&1)" = tmpfs ] || {{ echo {shlex.quote(f"{path} is not a tmpfs: only a tmpfs is filled (give the node tmpfs: {{{path}: 64m}})")}; exit {REFUSED}; }}',  # noqa: E501
        f"[ ! -e {ballast} ] || {{ echo {shlex.quote(f'{path} is already filled; unfill it first')}; exit {REFUSED}; }}",  # noqa: E501
        f"free=$(( $(stat -f -c '%a * %S' {qpath}) - {leave} ))",
        # The node may be writing meanwhile, so the exact size can be gone by the time we
        # allocate it: with nothing to leave, write until ENOSPC instead (dd's error expected).
        f"[ $free -le 0 ] || run fallocate -l $free {ballast}"
        if leave
        else f"dd if=/dev/zero of={ballast} bs=64k 2>/dev/null; [ -e {ballast} ] || run touch {ballast}",  # noqa: E501
    ]


def fill_del_lines(path: str) -> list[str]:
    return [f"run rm -f {shlex.quote(f'{path}/{FILL_FILE}')}"]


def _fill(cluster: ClusterLike, p: dict[str, Any], nodes: list[str]) -> Revert:
    path, leave = p["path"], p["leave"]

    def add(n: str) -> None:
        _exec(cluster, n, "fill", fill_add_lines(path, leave))

    def undo(n: str) -> None:
        _unfill_on(cluster, n, path)

    desc = f"disk full at {path} (leaving {leave} bytes) on {', '.join(nodes)}"
    return _apply_each(cluster, "fill", "unfill", nodes, add, undo, desc)


def _unfill_on(cluster: ClusterLike, node: str, path: str) -> None:
    _exec_if_up(cluster, node, "unfill", fill_del_lines(path))


def _undo_kind(
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
    _raise_first(_each(nodes, lambda n: sweep(cluster, n)), verb)
