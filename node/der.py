"""Minimal DER (X.690): an encoder for what a certificate needs and a strict, bounded decoder.

The decoder reads untrusted bytes (a peer's certificate), so it accepts only DER: definite
lengths in their shortest form, single-byte tags (numbers below 31, all X.509 needs),
primitive encodings of strings, SEQUENCE and SET constructed, at most `max_depth` nesting
levels and `max_size` input bytes. Anything else raises `DerError`, the only exception it
raises for bad input. Value accessors (`as_int`, `as_oid`, ...) apply the DER rules of their
type (minimal integers, BOOLEAN 0x00/0xFF, zero padding bits in a BIT STRING, ...).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Final

BOOLEAN: Final = 0x01
INTEGER: Final = 0x02
BIT_STRING: Final = 0x03
OCTET_STRING: Final = 0x04
NULL: Final = 0x05
OID: Final = 0x06
UTF8_STRING: Final = 0x0C
PRINTABLE_STRING: Final = 0x13
IA5_STRING: Final = 0x16
UTC_TIME: Final = 0x17
GENERALIZED_TIME: Final = 0x18
SEQUENCE: Final = 0x30
SET: Final = 0x31

CONSTRUCTED: Final = 0x20
_CLASS_MASK: Final = 0xC0
_CONTEXT: Final = 0x80
_PRINTABLE: Final = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")
_UTC_FORMAT: Final = re.compile(rb"[0-9]{12}Z")
_GENERALIZED_FORMAT: Final = re.compile(rb"[0-9]{14}Z")
_TIME_FIELDS: Final = ((0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2))  # YYYYMMDDHHMMSS


class DerError(ValueError):
    """Malformed, non-DER or oversized input; or a value of an unexpected type."""


# -- encoder ------------------------------------------------------------------------------------


def context_tag(number: int, *, constructed: bool = True) -> int:
    """The identifier octet of [number] (EXPLICIT tags and SEQUENCE-like IMPLICIT ones are
    constructed; IMPLICIT tags of primitive types are not)."""
    if not 0 <= number < 31:
        raise ValueError(f"context tag number {number} needs the high-tag form")
    return _CONTEXT | (CONSTRUCTED if constructed else 0) | number


def encode_length(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative length")
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    if not 0 <= tag <= 0xFF or tag & 0x1F == 0x1F:
        raise ValueError(f"tag {tag:#x} is not a single-byte tag")
    return bytes([tag]) + encode_length(len(content)) + content


def boolean(value: bool) -> bytes:
    return tlv(BOOLEAN, b"\xff" if value else b"\x00")


def integer(n: int) -> bytes:
    """INTEGER in minimal two's complement."""
    size = (n if n >= 0 else ~n).bit_length() // 8 + 1  # room for the sign bit
    return tlv(INTEGER, n.to_bytes(size, "big", signed=True))


def unsigned_integer(data: bytes) -> bytes:
    """The non-negative INTEGER whose big-endian magnitude is `data` (e.g. a serial number)."""
    return integer(int.from_bytes(data, "big"))


def bit_string(data: bytes, unused_bits: int = 0) -> bytes:
    if not 0 <= unused_bits <= 7 or (unused_bits and not data):
        raise ValueError(f"bad number of unused bits: {unused_bits}")
    if data and data[-1] & ((1 << unused_bits) - 1):
        raise ValueError("DER needs the unused bits of a BIT STRING to be zero")
    return tlv(BIT_STRING, bytes([unused_bits]) + data)


def octet_string(data: bytes) -> bytes:
    return tlv(OCTET_STRING, bytes(data))


def null() -> bytes:
    return b"\x05\x00"


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        raise ValueError(f"not an object identifier: {dotted!r}")
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(OID, bytes(out))


def utf8_string(text: str) -> bytes:
    return tlv(UTF8_STRING, text.encode("utf-8"))


def printable_string(text: str) -> bytes:
    if not _PRINTABLE.fullmatch(text):
        raise ValueError(f"not a PrintableString: {text!r}")
    return tlv(PRINTABLE_STRING, text.encode("ascii"))


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("DER times need an aware datetime")
    return when.astimezone(dt.UTC)


def utc_time(when: dt.datetime) -> bytes:
    when = _utc(when)
    if not 1950 <= when.year <= 2049:
        raise ValueError(f"UTCTime covers 1950-2049, not {when.year}")
    return tlv(UTC_TIME, when.strftime("%y%m%d%H%M%SZ").encode("ascii"))


def generalized_time(when: dt.datetime) -> bytes:
    when = _utc(when)
    return tlv(GENERALIZED_TIME, f"{when.year:04d}{when:%m%d%H%M%S}Z".encode("ascii"))


def x509_time(when: dt.datetime) -> bytes:
    """UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5)."""
    return utc_time(when) if _utc(when).year < 2050 else generalized_time(when)


def sequence(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """SET OF: DER orders the elements by their encodings."""
    return tlv(SET, b"".join(sorted(items)))


def explicit(number: int, inner: bytes) -> bytes:
    """[number] EXPLICIT around one encoded value."""
    return tlv(context_tag(number), inner)


# -- decoder ------------------------------------------------------------------------------------

DEFAULT_MAX_SIZE: Final = 1 << 16
DEFAULT_MAX_DEPTH: Final = 16


class Node:
    """One decoded TLV; `children` for a constructed one. Offsets point into `data`."""

    __slots__ = ("_children", "_data", "_end", "_start", "_value_start", "tag")

    def __init__(self, data: bytes, tag: int, start: int, value_start: int, end: int) -> None:
        self._data = data
        self.tag = tag
        self._start = start
        self._value_start = value_start
        self._end = end
        self._children: tuple[Node, ...] | None = None

    @property
    def constructed(self) -> bool:
        return bool(self.tag & CONSTRUCTED)

    @property
    def content(self) -> bytes:
        return self._data[self._value_start : self._end]

    @property
    def raw(self) -> bytes:
        """The whole encoding, tag and length included (what a signature covers)."""
        return self._data[self._start : self._end]

    @property
    def children(self) -> tuple[Node, ...]:
        if self._children is None:
            raise DerError(f"tag {self.tag:#04x} is primitive, it has no elements")
        return self._children

    def __repr__(self) -> str:
        return f"<der.Node tag={self.tag:#04x} len={self._end - self._value_start}>"

    # -- typed access ---------------------------------------------------------------------------
    def expect(self, tag: int) -> Node:
        if self.tag != tag:
            raise DerError(f"expected tag {tag:#04x}, found {self.tag:#04x}")
        return self

    def items(self, tag: int = SEQUENCE, count: int | None = None) -> tuple[Node, ...]:
        """The elements of a constructed value with this tag (exactly `count` if given)."""
        children = self.expect(tag).children
        if count is not None and len(children) != count:
            raise DerError(f"expected {count} elements in {tag:#04x}, found {len(children)}")
        return children

    def as_int(self) -> int:
        value = self.expect(INTEGER).content
        if not value:
            raise DerError("empty INTEGER")
        if len(value) > 1 and (
            (value[0] == 0 and value[1] < 0x80) or (value[0] == 0xFF and value[1] >= 0x80)
        ):
            raise DerError("INTEGER not in its shortest form")
        return int.from_bytes(value, "big", signed=True)

    def as_bool(self) -> bool:
        value = self.expect(BOOLEAN).content
        if value not in (b"\x00", b"\xff"):
            raise DerError("DER BOOLEAN is one byte, 0x00 or 0xff")
        return value == b"\xff"

    def as_null(self) -> None:
        if self.expect(NULL).content:
            raise DerError("NULL with content")

    def as_octets(self) -> bytes:
        return self.expect(OCTET_STRING).content

    def as_bits(self) -> bytes:
        """The bytes of a BIT STRING with no unused bits (keys and signatures)."""
        value = self.expect(BIT_STRING).content
        if not value:
            raise DerError("empty BIT STRING")
        if value[0] != 0:
            raise DerError(f"BIT STRING with {value[0]} unused bits where whole bytes are due")
        return value[1:]

    def as_oid(self) -> str:
        value = self.expect(OID).content
        if not value or value[-1] & 0x80:
            raise DerError("truncated OBJECT IDENTIFIER")
        arcs: list[int] = []
        acc = 0
        fresh = True
        for byte in value:
            if fresh and byte == 0x80:
                raise DerError("OBJECT IDENTIFIER arc not in its shortest form")
            acc = acc << 7 | (byte & 0x7F)
            fresh = not byte & 0x80
            if fresh:
                arcs.append(acc)
                acc = 0
        first = arcs[0]
        head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
        return ".".join(str(a) for a in head + arcs[1:])

    def as_str(self) -> str:
        value = self.content
        try:
            if self.tag == UTF8_STRING:
                return value.decode("utf-8")
            if self.tag in (PRINTABLE_STRING, IA5_STRING):
                text = value.decode("ascii")
                if self.tag == PRINTABLE_STRING and not _PRINTABLE.fullmatch(text):
                    raise DerError("character not allowed in a PrintableString")
                return text
        except UnicodeDecodeError as exc:
            raise DerError(f"bad string encoding: {exc}") from None
        raise DerError(f"tag {self.tag:#04x} is not a supported string type")

    def as_time(self) -> dt.datetime:
        """UTCTime or GeneralizedTime in the one form RFC 5280 allows (seconds, 'Z')."""
        value = self.content
        if self.tag == UTC_TIME and _UTC_FORMAT.fullmatch(value):
            year = int(value[:2])
            text = (b"19" if year >= 50 else b"20") + value
        elif self.tag == GENERALIZED_TIME and _GENERALIZED_FORMAT.fullmatch(value):
            text = value
        else:
            raise DerError(f"not a DER time: tag {self.tag:#04x} {value[:20]!r}")
        # The digits are checked above; datetime() refuses an impossible date as strptime did,
        # without strptime's first-use import of _strptime and calendar (a node parses a
        # certificate from each new peer's announce: ~10 ms at the first, issue 17).
        try:
            y, mo, d, h, mi, sec = (int(text[i : i + n]) for i, n in _TIME_FIELDS)
            return dt.datetime(y, mo, d, h, mi, sec, tzinfo=dt.UTC)
        except ValueError:
            raise DerError(f"impossible date {value.decode('ascii')!r}") from None


def parse(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Node:
    """Exactly one DER value filling `data`, with its whole tree decoded."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DerError(f"DER input must be bytes, not {type(data).__name__}")
    blob = bytes(data)
    if len(blob) > max_size:
        raise DerError(f"DER input of {len(blob)} bytes exceeds the limit of {max_size}")
    node = _parse(blob, 0, len(blob), 0, max_depth)
    if node._end != len(blob):
        raise DerError(f"{len(blob) - node._end} bytes after the DER value")
    return node


def _parse(data: bytes, pos: int, end: int, depth: int, max_depth: int) -> Node:
    if end - pos < 2:
        raise DerError(f"truncated at offset {pos}")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError(f"multi-byte tag at offset {pos}")
    first = data[pos + 1]
    value_start = pos + 2
    if first & 0x80:
        n = first & 0x7F
        if n == 0:
            raise DerError(f"indefinite length at offset {pos}")
        if n > 4:
            raise DerError(f"length of {n} bytes at offset {pos}")
        if value_start + n > end:
            raise DerError(f"truncated length at offset {pos}")
        length = int.from_bytes(data[value_start : value_start + n], "big")
        if data[value_start] == 0 or length < 0x80:
            raise DerError(f"length not in its shortest form at offset {pos}")
        value_start += n
    else:
        length = first
    value_end = value_start + length
    if value_end > end:
        raise DerError(f"length {length} at offset {pos} runs past the end")
    node = Node(data, tag, pos, value_start, value_end)
    universal = tag & _CLASS_MASK == 0
    number = tag & 0x1F
    if tag & CONSTRUCTED:
        if universal and number not in (0x10, 0x11):
            raise DerError(f"constructed encoding of universal type {number} at offset {pos}")
        if depth >= max_depth:
            raise DerError(f"nested deeper than {max_depth} levels")
        children: list[Node] = []
        cursor = value_start
        while cursor < value_end:
            child = _parse(data, cursor, value_end, depth + 1, max_depth)
            children.append(child)
            cursor = child._end
        node._children = tuple(children)
    elif universal and number in (0x10, 0x11):
        raise DerError(f"primitive SEQUENCE/SET at offset {pos}")
    return node


def iter_tag(nodes: Iterable[Node], tag: int) -> list[Node]:
    """The nodes with this tag (e.g. the optional [n] fields at the end of a SEQUENCE)."""
    return [n for n in nodes if n.tag == tag]
