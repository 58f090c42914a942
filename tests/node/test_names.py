"""Hostile-name corpus for names.check_name: every entry refused with a message that says why.

Policy decisions pinned here (docs/protocol.md 2.8, node/names.py):
- bidirectional controls (U+202E etc.) are refused: "photo\u202egpj.exe" displays as
  "photoexe.jpg"; so is every other format character (zero-width spaces and joiners), except a
  ZWJ between two symbols (emoji sequences).
- C1 controls (U+0080-U+009F) and U+2028/U+2029 are refused like C0 controls.
- '.mole' is refused as any component, in any letter case (case-insensitive file systems).
- A name must be storable on every system: the characters Windows forbids (\\ < > : " | ? *)
  are refused anywhere, so is a trailing dot or space, so are device names.
- Look-alikes are refused: slashes that are not "/", letters that render as nothing, spaces
  other than U+0020 and U+3000.
- Limits are UTF-8 bytes; names are returned NFC-normalized.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.names import check_name, numbered
from node.store import BadName, StoreError

# (name, substring the message must contain)
HOSTILE: list[tuple[str, str]] = [
    # absolute POSIX / UNC / Windows paths
    ("/etc/passwd", "absolute"),
    ("/", "absolute"),
    ("//server/share/x", "absolute"),
    ("C:\\Windows\\system32\\x.dll", "':'"),
    ("C:/Windows/x.dll", "':'"),
    ("c:x.txt", "':'"),
    ("Z:", "':'"),
    ("\\\\server\\share", "backslash"),
    # '..' and '.' in every position
    ("..", "'..'"),
    ("../x", "'..'"),
    ("a/..", "'..'"),
    ("a/../b", "'..'"),
    ("a/b/../../../etc/passwd", "'..'"),
    (".", "'.'"),
    ("./x", "'.'"),
    ("a/./b", "'.'"),
    ("a/.", "'.'"),
    # backslashes
    ("..\\x", "backslash"),
    ("a\\b", "backslash"),
    ("x\\", "backslash"),
    # empty components
    ("", "empty"),
    ("a//b", "empty path component"),
    ("a/", "empty path component"),
    ("a/b/", "empty path component"),
    # NUL and control characters
    ("a\x00b", "NUL"),
    ("x.txt\x00.jpg", "NUL"),
    ("a\nb", "U+000A"),
    ("a\rb", "U+000D"),
    ("a\tb", "U+0009"),
    ("\x1b[31mred", "U+001B"),
    ("del\x7f", "U+007F"),
    ("c1\x9bcsi", "U+009B"),
    ("line\u2028sep", "separator"),
    ("para\u2029sep", "separator"),
    # unicode oddities
    ("photo\u202egpj.exe", "bidirectional"),
    ("a\u202db", "bidirectional"),
    ("a\u2066b\u2069", "bidirectional"),
    ("rlm\u200f.txt", "bidirectional"),
    ("lone\ud800surrogate", "surrogate"),
    ("esc\udcffaped", "surrogate"),
    # over-long
    ("a" * 256, "255"),
    ("é" * 128, "255"),  # 256 UTF-8 bytes in 128 characters
    ("d/" + "x" * 256, "255"),
    ("/".join(["a" * 200] * 6), "1024"),
    ("a/" * 600 + "a", "1024"),
    # Windows reserved device names, any case, any extension, any position
    ("CON", "reserved"),
    ("con", "reserved"),
    ("Con.txt", "reserved"),
    ("prn.tar.gz", "reserved"),
    ("AUX", "reserved"),
    ("nul.json", "reserved"),
    ("COM1", "reserved"),
    ("com9.log", "reserved"),
    ("LPT1", "reserved"),
    ("lpt9.txt", "reserved"),
    ("COM\u00b9", "reserved"),
    ("CONIN$", "reserved"),
    ("dir/CON", "reserved"),
    ("CON/file.txt", "reserved"),
    ("nul .txt", "reserved"),
    # characters Windows cannot store
    ("a:b", "':'"),
    ("dir/C:", "':'"),
    ("what?.txt", "'?'"),
    ("star*.txt", "'*'"),
    ("a<b>c", "'<'"),
    ('say "hi"', "'\"'"),
    ("pipe|x", "'|'"),
    # look-alikes and invisible characters
    ("..\u2215..\u2215etc\u2215passwd", "slash"),
    ("a\u2044b", "slash"),
    ("a\uff0fb", "slash"),
    ("a\uff3cb", "slash"),
    ("invoice.pdf\u3164.exe", "renders as nothing"),
    ("a\u115fb", "renders as nothing"),
    ("zero\u200bwidth", "invisible"),
    ("zw\u200cnj", "invisible"),
    ("bom\ufeff.txt", "invisible"),
    ("soft\u00adhyphen", "invisible"),
    ("lonely\u200djoiner", "invisible"),
    ("nbsp\u00a0.txt", "space"),
    ("thin\u2009space", "space"),
    ("pua\ue000.txt", "private-use"),
    # trailing dots and spaces
    ("name.", "dot or a space"),
    ("name ", "dot or a space"),
    ("dir./x", "dot or a space"),
    ("dir /x", "dot or a space"),
    ("...", "dot or a space"),
    ("x. . .", "dot or a space"),
    # the store's own directory
    (".mole", ".mole"),
    (".mole/parts/x.part", ".mole"),
    (".MOLE/x", ".mole"),
    ("sub/.mole", ".mole"),
]

GOOD: list[str] = [
    "a.txt",
    "README",
    "dir/sub/file.bin",
    "photo (1).jpg",
    "résumé.pdf",
    "日本語/ファイル.txt",
    "emoji 😀.png",
    "family 👨\u200d👩\u200d👧.txt",  # ZWJ sequence
    ".bashrc",
    "dir/.hidden",
    "..foo",
    "foo..bar",
    " leading space",
    "emoji \u2764\ufe0f\u200d\U0001f525.png",  # ZWJ after a variation selector
    "全角\u3000スペース.txt",  # the ideographic space is a visible space
    "COM10",
    "CONSOLE.txt",
    "lpt0.txt",
    "nul_file",
    "x" * 255,
    "/".join(["a" * 200] * 5),
    "-rf",
    "$HOME",
    "a" * 250 + ".txt",
]


@pytest.mark.parametrize(("name", "why"), HOSTILE, ids=[repr(n)[:40] for n, _ in HOSTILE])
def test_hostile_name_refused(name: str, why: str) -> None:
    with pytest.raises(BadName) as info:
        check_name(name)
    assert why in str(info.value)
    assert info.value.code == "bad_name"


@pytest.mark.parametrize("name", GOOD, ids=[repr(n)[:40] for n in GOOD])
def test_good_name_accepted(name: str) -> None:
    assert check_name(name) == unicodedata.normalize("NFC", name)


def test_bad_name_is_a_store_error_with_code() -> None:
    # One `except StoreError` in the node catches refused names too.
    with pytest.raises(StoreError) as info:
        check_name("../x")
    assert info.value.code == "bad_name"


def test_non_string_refused() -> None:
    with pytest.raises(BadName, match="string"):
        check_name(b"x.txt")  # type: ignore[arg-type]


def test_nfc_normalization() -> None:
    decomposed = "re\u0301sume\u0301.pdf"
    assert check_name(decomposed) == "résumé.pdf"
    assert len(check_name(decomposed)) == len("résumé.pdf")


def test_limits_are_exact() -> None:
    assert check_name("x" * 255)
    with pytest.raises(BadName):
        check_name("x" * 256)
    long_ok = "/".join(["y" * 254] * 4) + "/" + "z" * 3  # 4*254 + 4 + 3 = 1023 bytes
    assert len(long_ok.encode()) == 1023
    assert check_name(long_ok + "z") == long_ok + "z"
    with pytest.raises(BadName, match="1024"):
        check_name(long_ok + "zz")


@given(st.text(min_size=1, max_size=60))
def test_accepted_names_are_safe(name: str) -> None:
    """Whatever is accepted is relative, has no traversal and no control characters."""
    try:
        out = check_name(name)
    except BadName as exc:
        assert str(exc)
        return
    assert not out.startswith("/")
    assert "\\" not in out and "\x00" not in out
    parts = out.split("/")
    assert all(p and p not in (".", "..") for p in parts)
    assert all(ord(c) >= 0x20 and c != "\x7f" for c in out)
    assert all(p.casefold() != ".mole" for p in parts)
    out.encode("utf-8")  # never a lone surrogate


@given(st.lists(st.sampled_from(["..", ".", "", "a", "b", "\\", "C:", "/"]), min_size=1))
def test_traversal_combinations(pieces: list[str]) -> None:
    name = "/".join(pieces)
    try:
        out = check_name(name)
    except BadName:
        return
    assert set(out.split("/")) <= {"a", "b"}


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("photo.jpg", 1, "photo (1).jpg"),
        ("dir/photo.jpg", 3, "dir/photo (3).jpg"),
        ("backup.tar.gz", 2, "backup (2).tar.gz"),
        (".gitkeep", 1, ".gitkeep (1)"),
        ("README", 4, "README (4)"),
        ("a" * 255, 1, "a" * 251 + " (1)"),
    ],
)
def test_numbered_names(name: str, n: int, expected: str) -> None:
    assert numbered(name, n) == expected
    assert check_name(numbered(name, n)) == expected
