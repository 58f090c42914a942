"""The protocol-2 handshake of a transfer connection, between `Conn` and node/handshake.py.

What `Conn` does at each step of 2.0 of docs/protocol.md, with the node's identity, nonces
and group prover: the server's challenge; the client's check of the certificate TLS showed
(before a single mole byte is sent) and its answer; the check of the peer's hello, which
leaves what the peer proved in `conn.peer_auth` (and `conn.peer_id`); the server's hello.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from node import handshake
from node.errors import ErrorCode, RemoteProtocolError
from node.framing import MAX_HEADER, parse_header
from node.messages import Challenge, Error, Hello, parse_message
from node.session import Role

if TYPE_CHECKING:
    from node.conn import Conn
    from node.loop import Transport
    from node.tlsproto import TlsTransport

FEATURES = (
    "resume",
    "digest",
    "pull-digest",
    "batch",
    "batch-pending",
    "batch-names",
    "batch-inline",
)


def challenge(conn: Conn) -> Challenge:
    """Server: the first frame, a fresh nonce the client's proof must sign."""
    return handshake.challenge(conn.node.node_id, os.urandom(handshake.NONCE_SIZE))


def server_is_expected(conn: Conn, transport: Transport | TlsTransport) -> bool:
    """Client, right after TLS: is the certificate the node we meant to reach? If not, the
    connection fails before anything is sent. Transient (`unreachable`): addresses get reused
    and the real node may announce itself elsewhere; an impostor never gets past this."""
    peer_cert = getattr(transport, "peer_certificate", None)
    conn.server_cert = peer_cert() if peer_cert is not None else None
    expect = getattr(conn.handler, "expect_peer", None)
    if conn.server_cert is None or expect is None:
        return True
    actual = handshake.cert_id(conn.server_cert)
    if actual == expect:
        return True
    where = f"{transport.peername[0]}:{transport.peername[1]}"
    conn.wrong_node(
        f"node {actual[:8]} answers at {where}, not {expect[:8]}: its certificate does not "
        "match the node id (an impostor, or another node now at that address); nothing was sent"
    )
    return False


def answer_challenge(conn: Conn, msg: Challenge) -> Hello:
    """Client: check the challenge names the certificate's node; our hello with the proof."""
    node = conn.node
    server_id = handshake.cert_id(conn.server_cert) if conn.server_cert is not None else None
    handshake.check_challenge(msg, server_id, getattr(conn.handler, "expect_peer", None))
    ident = node.identity
    return handshake.client_hello(
        ident.seed,
        ident.cert_der,
        ident.node_id,
        msg,
        os.urandom(handshake.NONCE_SIZE),
        node.prover,
        name=node.config.name,
        port=node.tcp_port,
        features=FEATURES,
    )


def check_hello(conn: Conn, msg: Hello) -> None:
    """Either side: the peer's hello proves who it is (else RemoteProtocolError auth_failed)."""
    session = conn.session
    ours = session.challenge
    assert ours is not None  # the session table puts the challenge first
    prover = conn.node.prover
    if session.role is Role.SERVER:
        node = conn.node
        strangers = node.gate.strangers
        known = strangers.known(msg.node)
        heard = node.peers.table.key_of(msg.node) is not None  # it announced itself (signed)
        if not known and not heard and not strangers.allow(node.loop.time()):
            raise RemoteProtocolError(
                ErrorCode.BUSY, "too many hellos of new node ids here now, retry later"
            )
        conn.peer_auth = handshake.check_client(msg, ours, prover, cert_checked=known)
        strangers.verified(conn.peer_auth.node_id)
    else:
        assert session.our_hello is not None
        cert = conn.server_cert or b""
        conn.peer_auth = handshake.check_server(msg, ours, session.our_hello, prover, cert)
    conn.peer_id = conn.peer_auth.node_id


def server_hello(conn: Conn) -> Hello:
    """Server: our hello, with group proofs over the client's nonce."""
    hello = conn.session.their_hello
    assert hello is not None and conn.session.role is Role.SERVER
    cfg = conn.node.config
    return handshake.server_hello(
        conn.node.node_id, hello, conn.node.prover, name=cfg.name, port=conn.node.tcp_port,
        features=FEATURES,
    )  # fmt: skip


def plaintext_answer(head: bytes) -> tuple[str, str] | None:
    """Client: the server answered our TLS ClientHello in plaintext (tlsproto.NotTls). When its
    first bytes are a whole mole frame, what to fail with, as (code, reason), else None.

    - an `error` frame: a TLS node that refused us before any TLS (docs/protocol.md 2.0:
      `busy` at its connection limit; `tls_required` when it saw no ClientHello from us in
      time, so a timeout on our side): its code, transient or not as any peer error;
    - a `challenge` (or any other frame): a node running --insecure-plaintext; not a transient
      failure (retrying cannot help), so `version_mismatch`, saying what to change.
    """
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head[:4])
    if not 2 <= n <= MAX_HEADER or len(head) < 4 + n:
        return None
    try:
        msg = parse_message(parse_header(head[4 : 4 + n]).fields)
    except RemoteProtocolError:
        return None
    if isinstance(msg, Error):
        if msg.code == ErrorCode.TLS_REQUIRED:
            return ErrorCode.TIMEOUT, f"the peer saw no TLS from us in time: {msg.reason}"
        return msg.code, f"peer error: {msg.reason}"
    return (
        ErrorCode.VERSION_MISMATCH,
        "the peer speaks mole without TLS (it runs --insecure-plaintext); this node requires "
        "TLS: both sides must use --insecure-plaintext, or neither",
    )
