"""Groups with a secret: who proves it is a member, never the secret on the wire (pure).

`--group NAME:SECRET` (or `NAME:@FILE`, the secret in a file) joins a group. Everything a node
sends about a group is an HMAC under the group's key, derived from name and secret with HKDF
(RFC 5869, SHA-256), so a listener learns neither the name nor the secret and cannot make a
proof; members recompute what they expect and compare in constant time.

Two kinds of proof:
- in an announce (docs/protocol.md 1): 16 bytes of HMAC over the sender's id and the announce's
  counter, so a proof is bound to one signed announce of one node (copying it into another
  node's announce, or into a later one, proves nothing). The list carries no tag: observers
  cannot even tell which announces belong to the same group;
- on a connection (node/peerauth.py `group_message`, fresh nonce from the verifier):
  `{"tag": ..., "mac": ...}` per group, the tag (public, 8 bytes of HMAC) saving the verifier
  a search. Tags are stable and may be shown (API, status) in place of the secret.
"""

from __future__ import annotations

import os
from _operator import _compare_digest as compare_digest  # constant time; not hmac's
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from node import digest
from node.errors import ConfigError


def _mac(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA-256 without the stdlib `hmac`, which loads OpenSSL's libcrypto (~3.8 MiB of an
    idle node's memory: tests/node/test_idle_imports.py): node/digest.py."""
    return digest.hmac_sha256(key, msg)


if TYPE_CHECKING:
    from node.discovery import Announce

MAX_GROUPS: Final = 8  # every group adds a proof to each announce (1400-byte datagrams)
MAX_NAME: Final = 64
MIN_SECRET: Final = 8  # characters; a short secret is guessable from one captured proof
MAX_SECRET_FILE: Final = 4096
PROOF_SIZE: Final = 16
ANNOUNCE_CONTEXT: Final = b"mole/2 announce group proof\x00"
_SALT: Final = b"mole/2 group key"
_TAG: Final = b"mole/2 group tag"


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256 (extract, then expand)."""

    prk = _mac(salt, ikm)
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = _mac(prk, block + info + bytes([i]))
        out += block
        i += 1
    return out[:length]


@dataclass(frozen=True)
class Group:
    """One group: its name (local only), its key (never shown) and its public tag."""

    name: str
    key: bytes = field(repr=False)
    tag: str

    def rendezvous_key(self) -> bytes:
        """The key this group's tracker/DHT rendezvous hashes are made from (node/rendezvous.py):
        derived from the group key under its own label, so it proves nothing about membership."""
        return _mac(self.key, b"mole/2 rendezvous key")

    @classmethod
    def make(cls, name: str, secret: str) -> Group:
        # The name is part of the key: one secret used for two groups gives unrelated keys.

        key = hkdf_sha256(secret.encode("utf-8"), _SALT, name.encode("utf-8"))
        return cls(name, key, _mac(key, _TAG)[:8].hex())


def parse_group(text: str) -> Group:
    """`NAME:SECRET` or `NAME:@FILE` -> Group; ConfigError says what is wrong (never echoing
    the secret)."""
    name, sep, secret = text.partition(":")
    if not sep:
        raise ConfigError(
            f"--group {name!r:.70} needs a secret: --group NAME:SECRET or --group NAME:@FILE "
            "(every member uses the same one)"
        )
    if not 1 <= len(name) <= MAX_NAME:
        raise ConfigError(f"a group name has 1..{MAX_NAME} characters")
    if secret.startswith("@"):
        secret = _read_secret(Path(secret[1:]).expanduser())
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"the secret of group {name!r} is shorter than {MIN_SECRET} characters")
    return Group.make(name, secret)


def _read_secret(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the group secret file {path}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_FILE:
        raise ConfigError(f"the group secret file {path} is over {MAX_SECRET_FILE} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"the group secret file {path} is not UTF-8 text") from None


def new_secret() -> str:
    """A fresh random secret (the demo and the lab make one per run; 128 bits, hex)."""
    return os.urandom(16).hex()


def announce_message(node_id: str, counter: int) -> bytes:
    return ANNOUNCE_CONTEXT + bytes.fromhex(node_id) + counter.to_bytes(8, "big")


class Groups:
    """This node's groups: implements `peerauth.GroupProver` and the announce proofs."""

    def __init__(self, groups: Iterable[Group] = ()) -> None:
        self.groups: tuple[Group, ...] = tuple(groups)
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ConfigError("a group is named twice")
        if len(self.groups) > MAX_GROUPS:
            raise ConfigError(f"at most {MAX_GROUPS} groups")
        self._by_tag = {g.tag: g for g in self.groups}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def __bool__(self) -> bool:
        return bool(self.groups)

    def public_json(self) -> list[dict[str, str]]:
        """What the API and the status show: names and tags, never keys or secrets."""
        return [{"name": g.name, "tag": g.tag} for g in self.groups]

    # -- announces (docs/protocol.md 1) ------------------------------------------------------
    def announce_proofs(self, node_id: str, counter: int) -> tuple[bytes, ...]:

        msg = announce_message(node_id, counter)
        return tuple(_mac(g.key, msg)[:PROOF_SIZE] for g in self.groups)

    def announce_membership(self, announce: Announce) -> tuple[str, ...]:
        """The names of our groups that `announce`'s proofs prove (at most MAX_GROUPS HMACs
        and MAX_GROUPS^2 constant-time compares per announce)."""
        if not self.groups or not announce.proofs:
            return ()
        msg = announce_message(announce.node, announce.counter)

        found = []
        for g in self.groups:
            want = _mac(g.key, msg)[:PROOF_SIZE]
            hit = False
            for proof in announce.proofs:
                hit |= compare_digest(want, proof)
            if hit:
                found.append(g.name)
        return tuple(found)

    # -- connections (peerauth.GroupProver) --------------------------------------------------
    def prove(self, message: bytes) -> list[dict[str, str]]:

        return [{"tag": g.tag, "mac": _mac(g.key, message).hex()} for g in self.groups]

    def verify(self, proofs: object, message: bytes) -> frozenset[str]:
        if not isinstance(proofs, list):
            return frozenset()

        found: set[str] = set()
        for proof in proofs[: 4 * MAX_GROUPS]:  # bounded work for a peer's junk
            if not isinstance(proof, dict):
                continue
            tag, mac = proof.get("tag"), proof.get("mac")
            group = self._by_tag.get(tag) if isinstance(tag, str) else None
            if group is None or not isinstance(mac, str) or not mac.isascii():
                continue
            want = _mac(group.key, message).hex()
            if compare_digest(want, mac):
                found.add(group.name)
        return frozenset(found)


def groups_from_args(texts: Sequence[str]) -> Groups:
    return Groups(parse_group(t) for t in texts)


__all__ = ["Group", "Groups", "groups_from_args", "new_secret", "parse_group"]
