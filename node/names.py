"""File names on the wire: the one rule set every node applies (docs/protocol.md 2.8).

Pure: no disk, no clock. The store applies it before creating anything in the inbox, the share
scanner before listing a file, and a client before trusting a name a peer sent.

A name is a *relative path*: components joined by "/". It must be storable, unchanged and
unambiguous, on every system mole runs on (Linux, macOS, Windows), and it must look like what
it is when a person reads it. So, after NFC normalisation, a name is refused when:

- it is empty, absolute ("/x"), longer than 1024 UTF-8 bytes, or has a component that is empty,
  "." or "..", longer than 255 UTF-8 bytes, ends with "." or " " (Windows drops them, so two
  names would become one), is ".mole" in any case (the node's own directory), or is a Windows
  device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9, COM¹²³, LPT¹²³, CONIN$, CONOUT$) with or
  without an extension;
- it contains a character Windows cannot store (\\ < > : " | ? *) or any control character
  (C0, DEL, C1);
- it contains a character that is invisible or lies about what the name is: every Unicode
  format character (general category Cf: bidi controls that reorder "photo<RLO>gpj.exe" into
  "photoexe.jpg", zero-width spaces and joiners), line and paragraph separators, spaces other
  than U+0020 and U+3000, private-use characters and lone surrogates, the letters that render
  as nothing (Hangul fillers: "invoice.pdf\\u3164.exe" looks like "invoice.pdf .exe"), and
  characters that look like "/" or "\\" ("..∕..∕etc∕passwd" with U+2215 reads as a path).
  One exception keeps emoji names working: U+200D ZERO WIDTH JOINER between two symbols
  (category So, optionally followed by a variation selector), as in family emoji.

Limits are in UTF-8 bytes, not characters, because file systems count bytes.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from node.errors import BadName

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_DEPTH",
    "MAX_NAME_BYTES",
    "MOLE_DIR",
    "check_child",
    "check_depth",
    "check_name",
    "is_valid_name",
    "numbered",
]

MAX_NAME_BYTES: Final = 1024
MAX_COMPONENT_BYTES: Final = 255
# Receiver policy, not a rule of every name (docs/protocol.md 2.8): a received name creates one
# directory per component but the last, so a 1-byte file named a/b/c/.../z could otherwise
# cost hundreds of directories (inodes). Deeper names are still valid names: a node may list
# them, and a receiver with a higher limit may store them.
MAX_DEPTH: Final = 32
MOLE_DIR: Final = ".mole"

_WINDOWS_FORBIDDEN: Final = frozenset('\\<>:"|?*')
# Any ASCII character _check_char refuses: an ASCII name without one skips the per-character
# loop (a batch checks every one of its thousands of names, twice).
_BAD_ASCII: Final = re.compile(
    "[\x00-\x1f\x7f" + re.escape("".join(sorted(_WINDOWS_FORBIDDEN))) + "]"
)
_RESERVED: Final = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{p}{d}" for p in ("com", "lpt") for d in "123456789\u00b9\u00b2\u00b3"]
)
# Characters that render as a slash or backslash but are not one: a name holding them would
# read as a path it is not.
_SLASH_LOOKALIKES: Final = frozenset(
    "\u2044\u2215\u29f8\u29f5\u29f9\u2216\ufe68\uff0f\uff3c\u1735\u2cf9\u2cfa\u3033\u30ce\u31d3"
)
# Letters (category Lo/Mn) that render as nothing.
_INVISIBLE_LETTERS: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5")
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ALLOWED_SPACES: Final = frozenset(" \u3000")
_ZWJ: Final = "\u200d"
_VARIATION: Final = frozenset("\ufe0e\ufe0f")
_MULTI_EXT: Final = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tar.lz", ".tar.br")


def check_name(name: object) -> str:
    """Return the NFC form of `name`, or raise BadName saying which rule it breaks."""
    if not isinstance(name, str):
        raise BadName(f"name must be a string, not {type(name).__name__}")
    if not name:
        raise BadName("name is empty")
    if name.isascii():
        norm = name
        if _BAD_ASCII.search(name) is not None:
            for i, ch in enumerate(norm):
                _check_char(norm, i, ch, name)
    else:
        norm = unicodedata.normalize("NFC", _no_surrogates(name))
        for i, ch in enumerate(norm):
            _check_char(norm, i, ch, name)
    if norm.startswith("/"):
        raise BadName(f"name {name!r} is an absolute path")
    total = len(norm.encode("utf-8"))
    if total > MAX_NAME_BYTES:
        raise BadName(f"name is {total} bytes long, the limit is {MAX_NAME_BYTES}")
    for part in norm.split("/"):
        _check_component(part, name)
    return norm


def check_child(parent_bytes: int, component: str) -> int:
    """check_name(parent + "/" + component) for a `parent` check_name() accepted already, at
    the cost of the component alone (a tree walk checks every entry this way).

    `parent_bytes`: the parent's length in UTF-8 bytes after NFC (0: no parent). Returns the
    child's. Equivalent because NFC never reaches across "/": it is a starter that composes
    with nothing, so NFC(parent/component) == NFC(parent)/NFC(component), and every other
    rule is per character or per component (a ZWJ next to "/" joins nothing either way)."""
    if "/" in component:
        raise BadName(f"component {component!r} contains '/'")
    size = len(check_name(component).encode("utf-8"))
    total = parent_bytes + 1 + size if parent_bytes else size
    if total > MAX_NAME_BYTES:
        raise BadName(f"name is {total} bytes long, the limit is {MAX_NAME_BYTES}")
    return total


def check_depth(name: str, limit: int = MAX_DEPTH) -> str:
    """Return `name` (a checked name) if it has at most `limit` components, else raise BadName
    naming the limit. The receiver's policy on how deep it lets a peer nest directories."""
    depth = name.count("/") + 1
    if depth > limit:
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise BadName(f"name {shown!r} has {depth} components, this node stores at most {limit}")
    return name


def is_valid_name(name: object) -> bool:
    try:
        check_name(name)
    except BadName:
        return False
    return True


def _no_surrogates(name: str) -> str:
    for ch in name:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise BadName(f"name {name!r} is not valid Unicode (lone surrogate U+{ord(ch):04X})")
    return name


def _check_char(norm: str, i: int, ch: str, name: str) -> None:
    o = ord(ch)
    if o < 0x80:
        if o == 0:
            raise BadName(f"name {name!r} contains a NUL character")
        if o < 0x20 or o == 0x7F:
            raise BadName(f"name {name!r} contains control character U+{o:04X}")
        if ch in _WINDOWS_FORBIDDEN:
            what = "a backslash" if ch == "\\" else f"{ch!r}"
            raise BadName(f"name {name!r} contains {what}, which Windows cannot store")
        return
    cat = unicodedata.category(ch)
    if cat == "Cc":
        raise BadName(f"name {name!r} contains control character U+{o:04X}")
    if cat == "Cs":
        raise BadName(f"name {name!r} is not valid Unicode (lone surrogate U+{o:04X})")
    if cat == "Cf":
        if ch == _ZWJ and _joins_symbols(norm, i):
            return
        if ch in _BIDI:
            raise BadName(f"name {name!r} contains bidirectional control U+{o:04X}")
        raise BadName(f"name {name!r} contains invisible format character U+{o:04X}")
    if cat in ("Zl", "Zp"):
        raise BadName(f"name {name!r} contains line/paragraph separator U+{o:04X}")
    if cat == "Zs" and ch not in _ALLOWED_SPACES:
        raise BadName(f"name {name!r} contains U+{o:04X}, a space that is not U+0020")
    if cat == "Co":
        raise BadName(f"name {name!r} contains private-use character U+{o:04X}")
    if ch in _INVISIBLE_LETTERS:
        raise BadName(f"name {name!r} contains U+{o:04X}, which renders as nothing")
    if ch in _SLASH_LOOKALIKES:
        raise BadName(f"name {name!r} contains U+{o:04X}, which looks like a slash")


def _joins_symbols(norm: str, i: int) -> bool:
    """A ZWJ inside an emoji sequence: a symbol (So, maybe + variation selector) on each side."""
    j = i - 1
    if j >= 0 and norm[j] in _VARIATION:
        j -= 1
    if j < 0 or i + 1 >= len(norm):  # a ZWJ at either end joins nothing
        return False
    return unicodedata.category(norm[j]) == "So" and unicodedata.category(norm[i + 1]) == "So"


def _check_component(part: str, name: str) -> None:
    if not part:
        raise BadName(f"name {name!r} has an empty path component")
    if part in (".", ".."):
        raise BadName(f"name {name!r} has a {part!r} component")
    size = len(part.encode("utf-8"))
    if size > MAX_COMPONENT_BYTES:
        raise BadName(
            f"a component of {name[:40]!r}... is {size} bytes, the limit is {MAX_COMPONENT_BYTES}"
        )
    if part[-1] in ". ":
        raise BadName(
            f"component {part!r} of {name!r} ends with a dot or a space (Windows drops them)"
        )
    if part.casefold() == MOLE_DIR:
        raise BadName(f"name {name!r} uses the reserved directory {MOLE_DIR!r}")
    stem = part.split(".", 1)[0].rstrip(" ").casefold()
    if stem in _RESERVED:
        raise BadName(f"component {part!r} of {name!r} is a reserved Windows device name")


def numbered(name: str, n: int) -> str:
    """'dir/photo.jpg', 3 -> 'dir/photo (3).jpg': the receiver's name for the n-th file that
    arrives under a name already taken by other content. ".tar.gz" and the like stay whole;
    the stem is shortened to keep the component within MAX_COMPONENT_BYTES."""
    head, _, base = name.rpartition("/")
    lower = base.lower()
    ext = next((e for e in _MULTI_EXT if lower.endswith(e) and len(base) > len(e)), "")
    if not ext:
        dot = base.rfind(".")
        ext = base[dot:] if dot > 0 else ""
    stem = base[: len(base) - len(ext)]
    tag = f" ({n})"
    room = MAX_COMPONENT_BYTES - len((tag + ext).encode("utf-8"))
    while len(stem.encode("utf-8")) > room:
        stem = stem[:-1]
    base = f"{stem.rstrip(' .')}{tag}{ext}"
    return f"{head}/{base}" if head else base
