"""Helpers of the beyond-the-LAN tests and bench: a local opentracker whitelisting the
rendezvous hashes of some groups, and a one-name DNS server whose answer a test changes."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from node.dns import decode_answer, encode_answer
from node.groups import parse_group
from node.rendezvous import day_of, rendezvous_infohash
from node.tracker import AnnounceEvent, AnnounceRequest, TrackerPeers, random_peer_id
from node.wanio import group_key
from tests.node.test_opentracker import free_port, http_announce

OPENTRACKER = shutil.which("opentracker")


@contextlib.contextmanager
def opentracker(tmp: Path, groups: list[str]) -> Iterator[int]:
    """Debian's opentracker (whitelist mode) on 127.0.0.1, UDP and TCP on the port it yields;
    the whitelist holds the hashes of yesterday, today and tomorrow of the `groups`, given as
    NAME:SECRET (as the nodes' --group)."""
    assert OPENTRACKER is not None, "opentracker is not installed (apt-get install opentracker)"
    root = tmp / "opentracker"
    root.mkdir()
    root.chmod(0o755)  # as root it chroots here and drops to "nobody", who must read the list
    today = day_of(time.time())
    keys = [group_key(g.partition(":")[0], parse_group(g).rendezvous_key()) for g in groups]
    hashes = [rendezvous_infohash(k, d) for k in keys
              for d in (today, today - 1, today + 1)]  # fmt: skip
    (root / "whitelist").write_text("".join(h.hex() + "\n" for h in hashes))
    (root / "whitelist").chmod(0o644)
    listed = "/whitelist" if os.geteuid() == 0 else str(root / "whitelist")
    port = free_port()
    proc = subprocess.Popen(
        [OPENTRACKER, "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-d", str(root),
         "-w", listed],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # Ready when an announce for a listed hash succeeds ("stopped": stores nothing).
        probe = AnnounceRequest(hashes[0], random_peer_id(), 1, event=AnnounceEvent.STOPPED)
        deadline = time.monotonic() + 10.0
        while True:
            assert proc.poll() is None, f"opentracker exited: {proc.communicate()[0]}"
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/announce"
                if isinstance(http_announce(url, probe, 1.0), TrackerPeers):
                    break
            assert time.monotonic() < deadline, "opentracker did not become ready"
            select.select([], [], [], 0.02)  # pace the probes
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


class FakeResolver:
    """A one-name DNS server on loopback whose answer the test changes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.addr = "127.0.0.1"
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            data, src = self.sock.recvfrom(512)
            qid = struct.unpack(">H", data[:2])[0]
            q = decode_answer(data[:2] + b"\x81\x80" + data[4:])
            self.queries += 1
            addrs = [self.addr] if q.name == self.name and q.qtype == 1 else []
            self.sock.sendto(encode_answer(qid, q.name, q.qtype, addrs), src)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()
