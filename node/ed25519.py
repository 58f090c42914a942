"""Ed25519 signatures (RFC 8032, pure Python): `public_key`, `sign`, `verify`.

Points are kept in extended twisted Edwards coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z,
with the formulas of Hisil-Wong-Carter-Dawson 2008 as written in ref10 (a = -1). Field elements
are Python ints reduced mod p after every product: CPython's `%` on a 510-bit int is cheaper
than any hand-written folding that keeps the numbers from growing.

Speed (the node verifies every discovery announcement it hears):
- Fixed-base multiples [s]B use a table of 64 rows x 8 affine points (j * 16^i * B, built
  lazily once): a signed radix-16 recoding turns [s]B into at most 64 mixed additions and no
  doublings.
- Verification computes [s]B + [k](-A) with one shared chain of doublings (Straus) over w-NAF
  digits: width 8 for B (a second lazily built table of its odd multiples), width 5 for A.
  Doublings skip T unless an addition follows; the last addition skips it too.
- Inversion is `pow(z, -1, p)` (an extended Euclid in C, far cheaper than z^(p-2));
  the square root of decoding is the single exponentiation of RFC 8032 5.1.3.
- A few decoded public keys are cached with their odd multiples, since a LAN has few peers and
  each announces again and again.

Verification is strict, like libsodium's: S must be < L, A must decode under RFC 8032 5.1.3
(canonical y < p, x = 0 only with sign bit 0, on the curve), A and R must not be of small
order, and [s]B - [k]A must encode to exactly the 32 bytes of R (cofactorless check, as in
OpenSSL; a non-canonical R can never match). Nothing here is constant time: signing leaks
timing about the secret scalar through Python's big ints, acceptable for a LAN file sharer
whose threat is a forged announcement, not a co-located timing attacker.
"""

from __future__ import annotations

from typing import Final

from node.digest import sha512

__all__ = ["public_key", "sign", "valid_public_key", "verify"]

P: Final = 2**255 - 19
L: Final = 2**252 + 27742317777372353535851937790883648493
D: Final = -121665 * pow(121666, -1, P) % P
D2: Final = 2 * D % P
SQRT_M1: Final = pow(2, (P - 1) // 4, P)
_MASK255: Final = (1 << 255) - 1

# y of the 8 points of small order: identity (1), order 2 (-1), order 4 (0), order 8 (+-Y8).
# A point is of small order exactly when its y is one of these (x is fixed up to sign by y).
_Y8: Final = 2707385501144840649318225287225658788936804267575313519463743609750303402022
SMALL_ORDER_Y: Final = frozenset({0, 1, P - 1, _Y8, P - _Y8})

_CACHE_SIZE: Final = 128  # decoded public keys kept (about 2 KiB each)
_WIDTH_A: Final = 5  # w-NAF width for the variable point: odd multiples 1..15
_WIDTH_B: Final = 8  # w-NAF width for the base point: odd multiples 1..127

# Affine point in "Niels" form for mixed addition: (y + x, y - x, 2d * x * y), all mod p.
_Niels = tuple[int, int, int]
_Ext = tuple[int, int, int, int]


def _recover_x(y: int, sign: int) -> int | None:
    """x with the given parity on the curve at y (RFC 8032 5.1.3 steps 2-4), or None."""
    yy = y * y % P
    u = (yy - 1) % P
    v = (D * yy + 1) % P
    v3 = v * v % P * v % P
    x = u * v3 % P * pow(u * v3 % P * v3 % P * v % P, (P - 5) // 8, P) % P
    vxx = v * x % P * x % P
    if vxx != u:
        if vxx != P - u:
            return None
        x = x * SQRT_M1 % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def _decode(data: bytes) -> tuple[int, int] | None:
    """Affine (x, y) of a 32-byte encoding, None unless canonical and on the curve."""
    if len(data) != 32:
        return None
    n = int.from_bytes(data, "little")
    y = n & _MASK255
    if y >= P:
        return None
    x = _recover_x(y, n >> 255)
    return None if x is None else (x, y)


def _encode(X: int, Y: int, Z: int) -> bytes:
    zi = pow(Z, -1, P)
    x = X * zi % P
    y = Y * zi % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _add(p: _Ext, q: _Ext) -> _Ext:
    """General extended addition (add-2008-hwcd-3); only used to build tables."""
    X1, Y1, Z1, T1 = p
    X2, Y2, Z2, T2 = q
    a = (Y1 - X1) * (Y2 - X2) % P
    b = (Y1 + X1) * (Y2 + X2) % P
    c = T1 * D2 % P * T2 % P
    d = 2 * Z1 * Z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def _niels(points: list[_Ext]) -> list[_Niels]:
    """Affine Niels forms of many points with one inversion (Montgomery's trick)."""
    prefix = [1]
    for pt in points:
        prefix.append(prefix[-1] * pt[2] % P)
    inv = pow(prefix[-1], -1, P)
    out: list[_Niels] = [(0, 0, 0)] * len(points)
    for i in range(len(points) - 1, -1, -1):
        X, Y, Z, _ = points[i]
        zi = inv * prefix[i] % P
        inv = inv * Z % P
        x = X * zi % P
        y = Y * zi % P
        out[i] = ((y + x) % P, (y - x) % P, D2 * x % P * y % P)
    return out


def _odd_multiples(pt: _Ext, count: int) -> list[_Niels]:
    """[1, 3, 5, ..., 2 * count - 1] * pt in Niels form."""
    twice = _add(pt, pt)
    multiples = [pt]
    for _ in range(count - 1):
        multiples.append(_add(multiples[-1], twice))
    return _niels(multiples)


_BY: Final = 4 * pow(5, -1, P) % P
_BX: Final = _recover_x(_BY, 0) or 0
BASE: Final[_Ext] = (_BX, _BY, 1, _BX * _BY % P)

_base_rows: list[list[_Niels]] = []  # row i: j * 16^i * B for j = 1..8
_base_odd: list[_Niels] = []  # odd multiples of B for the width-8 w-NAF


def _base_table() -> list[list[_Niels]]:
    if not _base_rows:
        points: list[_Ext] = []
        row_base = BASE
        for _ in range(64):
            cur = row_base
            for _ in range(8):
                points.append(cur)
                cur = _add(cur, row_base)
            row_base = _add(points[-1], points[-1])  # 16 * row_base
        flat = _niels(points)
        _base_rows.extend(flat[i : i + 8] for i in range(0, 512, 8))
    return _base_rows


def _base_odd_table() -> list[_Niels]:
    if not _base_odd:
        _base_odd.extend(_odd_multiples(BASE, 1 << (_WIDTH_B - 2)))
    return _base_odd


def _base_mul(s: int) -> tuple[int, int, int]:
    """(X, Y, Z) of [s]B for 0 <= s < L: signed radix-16 digits in [-7, 8], one table row each."""
    rows = _base_table()
    X, Y, Z, T = 0, 1, 1, 0
    carry = 0
    for row in rows:
        d = (s & 15) + carry
        s >>= 4
        if d > 8:
            d -= 16
            carry = 1
        else:
            carry = 0
        if d == 0:
            continue
        if d > 0:
            ypx, ymx, t2 = row[d - 1]
        else:
            ymx, ypx, t2 = row[-d - 1]
            t2 = -t2
        a = (Y + X) * ypx % P
        b = (Y - X) * ymx % P
        c = T * t2 % P
        z2 = Z + Z
        e = a - b
        h = a + b
        g = z2 + c
        f = z2 - c
        X = e * f % P
        Y = h * g % P
        Z = g * f % P
        T = e * h % P
    return X, Y, Z


def _naf(k: int, width: int) -> list[int]:
    """w-NAF digits of 0 <= k < 2^253, least significant first: odd or zero, |d| < 2^(w-1)."""
    out = [0] * 256
    full = 1 << width
    half = full >> 1
    mask = full - 1
    i = 0
    while k:
        if k & 1:
            d = k & mask
            if d > half:
                d -= full
            k -= d
            out[i] = d
            k >>= width
            i += width
        else:
            zeros = (k & -k).bit_length() - 1
            k >>= zeros
            i += zeros
    return out


def _double_scalar(s: int, k: int, neg_a: list[_Niels]) -> tuple[int, int, int]:
    """(X, Y, Z) of [s]B + [k]N, N given by its odd multiples `neg_a` (Straus, shared doublings)."""
    nb = _naf(s, _WIDTH_B)
    na = _naf(k, _WIDTH_A)
    tb = _base_odd_table()
    top = 255
    while top >= 0 and not na[top] and not nb[top]:
        top -= 1
    X, Y, Z, T = 0, 1, 1, 0
    for i in range(top, -1, -1):
        da = na[i]
        db = nb[i]
        # Doubling (ref10 ge_p2_dbl); T only when an addition follows.
        xx = X * X
        yy = Y * Y
        yp = (yy + xx) % P
        zp = (yy - xx) % P
        xp = X + Y
        xp = (xp * xp - yp) % P
        tp = (2 * Z * Z - zp) % P
        X = xp * tp % P
        Y = yp * zp % P
        Z = zp * tp % P
        if not (da or db):
            continue
        T = xp * yp % P
        if da:
            if da > 0:
                ypx, ymx, t2 = neg_a[da >> 1]
            else:
                ymx, ypx, t2 = neg_a[-da >> 1]
                t2 = -t2
            a = (Y + X) * ypx % P
            b = (Y - X) * ymx % P
            c = T * t2 % P
            z2 = Z + Z
            e = a - b
            h = a + b
            g = z2 + c
            f = z2 - c
            X = e * f % P
            Y = h * g % P
            Z = g * f % P
            if db:
                T = e * h % P
        if db:
            if db > 0:
                ypx, ymx, t2 = tb[db >> 1]
            else:
                ymx, ypx, t2 = tb[-db >> 1]
                t2 = -t2
            a = (Y + X) * ypx % P
            b = (Y - X) * ymx % P
            c = T * t2 % P
            z2 = Z + Z
            e = a - b
            h = a + b
            g = z2 + c
            f = z2 - c
            X = e * f % P
            Y = h * g % P
            Z = g * f % P
    return X, Y, Z


_key_cache: dict[bytes, list[_Niels] | None] = {}


def _negated_key(public: bytes) -> list[_Niels] | None:
    """Odd multiples of -A for a valid public key A, None for an invalid one (both cached)."""
    try:
        return _key_cache[public]
    except KeyError:
        pass
    table: list[_Niels] | None = None
    point = _decode(public)
    if point is not None and point[1] not in SMALL_ORDER_Y:
        x, y = -point[0] % P, point[1]
        table = _odd_multiples((x, y, 1, x * y % P), 1 << (_WIDTH_A - 2))
    if len(_key_cache) >= _CACHE_SIZE:
        del _key_cache[next(iter(_key_cache))]  # oldest first
    _key_cache[public] = table
    return table


def _expand(seed: bytes) -> tuple[int, bytes, bytes]:
    """(clamped scalar a, nonce prefix, public key) of a seed (RFC 8032 5.1.5).

    The public key of the last seed is kept: the node signs every announcement with its one
    key, and [a]B is half the cost of a signature. The cache is keyed by SHA-512(seed), which
    is computed anyway, and it can only ever return the key that belongs to the seed (signing
    with a wrong public key would leak the secret scalar).
    """
    global _last_signer
    if not _buffers(seed) or len(seed := bytes(seed)) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    h = sha512(seed)
    a = int.from_bytes(h[:32], "little")
    a = (a & ((1 << 254) - 8)) | (1 << 254)
    if _last_signer[0] == h:
        public = _last_signer[1]
    else:
        public = _encode(*_base_mul(a % L))
        _last_signer = (h, public)
    return a, h[32:], public


_last_signer: tuple[bytes, bytes] = (b"", b"")


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key of a 32-byte secret seed (RFC 8032 5.1.5)."""
    return _expand(seed)[2]


def sign(seed: bytes, msg: bytes) -> bytes:
    """The 64-byte signature R || S of `msg` (RFC 8032 5.1.6)."""
    a, prefix, pub = _expand(seed)
    msg = bytes(msg)
    r = int.from_bytes(sha512(prefix + msg), "little") % L
    r_enc = _encode(*_base_mul(r))
    k = int.from_bytes(sha512(r_enc + pub + msg), "little") % L
    return r_enc + ((r + k * a) % L).to_bytes(32, "little")


def _buffers(*values: object) -> bool:
    return all(isinstance(v, bytes | bytearray | memoryview) for v in values)


def valid_public_key(public: bytes) -> bool:
    """True iff `public` is a canonical encoding of a curve point that is not of small order."""
    return _buffers(public) and len(key := bytes(public)) == 32 and _negated_key(key) is not None


def verify(public: bytes, msg: bytes, sig: bytes) -> bool:
    """True iff `sig` is a valid signature of `msg` under `public`; never raises."""
    if not _buffers(public, msg, sig):
        return False
    public, msg, sig = bytes(public), bytes(msg), bytes(sig)
    if len(public) != 32 or len(sig) != 64:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    r_enc = sig[:32]
    r_y = int.from_bytes(r_enc, "little") & _MASK255
    if r_y >= P or r_y in SMALL_ORDER_Y:
        return False
    neg_a = _negated_key(public)
    if neg_a is None:
        return False
    k = int.from_bytes(sha512(r_enc + public + msg), "little") % L
    return _encode(*_double_scalar(s, k, neg_a)) == r_enc
