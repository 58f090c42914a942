"""Interop: mole's DhtNode and a real libtorrent DHT node on 127.0.0.1 accept each other.

libtorrent (Debian's python3-libtorrent, run by the system Python in a subprocess, see
tests/lt_dht_node.py) must answer mole's padded queries, take mole into its routing table,
accept mole's announce_peer with the token it issued, and use the token and the trimmed
answers mole gives its own (unpadded) get_peers. Skipped where python3-libtorrent is missing.
"""

from __future__ import annotations

import json
import queue
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.dht import DhtConfig, DhtNode, PeersFound, SearchDone
from node.rendezvous import rendezvous_infohash

SYSTEM_PYTHON = "/usr/bin/python3"
HELPER = Path(__file__).resolve().parents[1] / "lt_dht_node.py"


def _has_libtorrent() -> bool:
    try:
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import libtorrent"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


pytestmark = pytest.mark.skipif(
    not _has_libtorrent(),
    reason="python3-libtorrent is not installed for /usr/bin/python3 (apt-get install "
    "python3-libtorrent)",
)

H = rendezvous_infohash(bytes(range(32)), 19783)
LOCAL = "127.0.0.1"


class Harness:
    """mole on a real UDP socket, driven here; libtorrent in a subprocess, heard via a queue."""

    def __init__(self, tmp: Path) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCAL, 0))
        mole_port = self.sock.getsockname()[1]
        self.lt_port = 0  # libtorrent's, from its `ready` line (it binds port 0 itself)
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(HELPER), str(mole_port), str(tmp)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.heard: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.mole_events: list[object] = []
        self.node: DhtNode | None = None
        self._asked = 0.0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def start_mole(self) -> DhtNode:
        cfg = DhtConfig(query_timeout=1.0, search_interval=2.0, max_per_ip=8)
        self.node = DhtNode(time.monotonic(), config=cfg, bootstrap=[(LOCAL, self.lt_port)])
        return self.node

    def command(self, **cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def run_until(self, cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Drive mole's socket and timers until `cond()` holds (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        while not cond():
            now = time.monotonic()
            if now >= deadline:
                node = self.node
                raise AssertionError(
                    f"{what}: not reached in {timeout:g} s; mole's table "
                    f"{len(node.routing) if node else '-'} nodes, counters "
                    f"{dict(node.counters) if node else '-'}, heard from libtorrent "
                    f"{self.heard[-5:]}"
                )
            assert self.proc.poll() is None, "libtorrent helper exited"
            while not self.lines.empty():
                self.heard.append(self.lines.get())
            wait = 0.02
            if self.node is not None:
                for data, addr in self.node.datagrams_to_send():
                    self.sock.sendto(data, addr)
                self.mole_events += self.node.events()
                timer = self.node.get_timer()
                if timer is not None:
                    wait = min(wait, max(0.0, timer - now))
            readable, _, _ = select.select([self.sock], [], [], wait)
            if readable and self.node is not None:
                data, addr = self.sock.recvfrom(4096)
                self.node.receive_datagram(data, addr, time.monotonic())
            if self.node is not None:
                self.node.handle_timer(time.monotonic())

    def lt_nodes(self) -> int:
        """libtorrent's routing table size, asked for and answered asynchronously: the latest
        answer heard (0 before any), with a new question sent each time."""
        if time.monotonic() - self._asked > 0.2:
            self._asked = time.monotonic()
            self.command(op="state")
        sizes = [h["nodes"] for h in self.heard if h["event"] == "stats"]
        return sizes[-1] if sizes else 0

    def saw(self, event: str, **fields: object) -> bool:
        return any(
            h["event"] == event and all(h.get(k) == v for k, v in fields.items())
            for h in self.heard
        )

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(10)
        self.sock.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        h.run_until(lambda: h.saw("ready") or h.saw("failed"), "libtorrent ready")
        assert not h.saw("failed"), h.heard
        h.lt_port = next(int(x["port"]) for x in h.heard if x["event"] == "ready")
        yield h
    finally:
        h.close()


def test_mole_and_libtorrent_accept_each_other(harness: Harness) -> None:
    node = harness.start_mole()
    # mole's padded find_node answered: libtorrent is in mole's table
    harness.run_until(lambda: len(node.routing) >= 1, "libtorrent in mole's table")
    # libtorrent took mole into its table (it verified mole with its own queries)
    harness.run_until(lambda: harness.lt_nodes() >= 1, "mole in libtorrent's table")
    # mole announces: libtorrent accepts the announce_peer with its own token
    node.search(H, time.monotonic(), port=7001)
    harness.run_until(
        lambda: harness.saw("announce", ip=LOCAL, port=7001, hash=H.hex()),
        "libtorrent accepts mole's announce_peer",
    )
    done = [e for e in harness.mole_events if isinstance(e, SearchDone)]
    assert done and done[0].announced >= 1
    # libtorrent announces through mole: it used mole's (trimmed) get_peers answer and token
    harness.command(op="add_torrent", hash=H.hex())
    lt_peer = (LOCAL, harness.lt_port)
    harness.run_until(
        lambda: lt_peer in node.peer_store.get(H, time.monotonic()),
        "libtorrent's announce stored by mole",
    )
    # mole's next search run reads libtorrent's values answer: mole's own announce is in it
    harness.run_until(
        lambda: any(
            isinstance(e, PeersFound) and (LOCAL, 7001) in e.peers for e in harness.mole_events
        ),
        "mole's search finds its own announce at libtorrent",
    )
    # libtorrent's own lookup completes with that peer (mole answers it with values; libtorrent
    # may hold its own announce too, so this step proves less than the two above)
    harness.command(op="get_peers", hash=H.hex())
    harness.run_until(
        lambda: any(
            h["event"] == "peers" and [LOCAL, harness.lt_port] in h["peers"] for h in harness.heard
        ),
        "libtorrent's get_peers through mole",
    )
    assert "malformed" not in node.counters and "wrong_source" not in node.counters
