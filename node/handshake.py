"""The proofs of the connection handshake (protocol 2; pure: no I/O, randomness passed in).

After TLS 1.3 (which shows the client the server's certificate, so the client checks the
server's id itself) the session machine (node/session.py) runs:

    server -> challenge {node: server id, nonce: Ns}
    client -> hello {node: client id, cert, nonce: Nc, sig, groups}
    server -> hello {node: server id, groups}

`sig` is the client's Ed25519 signature of peerauth.proof_message(server id, Ns, client id);
the client's `groups` prove membership over group_message(client id, server id, Ns), the
server's over group_message(server id, client id, Nc). Each check here either returns what the
peer proved (`PeerAuth`) or raises RemoteProtocolError(auth_failed) saying what failed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from node import digest, ed25519, x509
from node.errors import ErrorCode, RemoteProtocolError
from node.messages import MAX_CERT, PROTOCOL_VERSION, Challenge, Hello
from node.peerauth import GroupProver, PeerAuth, group_message, proof_message

NONCE_SIZE: Final = 32


def _failed(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.AUTH_FAILED, reason)


def cert_id(cert_der: bytes) -> str:
    """A node id: the SHA-256 of its certificate's DER, 64 hex."""
    return digest.sha256(cert_der).hex()


def challenge(server_id: str, nonce: bytes) -> Challenge:
    return Challenge(PROTOCOL_VERSION, server_id, _nonce_hex(nonce))


def client_hello(
    seed: bytes,
    cert_der: bytes,
    client_id: str,
    their: Challenge,
    nonce: bytes,
    prover: GroupProver,
    *,
    name: str,
    port: int,
    features: tuple[str, ...],
) -> Hello:
    """The client's hello answering the server's challenge: certificate, nonce, proof."""
    server_nonce = bytes.fromhex(their.nonce)
    sig = ed25519.sign(seed, proof_message(their.node, server_nonce, client_id))
    groups = prover.prove(group_message(client_id, their.node, server_nonce))
    return Hello(
        PROTOCOL_VERSION,
        client_id,
        name,
        port,
        tuple(groups),
        features,
        cert=base64.b64encode(cert_der).decode("ascii"),
        nonce=_nonce_hex(nonce),
        sig=sig.hex(),
    )


def check_client(
    hello: Hello, ours: Challenge, prover: GroupProver, *, cert_checked: bool = False
) -> PeerAuth:
    """The server's check of the client's hello against the challenge it sent.
    `cert_checked`: this certificate's self-signature checked out before (its id, the
    SHA-256 of the certificate, is remembered), so it is not verified again."""
    if hello.cert is None or hello.nonce is None or hello.sig is None:
        raise _failed("the client's hello lacks cert, nonce or sig")
    try:
        der = base64.b64decode(hello.cert, validate=True)
    except (binascii.Error, ValueError):
        raise _failed("hello key 'cert' is not base64") from None
    if len(der) > MAX_CERT:
        raise _failed(f"certificate of {len(der)} bytes exceeds {MAX_CERT}")
    try:
        public = x509.certificate_public_key(der)
    except x509.CertError as exc:
        raise _failed(f"not an Ed25519 certificate: {exc}") from None
    client_id = cert_id(der)
    if hello.node != client_id:
        raise _failed(
            f"hello claims node {hello.node[:16]} but its certificate is {client_id[:16]}"
        )
    if client_id == ours.node:
        raise _failed("the client presents this node's own certificate")
    message = proof_message(ours.node, bytes.fromhex(ours.nonce), client_id)
    if not ed25519.verify(public, message, bytes.fromhex(hello.sig)):
        raise _failed("the client's proof does not verify with its certificate's key")
    if not cert_checked and not x509.verify_self_signature(der):
        raise _failed("the client's certificate is not signed by its own key")
    groups = prover.verify(
        list(hello.groups), group_message(client_id, ours.node, bytes.fromhex(ours.nonce))
    )
    return PeerAuth(client_id, der, groups)


def server_hello(
    server_id: str,
    client: Hello,
    prover: GroupProver,
    *,
    name: str,
    port: int,
    features: tuple[str, ...],
) -> Hello:
    """The server's hello: its group proofs over the client's nonce."""
    assert client.nonce is not None  # the session refuses a client hello without one
    groups = prover.prove(group_message(server_id, client.node, bytes.fromhex(client.nonce)))
    return Hello(PROTOCOL_VERSION, server_id, name, port, tuple(groups), features)


def check_challenge(their: Challenge, server_id: str | None, expect: str | None) -> None:
    """The client's check of the challenge: the id the server names is the id of the
    certificate TLS showed (`server_id`, None on an insecure plaintext connection) and the id
    we meant to reach (`expect`, None when we dialed a bare address)."""
    if server_id is not None and their.node != server_id:
        raise _failed(
            f"challenge names node {their.node[:16]} but the certificate is {server_id[:16]}"
        )
    if expect is not None and their.node != expect:
        raise _failed(f"node {their.node[:16]} answers, not {expect[:16]}")


def check_server(
    hello: Hello, their: Challenge, ours: Hello, prover: GroupProver, cert_der: bytes
) -> PeerAuth:
    """The client's check of the server's hello (the certificate was checked already)."""
    if hello.node != their.node:
        raise _failed(f"hello names node {hello.node[:16]} but the challenge {their.node[:16]}")
    assert ours.nonce is not None
    groups = prover.verify(
        list(hello.groups), group_message(hello.node, ours.node, bytes.fromhex(ours.nonce))
    )
    return PeerAuth(hello.node, cert_der, groups)


def _nonce_hex(nonce: bytes) -> str:
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a nonce is {NONCE_SIZE} bytes, got {len(nonce)}")
    return nonce.hex()
