"""Pairing: both users compare a 6-digit code, then each node trusts the other (pure, no I/O).

Runs over an authenticated transfer connection (both node ids verified by TLS and the client's
proof), so the code only has to rule out a man in the middle of *that* connection: if both
users see the same code, each node talks to the certificate the other user holds.

The code is `identity.sas_code(client_id, server_id, context=client_nonce + server_nonce)`:
20 bits. To stop either side from grinding a certificate or a nonce until the codes match
(about a million tries), the client commits to its nonce before it sees the server's, and the
server reveals its nonce before it sees the client's:

    client                                  server
    pair_commit {commit = H(ctx, id_c, Nc)} ->
                                          <- pair_reveal {nonce: Ns}
    pair_reveal {nonce: Nc}                 ->   (server checks the commitment)
          both show sas_code(id_c, id_s, Nc || Ns); each user compares and answers
    pair_confirm {ok}                       <->  pair_confirm {ok}

Each side trusts the other once it has confirmed itself AND received the other's
`ok: true`. Either `ok: false`, a bad commitment or a broken connection ends it untrusted.

One transition table (`TRANSITIONS`); an event not allowed in a state raises `PairingError`
naming both.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from node import digest
from node.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from node.identity import sas_code
from node.messages import PairCommit, PairConfirm, PairReveal

COMMIT_CONTEXT: Final = b"mole/2 pair commit\x00"
NONCE_SIZE: Final = 32


class PairingError(LocalProtocolError):
    """An event the pairing machine does not allow in its state (a bug, or a peer's)."""


class PState(enum.Enum):
    START = "start"
    COMMITTED = "committed"  # client: commit sent, waiting for the server's nonce
    REVEALED = "revealed"  # server: nonce sent, waiting for the client's
    SHOWN = "shown"  # the code is shown; waiting for the local and/or remote answer
    CONFIRMED = "confirmed"  # we said yes; waiting for the peer's answer
    PEER_CONFIRMED = "peer_confirmed"  # the peer said yes; waiting for our user
    PAIRED = "paired"
    FAILED = "failed"


class PEvent(enum.Enum):
    SEND_COMMIT = "send_commit"
    RECV_COMMIT = "recv_commit"
    RECV_SERVER_NONCE = "recv_server_nonce"
    RECV_CLIENT_NONCE = "recv_client_nonce"
    LOCAL_YES = "local_yes"
    PEER_YES = "peer_yes"
    NO = "no"  # local or remote refusal, bad commitment, connection lost


S, E = PState, PEvent
TRANSITIONS: Final[dict[tuple[PState, PEvent], PState]] = {
    (S.START, E.SEND_COMMIT): S.COMMITTED,
    (S.START, E.RECV_COMMIT): S.REVEALED,
    (S.COMMITTED, E.RECV_SERVER_NONCE): S.SHOWN,
    (S.REVEALED, E.RECV_CLIENT_NONCE): S.SHOWN,
    (S.SHOWN, E.LOCAL_YES): S.CONFIRMED,
    (S.SHOWN, E.PEER_YES): S.PEER_CONFIRMED,
    (S.CONFIRMED, E.PEER_YES): S.PAIRED,
    (S.PEER_CONFIRMED, E.LOCAL_YES): S.PAIRED,
    **{(s, E.NO): S.FAILED for s in PState if s not in (S.PAIRED, S.FAILED)},
}


def commitment(client_id: str, nonce: bytes) -> str:
    # not hashlib (OpenSSL's libcrypto at import): node/digest.py
    return digest.sha256(COMMIT_CONTEXT + bytes.fromhex(client_id) + nonce).hex()


@dataclass
class Pairing:
    """One pairing exchange between `me` and `peer` (verified node ids, 64 hex)."""

    me: str
    peer: str
    client: bool
    random: Callable[[int], bytes] = os.urandom
    state: PState = PState.START
    code: str | None = None  # the 6-digit code once both nonces are known
    why: str = ""  # why it failed

    def __post_init__(self) -> None:
        self._nonce = self.random(NONCE_SIZE)
        self._commit: str | None = None

    def _move(self, event: PEvent) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise PairingError(f"pairing: {event.value} not allowed in state {self.state.value}")
        self.state = new

    def _show(self, client_nonce: bytes, server_nonce: bytes) -> None:
        ids = (self.me, self.peer) if self.client else (self.peer, self.me)
        self.code = sas_code(ids[0], ids[1], context=client_nonce + server_nonce)

    # -- client --------------------------------------------------------------------------------
    def start(self) -> PairCommit:
        if not self.client:
            raise PairingError(
                f"pairing: send_commit not allowed for a server ({self.state.value})"
            )
        self._move(PEvent.SEND_COMMIT)
        return PairCommit(commitment(self.me, self._nonce))

    def on_server_nonce(self, msg: PairReveal) -> PairReveal:
        """The server's nonce: show the code, and reveal ours."""
        self._move(PEvent.RECV_SERVER_NONCE)
        self._show(self._nonce, bytes.fromhex(msg.nonce))
        return PairReveal(self._nonce.hex())

    # -- server --------------------------------------------------------------------------------
    def on_commit(self, msg: PairCommit) -> PairReveal:
        if self.client:
            raise PairingError(
                f"pairing: recv_commit not allowed for a client ({self.state.value})"
            )
        self._move(PEvent.RECV_COMMIT)
        self._commit = msg.commit
        return PairReveal(self._nonce.hex())

    def on_client_nonce(self, msg: PairReveal) -> None:
        """The client's nonce must open its commitment; then show the code."""
        self._move(PEvent.RECV_CLIENT_NONCE)
        nonce = bytes.fromhex(msg.nonce)
        assert self._commit is not None
        import hmac  # here: an idle node does not load it (tests/node/test_idle_imports.py)

        if not hmac.compare_digest(commitment(self.peer, nonce), self._commit):
            self.fail("the peer's nonce does not match its commitment")
            raise RemoteProtocolError(
                ErrorCode.BAD_MESSAGE, "pair_reveal: nonce does not open the commit"
            )
        self._show(nonce, self._nonce)

    # -- both ----------------------------------------------------------------------------------
    def on_reveal(self, msg: PairReveal) -> PairReveal | None:
        """A `pair_reveal` from the peer, whichever side we are."""
        if self.client:
            return self.on_server_nonce(msg)
        self.on_client_nonce(msg)
        return None

    def answer(self, ok: bool) -> PairConfirm:
        """Our user compared the codes: yes or no (sent to the peer)."""
        if ok:
            self._move(PEvent.LOCAL_YES)
        else:
            self.fail("refused here")
        return PairConfirm(ok)

    def on_confirm(self, msg: PairConfirm) -> None:
        if msg.ok:
            self._move(PEvent.PEER_YES)
        else:
            self.fail("refused by the peer")

    def fail(self, why: str) -> None:
        if self.state not in (PState.PAIRED, PState.FAILED):
            self._move(PEvent.NO)
            self.why = why

    @property
    def paired(self) -> bool:
        return self.state is PState.PAIRED

    def to_json(self) -> dict[str, object]:
        return {"peer": self.peer, "state": self.state.value, "code": self.code, "why": self.why}


__all__ = ["TRANSITIONS", "PEvent", "PState", "Pairing", "PairingError", "commitment"]
