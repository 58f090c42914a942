"""Pairing (node/pairing.py): commit/reveal, the same code on both sides, no grinding."""

from __future__ import annotations

import pytest

from node.errors import RemoteProtocolError
from node.framing import FrameDecoder, Header
from node.identity import sas_code
from node.messages import PairConfirm, PairReveal, encode_message, parse_message
from node.pairing import TRANSITIONS, Pairing, PairingError, PState, commitment

C, S = "c" * 64, "5" * 64


def pair() -> tuple[Pairing, Pairing]:
    client = Pairing(C, S, client=True, random=lambda n: b"\x01" * n)
    server = Pairing(S, C, client=False, random=lambda n: b"\x02" * n)
    commit = client.start()
    reveal_s = server.on_commit(commit)
    reveal_c = client.on_reveal(reveal_s)
    assert reveal_c is not None
    assert server.on_reveal(reveal_c) is None
    return client, server


def wire(msg: object) -> object:
    """Through the framing and the parser, as on a connection."""
    dec = FrameDecoder()
    dec.receive_data(bytearray(encode_message(msg)))  # type: ignore[arg-type]
    header = dec.next_event()
    assert isinstance(header, Header)
    return parse_message(header.fields)


def test_both_sides_show_the_same_code_and_pair_after_both_say_yes() -> None:
    client, server = pair()
    assert client.code == server.code == sas_code(C, S, context=b"\x01" * 32 + b"\x02" * 32)
    assert client.state is server.state is PState.SHOWN
    server.on_confirm(wire(client.answer(True)))  # type: ignore[arg-type]
    assert server.state is PState.PEER_CONFIRMED and not server.paired
    client.on_confirm(wire(server.answer(True)))  # type: ignore[arg-type]
    assert client.paired and server.paired


def test_a_no_on_either_side_pairs_nobody() -> None:
    client, server = pair()
    server.on_confirm(client.answer(False))
    assert client.state is server.state is PState.FAILED and "refused" in server.why
    with pytest.raises(PairingError, match=r"local_yes.*failed"):
        server.answer(True)


def test_the_client_cannot_change_its_nonce_after_seeing_the_servers() -> None:
    """Grinding: a client that picks its nonce after seeing the server's (to steer the code)
    cannot open its commitment."""
    client = Pairing(C, S, client=True, random=lambda n: b"\x01" * n)
    server = Pairing(S, C, client=False)
    server.on_commit(client.start())
    with pytest.raises(RemoteProtocolError, match="commit"):
        server.on_reveal(PairReveal((b"\x09" * 32).hex()))
    assert server.state is PState.FAILED and server.code is None


def test_commitment_binds_the_client_id() -> None:
    assert commitment(C, b"\x01" * 32) != commitment(S, b"\x01" * 32)


def test_illegal_events_name_state_and_event() -> None:
    server = Pairing(S, C, client=False)
    with pytest.raises(PairingError, match="send_commit"):
        server.start()
    with pytest.raises(PairingError, match="peer_yes not allowed in state start"):
        server.on_confirm(PairConfirm(True))
    assert all(new is not PState.START for new in TRANSITIONS.values())
