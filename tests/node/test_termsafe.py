"""node/termsafe.py: what a peer controls is printed with visible escapes, never acted on."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.termsafe import UNSAFE, safe_json, safe_text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain name.txt", "plain name.txt"),
        ("caf\u00e9 \u65e5\u672c \U0001f600", "caf\u00e9 \u65e5\u672c \U0001f600"),  # kept
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC 0: retitle the terminal
        ("\x1b]52;c;ZXZpbA==\x07", "\\x1b]52;c;ZXZpbA==\\x07"),  # OSC 52: write the clipboard
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # CSI: clear the screen, cursor home
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("\x9d0;t\x9c", "\\x9d0;t\\x9c"),  # C1 OSC ... ST
        ("a\rb\nc\td\x00e\x7f", "a\\x0db\\x0ac\\x09d\\x00e\\x7f"),
        ("photo\u202egpj.exe", "photo\\u202egpj.exe"),  # RLO
        ("\u2066x\u2069\u200e\u200f\u061c", "\\u2066x\\u2069\\u200e\\u200f\\u061c"),
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
    ],
)
def test_safe_text(raw: str, shown: str) -> None:
    assert safe_text(raw) == shown


def test_safe_text_takes_any_value() -> None:
    assert safe_text(None) == "None"
    assert safe_text(12) == "12"


@given(st.text())
def test_safe_text_leaves_nothing_unsafe_and_is_idempotent(text: str) -> None:
    shown = safe_text(text)
    assert UNSAFE.search(shown) is None
    assert safe_text(shown) == shown


@given(st.text(alphabet=st.characters(blacklist_characters="\\")))
def test_safe_text_only_touches_the_unsafe(text: str) -> None:
    if UNSAFE.search(text) is None:
        assert safe_text(text) == text


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(JSONISH, st.sampled_from([None, 2]))
def test_safe_json_is_the_same_json(value: object, indent: int | None) -> None:
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    safe = safe_json(text)
    assert json.loads(safe) == value
    assert UNSAFE.search(safe.replace("\n", "")) is None


def test_safe_json_escapes_what_json_dumps_leaves_raw() -> None:
    text = json.dumps({"name": "a\x7fb\x9bc\u202ed\x1b"}, ensure_ascii=False)
    assert safe_json(text) == '{"name": "a\\u007fb\\u009bc\\u202ed\\u001b"}'
