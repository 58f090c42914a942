"""Which peer a name means when several announce it (a squatter on a hostile LAN)."""

from __future__ import annotations

import pytest

from node.discovery import Peer
from node.errors import NotFound
from node.peers import Peers

REAL = "a" * 64
SQUATTER = "b" * 64
OTHER = "c" * 64


def peers_of(*table: Peer) -> Peers:
    p = Peers("f" * 64, missed=3, clock=lambda: 0.0, on_change=lambda e: None)
    p.table.peers = lambda: list(table)  # type: ignore[method-assign]
    return p


def peer(node: str, name: str, groups: tuple[str, ...] = ()) -> Peer:
    return Peer(node, name, "10.0.0.1", 47101, groups, 0.0, False)


def test_a_stranger_squatting_a_group_members_name_does_not_take_it() -> None:
    # Before: two peers named "desk" made the name unusable ("peer unknown: desk"), so a
    # stranger announcing a member's name denied name-based sends to that member.
    p = peers_of(peer(SQUATTER, "desk"), peer(REAL, "desk", ("home",)))
    assert p.resolve("desk").node == REAL


def test_an_ambiguous_name_is_refused_and_says_so() -> None:
    p = peers_of(peer(SQUATTER, "desk"), peer(REAL, "desk"), peer(OTHER, "laptop"))
    with pytest.raises(NotFound, match=r"peer name is ambiguous: 2 peers announce 'desk' "):
        p.resolve("desk")
    # two members of our groups announcing one name: nobody is picked either
    p = peers_of(peer(SQUATTER, "desk", ("home",)), peer(REAL, "desk", ("home",)))
    with pytest.raises(NotFound, match=r"\(ids aaaaaaaaaaaa, bbbbbbbbbbbb\)"):
        p.resolve("desk")
    assert p.resolve(REAL).node == REAL  # the id always works
    assert p.resolve("bbbb").node == SQUATTER  # so does a unique id prefix


def test_unknown_and_unique_names_are_as_before() -> None:
    p = peers_of(peer(REAL, "desk"), peer(OTHER, "laptop"))
    assert p.resolve("laptop").node == OTHER
    with pytest.raises(NotFound, match=r"^peer unknown: nas$"):
        p.resolve("nas")


def test_the_cli_passes_the_ambiguity_on() -> None:
    from node.apiclient import ApiFailure
    from node.cli import explain

    msg = "peer name is ambiguous: 2 peers announce 'desk' (ids aaaa, bbbb); name one by its id"
    assert str(explain(ApiFailure(404, "unknown_peer", msg), peer="desk")) == msg
    plain = ApiFailure(404, "unknown_peer", "peer unknown: desk")
    assert str(explain(plain, peer="desk")) == "peer unknown: desk"
