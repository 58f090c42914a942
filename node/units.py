"""Sizes and rates as people type them: the one unit table of the node, the lab and the benches.

Pure (no I/O). Before this module three parsers disagreed ("MB" was MiB in the node and
10^6 bytes in the scenarios); every size, byte rate and link rate is now read here.

| written | means | as in |
|---|---|---|
| `1024`, `1024B` | bytes | |
| `K` `M` `G` `T` `P` | 1024^n bytes (binary) | `ls -h`, `dd`, `--max-rate 20M` |
| `Ki` `Mi` ... / `KiB` `MiB` `GiB` `TiB` `PiB` | 1024^n bytes (IEC binary) | |
| `kB` `MB` `GB` `TB` `PB` | 1000^n bytes (SI decimal) | disk vendors |
| `bit` `kbit` `mbit` `gbit` `tbit` | 1000^n bits | `tc` |
| `kibit` `mibit` `gibit` `tibit` | 1024^n bits | `tc` |

- Letters are case-insensitive (`mib` = `MiB`, `kb` = `KB` = `kB`); what makes a unit binary
  is the `i`, or a prefix letter standing alone (`K`). `b` is always *bytes*: bits are only ever
  spelled `bit`.
- Fractions are allowed (`1.5GiB`); the result is rounded down to a whole byte (or bit).
  A fraction of the smallest unit (`1.5`, `1.5B`, `1.5bit`) is refused: it is a mistake.
- Rates: `parse_rate` (bytes/s) takes a size with an optional `/s` (`20MiB/s`, `20M`) or a bit
  rate (`100mbit`, divided by 8); `parse_bitrate` (bits/s, for link shaping) takes only bit
  units or a bare number of bits, as `tc` does. `kbps`/`Mbps` are refused everywhere: `tc`
  reads them as *bytes*/s, everyone else as bits/s.
- No sign, no exponent, no thousands separators; at most 64 characters.
"""

from __future__ import annotations

import argparse
import re
from typing import Final

__all__ = [
    "UnitError",
    "format_bitrate",
    "format_rate",
    "format_size",
    "parse_bitrate",
    "parse_rate",
    "parse_size",
    "rate_argument",
    "size_argument",
]

MAX_TEXT: Final = 64

_PREFIXES: Final = "kmgtp"
# Byte units, keyed by the lower-cased unit text.
BYTE_UNITS: Final[dict[str, int]] = {"": 1, "b": 1}
for _n, _p in enumerate(_PREFIXES, start=1):
    BYTE_UNITS[_p] = 1024**_n
    BYTE_UNITS[f"{_p}i"] = 1024**_n
    BYTE_UNITS[f"{_p}ib"] = 1024**_n
    BYTE_UNITS[f"{_p}b"] = 1000**_n
# Bit units (as tc spells them), keyed likewise.
BIT_UNITS: Final[dict[str, int]] = {"bit": 1}
for _n, _p in enumerate(_PREFIXES[:4], start=1):
    BIT_UNITS[f"{_p}bit"] = 1000**_n
    BIT_UNITS[f"{_p}ibit"] = 1024**_n

# ASCII only: \d would also take other scripts' digits, which Fraction() then reads.
_NUMBER: Final = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*(/\s*s)?\s*", re.ASCII | re.I)
_AMBIGUOUS: Final = re.compile(r"[kmgt]?i?bps", re.IGNORECASE)

_SIZE_HINT: Final = "want e.g. 4096, 64KiB, 10MiB, 1.5GiB (binary), 2MB (decimal), 4k (binary)"
_RATE_HINT: Final = "want e.g. 20MiB/s, 20M, 2.5MB/s or 100mbit"
_BITRATE_HINT: Final = "want e.g. 64000, 500kbit, 10mbit or 1gbit (bits per second, as tc)"
_IEC: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


class UnitError(ValueError):
    """Text that is not a size or rate; the message quotes it and says what was expected."""


def _split(text: str, what: str, hint: str) -> tuple[tuple[int, int], str, bool]:
    """`text` -> ((numerator, denominator), lower-cased unit, had "/s"); UnitError naming `what`
    otherwise. Exact integers rather than Fraction: importing fractions (and decimal) would cost
    every idle node half a MiB."""
    shown = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."
    if len(text) > MAX_TEXT:
        raise UnitError(f"bad {what} {shown!r}: longer than {MAX_TEXT} characters")
    if not text.strip():
        raise UnitError(f"bad {what} {text!r}: empty; {hint}")
    if text.strip().startswith("-"):
        raise UnitError(f"bad {what} {text!r}: negative")
    m = _NUMBER.fullmatch(text)
    if m is None:
        raise UnitError(f"bad {what} {text!r}: {hint}")
    whole, _, frac = m.group(1).partition(".")
    number = (int(whole or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))
    return number, m.group(2).lower(), m.group(3) is not None


def _whole(value: tuple[int, int], unit: int, text: str, what: str, of: str) -> int:
    num, den = value
    if unit == 1 and num % den:
        raise UnitError(f"bad {what} {text!r}: not a whole number of {of}")
    return num * unit // den  # rounds down


def _unknown(text: str, unit: str, what: str, hint: str) -> UnitError:
    if _AMBIGUOUS.fullmatch(unit):
        return UnitError(
            f"bad {what} {text!r}: {unit!r} is ambiguous (tc reads it as bytes/s, most tools as "
            "bits/s); write e.g. 10mbit for bits/s or 10MB/s for bytes/s"
        )
    return UnitError(f"bad {what} {text!r}: unknown unit {unit!r}; {hint}")


def parse_size(text: str) -> int:
    """A size in bytes: "4096", "64KiB", "10 MiB", "1.5GiB", "2MB" (decimal), "4k" (binary)."""
    value, unit, per_second = _split(text, "size", _SIZE_HINT)
    if per_second:
        raise UnitError(f"bad size {text!r}: a size has no /s; {_SIZE_HINT}")
    if unit not in BYTE_UNITS:
        if unit in BIT_UNITS:
            raise UnitError(f"bad size {text!r}: sizes are in bytes, not bits; {_SIZE_HINT}")
        raise _unknown(text, unit, "size", _SIZE_HINT)
    return _whole(value, BYTE_UNITS[unit], text, "size", "bytes")


def parse_rate(text: str) -> int:
    """A rate in bytes/s: "20MiB/s", "20M", "2.5MB/s", "1048576", or bits: "100mbit" (/ 8)."""
    value, unit, _ = _split(text, "rate", _RATE_HINT)
    if unit in BYTE_UNITS:
        return _whole(value, BYTE_UNITS[unit], text, "rate", "bytes")
    if unit in BIT_UNITS:
        bits = _whole(value, BIT_UNITS[unit], text, "rate", "bits")
        return bits // 8
    raise _unknown(text, unit, "rate", _RATE_HINT)


def parse_bitrate(text: str) -> int:
    """A link rate in bits/s, as tc reads it: "10mbit", "500kbit", "1gbit", "64000" (bits)."""
    value, unit, _ = _split(text, "bit rate", _BITRATE_HINT)
    if unit == "":
        unit = "bit"  # tc: a bare number is bits per second
    if unit not in BIT_UNITS:
        if unit in BYTE_UNITS:
            raise UnitError(
                f"bad bit rate {text!r}: {unit!r} is bytes; a link rate is in bits "
                f"({_BITRATE_HINT})"
            )
        raise _unknown(text, unit, "bit rate", _BITRATE_HINT)
    return _whole(value, BIT_UNITS[unit], text, "bit rate", "bits")


def format_size(n: float) -> str:
    """Bytes for people, IEC: "1000 B", "1.0 KiB", "1.5 MiB", "10.0 GiB" (one decimal)."""
    value = float(n)
    for unit in _IEC:
        if abs(value) < 1024 or unit == _IEC[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """Bytes/s for people: "500 B/s", "1.2 MiB/s"."""
    return f"{format_size(bytes_per_second)}/s"


def format_bitrate(bits_per_second: int) -> str:
    """Bits/s as tc writes them, exact: "10mbit", "1500kbit", "64001bit"."""
    for unit, k in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits_per_second >= k and bits_per_second % k == 0:
            return f"{bits_per_second // k}{unit}"
    return f"{bits_per_second}bit"


def size_argument(text: str) -> int:
    """`type=` for argparse options that take a size: the refusal keeps its reason (argparse
    reports a plain ValueError as "invalid value" without it)."""
    try:
        return parse_size(text)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def rate_argument(text: str) -> int:
    """`type=` for argparse options that take a rate in bytes/s (see size_argument)."""
    try:
        return parse_rate(text)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
