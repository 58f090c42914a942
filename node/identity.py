"""The node's cryptographic identity: an Ed25519 key and its self-signed certificate.

Like Syncthing's device id, the node id is the SHA-256 of the certificate's DER (64 lowercase
hex digits); people see it as 8 groups of 7 base32 characters with Luhn check characters
(`format_id`), logs show the first group (`short_id`). The key and certificate live in the
state directory as `identity.key` (PKCS#8 PEM) and `identity.crt` (PEM), mode 0600, where
`ssl.SSLContext.load_cert_chain` reads them (`cert_paths`).

Files are created atomically: written to a fresh temp file (O_EXCL | O_NOFOLLOW, 0600), synced,
then hard-linked to their name, which never replaces an existing file (two nodes started at
once on one state directory end up with the same identity instead of one overwriting the
other's key); rename is the fallback where hard links are unsupported. A certificate is a pure
function of the key (node/x509.py), so a start that finds the key without its certificate
(a crash between the two writes) makes the same certificate again and the id survives.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

from node import digest, ed25519, plat, x509

KEY_FILE: Final = "identity.key"
CERT_FILE: Final = "identity.crt"
MAX_FILE_SIZE: Final = 64 << 10
_B32: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TYPOS: Final = str.maketrans("018", "OIB")  # as Syncthing reads them
_HEX: Final = frozenset("0123456789abcdef")
_NO_LINK_ERRNOS: Final = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})


class IdentityError(Exception):
    """The identity files cannot be used; the message says which file and what to do."""


class CertPaths(NamedTuple):
    cert: Path
    key: Path


def cert_paths(state_dir: Path) -> CertPaths:
    """Where the certificate and key live: `ctx.load_cert_chain(*cert_paths(state_dir))`."""
    return CertPaths(state_dir / CERT_FILE, state_dir / KEY_FILE)


@dataclass(frozen=True)
class Identity:
    """A key, its certificate and the node id; `repr()` shows only the id (never the seed)."""

    seed: bytes = field(repr=False)
    public: bytes = field(repr=False)
    cert_der: bytes = field(repr=False)
    node_id: str
    paths: CertPaths | None = field(default=None, compare=False)

    @classmethod
    def from_seed(cls, seed: bytes, paths: CertPaths | None = None) -> Identity:
        """An identity with the certificate this code makes for `seed` (in memory)."""
        cert = x509.self_signed_certificate(seed)
        return cls(seed, ed25519.public_key(seed), cert, node_id_of(cert), paths)


def node_id_of(cert_der: bytes) -> str:
    return digest.sha256(cert_der).hex()


# -- files ----------------------------------------------------------------------------------------


def load_or_create(state_dir: Path) -> Identity:
    """The identity stored in `state_dir`, made and stored there at the first start.

    Raises IdentityError (never anything else for a bad state directory or bad files).
    """
    paths = cert_paths(state_dir)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"cannot create the state directory {state_dir}: {_why(exc)}") from None
    for _ in range(3):  # another process may create a file between our look and our write
        try:
            return _load_or_create(paths)
        except FileExistsError:
            continue
    raise IdentityError(f"the identity files in {state_dir} keep changing under us")


def _load_or_create(paths: CertPaths) -> Identity:
    key_pem = _read(paths.key, secret=True)
    if key_pem is None:
        if _read(paths.cert, secret=False) is not None:
            raise IdentityError(
                f"{paths.cert} exists but its key {paths.key} does not: the key is lost. "
                f"Move {paths.cert.name} away to start with a new identity (peers will see a "
                "new node id)."
            )
        seed = os.urandom(32)
        _write_new(paths.key, x509.pem_encode(x509.pkcs8_private_key(seed), "PRIVATE KEY"))
    else:
        try:
            seed = x509.pkcs8_seed(x509.pem_decode(key_pem, "PRIVATE KEY"))
        except x509.CertError as exc:
            raise IdentityError(f"{paths.key} is not a usable Ed25519 key: {exc}") from None
    cert_pem = _read(paths.cert, secret=False)
    if cert_pem is None:
        cert = x509.self_signed_certificate(seed)
        _write_new(paths.cert, x509.pem_encode(cert, "CERTIFICATE"))
    else:
        cert = _check_cert(paths, cert_pem, seed)
    return Identity(seed, ed25519.public_key(seed), cert, node_id_of(cert), paths)


def _check_cert(paths: CertPaths, cert_pem: bytes, seed: bytes) -> bytes:
    try:
        cert = x509.pem_decode(cert_pem, "CERTIFICATE")
        cert_key = x509.certificate_public_key(cert)
    except x509.CertError as exc:
        raise IdentityError(f"{paths.cert} is not a usable Ed25519 certificate: {exc}") from None
    if cert_key != ed25519.public_key(seed):
        raise IdentityError(
            f"{paths.cert} does not belong to {paths.key} (another key's certificate). "
            f"Restore the matching pair, or move {paths.cert.name} away to make a new "
            "certificate for this key (the node id changes)."
        )
    if not x509.verify_self_signature(cert):
        raise IdentityError(f"{paths.cert} is not signed by its own key (corrupt?)")
    return cert


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _read(path: Path, *, secret: bool) -> bytes | None:
    """The file's bytes, None if it does not exist; a symlink or odd file is an error."""
    try:
        fd = os.open(path, os.O_RDONLY | plat.O_NOFOLLOW | plat.O_CLOEXEC | plat.O_BINARY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IdentityError(f"{path} is a symbolic link; refusing to follow it") from None
        raise IdentityError(f"cannot open {path}: {_why(exc)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IdentityError(f"{path} is not a regular file")
        if info.st_size > MAX_FILE_SIZE:
            raise IdentityError(f"{path} is {info.st_size} bytes, too big for an identity file")
        if secret and info.st_mode & 0o077:
            raise IdentityError(
                f"{path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path}"
            )
        chunks = []
        while chunk := os.read(fd, MAX_FILE_SIZE + 1):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {_why(exc)}") from None
    finally:
        os.close(fd)


def _write_new(path: Path, text: str) -> None:
    """Create `path` with `text`, mode 0600, atomically; FileExistsError if it appeared."""
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | plat.O_NOFOLLOW | plat.O_CLOEXEC | plat.O_BINARY
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            data = text.encode("ascii")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            if path.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
            os.rename(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {_why(exc)}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory
        plat.fsync_dir(str(directory))  # nothing where a directory cannot be opened (Windows)


# -- human forms of the id ------------------------------------------------------------------------


def _digest(node_id: str) -> bytes:
    if not isinstance(node_id, str) or len(node_id) != 64 or not set(node_id) <= _HEX:
        raise ValueError(f"a node id is 64 lowercase hex digits, not {node_id!r:.80}")
    return bytes.fromhex(node_id)


def _luhn32(chars: str) -> str:
    """Syncthing's check character (lib/protocol/luhn.go: not quite Luhn, kept for
    compatibility): weights 1, 2, 1, ... from the left, digits of each product in base 32."""
    factor, total = 1, 0
    for ch in chars:
        addend = factor * _B32.index(ch)
        factor = 3 - factor
        total += addend // 32 + addend % 32
    return _B32[-total % 32]


def format_id(node_id: str) -> str:
    """Syncthing's device-id form: base32 of the digest in 4 parts of 13, each with a check
    character, shown as 8 groups of 7 (`XXXXXXX-XXXXXXX-...`)."""
    b32 = base64.b32encode(_digest(node_id)).decode("ascii").rstrip("=")
    checked = "".join(b32[i : i + 13] + _luhn32(b32[i : i + 13]) for i in range(0, 52, 13))
    return "-".join(checked[i : i + 7] for i in range(0, 56, 7))


def parse_id(text: str) -> str:
    """The 64-hex node id of `format_id`'s form (any case, dashes and spaces optional, 0/1/8
    read as O/I/B) or of 64 hex digits. ValueError with the place of a typo."""
    if not isinstance(text, str):
        raise ValueError(f"a node id is text, not {type(text).__name__}")
    compact = "".join(text.split()).replace("-", "")
    if len(compact) == 64 and set(compact.lower()) <= _HEX:
        return compact.lower()
    chars = compact.upper().translate(_TYPOS)
    if len(chars) != 56 or not set(chars) <= set(_B32):
        raise ValueError(
            f"not a node id: {text!r:.80} (expected 8 groups of 7 letters A-Z and digits 2-7, "
            "like the one `mole id` prints, or 64 hex digits)"
        )
    for part in range(4):
        block = chars[part * 14 : part * 14 + 14]
        if _luhn32(block[:13]) != block[13]:
            raise ValueError(
                f"node id {text!r} has a typo in groups {2 * part + 1}-{2 * part + 2} "
                f"(characters {part * 14 + 1}-{part * 14 + 14} fail their check character)"
            )
    b32 = "".join(chars[i : i + 13] for i in range(0, 56, 14))
    try:
        node_id = base64.b32decode(b32 + "====").hex()
    except binascii.Error:
        raise ValueError(f"not a node id: {text!r:.80}") from None
    if format_id(node_id).replace("-", "") != chars:  # the last character has 4 spare bits
        raise ValueError(f"node id {text!r} is not in its canonical form (a typo at its end?)")
    return node_id


def short_id(node_id: str) -> str:
    """The first group of `format_id`, enough to tell peers apart in a log line."""
    return format_id(node_id)[:7]


def sas_code(id_a: str, id_b: str, *, context: bytes = b"") -> str:
    """A 6-digit short authentication string ("123 456") that two nodes compute alike.

    Order-independent (the ids are sorted), domain-separated SHA-256 over both digests and
    `context`. Only 20 bits: an attacker who can choose its own certificate can grind one
    whose code matches in about a million tries, so a pairing protocol should pass as
    `context` per-session nonces that both sides committed to before either revealed its own.
    """
    low, high = sorted((_digest(id_a), _digest(id_b)))
    code = digest.sha256(b"mole sas v1\0" + low + high + context)
    n = int.from_bytes(code[:8], "big") % 1_000_000
    return f"{n // 1000:03d} {n % 1000:03d}"
