"""The transport attacks of issue #10, with real node processes on loopback.

Each test names the protocol-1 behaviour it catches: on the old node (plaintext, a node id
that was whatever a hello claimed) every one of them failed. The attackers are in
tests/trustattack.py; none needs discovery (announces are the group layer's to secure): an
impostor takes over the address of a node that went away, exactly as the issue's LAN
attacker did by announcing that node's id from its own address.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

from tests import tlspeer
from tests.junkflood import frame, offer
from tests.node.test_hostile import read_frames
from tests.node.test_integration import write_random
from tests.nodeproc import REPO, NodeProc, free_udp_port, nodes, wait_mesh
from tests.trustattack import Impostor, TamperProxy

QUIET = ("--announce-interval", "30")  # a killed node stays in the peer table meanwhile


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_impostor_at_a_peers_address_never_receives_a_send(tmp_path: Path) -> None:
    """`mole send b` while another key answers for b's id at b's address.

    Old node: the impostor's hello claimed b's id and received the file; the user saw "done".
    Now the client compares the TLS certificate with b's id and sends nothing; the CLI fails
    and says why."""
    with nodes(tmp_path, ["a", "b"], *QUIET) as (a, b):
        wait_mesh([a, b])
        b_id, b_port = b.node_id, b.tcp_port
        b.stop(kill=True)  # no goodbye: a still lists b at its address
        imp = Impostor(b_id, port=b_port)
        try:
            write_random(a.share / "invoice.pdf", 100_000)
            env = {**os.environ, "MOLE_API_TOKEN": a.file_token(), "PYTHONPATH": str(REPO)}
            cmd = [sys.executable, "-m", "node", "--api", a.api_url, "--timeout", "4"]
            run = subprocess.run(
                [*cmd, "send", "b", str(a.share / "invoice.pdf")],
                capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
            )  # fmt: skip
            assert run.returncode != 0, run
            assert "certificate does not match the node id" in run.stderr, run
            assert imp.connections >= 1  # it was dialed ...
            assert (
                imp.hellos == [] and imp.offers == [] and imp.received == 0
            )  # ... and told nothing
        finally:
            imp.close()


def test_a_pull_from_an_impostor_stores_nothing(tmp_path: Path) -> None:
    """`mole get b install.sh` while an impostor holds b's address.

    Old node: the impostor served its own install.sh, stored as if from b. Now the client
    stops at the certificate: no get is sent, nothing is stored."""
    with nodes(tmp_path, ["a", "b"], *QUIET) as (a, b):
        wait_mesh([a, b])
        b_id, b_port = b.node_id, b.tcp_port
        b.stop(kill=True)
        imp = Impostor(b_id, port=b_port)
        try:
            t = a.api("POST", "/api/pull", {"peer": "b", "name": "install.sh"})
            retry = a.wait_event(
                lambda e: e["event"] == "transfer_retry" and e["id"] == t["id"],
                what="the failed attempt",
            )
            assert "certificate does not match" in retry["reason"], retry
            a.api("POST", f"/api/transfers/{t['id']}/cancel")
            assert imp.gets == [] and imp.hellos == []
            assert list(a.inbox.rglob("install.sh*")) == []
        finally:
            imp.close()


def _spoofed_hello(claimed: str, cert_der: bytes) -> bytes:
    """A hello claiming `claimed` with `cert_der` and a signature its sender cannot make."""
    return frame(
        {
            "type": "hello", "proto": 2, "node": claimed, "name": "a", "port": 0,
            "groups": [], "features": ["resume", "digest"],
            "cert": base64.b64encode(cert_der).decode(), "nonce": "11" * 32, "sig": "22" * 64,
        }
    )  # fmt: skip


def test_a_spoofed_sender_cannot_take_over_a_push_in_progress(tmp_path: Path) -> None:
    """While a pushes big.bin to b (slowly), an attacker claims to be a and offers big.bin.

    Old node: the hello's claim was the sender's id, so the attacker's offer took over a's
    part (the resume key is sender id + name) and its bytes were stored under a's name. Now
    a's id is what a's key proves: with a's certificate but no key, or its own certificate
    under a's id, the hello is `auth_failed`; a's push completes with a's bytes."""
    with nodes(tmp_path, ["a", "b"], "--max-rate", "400KiB") as (a, b):
        wait_mesh([a, b])
        digest = write_random(a.share / "big.bin", 2 << 20)
        t = a.api("POST", "/api/push", {"peer": "b", "path": "big.bin"})
        b.wait_api(
            "/api/transfers",
            lambda ts: any(x["name"] == "big.bin" and x["bytes"] > 0 for x in ts),
            what="the push under way",
        )
        a_cert = tlspeer.x509.pem_decode((a.state / "identity.crt").read_bytes(), "CERTIFICATE")
        own_cert = tlspeer.ident("attacker").cert_der
        for cert in (a_cert, own_cert):
            with tlspeer.connect(("127.0.0.1", b.tcp_port)) as s:
                s._greeted = True  # send this hello as it is
                s.sendall(
                    _spoofed_hello(a.node_id, cert) + offer("x", "big.bin", 2 << 20, "0" * 64)
                )
                (reply,), _ = read_frames(s, b"", 1)
                assert reply["type"] == "error" and reply["code"] == "auth_failed", reply
        final = a.wait_api(
            f"/api/transfers/{t['id']}", lambda x: x["state"] in ("done", "failed"), timeout=60
        )
        assert final["state"] == "done", final
        assert _sha(b.inbox / "big.bin") == digest
        assert sorted(p.name for p in b.inbox.iterdir() if p.is_file()) == ["big.bin"]


def _via_proxy(
    tmp_path: Path, proxy_args: dict[str, object]
) -> tuple[NodeProc, NodeProc, TamperProxy]:
    """b (on 127.0.0.1), a proxy in front of it at 127.0.0.2 on the same port (the path to b),
    then a knowing b only at 127.0.0.2."""
    port = free_udp_port()
    b = NodeProc(tmp_path, "b", port, "--no-discovery").start()
    where = ("127.0.0.2", b.tcp_port)
    proxy = TamperProxy(b.tcp_port, listen=where, **proxy_args)  # type: ignore[arg-type]
    # a listens where b cannot reach it: b learns a from its hellos and would dial it back,
    # and a would then learn b's own address instead of the path through the proxy.
    a = NodeProc(
        tmp_path, "a", port, "--no-discovery", "--listen", "127.0.0.3",
        "--peer", f"127.0.0.2:{b.tcp_port}",
    )  # fmt: skip
    a.start()
    a.wait_api("/api/peers", lambda ps: [p["name"] for p in ps] == ["b"], what="b via the proxy")
    return a, b, proxy


def test_a_proxy_that_rewrites_an_invoice_gets_no_verified_wrong_file(tmp_path: Path) -> None:
    """A man in the middle who rewrites the IBAN and the announced hash alike.

    Old node: everything crossed in clear text, so the rewritten invoice was recorded as
    verified and sent by a. Now the proxy sees only ciphertext: the invoice arrives intact."""
    invoice = b"Invoice 2026-117\nPay to IBAN DE89370400440532013000\n" * 20
    forged = invoice.replace(b"DE89370400440532013000", b"GB33BUKB20201555555555")
    swap = (
        (b"DE89370400440532013000", b"GB33BUKB20201555555555"),
        (hashlib.sha256(invoice).hexdigest().encode(), hashlib.sha256(forged).hexdigest().encode()),
    )
    a, b, proxy = _via_proxy(tmp_path, {"replace": swap})
    try:
        (a.share / "invoice.txt").write_bytes(invoice)
        t = a.api("POST", "/api/push", {"peer": "b", "path": "invoice.txt"})
        final = a.wait_api(f"/api/transfers/{t['id']}", lambda x: x["state"] in ("done", "failed"))
        assert final["state"] == "done", final
        assert proxy.connections >= 2  # the ping and the push went through it
        assert (b.inbox / "invoice.txt").read_bytes() == invoice
    finally:
        a.stop()
        b.stop()
        proxy.close()


def test_a_proxy_that_flips_bytes_causes_a_failure_never_a_wrong_file(tmp_path: Path) -> None:
    """A man in the middle who cannot read the stream but changes it.

    Old node: a flipped byte in a plaintext stream was caught only by the file's hash (and an
    attacker who also rewrote the offer's hash got it stored as verified, test above). Now TLS
    rejects the damaged record: the attempt fails, b records no file at all."""
    a, b, proxy = _via_proxy(tmp_path, {"flip_after": 300_000})
    try:
        write_random(a.share / "x.bin", 1 << 20)
        t = a.api("POST", "/api/push", {"peer": "b", "path": "x.bin"})
        retry = a.wait_event(
            lambda e: e["event"] == "transfer_retry" and e["id"] == t["id"], what="a failure"
        )
        assert retry["code"] in ("connection_lost", "truncated"), retry
        assert proxy.flipped >= 1
        a.api("POST", f"/api/transfers/{t['id']}/cancel")
        assert not any(e["event"] == "transfer_done" for e in b.events), "a file was accepted"
        assert not (b.inbox / "x.bin").exists()
    finally:
        a.stop()
        b.stop()
        proxy.close()


def test_a_plaintext_client_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """A protocol-1 client (plaintext hello) at the transfer port.

    Old node: it was answered, listed the share and could push into the inbox. Now it gets one
    plaintext `error` frame `tls_required` and the connection closes; the drop is counted."""
    with nodes(tmp_path, ["b"]) as (b,):
        hello = json.dumps({"type": "hello", "proto": 1, "node": "f" * 32, "name": "old",
                            "port": 0, "groups": [], "features": []}).encode()  # fmt: skip
        with socket.create_connection(("127.0.0.1", b.tcp_port), timeout=10) as s:
            s.sendall(struct.pack(">I", len(hello)) + hello + frame({"type": "list"}))
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        (n,) = struct.unpack(">I", reply[:4])
        assert len(reply) == 4 + n, reply  # one frame, then the close
        err = json.loads(reply[4:])
        assert err["type"] == "error" and err["code"] == "tls_required", err
        stats = b.api("GET", "/api/node")["stats"]
        assert stats["dropped"].get("tls_required") == 1, stats


def _send(node: NodeProc, peer: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOLE_API_TOKEN": node.file_token(), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "node", "--api", node.api_url, "--timeout", "20"]
    return subprocess.run(
        [*cmd, "send", peer, str(path)],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
    )  # fmt: skip


def test_insecure_plaintext_is_loud_and_only_talks_to_its_like(tmp_path: Path) -> None:
    """`--insecure-plaintext` (tests and benchmarks): both ends must use it, it says so at
    start, and it never reaches a default (TLS) node; either way the attempt fails at once
    (not after a timeout, not retried) and the CLI says why.

    Before: the plaintext client waited for a challenge while the TLS node waited for a
    ClientHello, until a 5 s `timeout`, retried forever; a TLS client failed with
    "connection lost: [SSL: WRONG_VERSION_NUMBER]", retried forever."""
    with nodes(tmp_path, ["a", "b"], "--insecure-plaintext") as (a, b):
        wait_mesh([a, b])
        digest = write_random(a.share / "p.bin", 50_000)
        t = a.api("POST", "/api/push", {"peer": "b", "path": "p.bin"})
        final = a.wait_api(f"/api/transfers/{t['id']}", lambda x: x["state"] in ("done", "failed"))
        assert final["state"] == "done" and _sha(b.inbox / "p.bin") == digest, final
        assert "NOT encrypted" in a.stderr_path.read_text()
        port = a.discovery_port
        c = NodeProc(tmp_path, "c", port).start()  # TLS, the default
        try:
            wait_mesh([a, c])
            run = _send(a, "c", a.share / "p.bin")  # plaintext -> TLS
            assert run.returncode != 0 and "peer requires TLS: c" in run.stderr, run
            failed = a.wait_event(lambda e: e["event"] == "transfer_failed", what="failure")
            assert failed["error"]["code"] == "tls_required", failed
            assert not any(e["event"] == "transfer_retry" for e in a.events)
            started = next(
                e for e in a.events if e["event"] == "transfer_started" and e["id"] == failed["id"]
            )  # this attempt's start (the first transfer_started was the push to b)
            # the TLS node answered the silent client after 1 s, not the 5 s handshake timeout
            assert failed["ts"] - started["ts"] < 4, (started, failed)
            write_random(c.share / "q.bin", 1000)
            run = _send(c, "a", c.share / "q.bin")  # TLS -> plaintext
            assert run.returncode != 0 and "incompatible peer: a" in run.stderr, run
            assert "without TLS" in run.stderr, run
            failed = c.wait_event(lambda e: e["event"] == "transfer_failed", what="failure")
            assert failed["error"]["code"] == "version_mismatch", failed
            assert not any(e["event"] == "transfer_retry" for e in c.events)
            assert not (c.inbox / "p.bin").exists() and not (a.inbox / "q.bin").exists()
        finally:
            c.stop()
