"""Where a mole group meets beyond the LAN: a daily info-hash derived from the group's key.

A group announces its transfer port on BitTorrent trackers and the Mainline DHT under

    rendezvous_infohash(key, day) = SHA-1( HMAC-SHA256(key, b"mole-rendezvous-v1" || day) )

with ``day`` the UTC day number (``floor(unix_time / 86400)``) as an 8-byte big-endian signed
integer. Every member computes the same 20 bytes from the shared secret and the date alone, so no
coordination is needed, and the hash changes at each UTC midnight.

Why strangers cannot find a group and observers cannot link it:

* HMAC-SHA256 keyed with a secret is a pseudo-random function: without the key its outputs look
  like independent random strings. An observer of the DHT or of a tracker sees info-hashes that
  cannot be derived from a group's name, cannot be predicted for tomorrow, and cannot be matched
  to yesterday's: day N and day N+1 are as unrelated as two random 160-bit strings.
* The outer SHA-1 only shapes the output to the 20 bytes of an info-hash; it neither adds nor
  removes secrecy. The label makes these hashes unusable for any other purpose of the same key.
* The key must carry real entropy (we require >= 16 bytes; a 32-byte random key is the norm). A
  low-entropy passphrase would let anyone who sees the info-hash test guesses offline.

What it does not hide: the IP addresses that announce or look up a hash are visible to the
tracker and to the DHT nodes storing it, so an observer who watches the same addresses re-appear
under tomorrow's hash can link the two by traffic analysis. Every peer found this way is only a
candidate: it must pass the authenticated handshake before it learns or gets anything.

The midnight rule: a member announces and looks up under two hashes, today's and the nearer
neighbour day's (yesterday's before UTC noon, tomorrow's from noon on; `lookup_days`), so two
members whose clocks differ by up to a day always share one of them: with k = floor(t / DAY -
1/2) a node uses days k and k + 1, and clocks less than (or exactly) a day apart give k's at most
1 apart. One neighbour rather than a fixed grace after midnight: a node whose clock is hours
behind still announces under the day its peers are already in, and a DHT announce of yesterday
(kept 30 minutes) is still looked up after midnight. The loop recomputes the hashes every
minute (node/wan.py), so a clock that is set or skewed while it runs moves along.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Final

LABEL: Final = b"mole-rendezvous-v1"
DAY: Final = 86400
MIN_KEY: Final = 16


def day_of(unix_time: float) -> int:
    """The UTC day number: unix time counts UTC seconds and every day has 86400 of them."""
    return math.floor(unix_time / DAY)


def rendezvous_infohash(group_key: bytes, day: int) -> bytes:
    """The group's 20-byte info-hash for `day`; ValueError for a key shorter than MIN_KEY."""
    if len(group_key) < MIN_KEY:
        raise ValueError(f"a group key needs at least {MIN_KEY} bytes, got {len(group_key)}")
    mac = hmac.new(group_key, LABEL + day.to_bytes(8, "big", signed=True), hashlib.sha256)
    return hashlib.sha1(mac.digest()).digest()


def lookup_days(unix_time: float) -> tuple[int, int]:
    """Today, then yesterday before UTC noon or tomorrow from noon on (the midnight rule)."""
    today = day_of(unix_time)
    if unix_time - today * DAY < DAY / 2:
        return (today, today - 1)
    return (today, today + 1)


def lookup_infohashes(group_key: bytes, unix_time: float) -> list[bytes]:
    """The info-hashes to announce and look up now, today's first."""
    return [rendezvous_infohash(group_key, d) for d in lookup_days(unix_time)]


def next_rotation(unix_time: float) -> float:
    """The next UTC midnight: when the announce moves to the new day's hash."""
    return float((day_of(unix_time) + 1) * DAY)


__all__ = [
    "DAY",
    "LABEL",
    "MIN_KEY",
    "day_of",
    "lookup_days",
    "lookup_infohashes",
    "next_rotation",
    "rendezvous_infohash",
]
