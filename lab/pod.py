"""Dense mode's container init: several mole nodes in one container, each in its own network
namespace with its own address on the container's Docker bridge (a macvlan of eth0).

Shipped in the node image as /opt/mole-lab/pod.py; run as the container's PID 1 by lab.dense:

    python3 pod.py /data/pod.json

pod.json: {"nodes": [{"name", "ip", "prefix", "gateway", "argv", "user"}]}. For node i it
makes namespace `n<i>`, a macvlan `mv<i>` of eth0 in bridge mode moved into it and renamed
eth0 there (so broadcasts on the bridge reach every namespace, as they reach every container),
the address, loopback and
the default route, then runs `ip netns exec n<i> python3 -m node <argv>` with its output in
/data/<name>/node.log. This is what Mininet and Containernet do to start hundreds of hosts in
seconds: network namespaces, not one container (one engine round trip of ~0.3 s) per host.
SIGTERM is passed to every node; the container ends when they have all ended. Standard library
only; this file must not import anything of the lab.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def setup(i: int, n: dict[str, Any]) -> None:
    ns, dev = f"n{i}", f"mv{i}"
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", dev, "link", "eth0", "type", "macvlan", "mode", "bridge")
    sh("ip", "link", "set", dev, "netns", ns)
    # eth0 inside, as in a container of its own: the faults (iptables -i eth+, tc on eth*)
    # and the node's interface scan see what they see everywhere else.
    sh("ip", "-n", ns, "link", "set", dev, "name", "eth0")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "addr", "add", f"{n['ip']}/{n['prefix']}", "brd", "+", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "route", "add", "default", "via", n["gateway"])


def spawn(i: int, n: dict[str, Any]) -> subprocess.Popen[bytes]:
    cmd = ["ip", "netns", "exec", f"n{i}"]
    if n.get("user"):  # the host user, so the bind-mounted data stays theirs
        uid, gid = n["user"].split(":")
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    cmd += ["python3", "-m", "node", *n["argv"]]
    log = open(f"/data/{n['name']}/node.log", "ab", buffering=0)  # noqa: SIM115 (the child's)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=f"/data/{n['name']}")


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        nodes: list[dict[str, Any]] = json.load(f)["nodes"]
    for i, n in enumerate(nodes):
        setup(i, n)
    procs = [spawn(i, n) for i, n in enumerate(nodes)]

    def stop(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while any(p.poll() is None for p in procs):
        time.sleep(0.5)  # PID 1's only job now: reap, and pass signals on (handled above)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
