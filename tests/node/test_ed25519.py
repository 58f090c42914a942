"""Ed25519 against RFC 8032 section 7.1, OpenSSL, the strict decoding rules, and bit flips."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import ed25519
from node.ed25519 import SMALL_ORDER_Y, L, P, public_key, sign, verify

EXAMPLES = int(os.environ.get("MOLE_FUZZ_EXAMPLES", "0")) or 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MSG_1024 = bytes.fromhex(
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f"
    "77b1e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b27"
    "0b20329d658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1"
    "998bd177e93a7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa6"
    "2100ab5d1a36553e06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96"
    "bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b"
    "74ef5c53f1d8ac70bdcb7ed185ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17b"
    "a70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bd"
    "e1a9187ebb6092cf67bf2b13fd65f27088d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63b"
    "cbcc2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d2"
    "38f5555a7a569d80c3414a8d0859dc65a46128bab27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d"
    "83d1255dc51addd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9"
    "af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb751fb73e666c6c655ade8297297d07ad1ba5e43f1bca3"
    "2301651339e22904cc8c42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8ca61783a"
    "acec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34dff7310fdc82aebfd904b01e1dc54b2927094b"
    "2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649"
    "de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e488acba6b965610b5480109c8b17b"
    "80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504cc"
    "c493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5fb93246f6b1116398a346"
    "f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d9"
    "0d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380db2eaaa707b4c"
    "4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8cac60c905c"
    "15fc910840b94c00a0b9d0"
)
# RFC 8032 7.1: (name, secret seed, public key, message, signature)
RFC8032 = [
    (
        "TEST 1",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        b"",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "TEST 2",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        bytes.fromhex("72"),
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "TEST 3",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        bytes.fromhex("af82"),
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "TEST 1024",
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        MSG_1024,
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
        "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
    ),
    (
        "TEST SHA(abc)",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        hashlib.sha512(b"abc").digest(),
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]
SEED = bytes(range(32))
PUB = public_key(SEED)
SIG = sign(SEED, b"announce")


@pytest.mark.parametrize(
    ("name", "seed", "pub", "msg", "sig"), RFC8032, ids=[v[0] for v in RFC8032]
)
def test_rfc8032_vectors(name: str, seed: str, pub: str, msg: bytes, sig: str) -> None:
    sk, pk, sg = bytes.fromhex(seed), bytes.fromhex(pub), bytes.fromhex(sig)
    assert name != "TEST 1024" or len(msg) == 1023
    assert public_key(sk) == pk
    assert sign(sk, msg) == sg
    assert verify(pk, msg, sg)
    assert not verify(pk, msg + b"\0", sg)
    assert not verify(pk, msg, sg[:63] + bytes([sg[63] ^ 0x01]))


def test_round_trip_with_many_keys_and_buffer_types() -> None:
    for i in range(8):
        seed = hashlib.sha256(bytes([i])).digest()
        msg = bytes(range(i * 7 % 256)) * 3
        sig = sign(seed, msg)
        pub = public_key(seed)
        assert verify(pub, msg, sig)
        assert verify(bytearray(pub), memoryview(msg), bytearray(sig))
        assert sign(bytearray(seed), bytearray(msg)) == sig
        assert not verify(public_key(hashlib.sha256(bytes([i + 100])).digest()), msg, sig)


def test_non_contiguous_memoryview_is_accepted() -> None:
    doubled = bytes(b for pair in zip(b"announce", b"announce", strict=True) for b in pair)
    assert verify(PUB, memoryview(doubled)[::2], SIG)


@pytest.mark.parametrize("bad", [b"", b"\0" * 31, b"\0" * 33, b"\0" * 64, "x" * 32, None])
def test_seed_must_be_32_bytes(bad: object) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        sign(bad, b"m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bytes"):
        public_key(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("public", "msg", "sig"),
    [
        (PUB[:31], b"announce", SIG),
        (PUB + b"\0", b"announce", SIG),
        (PUB, b"announce", SIG[:63]),
        (PUB, b"announce", SIG + b"\0"),
        (b"", b"", b""),
        ("not bytes", b"announce", SIG),
        (PUB, "announce", SIG),
        (PUB, b"announce", None),
        (None, None, None),
        (12, b"announce", SIG),
        ([1] * 32, b"announce", list(SIG)),
    ],
)
def test_malformed_input_is_false_not_an_exception(
    public: object, msg: object, sig: object
) -> None:
    assert verify(public, msg, sig) is False  # type: ignore[arg-type]


def test_s_at_or_above_the_group_order_is_rejected() -> None:
    s = int.from_bytes(SIG[32:], "little")
    malleable = SIG[:32] + (s + L).to_bytes(32, "little")  # same point, non-canonical S
    assert not verify(PUB, b"announce", malleable)
    assert not verify(PUB, b"announce", SIG[:32] + L.to_bytes(32, "little"))
    assert not verify(PUB, b"announce", SIG[:32] + b"\xff" * 32)


def _enc(y: int, sign_bit: int = 0) -> bytes:
    return (y | sign_bit << 255).to_bytes(32, "little")


def _torsion_points() -> list[tuple[int, int, int, int]]:
    """The 8 points of small order, from the order-8 point with y = _Y8."""
    point = ed25519._decode(_enc(ed25519._Y8))
    assert point is not None
    x, y = point
    q = (x, y, 1, x * y % P)
    points = [q]
    for _ in range(7):
        points.append(ed25519._add(points[-1], q))
    return points


def test_small_order_set_is_exactly_the_eight_torsion_points() -> None:
    ys = set()
    for _, Y, Z, _ in _torsion_points():
        ys.add(Y * pow(Z, -1, P) % P)
    assert ys == set(SMALL_ORDER_Y)
    X, Y, Z, _ = _torsion_points()[7]  # 8 * Q is the identity
    assert X % P == 0 and Y * pow(Z, -1, P) % P == 1
    # and no torsion point but the identity is a multiple of it before 8
    assert all(pt[0] % P != 0 for pt in _torsion_points()[:3])


def small_order_encodings() -> list[bytes]:
    """Every encoding of a small-order point: both signs, and y + p where that fits 255 bits."""
    out = []
    for y in SMALL_ORDER_Y:
        for sign_bit in (0, 1):
            out.append(_enc(y, sign_bit))
            if y + P < 1 << 255:
                out.append(_enc(y + P, sign_bit))
    return out


@pytest.mark.parametrize("enc", small_order_encodings(), ids=lambda b: b.hex()[:8] + b.hex()[-2:])
def test_small_order_public_key_or_r_is_rejected(enc: bytes) -> None:
    # With A of small order, S = 0 and R = -[k]A would pass a naive cofactorless check for
    # 1/8 of messages; each of these is rejected before any arithmetic.
    for msg in (b"", b"a", b"b", b"c"):
        assert not verify(enc, msg, enc + bytes(32))
        assert not verify(enc, msg, SIG)
        assert not verify(PUB, msg, enc + SIG[32:])


def test_forgery_with_small_order_key_is_rejected() -> None:
    # The identity as public key: [s]B - [k]A = [s]B, so R = [s]B "verifies" any message under
    # an unchecked key. Build it and show the key check is what stops it.
    identity = _enc(1)
    r_enc = ed25519._encode(*ed25519._base_mul(5))
    forged = r_enc + (5).to_bytes(32, "little")
    assert not verify(identity, b"anything", forged)
    neg = ed25519._odd_multiples((0, 1, 1, 0), 8)
    assert ed25519._encode(*ed25519._double_scalar(5, 1234, neg)) == r_enc  # the naive check


def test_non_canonical_and_off_curve_public_keys_are_rejected() -> None:
    y = int.from_bytes(PUB, "little") & ((1 << 255) - 1)
    sign_bit = PUB[31] >> 7
    assert verify(_enc(y, sign_bit), b"announce", SIG)
    assert not verify(_enc(y, 1 - sign_bit), b"announce", SIG)  # -A
    if y + P < 1 << 255:
        assert not verify(_enc(y + P, sign_bit), b"announce", SIG)
    assert not verify(_enc(P), b"announce", SIG)  # y = p: out of range
    assert not verify(_enc((1 << 255) - 1), b"announce", SIG)
    off_curve = next(v for v in range(2, 100) if ed25519._decode(_enc(v)) is None)
    assert not verify(_enc(off_curve), b"announce", SIG)


def test_decode_follows_rfc8032_5_1_3() -> None:
    assert ed25519._decode(_enc(1)) == (0, 1)
    assert ed25519._decode(_enc(1, 1)) is None  # x = 0 with the sign bit set
    assert ed25519._decode(_enc(P - 1, 1)) is None
    assert ed25519._decode(_enc(P)) is None
    assert ed25519._decode(_enc(P + 1)) is None  # non-canonical encoding of y = 1
    assert ed25519._decode(b"\0" * 31) is None
    x, y = ed25519._decode(PUB) or (0, 0)
    assert (-x * x + y * y - 1 - ed25519.D * x * x * y * y) % P == 0
    assert ed25519._encode(x, y, 1) == PUB


def test_non_canonical_r_is_rejected() -> None:
    y = int.from_bytes(SIG[:32], "little") & ((1 << 255) - 1)
    if y + P < 1 << 255:  # only when the encoding has room for y + p
        bad = ((y + P) | (SIG[31] >> 7) << 255).to_bytes(32, "little")
        assert not verify(PUB, b"announce", bad + SIG[32:])
    assert not verify(PUB, b"announce", _enc(P) + SIG[32:])


def test_key_cache_is_bounded_and_remembers_invalid_keys() -> None:
    ed25519._key_cache.clear()
    for i in range(ed25519._CACHE_SIZE + 10):
        verify(hashlib.sha256(bytes([i % 256, i // 256])).digest(), b"m", SIG)
    assert len(ed25519._key_cache) == ed25519._CACHE_SIZE
    assert verify(PUB, b"announce", SIG)
    assert verify(PUB, b"announce", SIG)  # from the cache
    assert ed25519._key_cache[PUB] is not None


def test_naf_digits_recompose() -> None:
    for k in (
        0,
        1,
        2,
        15,
        16,
        17,
        255,
        L - 1,
        2**252,
        0x5555555555,
        int.from_bytes(SIG, "little") % L,
    ):
        for width in (5, 8):
            digits = ed25519._naf(k, width)
            assert sum(d << i for i, d in enumerate(digits)) == k
            nonzero = [i for i, d in enumerate(digits) if d]
            assert all(d % 2 == 1 and abs(d) < 1 << (width - 1) for d in digits if d)
            assert all(b - a >= width for a, b in itertools.pairwise(nonzero))


def test_base_mul_matches_double_and_add() -> None:
    def slow(s: int) -> bytes:
        acc = (0, 1, 1, 0)
        addend = ed25519.BASE
        while s:
            if s & 1:
                acc = ed25519._add(acc, addend)
            addend = ed25519._add(addend, addend)
            s >>= 1
        return ed25519._encode(*acc[:3])

    for s in (1, 2, 7, 8, 9, 16, 0x8888, L - 1, 2**252 + 12345, (L - 1) // 3):
        assert ed25519._encode(*ed25519._base_mul(s)) == slow(s), s
    assert ed25519._encode(*ed25519._base_mul(0)) == _enc(1)


# -- OpenSSL interop --------------------------------------------------------------------------

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="no openssl binary on this host")
PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], input=data, capture_output=True, timeout=30)


@needs_openssl
def test_openssl_keys_and_signatures_match_ours(tmp_path: Path) -> None:
    for i in range(3):
        key = tmp_path / f"k{i}.pem"
        assert openssl("genpkey", "-algorithm", "ed25519", "-out", str(key)).returncode == 0
        der = openssl("pkey", "-in", str(key), "-outform", "DER").stdout
        assert der.startswith(PKCS8_PREFIX) and len(der) == 48
        seed = der[16:]
        spki = openssl("pkey", "-in", str(key), "-pubout", "-outform", "DER").stdout
        assert spki.startswith(SPKI_PREFIX)
        assert public_key(seed) == spki[12:]

        msg = tmp_path / f"m{i}"
        msg.write_bytes(os.urandom(1 + i * 100))  # openssl 3.0 -rawin cannot sign 0 bytes
        sig_path = tmp_path / f"s{i}"
        res = openssl(
            "pkeyutl", "-sign", "-inkey", str(key), "-rawin", "-in", str(msg), "-out", str(sig_path)
        )
        assert res.returncode == 0, res.stderr
        theirs = sig_path.read_bytes()
        assert verify(spki[12:], msg.read_bytes(), theirs)
        assert sign(seed, msg.read_bytes()) == theirs  # Ed25519 is deterministic


@needs_openssl
def test_openssl_verifies_ours_and_rejects_a_flip(tmp_path: Path) -> None:
    for i in range(3):
        seed = hashlib.sha256(b"mole %d" % i).digest()
        key = tmp_path / "k.der"
        key.write_bytes(PKCS8_PREFIX + seed)
        pub = tmp_path / "p.pem"
        res = openssl("pkey", "-inform", "DER", "-in", str(key), "-pubout", "-out", str(pub))
        assert res.returncode == 0, res.stderr
        msg = tmp_path / "m"
        msg.write_bytes(b"discovery announcement %d" % i * (i + 1))
        sig = tmp_path / "s"
        good = sign(seed, msg.read_bytes())
        for candidate, expect in ((good, 0), (good[:5] + bytes([good[5] ^ 4]) + good[6:], 1)):
            sig.write_bytes(candidate)
            res = openssl(
                "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin", "-in", str(msg),
                "-sigfile", str(sig),
            )  # fmt: skip
            assert res.returncode == expect, res.stdout + res.stderr


# -- properties ---------------------------------------------------------------------------------

KEYS = [hashlib.sha256(b"fuzz %d" % i).digest() for i in range(4)]
PUBS = [public_key(k) for k in KEYS]


@FUZZ
@given(
    key=st.integers(0, len(KEYS) - 1),
    msg=st.binary(max_size=200),
    where=st.sampled_from(["msg", "sig", "key"]),
    bits=st.lists(st.integers(0, 1 << 16), min_size=1, max_size=3, unique=True),
)
def test_bit_flips_never_verify_and_never_raise(
    key: int, msg: bytes, where: str, bits: list[int]
) -> None:
    pub, sig = PUBS[key], sign(KEYS[key], msg)
    assert verify(pub, msg, sig)
    parts = {"msg": bytearray(msg), "sig": bytearray(sig), "key": bytearray(pub)}
    target = parts[where]
    if not target:
        target.append(1)  # flipping a bit of an empty message: make it one byte instead
    else:
        for bit in {b % (len(target) * 8) for b in bits}:
            target[bit // 8] ^= 1 << (bit % 8)
    assert verify(bytes(parts["key"]), bytes(parts["msg"]), bytes(parts["sig"])) is False


@FUZZ
@given(public=st.binary(max_size=40), msg=st.binary(max_size=40), sig=st.binary(max_size=70))
def test_random_inputs_never_raise(public: bytes, msg: bytes, sig: bytes) -> None:
    assert verify(public, msg, sig) in (True, False)
    if len(public) == 32 and len(sig) == 64:
        assert verify(public, msg, sig) is False


def test_the_signer_cache_never_mixes_keys() -> None:
    vectors = [
        (bytes.fromhex(v[1]), bytes.fromhex(v[2]), v[3], bytes.fromhex(v[4])) for v in RFC8032
    ]
    for _ in range(2):
        for seed, pub, msg, sig in vectors + vectors[::-1]:
            assert sign(seed, msg) == sig
            assert public_key(seed) == pub
            assert sign(seed, msg) == sig  # a cache hit
