"""SHA-256 and SHA-512 of short byte strings (certificates, Ed25519), without OpenSSL.

`hashlib` loads OpenSSL's libcrypto at import (about 3.8 MiB resident), and an idle node must
stay within 20 MiB (issue 17). A node needs these digests from its first moment: its id is the
SHA-256 of its certificate, making that certificate and every Ed25519 signature hash with
SHA-512. CPython's own built-in implementations (`_sha256`/`_sha512` in 3.11, `_sha2` from
3.12) are as fast as OpenSSL's on such short inputs and map nothing. A build without them
(some FIPS builds leave them out) falls back to hashlib. Hashing files stays with hashlib
(node/store/hashing.py), where OpenSSL's speed matters and is loaded on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["hmac_sha256", "sha256", "sha512"]


class _Hash(Protocol):
    def digest(self) -> bytes: ...


def _builtin(name: str) -> Callable[[bytes], _Hash]:
    for module in ("_sha2", f"_{name}"):  # 3.12+, 3.11
        try:
            fn: Any = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        return fn  # type: ignore[no-any-return]
    import hashlib

    return getattr(hashlib, name)  # type: ignore[no-any-return]


_SHA256 = _builtin("sha256")
_SHA512 = _builtin("sha512")


def sha256(data: bytes) -> bytes:
    return _SHA256(data).digest()


def sha512(data: bytes) -> bytes:
    return _SHA512(data).digest()


_BLOCK = 64  # SHA-256's block size


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """RFC 2104 HMAC-SHA-256 over the built-in SHA-256: the stdlib `hmac` imports OpenSSL's
    libcrypto (see above), which a node in a group would otherwise hold for its group proofs."""
    if len(key) > _BLOCK:
        key = sha256(key)
    key = key.ljust(_BLOCK, b"\0")
    inner = sha256(bytes(b ^ 0x36 for b in key) + msg)
    return sha256(bytes(b ^ 0x5C for b in key) + inner)
