"""Offers waiting for a person (node/offers.py): bounded, timed, decided once."""

from __future__ import annotations

from node.offers import MAX_NAMES_SHOWN, MAX_PENDING, MAX_PER_PEER, PendingOffers, batch_summary

FILES = [{"name": "a.txt", "size": 3, "sha256": "ab" * 32}]


def test_accept_reject_and_expiry_each_decide_once() -> None:
    book = PendingOffers(timeout=60.0)
    said: list[tuple[str, bool, str]] = []
    a = book.add("p" * 64, "desk", FILES, 0.0, lambda ok, why: said.append(("a", ok, why)))
    b = book.add("p" * 64, "desk", FILES, 1.0, lambda ok, why: said.append(("b", ok, why)))
    c = book.add("q" * 64, "", FILES, 2.0, lambda ok, why: said.append(("c", ok, why)))
    assert a and b and c
    assert [o["id"] for o in book.list_json(3.0)] == [a.id, b.id, c.id]
    assert book.list_json(3.0)[0]["expires_in"] == 57.0
    assert book.decide(a.id, True, 3.0) is a and a.state == "accepted"
    assert book.decide(a.id, False, 3.0) is None  # decided once
    assert book.decide(b.id, False, 4.0) is b and b.state == "rejected"
    assert book.next_deadline() == 62.0
    assert book.expire(62.0) == [c] and c.state == "expired"
    assert [(w, ok) for w, ok, _ in said] == [("a", True), ("b", False), ("c", False)]
    assert "within 60 s" in said[2][2] and len(book) == 0


def test_the_book_is_bounded_overall_and_per_peer() -> None:
    book = PendingOffers(timeout=60.0)
    assert all(book.add("p" * 64, "", FILES, 0.0) for _ in range(MAX_PER_PEER))
    assert book.add("p" * 64, "", FILES, 0.0) is None
    for i in range(MAX_PENDING - MAX_PER_PEER):
        assert book.add(f"{i:064x}", "", FILES, 0.0) is not None
    assert book.add("r" * 64, "", FILES, 0.0) is None and len(book) == MAX_PENDING


def test_a_withdrawn_offer_is_gone_without_a_decision() -> None:
    book = PendingOffers(timeout=60.0)
    said: list[bool] = []
    a = book.add("p" * 64, "", FILES, 0.0, lambda ok, why: said.append(ok))
    assert a is not None
    book.withdraw(a.id)
    assert book.expire(100.0) == [] and said == [] and book.list_json(0.0) == []


def test_a_batch_is_one_offer_of_its_top_level_names_and_totals() -> None:
    sha = "ab" * 32
    entries = [
        ("a.txt", 3, "file", sha),
        ("pics/x.jpg", 100, "file", sha),
        ("pics/sub/y.jpg", 50, "file", sha),
        ("pics/empty", 0, "dir", ""),
        ("void", 0, "dir", ""),
        ("z.txt", 0, "file", sha),
    ]
    files, totals = batch_summary(entries)
    assert totals == {"files": 4, "size": 153, "names": 4}
    assert files == [
        {"name": "a.txt", "kind": "file", "size": 3, "files": 1, "sha256": sha},
        {"name": "pics", "kind": "dir", "size": 150, "files": 2},
        {"name": "void", "kind": "dir", "size": 0, "files": 0},
        {"name": "z.txt", "kind": "file", "size": 0, "files": 1, "sha256": sha},
    ]
    book = PendingOffers(timeout=60.0)
    offer = book.add("p" * 64, "desk", files, 0.0, batch=totals)
    assert offer is not None and offer.to_json(0.0)["batch"] == totals
    assert "batch" not in (book.add("p" * 64, "", FILES, 0.0) or offer).to_json()
    many = [(f"f{i:05}", 1, "file", sha) for i in range(MAX_NAMES_SHOWN + 7)]
    files, totals = batch_summary(many)
    assert len(files) == MAX_NAMES_SHOWN and totals["names"] == MAX_NAMES_SHOWN + 7
