"""Bencoding (BEP 3): a strict, bounded encoder and decoder.

Strict, because the DHT and trackers hash and compare what they receive, and because accepting
two spellings of one value (``i03e``, ``i-0e``, unsorted or repeated dict keys, bytes after the
end) lets a peer smuggle differences past checks. Bounded, because every input here comes from a
stranger on the Internet: the input size, the nesting depth and the number of items are capped
*before* the work is done, so a hostile datagram costs at most a few thousand steps.

Types: ``int``, ``bytes`` (byte strings stay bytes: keys and values are binary), ``list`` and
``dict`` with ``bytes`` keys. The decoder raises one error class, `BencodeError`, for anything
malformed; the encoder raises ``TypeError`` for a value it cannot represent (a bug in the caller,
like ``json.dumps``).
"""

from __future__ import annotations

from typing import Final, TypeAlias

from node.errors import ErrorCode, RemoteProtocolError

# The bencode value space (a recursive alias).
Value: TypeAlias = int | bytes | list["Value"] | dict[bytes, "Value"]

MAX_INPUT: Final = 64 * 1024  # a tracker body is the largest thing we decode (UDP is < 1500)
MAX_DEPTH: Final = 16  # KRPC needs 3 (message > "a"/"r" > "values" list)
MAX_ITEMS: Final = 4096  # list and dict entries in the whole input, all containers together
MAX_INT_DIGITS: Final = 32  # bigger than any 64-bit field; caps int() cost on long digit runs

_DIGITS: Final = frozenset(b"0123456789")


class BencodeError(RemoteProtocolError):
    """The input is not one well-formed, canonical bencoded value within the bounds."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_MESSAGE) -> None:
        super().__init__(code, message)


# -- encoding ---------------------------------------------------------------------------------


def encode(value: Value) -> bytes:
    """The canonical encoding of `value` (dict keys sorted); TypeError for other types."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    # bool is an int subclass; a True on the wire would be a bug, not an intent.
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans; use 0 or 1")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value):
            if not isinstance(key, bytes):
                raise TypeError(f"bencode dict keys must be bytes, not {type(key).__name__}")
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


# -- decoding ---------------------------------------------------------------------------------


def decode(
    data: bytes,
    *,
    max_size: int = MAX_INPUT,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
) -> Value:
    """Decode exactly one value spanning all of `data`; BencodeError otherwise."""
    if len(data) > max_size:
        raise BencodeError(f"input of {len(data)} bytes exceeds {max_size}", ErrorCode.TOO_LARGE)
    decoder = _Decoder(bytes(data), max_depth, max_items)
    value = decoder.value(0)
    if decoder.pos != len(data):
        raise BencodeError(f"{len(data) - decoder.pos} bytes after the value")
    return value


class _Decoder:
    __slots__ = ("data", "items", "max_depth", "pos")

    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.items = max_items  # remaining budget

    def _peek(self) -> int:
        if self.pos >= len(self.data):
            raise BencodeError("input ends inside a value")
        return self.data[self.pos]

    def _spend(self) -> None:
        self.items -= 1
        if self.items < 0:
            raise BencodeError("too many list or dict items", ErrorCode.TOO_LARGE)

    def value(self, depth: int) -> Value:
        c = self._peek()
        if c == 0x69:  # i
            return self._int()
        if c in _DIGITS:
            return self._bytes()
        if c == 0x6C or c == 0x64:  # l, d
            if depth >= self.max_depth:
                raise BencodeError(f"nesting deeper than {self.max_depth}", ErrorCode.TOO_LARGE)
            return self._list(depth) if c == 0x6C else self._dict(depth)
        raise BencodeError(f"unexpected byte {c:#04x} at offset {self.pos}")

    def _digits(self, start: int, end: int, what: str) -> int:
        # Canonical: no sign other than a leading "-", no leading zero, no "-0", 1..32 digits.
        body = self.data[start:end]
        negative = body.startswith(b"-")
        digits = body[1:] if negative else body
        if not digits or not _DIGITS.issuperset(digits):
            raise BencodeError(f"{what} at offset {start} is not a decimal number")
        if len(digits) > MAX_INT_DIGITS:
            raise BencodeError(f"{what} at offset {start} has too many digits")
        if digits[0] == 0x30 and (len(digits) > 1 or negative):
            raise BencodeError(f"{what} at offset {start} is not canonical")
        n = int(digits)
        return -n if negative else n

    def _int(self) -> int:
        start = self.pos + 1
        end = self.data.find(b"e", start, start + MAX_INT_DIGITS + 2)
        if end < 0:
            raise BencodeError(f"integer at offset {self.pos} has no end")
        n = self._digits(start, end, "integer")
        self.pos = end + 1
        return n

    def _bytes(self) -> bytes:
        start = self.pos
        colon = self.data.find(b":", start, start + MAX_INT_DIGITS + 1)
        if colon < 0:
            raise BencodeError(f"string length at offset {start} has no colon")
        length = self._digits(start, colon, "string length")
        if length < 0:
            raise BencodeError(f"negative string length at offset {start}")
        end = colon + 1 + length
        if end > len(self.data):
            raise BencodeError(f"string at offset {start} runs past the input")
        self.pos = end
        return self.data[colon + 1 : end]

    def _list(self, depth: int) -> list[Value]:
        self.pos += 1
        items: list[Value] = []
        while self._peek() != 0x65:  # e
            self._spend()
            items.append(self.value(depth + 1))
        self.pos += 1
        return items

    def _dict(self, depth: int) -> dict[bytes, Value]:
        self.pos += 1
        result: dict[bytes, Value] = {}
        last: bytes | None = None
        while self._peek() != 0x65:
            self._spend()
            if self._peek() not in _DIGITS:
                raise BencodeError(f"dict key at offset {self.pos} is not a string")
            key = self._bytes()
            # Strictly increasing raw-byte order: sorted, and no key twice.
            if last is not None and key <= last:
                raise BencodeError(f"dict key {key!r} is out of order or repeated")
            last = key
            result[key] = self.value(depth + 1)
        self.pos += 1
        return result


__all__ = ["MAX_DEPTH", "MAX_INPUT", "MAX_ITEMS", "BencodeError", "Value", "decode", "encode"]
