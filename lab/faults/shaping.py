"""Traffic shaping with tc inside the containers: bandwidth (tbf, or htb where the kernel lacks
sch_tbf), latency (netem), unshape. Egress on every eth* device; ingress (bandwidth `direction:
in/both`) through an ifb device per eth (mole-ifb<N>) that the eth's ingress redirects to. Our
root qdiscs carry the handle 6d6f: and our ifb devices the prefix mole-ifb, so nothing else is
ever deleted. See docs/faults.md.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from lab.faults.base import (
    QDISC_HANDLE,
    REFUSED,
    Apply,
    ClusterLike,
    FaultError,
    Revert,
    Targets,
    apply_each,
    best_effort,
    exec_if_up,
    exec_script,
    net_info,
    run_line,
    undo_kind,
)

TBF_LATENCY = "200ms"  # max queueing delay in tbf before it drops (TCP then backs off)
MIN_BURST = 16000  # bytes: >= 10 full frames; tbf segments larger GSO packets itself
MIN_FRAME = 1600  # bytes: a burst smaller than one frame would stall the link

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)?\s*$", re.IGNORECASE)
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|k|kb|m|mb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 1 << 20, "mb": 1 << 20}
IFB_PREFIX = "mole-ifb"  # our ifb devices: mole-ifb<N> shapes what eth<N> receives


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
        raise ValueError(f"{rate!r} is below 8kbit, which would stall even one frame")
    return bits


def parse_size(size: object) -> int:
    """Byte count: an int, or "32k", "64kb", "1m" (binary multiples, as tc reads them)."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    m = _SIZE_RE.match(str(size))
    if not m:
        raise ValueError(f"bad size {size!r}: use bytes, or <n>k / <n>kb / <n>m")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]


def _predicate(e: ValueError) -> ValueError:
    """parse_rate's and parse_size's messages as what a step parameter is ("is a bad rate")."""
    text = str(e)
    return ValueError(f"is a {text}" if text.startswith("bad ") else text)


def rate_bits(value: object) -> int:
    try:
        return parse_rate(value)
    except ValueError as e:
        raise _predicate(e) from None


def byte_count(value: object) -> int:
    try:
        return parse_size(value)
    except ValueError as e:
        raise _predicate(e) from None


def burst_bytes(value: object) -> int:
    n = byte_count(value)
    if n < MIN_FRAME:
        raise ValueError(f"is {n} bytes, smaller than one frame; use >= {MIN_FRAME}")
    return n


def bandwidth_finish(p: dict[str, Any]) -> dict[str, Any]:
    """rate -> bits; the default burst: 10 ms worth of the rate covers any timer granularity
    (HZ >= 100)."""
    bits = p.pop("rate")
    p.setdefault("direction", "out")
    return {**p, "bits": bits, "burst": p.get("burst") or max(MIN_BURST, bits // 800)}


def bandwidth_needs(params: Mapping[str, Any]) -> set[str]:
    qdisc = params.get("qdisc", "auto")
    needs = {qdisc} if qdisc in ("tbf", "htb") else {"shaping"}
    if params.get("direction", "out") in ("in", "both"):
        needs.add("ifb")
    return needs


def ifb_for(dev: str) -> str:
    return IFB_PREFIX + dev.removeprefix("eth")


def ingress_add_lines(dev: str) -> list[str]:
    """Redirect everything `dev` receives through our ifb device (where it is shaped as
    egress: the kernel shapes only what leaves a device)."""
    ifb = ifb_for(dev)
    return [
        run_line(["ip", "link", "add", ifb, "type", "ifb"]),
        run_line(["ip", "link", "set", ifb, "up"]),
        run_line(["tc", "qdisc", "add", "dev", dev, "handle", "ffff:", "ingress"]),
        run_line(["tc", "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all", "u32",
                  "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev",
                  ifb]),
    ]  # fmt: skip


def ingress_del_lines() -> list[str]:
    """Remove every ingress redirect of ours: our ifb devices and their eth's ingress qdisc."""
    return [
        "for dev in $(ls /sys/class/net); do case $dev in "
        f"{IFB_PREFIX}*) n=${{dev#{IFB_PREFIX}}}; "
        'tc qdisc del dev "eth$n" ingress >/dev/null 2>&1; run ip link del "$dev";; esac; done'
    ]


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


def reorder_cmd(dev: str, ms: float, percent: float) -> list[str]:
    """netem sends `percent` of the packets at once and holds the rest `ms`: reordered."""
    return ["tc", "qdisc", "add", "dev", dev, "root", "handle", QDISC_HANDLE,
            "netem", "delay", f"{ms:g}ms", "reorder", f"{percent:g}%"]  # fmt: skip


def shape_add_lines(verb: str, p: Mapping[str, Any], devices: Sequence[str]) -> list[str]:
    lines = [
        f"! ours {dev} || {{ echo {shlex.quote(f'{dev} already has a mole qdisc (bandwidth or latency); unshape it first')}; exit {REFUSED}; }}"  # noqa: E501
        for dev in devices
    ]
    direction = p.get("direction", "out")
    shaped: list[str] = []
    for dev in devices:
        if verb == "bandwidth" and direction in ("in", "both"):
            ifb = ifb_for(dev)
            lines.insert(
                0,
                f"! has ip link show {ifb} || {{ echo {shlex.quote(f'{dev} already has a mole ingress cap; unshape it first')}; exit {REFUSED}; }}",  # noqa: E501
            )
            lines.extend(ingress_add_lines(dev))
            shaped.append(ifb)
        if (verb == "bandwidth" and direction in ("out", "both")) or verb != "bandwidth":
            shaped.append(dev)
    for dev in shaped:
        if verb == "reorder":
            lines.append(run_line(reorder_cmd(dev, p["ms"], p["percent"])))
        elif verb == "latency":
            lines.append(run_line(netem_cmd(dev, p["ms"], p["jitter"])))
        elif p["qdisc"] == "tbf":
            lines.append(run_line(tbf_cmd(dev, p["bits"], p["burst"])))
        elif p["qdisc"] == "htb":
            lines.extend(run_line(c) for c in htb_cmds(dev, p["bits"], p["burst"]))
        else:  # auto: tbf, or htb where the kernel lacks sch_tbf
            htb = "; ".join(run_line(c) for c in htb_cmds(dev, p["bits"], p["burst"]))
            lines.append(f"has {shlex.join(tbf_cmd(dev, p['bits'], p['burst']))} || {{ {htb}; }}")
    return lines


def shape_del_lines(devices: Sequence[str] | None = None) -> list[str]:
    """Delete our root qdiscs (of these devices, or of every eth*); others are left alone."""
    if devices is None:
        return [
            "for dev in $(ls /sys/class/net); do case $dev in eth*) "
            '! ours "$dev" || run tc qdisc del dev "$dev" root;; esac; done',
            *ingress_del_lines(),
        ]
    return [
        *(
            f"! ours {dev} || {run_line(['tc', 'qdisc', 'del', 'dev', dev, 'root'])}"
            for dev in devices
        ),
        *ingress_del_lines(),
    ]


def shape(verb: str) -> Apply:
    """The apply function of bandwidth or latency."""

    def apply(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> Revert:
        return _shape(cluster, verb, p, targets.nodes)

    return apply


def unshape(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> None:
    undo_kind(cluster, "unshape", {"bandwidth", "latency", "reorder"}, targets.nodes, _shape_sweep)


def _shape(cluster: ClusterLike, verb: str, p: dict[str, Any], nodes: list[str]) -> Revert:
    devices: dict[str, tuple[str, ...]] = {}

    def add(n: str) -> None:
        info = net_info(cluster, n, verb)
        try:
            exec_script(cluster, n, verb, shape_add_lines(verb, p, info.devices))
        except FaultError as e:
            if e.exit_code != REFUSED:  # a refusal changed nothing; the active qdisc stays
                best_effort(
                    lambda: exec_script(cluster, n, "unshape", shape_del_lines(info.devices))
                )
            raise
        devices[n] = info.devices

    def undo(n: str) -> None:
        exec_if_up(cluster, n, "unshape", shape_del_lines(devices.get(n)))

    if verb == "reorder":
        what = f"reorder {p['percent']:g}% (others held {p['ms']:g}ms)"
    elif verb == "latency":
        what = f"latency {p['ms']:g}ms" + (f" ±{p['jitter']:g}ms" if p["jitter"] else "")
    else:
        way = {"out": "egress", "in": "ingress", "both": "egress+ingress"}[p["direction"]]
        what = f"bandwidth {_fmt_rate(p['bits'])} {way} ({p['qdisc']})"
    return apply_each(cluster, verb, "unshape", nodes, add, undo, f"{what} on {', '.join(nodes)}")


def _fmt_rate(bits: int) -> str:
    for unit, k in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= k and bits % k == 0:
            return f"{bits // k}{unit}"
    return f"{bits}bit"


def _shape_sweep(cluster: ClusterLike, node: str) -> None:
    exec_if_up(cluster, node, "unshape", shape_del_lines(None))
