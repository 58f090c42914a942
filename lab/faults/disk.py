"""Disk full: fill / unfill a tmpfs in the container with one ballast file (never the host's
disk: every other filesystem of a node container is the host's). See docs/faults.md."""

from __future__ import annotations

import shlex
from typing import Any

from lab.faults.base import (
    REFUSED,
    ClusterLike,
    Revert,
    Targets,
    apply_each,
    exec_if_up,
    exec_script,
    undo_kind,
)
from lab.params import Where

FILL_FILE = ".mole-fill"  # the ballast `fill` writes; a dot file, so nodes never list it


def container_dir(value: object, where: Where, path: str) -> str:
    """An absolute directory in the container, without `..` -> without its trailing '/'."""
    if not isinstance(value, str) or not value.startswith("/") or ".." in value.split("/"):
        raise where.fail(path, f"must be an absolute directory in the container, not {value!r}")
    return value.rstrip("/") or "/"


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


def fill(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> Revert:
    nodes = targets.nodes
    path, leave = p["path"], p["leave"]

    def add(n: str) -> None:
        exec_script(cluster, n, "fill", fill_add_lines(path, leave))

    def undo(n: str) -> None:
        _unfill_on(cluster, n, path)

    desc = f"disk full at {path} (leaving {leave} bytes) on {', '.join(nodes)}"
    return apply_each(cluster, "fill", "unfill", nodes, add, undo, desc)


def unfill(cluster: ClusterLike, p: dict[str, Any], targets: Targets) -> None:
    path = p["path"]
    undo_kind(cluster, "unfill", {"fill"}, targets.nodes, lambda c, n: _unfill_on(c, n, path))


def _unfill_on(cluster: ClusterLike, node: str, path: str) -> None:
    exec_if_up(cluster, node, "unfill", fill_del_lines(path))
