"""Text a peer controls, made safe to print on a terminal.

Pure. Peer names, file names, error reasons and event fields come from other machines. Written
raw, an ESC sequence in one could retitle the terminal, clear it, move the cursor over earlier
output, or write the user's clipboard (OSC 52); C1 controls (U+0080-U+009F) do the same on
terminals that honour them; bidi controls make "photo<U+202E>gpj.exe" read as "photoexe.jpg".

`safe_text` replaces each such character with a visible escape: C0 controls, DEL and C1 as
`\\xNN` (ESC -> `\\x1b`, a newline -> `\\x0a`), bidi controls as `\\uNNNN` (U+202E -> `\\u202e`).
Everything else, other scripts and emoji included, is kept. `safe_json` does the same inside
JSON text using JSON's own `\\uNNNN` escapes, so the output stays valid, equal JSON.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["UNSAFE", "safe_json", "safe_text"]

# C0, DEL, C1; ALM; LRM, RLM; LRE, RLE, PDF, LRO, RLO; LRI, RLI, FSI, PDI.
UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(value: object) -> str:
    """`str(value)` with every control and bidi character replaced by a visible escape."""
    return UNSAFE.sub(_visible, str(value))


def safe_json(text: str) -> str:
    """JSON text with those characters as `\\u00NN` escapes: still valid JSON, same value.

    They can only occur inside string literals (JSON's own syntax is ASCII and its whitespace
    is space, tab, CR and LF), so the indentation's newlines are kept and nothing else changes
    meaning. json.dumps already escapes C0 in strings; this catches DEL, C1 and bidi, which it
    writes raw when ensure_ascii is off.
    """
    return re.sub(
        "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]",
        lambda m: f"\\u{ord(m.group()):04x}",
        text,
    )
