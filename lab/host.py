"""What this host says about itself, read from /proc: who owns a lab resource, which subnets
are taken. No Docker here (lab.cluster asks the engine and combines the two).

A lab resource carries its creating process as `<hostname>:<pid>:<start-time>`: the start
time tells a live owner from a reused pid, so a sweep never removes a live run's resources.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path


def start_time(pid: int) -> str | None:
    """Process start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields restart after ")".
    return stat.rsplit(")", 1)[1].split()[19]


def owner_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{start_time(pid) or '?'}"


def owner_alive(owner: str) -> bool:
    """False only when the owner is certainly dead: same host, and its pid is gone or reused."""
    try:
        host, pid_s, start = owner.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return False  # unparseable: not something a live lab process wrote
    if host != socket.gethostname():
        return True  # another machine's (or container's) run: we cannot tell, leave it
    return start_time(pid) == start


def route_nets() -> list[ipaddress.IPv4Network]:
    """The networks of this host's routing table (a lab network must not overlap them)."""
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


def free_subnets(
    pools: Sequence[str], used: Iterable[ipaddress.IPv4Network]
) -> list[ipaddress.IPv4Network]:
    """Free /24s of the first pool that has any, shuffled so parallel runs rarely collide."""
    taken = list(used)
    for pool in pools:
        free = [
            s
            for s in ipaddress.IPv4Network(pool).subnets(new_prefix=24)
            if not any(s.overlaps(u) for u in taken)
        ]
        if free:
            random.shuffle(free)
            return free
    return []
