"""Authorization (node/policy.py) and the trust store (node/truststore.py), pure and on disk."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from node.config import Config
from node.errors import ConfigError, ErrorCode
from node.groups import Group
from node.peerauth import PeerAuth
from node.policy import PROMPT, Policy, Refusal
from node.truststore import TrustStore

FRIEND = PeerAuth("f" * 64, b"cert")
MEMBER = PeerAuth("e" * 64, b"cert", frozenset({"lab"}))
STRANGER = PeerAuth("d" * 64, b"cert")
LAB = (Group.make("lab", "lab-secret"),)


def policy(tmp_path: Path, **kw: object) -> Policy:
    cfg = Config("me", tmp_path, tmp_path, tmp_path, **kw)  # type: ignore[arg-type]
    return Policy(cfg, {FRIEND.node_id})


def may_push(p: Policy, peer: PeerAuth | None) -> bool:
    return p.push_refusal(peer, "a.txt", 1, need=1, free=10, busy=False) is None


def may_read(p: Policy, peer: PeerAuth | None) -> bool:
    return p.read_refusal(peer) is None


def test_defaults_are_safe_on_a_cafe_wifi(tmp_path: Path) -> None:
    """Defaults: group. In no group: only trusted peers; a stranger and an unverified
    connection may neither push nor read."""
    p = policy(tmp_path)
    assert [may_push(p, x) for x in (FRIEND, MEMBER, STRANGER, None)] == [True, False, False, False]
    assert [may_read(p, x) for x in (FRIEND, MEMBER, STRANGER, None)] == [True, False, False, False]
    refusal = p.push_refusal(None, "a.txt", 1, need=1, free=10, busy=False)
    assert refusal is not None and refusal.code == ErrorCode.NOT_AUTHORIZED
    assert "no node id" in refusal.reason and "in no group" in refusal.reason
    grouped = policy(tmp_path, groups=LAB)
    assert [may_push(grouped, x) for x in (FRIEND, MEMBER, STRANGER, None)] == [
        True, True, False, False,
    ]  # fmt: skip
    assert [may_read(grouped, x) for x in (FRIEND, MEMBER, STRANGER, None)] == [
        True, True, False, False,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("trusted", [True, False, False, False]),
        ("any", [True, True, True, True]),
        ("none", [False, False, False, False]),
    ],
)
def test_accept_rules(tmp_path: Path, accept: str, expected: list[bool]) -> None:
    p = policy(tmp_path, accept=accept, groups=LAB)
    assert [may_push(p, x) for x in (FRIEND, MEMBER, STRANGER, None)] == expected


def test_share_to_rules(tmp_path: Path) -> None:
    for rule, expected in [("trusted", [True, False, False]), ("any", [True, True, True])]:
        p = policy(tmp_path, share_to=rule, groups=LAB)
        assert [may_read(p, x) for x in (FRIEND, MEMBER, None)] == expected


def test_prompt_asks_a_person_for_verified_peers_only(tmp_path: Path) -> None:
    p = policy(tmp_path, accept="prompt")
    assert p.authorization(FRIEND) is None
    assert p.authorization(STRANGER) == PROMPT and p.authorization(MEMBER) == PROMPT
    assert isinstance(p.authorization(None), Refusal)
    assert may_push(p, STRANGER)  # the limits pass: the person decides


def test_claiming_an_allowed_id_is_worthless(tmp_path: Path) -> None:
    """Before: `--accept ids` trusted the id a hello claimed. Only a PeerAuth (made by the
    connection's proof) counts; the policy has no way to take a claimed id at all."""
    p = policy(tmp_path, accept="trusted")
    assert not may_push(p, None)
    assert may_push(p, FRIEND)


def test_limits_still_apply_and_pulls_skip_authorization(tmp_path: Path) -> None:
    p = policy(tmp_path, accept="any", max_size=10)
    big = p.push_refusal(FRIEND, "a.txt", 11, need=11, free=100, busy=False)
    assert big is not None and big.code == ErrorCode.TOO_LARGE
    assert (
        policy(tmp_path).push_refusal(None, "a", 1, need=1, free=9, busy=False, asked=True) is None
    )


def test_trust_store_persists_atomically_with_mode_0600(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    assert FRIEND.node_id not in store
    store.trust(FRIEND.node_id, "desk", "paired")
    store.trust(STRANGER.node_id, "x")
    assert stat.S_IMODE(os.stat(tmp_path / "trusted.json").st_mode) == 0o600
    again = TrustStore(tmp_path)
    assert FRIEND.node_id in again and again.get(FRIEND.node_id).how == "paired"  # type: ignore[union-attr]
    assert again.untrust(STRANGER.node_id) and not again.untrust(STRANGER.node_id)
    assert [t["node"] for t in TrustStore(tmp_path).list_json()] == [FRIEND.node_id]
    assert [p.name for p in tmp_path.iterdir()] == ["trusted.json"]  # no temp file left
    with pytest.raises(ValueError):
        store.trust("not-an-id")


def test_a_damaged_trust_store_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    (tmp_path / "trusted.json").write_text(json.dumps({"peers": [{"node": "xyz"}]}))
    with pytest.raises(ConfigError, match="damaged"):
        TrustStore(tmp_path)
    (tmp_path / "trusted.json").write_text("{")
    with pytest.raises(ConfigError, match="damaged"):
        TrustStore(tmp_path)
