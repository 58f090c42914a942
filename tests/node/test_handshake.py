"""The proofs of the protocol-2 handshake (node/handshake.py), each way they can fail."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from node import handshake
from node.errors import ErrorCode, RemoteProtocolError
from node.identity import Identity
from node.messages import MAX_CERT, Challenge, Hello
from node.peerauth import NoGroups, group_message

SERVER = Identity.from_seed(bytes([7]) * 32)
CLIENT = Identity.from_seed(bytes([8]) * 32)
OTHER = Identity.from_seed(bytes([9]) * 32)
NS = bytes([1]) * 32
NC = bytes([2]) * 32


class OneGroup:
    """A prover of one group whose "proof" is the message itself (enough to see what is signed)."""

    def prove(self, message: bytes) -> list[dict[str, str]]:
        return [{"group": "lab", "m": message.hex()}]

    def verify(self, proofs: object, message: bytes) -> frozenset[str]:
        ok = isinstance(proofs, list) and {"group": "lab", "m": message.hex()} in proofs
        return frozenset({"lab"}) if ok else frozenset()


def hello_for(ident: Identity, challenge: Challenge, prover: object = None) -> Hello:
    return handshake.client_hello(
        ident.seed, ident.cert_der, ident.node_id, challenge, NC, prover or NoGroups(),  # type: ignore[arg-type]
        name="c", port=1, features=("resume",),
    )  # fmt: skip


CHALLENGE = handshake.challenge(SERVER.node_id, NS)


def failure(fn: object, *args: object) -> str:
    with pytest.raises(RemoteProtocolError) as err:
        fn(*args)  # type: ignore[operator]
    assert err.value.code is ErrorCode.AUTH_FAILED
    return err.value.message


def test_a_client_proof_checks_out_and_names_its_groups() -> None:
    hello = hello_for(CLIENT, CHALLENGE, OneGroup())
    auth = handshake.check_client(hello, CHALLENGE, OneGroup())
    assert auth.node_id == CLIENT.node_id and auth.cert_der == CLIENT.cert_der
    assert auth.groups == {"lab"}
    answer = handshake.server_hello(
        SERVER.node_id, hello, OneGroup(), name="s", port=2, features=()
    )
    back = handshake.check_server(answer, CHALLENGE, hello, OneGroup(), SERVER.cert_der)
    assert back.node_id == SERVER.node_id and back.groups == {"lab"}


def test_a_proof_for_another_challenge_is_refused() -> None:
    """Replay: a proof recorded on one connection does not verify against a fresh nonce."""
    hello = hello_for(CLIENT, CHALLENGE)
    fresh = handshake.challenge(SERVER.node_id, bytes([3]) * 32)
    assert "does not verify" in failure(handshake.check_client, hello, fresh, NoGroups())


def test_a_proof_for_another_server_is_refused() -> None:
    """Relay: a proof made for node X is worthless at node Y (the server id is signed)."""
    hello = hello_for(CLIENT, handshake.challenge(OTHER.node_id, NS))
    assert "does not verify" in failure(handshake.check_client, hello, CHALLENGE, NoGroups())


def test_claiming_another_id_is_refused() -> None:
    hello = hello_for(CLIENT, CHALLENGE)
    claim = replace(hello, node=OTHER.node_id)
    assert "claims node" in failure(handshake.check_client, claim, CHALLENGE, NoGroups())
    # another node's certificate without its key: the signature is the client's, not OTHER's
    borrowed = replace(
        hello, node=OTHER.node_id, cert=base64.b64encode(OTHER.cert_der).decode("ascii")
    )
    assert "does not verify" in failure(handshake.check_client, borrowed, CHALLENGE, NoGroups())


def test_junk_and_oversized_certificates_are_refused() -> None:
    hello = hello_for(CLIENT, CHALLENGE)
    junk = replace(hello, cert=base64.b64encode(b"not a certificate").decode())
    assert "Ed25519 certificate" in failure(handshake.check_client, junk, CHALLENGE, NoGroups())
    big = replace(hello, cert=base64.b64encode(bytes(MAX_CERT + 1)).decode())
    assert "exceeds" in failure(handshake.check_client, big, CHALLENGE, NoGroups())
    bad64 = replace(hello, cert="!!!!")
    assert "base64" in failure(handshake.check_client, bad64, CHALLENGE, NoGroups())


def test_the_servers_own_certificate_is_refused() -> None:
    own = hello_for(SERVER, CHALLENGE)
    assert "own certificate" in failure(handshake.check_client, own, CHALLENGE, NoGroups())


def test_the_client_checks_the_challenge_against_the_certificate_and_the_id_it_meant() -> None:
    handshake.check_challenge(CHALLENGE, SERVER.node_id, SERVER.node_id)
    handshake.check_challenge(CHALLENGE, None, None)  # insecure plaintext, a bare address
    msg = failure(handshake.check_challenge, CHALLENGE, OTHER.node_id, None)
    assert "certificate" in msg
    assert "answers" in failure(handshake.check_challenge, CHALLENGE, None, OTHER.node_id)


def test_a_server_hello_naming_another_node_is_refused() -> None:
    hello = hello_for(CLIENT, CHALLENGE)
    answer = handshake.server_hello(OTHER.node_id, hello, NoGroups(), name="s", port=2, features=())
    args = (answer, CHALLENGE, hello, NoGroups(), SERVER.cert_der)
    assert "hello names node" in failure(handshake.check_server, *args)


def test_group_proofs_are_bound_to_both_ids_and_the_nonce() -> None:
    """A client's group proof covers (client, server, Ns): it proves nothing elsewhere."""
    hello = hello_for(CLIENT, CHALLENGE, OneGroup())
    fresh = handshake.challenge(SERVER.node_id, bytes([4]) * 32)
    expected = group_message(CLIENT.node_id, SERVER.node_id, NS)
    assert hello.groups == ({"group": "lab", "m": expected.hex()},)
    with pytest.raises(RemoteProtocolError):  # the signature fails first on a fresh nonce
        handshake.check_client(hello, fresh, OneGroup())


def test_a_peer_is_named_by_its_id_in_the_human_form_mole_id_prints() -> None:
    from node.errors import NotFound
    from node.identity import format_id
    from node.peers import Peers

    peers = Peers("0" * 64, missed=3, clock=lambda: 1.0, on_change=lambda ev: None)
    hello = Hello(2, CLIENT.node_id, "desk-1", 47101)
    peers.learn(hello, "10.0.0.2")
    human = format_id(CLIENT.node_id)
    assert peers.resolve(human).node == CLIENT.node_id
    assert peers.resolve(human.lower().replace("-", " ")).node == CLIENT.node_id
    assert peers.resolve("desk-1").node == CLIENT.node_id  # a name with a dash still works
    with pytest.raises(NotFound):
        peers.resolve(format_id(OTHER.node_id))


def test_a_plaintext_answer_to_our_tls_is_read_as_what_it_says() -> None:
    """tlsproto.NotTls's bytes: a TLS node's plaintext refusal keeps its code (busy stays
    transient), tls_required (our ClientHello came too late) is a timeout, a plaintext node's
    challenge is version_mismatch (not retried); bytes that are no whole frame say nothing."""
    from node import connauth
    from node.messages import Error, encode_message

    busy = encode_message(Error("busy", "connection limit reached, retry later"))
    assert connauth.plaintext_answer(busy) == (
        "busy",
        "peer error: connection limit reached, retry later",
    )
    late = encode_message(Error("tls_required", "this node speaks TLS 1.3 only"))
    code, reason = connauth.plaintext_answer(late) or ("", "")
    assert code == "timeout" and "no TLS from us in time" in reason
    challenge = encode_message(handshake.challenge("ab" * 32, bytes(32)))
    code, reason = connauth.plaintext_answer(challenge) or ("", "")
    assert code == "version_mismatch" and "--insecure-plaintext" in reason
    for junk in (b"", b"\0\0", challenge[:-1], b"\xff" * 64, b"\0\0\0\x02[]"):
        assert connauth.plaintext_answer(junk) is None, junk
