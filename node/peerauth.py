"""What a connection proved about its peer, and the bytes every proof signs (pure, no I/O).

Two layers meet here, so each can change without the other:
- the connection handshake (TLS 1.3 + the client's in-band proof, node/conn.py and the session)
  fills in a `PeerAuth` once the peer has proved who it is;
- group membership (a shared secret per group) is checked through a `GroupProver`, so the
  handshake carries group proofs without knowing how they are made.

Every signed or MACed message starts with a context string naming its purpose and protocol
version, so a signature made for one purpose can never be replayed as another (an announce
signature is not a client proof, a client proof is not a group proof).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol

PROOF_CONTEXT: Final = b"mole/2 client proof\x00"
GROUP_CONTEXT: Final = b"mole/2 group proof\x00"
NONCE_SIZE: Final = 32


def _id_bytes(node_id: str) -> bytes:
    raw = bytes.fromhex(node_id)
    if len(raw) != 32:
        raise ValueError(f"a node id is 32 bytes (64 hex digits), got {len(raw)}")
    return raw


def _nonce(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a nonce is {NONCE_SIZE} bytes, got {len(nonce)}")
    return nonce


def proof_message(server_id: str, server_nonce: bytes, client_id: str) -> bytes:
    """What the client signs with its identity key after the TLS handshake.

    It binds the server's certificate (its id: the client reached the node it meant), the
    server's fresh nonce (no replay) and the client's own certificate (no one else can use it).
    """
    return PROOF_CONTEXT + _id_bytes(server_id) + _nonce(server_nonce) + _id_bytes(client_id)


def group_message(prover_id: str, verifier_id: str, verifier_nonce: bytes) -> bytes:
    """What a group member MACs with the group key to prove membership to one verifier.

    The verifier's nonce makes it fresh; both ids stop a proof being relayed to another node
    or presented by another prover.
    """
    return GROUP_CONTEXT + _id_bytes(prover_id) + _id_bytes(verifier_id) + _nonce(verifier_nonce)


class GroupProver(Protocol):
    """Makes and checks group membership proofs over a `group_message`."""

    def prove(self, message: bytes) -> list[dict[str, str]]:
        """One JSON-able proof per group this node is in (empty: no groups)."""
        ...

    def verify(self, proofs: object, message: bytes) -> frozenset[str]:
        """The names of this node's groups that `proofs` proves; malformed or foreign proofs
        are ignored (never raises: a peer's junk proves nothing)."""
        ...


class NoGroups:
    """A node in no group: proves nothing and accepts no proof."""

    def prove(self, message: bytes) -> list[dict[str, str]]:
        return []

    def verify(self, proofs: object, message: bytes) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True, slots=True)
class PeerAuth:
    """What the peer on a connection proved: its node id (SHA-256 of its certificate's DER),
    that certificate, and the groups (names, of this node's groups) it proved membership of."""

    node_id: str
    cert_der: bytes
    groups: frozenset[str] = field(default_factory=frozenset)
