"""Wire error codes and the two exception families of the protocol core.

Modelled on h11: `LocalProtocolError` means *we* misused the API (a bug on our side);
`RemoteProtocolError` means the peer sent something the protocol forbids, and carries the wire
code to report back in an `error` message.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Wire error codes (docs/protocol.md 2.4). The value is the string on the wire."""

    # framing / message level: the peer sent bytes we cannot accept
    BAD_FRAME = "bad_frame"
    HEADER_TOO_LARGE = "header_too_large"
    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNEXPECTED_MESSAGE = "unexpected_message"
    VERSION_MISMATCH = "version_mismatch"
    TOO_MUCH_DATA = "too_much_data"
    TRUNCATED = "truncated"
    # transfer outcome
    HASH_MISMATCH = "hash_mismatch"
    BAD_NAME = "bad_name"
    NOT_FOUND = "not_found"
    POLICY = "policy"
    TOO_LARGE = "too_large"
    NO_SPACE = "no_space"
    BUSY = "busy"
    TIMEOUT = "timeout"
    TOO_SLOW = "too_slow"
    CANCELLED = "cancelled"
    INTERNAL = "internal"
    IO_ERROR = "io_error"
    SOURCE_CHANGED = "source_changed"


class MoleError(Exception):
    """Base of every error raised by the protocol core."""


class LocalProtocolError(MoleError):
    """We tried to do something the protocol forbids (a bug in the caller, not the peer)."""


class RemoteProtocolError(MoleError):
    """The peer violated the protocol; `code` is what to send back in an `error` message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"RemoteProtocolError({self.code.value!r}, {self.message!r})"


class StoreError(MoleError):
    """A disk-side failure; `code` is the wire/API error code (docs/protocol.md 2.6)."""

    code: str = "io_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class BadName(StoreError):
    """A file name no node may store (node/names.py). A `StoreError` so one except does."""

    code = "bad_name"

    def __init__(self, message: str) -> None:
        super().__init__("bad_name", message)


class HashMismatch(StoreError):
    """The received bytes do not hash to what the sender announced."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            "hash_mismatch", f"received data hashes to {actual}, sender announced {expected}"
        )
        self.expected = expected
        self.actual = actual
