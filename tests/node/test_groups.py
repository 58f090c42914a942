"""Groups with a secret: key derivation, announce proofs, connection proofs, parsing --group."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from node.errors import ConfigError
from node.groups import Group, Groups, hkdf_sha256, new_secret, parse_group
from node.peerauth import GroupProver, NoGroups, group_message

P = "a" * 64
V = "b" * 64
NONCE = bytes(32)


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf_sha256(ikm, salt, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_the_key_depends_on_name_and_secret_and_nothing_shows_the_secret() -> None:
    g = Group.make("lab", "correct horse")
    assert g.key != Group.make("lab2", "correct horse").key
    assert g.key != Group.make("lab", "correct horse!").key
    assert g == Group.make("lab", "correct horse")
    assert "correct" not in repr(g) and g.key.hex() not in repr(g)
    groups = Groups([g])
    shown = repr(groups.public_json())
    assert "correct horse" not in shown and g.key.hex() not in shown and g.tag in shown


def test_announce_proofs_prove_only_to_members() -> None:
    mine = Groups([Group.make("lab", "secret-one"), Group.make("home", "secret-two")])
    member = Groups([Group.make("lab", "secret-one")])
    outsider = Groups([Group.make("lab", "not-the-secret")])

    class Ann:
        node = P
        counter = 9
        proofs = member.announce_proofs(P, 9)

    assert mine.announce_membership(Ann()) == ("lab",)  # type: ignore[arg-type]
    Ann.proofs = outsider.announce_proofs(P, 9)
    assert mine.announce_membership(Ann()) == ()  # type: ignore[arg-type]
    Ann.proofs = member.announce_proofs(P, 8)  # another announce's proof
    assert mine.announce_membership(Ann()) == ()  # type: ignore[arg-type]
    Ann.proofs = member.announce_proofs(V, 9)  # another node's proof
    assert mine.announce_membership(Ann()) == ()  # type: ignore[arg-type]
    assert Groups().announce_proofs(P, 1) == ()


def test_connection_proofs_implement_group_prover() -> None:
    msg = group_message(P, V, NONCE)
    mine: GroupProver = Groups([Group.make("lab", "secret-one"), Group.make("x", "secret-two")])
    member: GroupProver = Groups([Group.make("lab", "secret-one")])
    proofs = member.prove(msg)
    assert mine.verify(proofs, msg) == frozenset({"lab"})
    assert mine.verify(proofs, group_message(P, V, b"\x01" * 32)) == frozenset()  # stale nonce
    assert mine.verify(proofs, group_message(V, P, NONCE)) == frozenset()  # relayed
    for junk in (None, "x", [1, None, {"tag": 3}], [{"tag": "zz", "mac": "00"}] * 1000, {}):
        assert mine.verify(junk, msg) == frozenset()
    assert NoGroups().verify(proofs, msg) == frozenset() and NoGroups().prove(msg) == []
    # the mac is HMAC-SHA256 under the derived key, as docs/security.md says
    lab = Group.make("lab", "secret-one")
    assert proofs == [{"tag": lab.tag, "mac": hmac.new(lab.key, msg, hashlib.sha256).hexdigest()}]


def test_parse_group_forms(tmp_path: Path) -> None:
    assert parse_group("lab:longsecret") == Group.make("lab", "longsecret")
    f = tmp_path / "secret"
    f.write_text("from-a-file\n")
    assert parse_group(f"lab:@{f}") == Group.make("lab", "from-a-file")
    for bad, why in [
        ("lab", "needs a secret"),
        ("lab:tiny12", "shorter than 8"),
        (":longsecret", "1..64"),
        (f"lab:@{tmp_path / 'missing'}", "cannot read"),
    ]:
        with pytest.raises(ConfigError, match=why) as err:
            parse_group(bad)
        assert "tiny12" not in str(err.value)  # never the secret in a message
    with pytest.raises(ConfigError):
        Groups([Group.make("a", "12345678")] * 2)
    assert len(new_secret()) == 32 and new_secret() != new_secret()


def test_the_rendezvous_key_comes_from_the_secret_and_is_not_the_group_key() -> None:
    """Before, the tracker/DHT rendezvous was keyed by the group's name alone: anyone who knew
    the name could find the group's addresses. Now two groups of one name but different secrets
    meet under unrelated hashes, and the key used in public proves nothing about membership."""
    a = Group.make("team", "correct horse battery staple")
    b = Group.make("team", "another secret entirely")
    assert a.rendezvous_key() != b.rendezvous_key()
    assert a.rendezvous_key() not in (a.key, b.key)
    assert a.rendezvous_key() == Group.make("team", "correct horse battery staple").rendezvous_key()
