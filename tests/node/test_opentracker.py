"""Interop: our UDP (BEP 15) and HTTP (BEP 3/23) tracker clients against a real opentracker.

Debian's opentracker runs in whitelist mode, so the test writes a whitelist holding its info-hash.
Sockets live here, in the test only: the clients themselves are sans-I/O. Skipped (with the reason)
where the binary is absent: `apt-get install opentracker` provides it.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.rendezvous import rendezvous_infohash
from node.tracker import (
    AnnounceEvent,
    AnnounceRequest,
    TrackerEvent,
    TrackerFailed,
    TrackerPeers,
    random_peer_id,
)
from node.tracker_http import HttpTrackerClient
from node.tracker_udp import UdpTrackerClient

OPENTRACKER = shutil.which("opentracker")
pytestmark = pytest.mark.skipif(
    OPENTRACKER is None, reason="opentracker is not installed (apt-get install opentracker)"
)

H = rendezvous_infohash(bytes(range(32)), 19783)  # a mole rendezvous hash
OTHER = bytes(range(20))  # not on the whitelist


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (opentracker serves both on it)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP")


def http_announce(url: str, req: AnnounceRequest, timeout: float = 5.0) -> TrackerEvent:
    client = HttpTrackerClient(url, req, time.monotonic(), timeout=timeout)
    with socket.create_connection((client.host, client.port), timeout=timeout) as sock:
        sock.sendall(client.request_bytes())
        while not client.done:
            timer = client.get_timer()
            assert timer is not None
            ready, _, _ = select.select([sock], [], [], max(0.0, timer - time.monotonic()))
            if ready:
                client.receive_data(sock.recv(65536), time.monotonic())
            else:
                client.handle_timer(time.monotonic())
    [event] = client.events()
    return event


def udp_announce(tracker: tuple[str, int], req: AnnounceRequest) -> TrackerEvent:
    client = UdpTrackerClient(tracker, base_timeout=0.25, max_retries=4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        client.announce(req, time.monotonic())
        while True:
            for data, addr in client.datagrams_to_send():
                sock.sendto(data, addr)
            events = client.events()
            if events:
                [event] = events
                return event
            timer = client.get_timer()
            assert timer is not None
            ready, _, _ = select.select([sock], [], [], max(0.0, timer - time.monotonic()))
            if ready:
                data, addr = sock.recvfrom(2048)
                client.receive_datagram(data, addr, time.monotonic())
            else:
                client.handle_timer(time.monotonic())


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[int]:
    assert OPENTRACKER is not None
    root = tmp_path / "opentracker"
    root.mkdir()
    root.chmod(0o755)  # as root it chroots here and drops to "nobody", who must read the list
    (root / "whitelist").write_text(H.hex() + "\n")
    (root / "whitelist").chmod(0o644)
    # Run as root, opentracker chroots into -d first, so the list's path is then /whitelist.
    listed = "/whitelist" if os.geteuid() == 0 else str(root / "whitelist")
    port = free_port()
    args = [OPENTRACKER, "-i", "127.0.0.1", "-p", str(port), "-P", str(port)]
    proc = subprocess.Popen(
        [*args, "-d", str(root), "-w", listed],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Ready when an announce for the listed hash succeeds: the whitelist is read by a
        # thread of its own, after the ports are open. A "stopped" announce stores nothing.
        probe = AnnounceRequest(H, random_peer_id(), 1, event=AnnounceEvent.STOPPED)
        deadline = time.monotonic() + 10.0
        while True:
            assert proc.poll() is None, f"opentracker exited: {proc.communicate()[0]}"
            try:
                if isinstance(http_announce(f"http://127.0.0.1:{port}/announce", probe, 1.0),
                              TrackerPeers):  # fmt: skip
                    break
            except OSError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "opentracker did not become ready"
            select.select([], [], [], 0.02)  # pace the probes
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def test_udp_and_http_peers_see_each_other(tracker: int) -> None:
    url = f"http://127.0.0.1:{tracker}/announce"
    udp = ("127.0.0.1", tracker)
    a = AnnounceRequest(H, random_peer_id(), 7001, event=AnnounceEvent.STARTED, key=1)
    b = AnnounceRequest(H, random_peer_id(), 7002, event=AnnounceEvent.STARTED, key=2)

    first = udp_announce(udp, a)  # A over UDP: alone in the swarm
    assert isinstance(first, TrackerPeers) and first.interval > 0
    assert set(first.peers) <= {("127.0.0.1", 7001)}

    seen_by_b = http_announce(url, b)  # B over HTTP sees A
    assert isinstance(seen_by_b, TrackerPeers)
    assert ("127.0.0.1", 7001) in seen_by_b.peers
    assert seen_by_b.min_interval is not None and seen_by_b.seeders == 2

    again = AnnounceRequest(H, a.peer_id, 7001, key=1)
    seen_by_a = udp_announce(udp, again)  # A over UDP sees B
    assert isinstance(seen_by_a, TrackerPeers)
    assert ("127.0.0.1", 7002) in seen_by_a.peers

    # B leaves (HTTP "stopped"); A no longer gets it
    gone = http_announce(url, AnnounceRequest(H, b.peer_id, 7002, event=AnnounceEvent.STOPPED))
    assert isinstance(gone, TrackerPeers)
    after = udp_announce(udp, again)
    assert isinstance(after, TrackerPeers) and ("127.0.0.1", 7002) not in after.peers


def test_unlisted_hash_is_refused_over_both(tracker: int) -> None:
    req = AnnounceRequest(OTHER, random_peer_id(), 7003, event=AnnounceEvent.STARTED)
    over_http = http_announce(f"http://127.0.0.1:{tracker}/announce", req)
    assert isinstance(over_http, TrackerFailed) and over_http.kind == "tracker"
    assert "not authorized" in over_http.reason
    # Over UDP opentracker answers with the 8-byte announce header alone (no interval, no
    # peers): not a valid BEP 15 answer, and the client says so at once instead of retrying.
    over_udp = udp_announce(("127.0.0.1", tracker), req)
    assert isinstance(over_udp, TrackerFailed) and over_udp.kind == "protocol"
    assert "8 bytes" in over_udp.reason
