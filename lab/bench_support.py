"""What bench/lab_scale.py measures besides a scenario run: Docker's own cost for the same
containers (bare_lifecycle) and the memory the node containers use (containers_memory).

Built on lab.cluster's small primitives (create_container, remove_containers,
running_containers, memory_stats): the baseline makes exactly the lab's create call, and this
module never talks to the engine itself.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab import cluster
from lab.host import owner_id
from lab.nodes import READY_PER_NODE, READY_TIMEOUT
from lab.nodespec import LabError, NodeSpec
from lab.waits import wait_until

LISTENING = '"event":"listening"'  # the node's JSON line once its sockets listen


def bare_lifecycle(
    n: int,
    image: str,
    *,
    workdir: Path,
    command: list[str] | None = None,
    workers: int = cluster.WORKERS,
    ready: str | None = LISTENING,
) -> dict[str, float]:
    """Docker's own cost for what a lab run of n nodes asks of it, without the lab around it.

    One labelled bridge network, then n containers created and started (create+start
    pipelined per container on `workers` threads) exactly as Cluster creates nodes: same
    image, same `serve` command line (or `command`), bind-mounted data dir, NET_ADMIN, alias;
    then, unless `ready` is None, until every container's output holds `ready` (the node's
    `listening` line: the same process up that the lab waits for, read the cheapest way, from
    the engine's log file); then all force-removed in parallel and the network removed.
    Returns seconds: network, create_start, ready, remove, total. Everything carries the lab's
    labels (run id `bare-<hex>`), so a sweep removes the leftovers of a killed benchmark; a
    failure removes what was made and re-raises.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    c = cluster.Cluster(f"bare-{secrets.token_hex(4)}", image=image, workdir=workdir)
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
            return c.create_container(spec, start=True).container_id

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mole-bare") as pool:
            cids = list(pool.map(create_start, specs))
        t2 = time.monotonic()
        times["create_start"] = t2 - t1
        if ready is not None:
            _wait_output(c, [s.name for s in specs], ready)
        times["ready"] = time.monotonic() - t2
    except BaseException:
        c.close()
        raise
    t3 = time.monotonic()
    removed = cluster.remove_containers(cids, workers=workers)
    times["remove"] = time.monotonic() - t3
    c.close()  # the network (and anything a failed removal left)
    times["total"] = time.monotonic() - t0
    if removed != n:
        raise LabError(f"removed {removed} of {n} containers", operation="bare lifecycle")
    return times


def _wait_output(c: cluster.Cluster, names: list[str], marker: str) -> None:
    """Until every container's output holds `marker`; the deadline grows with their number
    as the lab's readiness deadline does (lab.nodes)."""
    pending = set(names)

    def all_there() -> bool:
        pending.difference_update([n for n in pending if marker in c.logs(n)])
        return not pending

    def diagnose() -> str:
        waiting = sorted(pending)
        tails = [f"--- {n}: {c.logs(n)[-300:]!r}" for n in waiting[:3]]
        return f"still waiting for {len(waiting)}: {', '.join(waiting[:10])}\n" + "\n".join(tails)

    wait_until(
        all_there,
        timeout=max(READY_TIMEOUT, READY_PER_NODE * len(names)),
        what=f"{len(names)} bare containers to print {marker}",
        diagnose=diagnose,
        interval=0.05,
    )


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
        stats = cluster.memory_stats(cid)
        if stats is None:
            return None
        cache = stats.get("stats", {})
        inactive = cache.get("total_inactive_file", cache.get("inactive_file", 0))
        return max(0, int(stats["usage"]) - int(inactive))
    except (OSError, ValueError, KeyError):
        return None  # removed meanwhile


def containers_memory(owner: str | None = None) -> dict[str, int]:
    """container_memory() of every running lab container of `owner`, by container name."""
    out: dict[str, int] = {}
    for name, cid in cluster.running_containers(owner or owner_id()).items():
        mem = container_memory(cid)
        if mem is not None:
            out[name] = mem
    return out
