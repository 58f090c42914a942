"""Hostile peers in scenarios: a node with `hostile:` runs the lab's attacker, not a mole node.

```yaml
nodes:
  - name: evil
    hostile: {behaviour: liar, target: b, file: payload.bin, rate: 2, duration: 20}
```

The attacker (lab/attacker.py, shipped in the node image) attacks only its `target`, which
must share a network with it, within caps it enforces itself. A hostile node is like a router
for the rest of the lab: it runs no node, so steps, file placement, discovery and inbox
expectations cannot name it; only `allow_failures`/`failures` may (as the peer of a failure:
`{node: evil, code: hash_mismatch}`). Its output lines (`attack`, `attack_done`) are kept in the
artifacts and drawn in the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lab.checks import Checks, join
from lab.nodespec import GROUP_SECRET_FILE, LAB_GROUP
from lab.scenario import NodeDecl, parse_size

BEHAVIOURS = (
    "liar", "slowloris", "junk", "flood", "impostor", "goodbye", "oversized", "sizeliar",
    "connflood", "trickle", "replay", "biglist",
)  # fmt: skip
KEYS = (
    "behaviour", "target", "file", "size", "rate", "conns", "duration", "delay", "impersonate",
    "insider",
)  # fmt: skip
ATTACKER = "/opt/mole-lab/attacker.py"
MAX_RATE = 5000.0  # the attacker's own caps, checked here too so a scenario fails at load time
MAX_CONNS = 512
MAX_DURATION = 600.0
MAX_SIZE = 64 << 20


def parse(c: Checks, v: object, p: str) -> tuple[tuple[str, str], ...]:
    """A node's `hostile:` mapping, checked, as (key, value) pairs in KEYS order."""
    m: Mapping[str, Any] = c.mapping(v, p, KEYS, required=("behaviour", "target"))
    out: dict[str, str] = {}
    b = c.string(m["behaviour"], join(p, "behaviour"))
    if b not in BEHAVIOURS:
        raise c.fail(join(p, "behaviour"), f"unknown {b!r} (one of {', '.join(BEHAVIOURS)})")
    out["behaviour"] = b
    out["target"] = c.name(m["target"], join(p, "target"), "node name")
    if "file" in m:
        out["file"] = c.string(m["file"], join(p, "file"))
    if "size" in m:
        try:
            size = parse_size(m["size"])
        except ValueError as e:
            raise c.fail(join(p, "size"), str(e)) from None
        if not 1 <= size <= MAX_SIZE:
            raise c.fail(join(p, "size"), f"must be 1 B .. 64 MiB, not {size}")
        out["size"] = str(size)
    for key, hi in (("rate", MAX_RATE), ("duration", MAX_DURATION), ("delay", MAX_DURATION)):
        if key in m:
            x = c.number(m[key], join(p, key), positive=key == "rate")
            if x > hi:
                raise c.fail(join(p, key), f"must be at most {hi:g}, not {x:g}")
            out[key] = f"{x:g}"
    if "conns" in m:
        out["conns"] = str(c.integer(m["conns"], join(p, "conns"), 1, MAX_CONNS))
    if "impersonate" in m:
        out["impersonate"] = c.name(m["impersonate"], join(p, "impersonate"), "node name")
    elif b in ("impostor", "goodbye", "replay"):
        raise c.fail(join(p, "impersonate"), f"is required with behaviour {b!r}")
    # An insider holds the run's group secret and proves the group in its hello: a member
    # that lies is a real threat (nodes accept members' pushes); a stranger is refused first.
    if "insider" in m and c.boolean(m["insider"], join(p, "insider")):
        out["insider"] = "true"
    return tuple((k, out[k]) for k in KEYS if k in out)


def check_targets(c: Checks, nodes: tuple[NodeDecl, ...]) -> None:
    """A hostile node's target (and whom it impersonates) is an honest node on its LAN."""
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        if not n.hostile:
            continue
        h = dict(n.hostile)
        for key in ("target", "impersonate"):
            if key not in h:
                continue
            q = join(join(n.path, "hostile"), key)
            other = by_name.get(h[key])
            if other is None:
                raise c.fail(q, f"unknown node {h[key]!r}")
            if not other.runs_node:
                raise c.fail(q, f"{h[key]!r} runs no node (a router or another hostile node)")
            if not set(other.networks) & set(n.networks):
                raise c.fail(q, f"{h[key]!r} shares no network with {n.name!r}")


def node_id(name: str) -> str:
    """The verified node id of a hostile node's attacker (its key is derived from its name,
    lab/attacker.py), so the lab can name it as the peer of the failures it causes."""
    from lab.attacker import identity

    return identity(name).node_id


def command(n: NodeDecl) -> list[str]:
    """The attacker's command line for a hostile node."""
    argv = [ATTACKER, "--name", n.name]
    for k, v in n.hostile:
        if k == "insider":  # the secret file every container of the run has (lab/cluster.py)
            argv += ["--group", f"{LAB_GROUP}:@/data/{GROUP_SECRET_FILE}"]
        else:
            argv += [f"--{k}", v]
    return argv
