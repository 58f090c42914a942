"""A node started with default options imports neither its API, nor its transfer machinery,
nor the WAN parts until they are used (node/node.py LAZY_PARTS; issue 17: start fast, idle
small); each is built at its first use and then works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LAZY = (
    "node.api", "node.apiroutes", "node.trustapi", "node.pairconn", "node.service",
    "node.conn", "node.session", "node.messages", "node.handshake", "node.gate", "node.serve",
    "node.push", "node.pull", "node.batches", "node.batchio", "node.autofetch", "node.query",
    "node.wan", "node.wanio", "node.wantrackers", "node.statics", "node.dns", "node.dht",
    "node.tracker_http", "node.tracker_udp",
)  # fmt: skip

START = """
import io, json, sys
from pathlib import Path
from node.config import Config
from node.events import EventLog
from node.node import Node
from tests.nodeproc import free_udp_port
root = Path(sys.argv[1])
dirs = {d: root / d for d in ("share", "inbox", "state")}
cfg = Config(name="t", host="127.0.0.1", port=0, api_port=0, discovery_port=free_udp_port(),
             broadcast=("127.255.255.255",), **dirs)
n = Node(cfg, events=EventLog("t", stream=io.StringIO()))
n.start()
n.loop.run(until=lambda: n.lan.announcer.last_sent is not None, timeout=10)
assert n.lan.last_announce, "no announce sent"
lazy = sys.argv[2].split(",")
print(json.dumps({"idle": sorted(m for m in lazy if m in sys.modules),
                  "built": sorted(p for p in ("wan", "gate", "service") if n.built(p))}))
"""


def run(code: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_a_default_node_announces_without_api_transfer_or_wan_modules(tmp_path: Path) -> None:
    out = run(START, str(tmp_path), ",".join(LAZY))
    assert out == '{"idle": [], "built": []}', out


def test_each_lazy_part_is_built_at_first_use(tmp_path: Path) -> None:
    code = (
        START
        + """
import http.client, socket
# The API: its module comes with the first connection, and it answers.
c = http.client.HTTPConnection("127.0.0.1", n.api_port, timeout=10)
c.request("GET", "/api/node", headers={"Authorization": "Bearer " + n.guard._token.decode(),
                                      "Host": f"127.0.0.1:{n.api_port}"})
holder = {}
n.loop.run(until=lambda: "node.api" in sys.modules, timeout=10)
import threading
t = threading.Thread(target=lambda: holder.update(r=c.getresponse().read()))
t.start()
n.loop.run(until=lambda: not t.is_alive(), timeout=10)
t.join()
info = json.loads(holder["r"])
assert info["wan"]["static"] == [] and info["wan"]["dht"] is None, info
# Answering it built neither the gate nor the WAN part (the status of parts never built),
# nor loaded the connection machinery (pairings, a peer's file list: at their first use).
assert n.built("gate") is None, "gate"
assert not {"node.wan", "node.conn", "node.session"} & set(sys.modules), "wan or conn"
c.request("GET", "/api/pairings", headers={"Authorization": "Bearer " + n.guard._token.decode(),
                                          "Host": f"127.0.0.1:{n.api_port}"})
t = threading.Thread(target=lambda: holder.update(p=c.getresponse().read()))
t.start()
n.loop.run(until=lambda: not t.is_alive(), timeout=10)
t.join()
assert json.loads(holder["p"]) == [] and "node.conn" not in sys.modules, holder["p"]
assert info["stats"]["dropped"] == {} and info["stats"]["connections"] == 0, info
# An inbound transfer connection: the gate, built by the listener's first accept.
s = socket.create_connection(("127.0.0.1", n.tcp_port))
n.loop.run(until=lambda: n.built("gate") is not None and n.gate.handshaking, timeout=10)
s.close()
# The WAN part, built by a static peer added at run time, starts at once.
n.service.add_static_peer(f"127.0.0.1:{n.tcp_port}")
assert n.built("wan") is not None and n.wan.dns_udp is not None
print(json.dumps({"built": sorted(p for p in ("wan", "gate", "service")
                                                   if n.built(p))}))
"""
    )
    out = run(code, str(tmp_path), ",".join(LAZY))
    assert '"built": ["gate", "service", "wan"]' in out, out


def test_static_peers_kept_from_a_previous_run_build_the_wan_part_at_start(
    tmp_path: Path,
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "static_peers.json").write_text('["127.0.0.1:9"]')
    out = run(START, str(tmp_path), "node.wan")
    assert out == '{"idle": ["node.wan"], "built": ["wan"]}', out
