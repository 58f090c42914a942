"""node/names.py additions for receivers and tree walks: check_child (check_name of a path one
component at a time) and check_depth (the receiver's depth limit)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import BadName
from node.names import MAX_DEPTH, MAX_NAME_BYTES, check_child, check_depth, check_name

# Characters that exercise NFC and the context rules near a "/": combining marks (one that
# composes with "=", one that composes with "e"), ZWJ between symbols, variation selectors,
# Hangul jamo that compose, and plain ones.
_ALPHABET = "ae=./ \u0301\u0338\u200d\ufe0f\U0001f468\U0001f469\u1100\u1161\u3164x"


def _accepted(name: str) -> bool:
    try:
        check_name(name)
    except BadName:
        return False
    return True


@given(
    st.text(alphabet=_ALPHABET, min_size=1, max_size=12),
    st.text(alphabet=_ALPHABET.replace("/", ""), min_size=1, max_size=12),  # a dir entry
)
def test_check_child_decides_like_check_name_of_the_whole_path(parent: str, comp: str) -> None:
    if not _accepted(parent):
        return
    parent_bytes = len(check_name(parent).encode("utf-8"))
    try:
        got = check_child(parent_bytes, comp)
    except BadName:
        assert not _accepted(parent + "/" + comp)
        return
    whole = check_name(parent + "/" + comp)
    assert got == len(whole.encode("utf-8"))
    assert whole == check_name(parent) + "/" + unicodedata.normalize("NFC", comp)


@pytest.mark.parametrize(
    "name", ["\U0001f468\u200d", "a/\U0001f468\u200d", "\u200d", "\u200d\U0001f468"]
)
def test_a_zwj_at_either_end_is_refused_not_a_crash(name: str) -> None:
    # It used to raise TypeError (unicodedata.category("")) on a peer's offer.
    with pytest.raises(BadName, match="U\\+200D"):
        check_name(name)


def test_check_child_counts_the_whole_length() -> None:
    parent = "/".join(["y" * 254] * 4)  # 1019 bytes
    assert check_child(1019, "zzz") == 1023
    assert check_child(1019, "zzzz") == MAX_NAME_BYTES
    with pytest.raises(BadName, match="1025 bytes"):
        check_child(1019, "zzzzz")
    with pytest.raises(BadName):
        check_name(parent + "/zzzzz")
    assert check_child(0, "top") == 3
    for bad in ("a/b", "..", "CON", "x\u202e"):
        with pytest.raises(BadName):
            check_child(0, bad)


def test_check_depth() -> None:
    ok = "/".join(["d"] * MAX_DEPTH)
    assert check_depth(ok) == ok
    with pytest.raises(BadName, match=f"has {MAX_DEPTH + 1} components.*at most {MAX_DEPTH}"):
        check_depth(ok + "/d")
    with pytest.raises(BadName, match="at most 1"):
        check_depth("a/b", 1)
    with pytest.raises(BadName) as info:
        check_depth("/".join(["long-component"] * 40))
    assert info.value.code == "bad_name" and "..." in str(info.value)
