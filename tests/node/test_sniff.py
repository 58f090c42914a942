"""The first moments of an inbound connection at a TLS node (node/gate.py `Sniff`, `Refuse`),
with real node processes: what a client without TLS, a silent socket and a TLS client at a full
node are told, and that the dialing side understands it (tlsproto.NotTls)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from tests.junkflood import error_codes, stalled_pull
from tests.node.test_hostile import recv_until_closed
from tests.nodeproc import nodes, wait_mesh


def test_a_silent_client_is_told_tls_required_long_before_the_handshake_timeout(
    tmp_path: Path,
) -> None:
    """A protocol-2 client without TLS waits for the challenge and sends nothing. Before, the
    TLS node waited for a ClientHello until --handshake-timeout (then `timeout`), so both
    sides waited; now silence gets `tls_required` after 1 s (gate.SNIFF_SILENCE)."""
    with nodes(tmp_path, ["b"], "--handshake-timeout", "60") as (b,):
        with socket.create_connection(("127.0.0.1", b.tcp_port), timeout=30) as s:
            reply = recv_until_closed(s)  # the node closes it, or this raises after 30 s
        assert error_codes(reply) == ["tls_required"], reply
        ev = b.wait_event(lambda e: e["event"] == "connection_dropped", what="drop line")
        assert ev["code"] == "tls_required" and "speaks first" in ev["reason"], ev


def test_a_full_node_refuses_a_tls_client_with_a_busy_it_can_read(tmp_path: Path) -> None:
    """Nothing to evict (every connection streams): `Refuse` answers `busy` in plaintext, before
    any TLS (a TLS answer would need the handshake the limit is there to refuse). The dialing
    node reads the plaintext answer to its ClientHello (tlsproto.NotTls) as `busy` and
    retries. Before: it failed with "connection lost: [SSL: WRONG_VERSION_NUMBER]"."""
    with nodes(tmp_path, ["a", "b"], "--max-connections", "2") as (a, b):
        wait_mesh([a, b])
        (b.share / "big.bin").write_bytes(random.Random(5).randbytes(16 << 20))
        (a.share / "f.txt").write_bytes(b"knock knock")
        b.wait_api("/api/files", lambda fs: len(fs) == 1, timeout=30, what="big.bin hashed")
        a.wait_api("/api/files", lambda fs: len(fs) == 1, timeout=30, what="f.txt hashed")
        readers = [stalled_pull(b.tcp_port, f"reader{i}", "big.bin", f"t{i}") for i in range(2)]
        try:
            b.wait_api("/api/node", lambda n: n["stats"]["connections"] == 2, what="2 streams")
            t = a.api("POST", "/api/push", {"peer": "b", "path": "f.txt"})
            retry = a.wait_event(
                lambda e: e["event"] == "transfer_retry" and e["id"] == t["id"], what="a retry"
            )
            assert retry["code"] == "busy" and "connection limit" in retry["reason"], retry
            a.api("POST", f"/api/transfers/{t['id']}/cancel")
        finally:
            for s in readers:
                s.close()
