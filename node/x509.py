"""A node's self-signed Ed25519 certificate and PKCS#8 key: make them, read them back, check them.

Only what a mole identity needs: certificates signed with Ed25519 (OID 1.3.101.112, RFC 8410)
that carry an Ed25519 key. Nothing here validates a chain or a date: a peer is trusted by the
SHA-256 of its certificate (its node id), never by an issuer. The certificate made here is a
pure function of the seed (the serial number is derived from the public key), so a lost
certificate can be made again from the key, byte for byte, and the node id survives.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from typing import Final

from node import der, digest, ed25519
from node.der import DerError, Node

ED25519_OID: Final = "1.3.101.112"
COMMON_NAME_OID: Final = "2.5.4.3"
BASIC_CONSTRAINTS_OID: Final = "2.5.29.19"
COMMON_NAME: Final = "mole"
NOT_BEFORE: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # any device clock is past it
NOT_AFTER: Final = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)  # RFC 5280: "no end"
MAX_CERT_SIZE: Final = 16 << 10

_ALGORITHM: Final = der.sequence(der.oid(ED25519_OID))  # parameters absent (RFC 8410 3)
_PEM_BLOCK: Final = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\s]*?)-----END \1-----", re.S
)


class CertError(ValueError):
    """Not a well-formed Ed25519 certificate or key (the message says what is wrong)."""


def _name(common_name: str) -> bytes:
    attribute = der.sequence(der.oid(COMMON_NAME_OID), der.utf8_string(common_name))
    return der.sequence(der.set_of(attribute))


def _serial(public: bytes, serial: bytes | None) -> bytes:
    """A positive INTEGER of at most 20 content octets (RFC 5280 4.1.2.2)."""
    if serial is None:
        # Derived, not random: the certificate is then a function of the key.
        value = int.from_bytes(digest.sha256(b"mole serial\0" + public)[:16], "big")
        value = (value >> 1) | 1 << 126  # positive, never zero, always 16 octets
    else:
        value = int.from_bytes(serial, "big")
    encoded = der.integer(value)
    if value <= 0 or len(encoded) > 22:  # tag + length + 20 octets
        raise ValueError("a serial number is a positive integer of at most 20 octets")
    return encoded


def self_signed_certificate(seed: bytes, *, serial: bytes | None = None) -> bytes:
    """DER of an X.509 v3 certificate for the Ed25519 key of `seed`, signed by that key.

    Subject = issuer = CN=mole, valid from 1970 to 99991231235959Z, one extension:
    basicConstraints (critical) with cA FALSE, so it can never sign another certificate.
    """
    public = ed25519.public_key(seed)
    name = _name(COMMON_NAME)
    basic_constraints = der.sequence(
        der.oid(BASIC_CONSTRAINTS_OID), der.boolean(True), der.octet_string(der.sequence())
    )
    tbs = der.sequence(
        der.explicit(0, der.integer(2)),  # v3
        _serial(public, serial),
        _ALGORITHM,
        name,
        der.sequence(der.x509_time(NOT_BEFORE), der.x509_time(NOT_AFTER)),
        name,
        der.sequence(_ALGORITHM, der.bit_string(public)),
        der.explicit(3, der.sequence(basic_constraints)),
    )
    return der.sequence(tbs, _ALGORITHM, der.bit_string(ed25519.sign(seed, tbs)))


class _Cert:
    """The parts of a parsed certificate the checks need."""

    __slots__ = ("issuer", "public", "signature", "subject", "tbs")

    def __init__(self, tbs: bytes, issuer: bytes, subject: bytes, public: bytes, sig: bytes):
        self.tbs = tbs
        self.issuer = issuer
        self.subject = subject
        self.public = public
        self.signature = sig


def _expect_ed25519(alg: Node, where: str) -> None:
    parts = alg.items(der.SEQUENCE)
    if len(parts) != 1 or parts[0].as_oid() != ED25519_OID:
        raise CertError(f"{where} is not Ed25519 (OID {ED25519_OID} without parameters)")


def _parse_name(node: Node) -> bytes:
    for rdn in node.items(der.SEQUENCE):
        if not rdn.items(der.SET):
            raise DerError("empty relative distinguished name")
        for attribute in rdn.children:
            attribute.items(der.SEQUENCE, 2)[0].as_oid()  # any string type as the value
    return node.raw


def _parse_extensions(node: Node) -> None:
    seen: set[str] = set()
    extensions = node.items(der.SEQUENCE)
    if not extensions:
        raise DerError("empty extensions")
    for ext in extensions:
        parts = ext.items(der.SEQUENCE)
        if len(parts) not in (2, 3):
            raise DerError("an extension has 2 or 3 elements")
        name = parts[0].as_oid()
        if name in seen:
            raise CertError(f"extension {name} appears twice")
        seen.add(name)
        if len(parts) == 3 and not parts[1].as_bool():
            raise DerError("critical FALSE must be omitted in DER (it is the default)")
        parts[-1].as_octets()


def _parse(cert: bytes) -> _Cert:
    try:
        top = der.parse(cert, max_size=MAX_CERT_SIZE)
        tbs_node, alg, sig_node = top.items(der.SEQUENCE, 3)
        _expect_ed25519(alg, "the signature algorithm")
        signature = sig_node.as_bits()
        if len(signature) != 64:
            raise CertError(f"an Ed25519 signature is 64 bytes, not {len(signature)}")
        fields = list(tbs_node.items(der.SEQUENCE))
        if fields and fields[0].tag == der.context_tag(0):
            version = fields.pop(0).items(der.context_tag(0), 1)[0].as_int()
            if version == 0:
                raise DerError("version v1 is the default: DER omits it")
            if version not in (1, 2):
                raise CertError(f"unknown certificate version {version}")
        if len(fields) < 6:
            raise DerError("TBSCertificate needs serial, algorithm, issuer, validity, subject, key")
        serial, inner_alg, issuer, validity, subject, spki, *rest = fields
        serial.as_int()
        if inner_alg.raw != alg.raw:
            raise CertError("the two signature algorithm fields differ")
        not_before, not_after = validity.items(der.SEQUENCE, 2)
        not_before.as_time()
        not_after.as_time()
        key_alg, key_bits = spki.items(der.SEQUENCE, 2)
        _expect_ed25519(key_alg, "the public key")
        public = key_bits.as_bits()
        if len(public) != 32 or not ed25519.valid_public_key(public):
            raise CertError("the public key is not a valid Ed25519 point")
        tags = [n.tag for n in rest]
        allowed = [der.context_tag(1, constructed=False), der.context_tag(2, constructed=False)]
        allowed.append(der.context_tag(3))
        if tags != sorted(set(tags)) or not set(tags) <= set(allowed):
            raise DerError("unexpected fields after the subject public key")
        for extra in rest:
            if extra.tag == der.context_tag(3):
                _parse_extensions(extra.items(der.context_tag(3), 1)[0])
        return _Cert(tbs_node.raw, _parse_name(issuer), _parse_name(subject), public, signature)
    except DerError as exc:
        raise CertError(f"malformed certificate: {exc}") from None


def certificate_public_key(cert: bytes) -> bytes:
    """The 32-byte Ed25519 public key of a certificate; `CertError` if it is anything else."""
    return _parse(cert).public


def verify_self_signature(cert: bytes) -> bool:
    """True iff `cert` is a well-formed Ed25519 certificate signed by its own key."""
    try:
        parsed = _parse(cert)
    except CertError:
        return False
    return parsed.issuer == parsed.subject and ed25519.verify(
        parsed.public, parsed.tbs, parsed.signature
    )


# -- private keys -------------------------------------------------------------------------------


def pkcs8_private_key(seed: bytes) -> bytes:
    """DER of the PKCS#8 (RFC 5958 v1) private key of an Ed25519 seed, as OpenSSL writes it."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return der.sequence(der.integer(0), _ALGORITHM, der.octet_string(der.octet_string(seed)))


def pkcs8_seed(key: bytes) -> bytes:
    """The 32-byte seed of a PKCS#8 Ed25519 private key (v1, or v2 with a matching public key)."""
    try:
        fields = der.parse(key, max_size=4096).items(der.SEQUENCE)
        if len(fields) < 3:
            raise DerError("a private key has version, algorithm and key")
        version = fields[0].as_int()
        if version not in (0, 1):
            raise CertError(f"unknown private key version {version}")
        _expect_ed25519(fields[1], "the private key")
        seed = der.parse(fields[2].as_octets()).as_octets()
        if len(seed) != 32:
            raise CertError(f"an Ed25519 private key is 32 bytes, not {len(seed)}")
        for extra in fields[3:]:
            if extra.tag == der.context_tag(1, constructed=False) and version == 1:
                if extra.content[:1] != b"\x00" or extra.content[1:] != ed25519.public_key(seed):
                    raise CertError("the public key in the private key file does not match")
            elif extra.tag != der.context_tag(0):  # attributes: ignored
                raise DerError(f"unexpected field {extra.tag:#04x} in the private key")
        return seed
    except DerError as exc:
        raise CertError(f"malformed private key: {exc}") from None


# -- PEM (RFC 7468) -----------------------------------------------------------------------------


def pem_encode(data: bytes, label: str) -> str:
    """`data` as a PEM block with this label ("CERTIFICATE", "PRIVATE KEY")."""
    b64 = base64.b64encode(data).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        f"-----BEGIN {label}-----\n"
        + "".join(f"{ln}\n" for ln in lines)
        + (f"-----END {label}-----\n")
    )


def pem_decode(text: str | bytes, label: str) -> bytes:
    """The bytes of the one PEM block with this label in `text` (text around it is ignored)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise CertError("a PEM file is ASCII text") from None
    blocks = [m for m in _PEM_BLOCK.finditer(text) if m.group(1) == label]
    if len(blocks) != 1:
        found = "no" if not blocks else str(len(blocks))
        raise CertError(f"expected one PEM block {label!r}, found {found}")
    try:
        return base64.b64decode("".join(blocks[0].group(2).split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CertError(f"bad base64 in the PEM block {label!r}: {exc}") from None
