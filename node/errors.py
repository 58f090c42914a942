"""The node's one error tree, split by blame, each error carrying the code it is reported with.

    MoleError                     root: `code` (a wire/API code string) and `message`
    ├── LocalProtocolError        we misused the protocol API (a bug on our side)
    ├── RemoteProtocolError       the peer sent something the protocol forbids (wire `error`)
    ├── StoreError                the disk side failed or refused (reject/verdict codes)
    │   ├── BadName               a name no node may store (docs/protocol.md 2.8)
    │   └── HashMismatch          received bytes are not what the sender announced
    ├── TransferStateError        an illegal (state, event) of a transfer (a bug on our side)
    ├── RequestError              a user's request the node refuses (the API maps it to HTTP)
    │   ├── NotFound              unknown peer, transfer, file
    │   └── BadRequest            a request that makes no sense
    └── ConfigError               a setting is invalid (the message names it)

Modelled on h11: errors the peer causes carry the wire code to send back; the API edge owns the
one mapping from codes to HTTP statuses (node/api.py); the domain never knows HTTP.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Wire error codes (docs/protocol.md 2.6). The value is the string on the wire."""

    # framing / message level: the peer sent bytes we cannot accept
    BAD_FRAME = "bad_frame"
    HEADER_TOO_LARGE = "header_too_large"
    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNEXPECTED_MESSAGE = "unexpected_message"
    VERSION_MISMATCH = "version_mismatch"
    TOO_MUCH_DATA = "too_much_data"
    TRUNCATED = "truncated"
    # connection security (protocol 2): a proof or certificate that does not check out, a
    # plaintext client at a TLS port
    AUTH_FAILED = "auth_failed"
    TLS_REQUIRED = "tls_required"
    # transfer outcome
    HASH_MISMATCH = "hash_mismatch"
    BAD_NAME = "bad_name"
    NOT_FOUND = "not_found"
    POLICY = "policy"
    NOT_AUTHORIZED = "not_authorized"  # the peer's verified id (or none) is not allowed this
    TOO_LARGE = "too_large"
    NO_SPACE = "no_space"
    BUSY = "busy"
    TIMEOUT = "timeout"
    TOO_SLOW = "too_slow"
    CANCELLED = "cancelled"
    INTERNAL = "internal"
    IO_ERROR = "io_error"
    SOURCE_CHANGED = "source_changed"


class LocalCode(StrEnum):
    """Codes a node reports about a transfer or a request without a peer having sent them."""

    UNREACHABLE = "unreachable"  # the peer is unknown, or could not be connected
    CONNECTION_LOST = "connection_lost"  # the connection closed mid-operation
    UNKNOWN_PEER = "unknown_peer"
    FILE_MISSING = "file_missing"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    PEER_UNREACHABLE = "peer_unreachable"
    PEER_ERROR = "peer_error"
    OUTSIDE_SHARE = "outside_share"  # a push of a path outside the share, not allowed here
    NOT_RETRYABLE = "not_retryable"  # retry of a transfer that is not over, or not ours to start


class MoleError(Exception):
    """Root of every error the node raises on purpose. `code` says how it is reported."""

    code: str = ErrorCode.INTERNAL

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = str(code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class LocalProtocolError(MoleError):
    """We tried to do something the protocol forbids (a bug in the caller, not the peer)."""

    code = ErrorCode.INTERNAL


class RemoteProtocolError(MoleError):
    """The peer violated the protocol; `code` is what to send back in an `error` message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message, code)
        self.code: ErrorCode = code

    def __repr__(self) -> str:
        return f"RemoteProtocolError({self.code.value!r}, {self.message!r})"


class StoreError(MoleError):
    """A disk-side failure or refusal; `code` is the wire/API error code."""

    code = ErrorCode.IO_ERROR

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


class BadName(StoreError):
    """A file name no node may store (node/names.py). A `StoreError` so one except does."""

    code = ErrorCode.BAD_NAME

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.BAD_NAME, message)


class HashMismatch(StoreError):
    """The received bytes do not hash to what the sender announced."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            ErrorCode.HASH_MISMATCH,
            f"received data hashes to {actual}, sender announced {expected}",
        )
        self.expected = expected
        self.actual = actual


class TransferStateError(MoleError):
    """A transfer was asked to make a transition its state table does not have (our bug)."""

    code = ErrorCode.INTERNAL


class RequestError(MoleError):
    """A request (API, CLI) the node refuses; the API answers it with its code."""

    code = LocalCode.BAD_REQUEST


class NotFound(RequestError):
    """Something named in a request does not exist (code says what: peer, transfer, file)."""

    code = LocalCode.NOT_FOUND


class BadRequest(RequestError):
    code = LocalCode.BAD_REQUEST


class ConfigError(MoleError, ValueError):
    """A setting is invalid; the message names it."""

    code = "config"
