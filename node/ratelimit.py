"""The upload rate cap (`--max-rate`): one token bucket shared by all of a node's file streams.

Pure bookkeeping (the clock is passed in), so the policy is testable without a network. The
node asks for a whole data frame's worth of tokens before queueing that frame; when the bucket
cannot pay, it asks how long to wait and comes back then (a loop timer, never a sleep).
"""

from __future__ import annotations

MIN_FRAME = 16 << 10  # smallest frame under a cap: per-frame overhead stays below 0.3 %
MAX_FRAME = 1 << 20  # largest frame under a cap: the rate is smooth within ~1/16 s


def frame_for_rate(rate: float) -> int:
    """Bytes per data frame under a cap of `rate` bytes/s: about 16 frames per second."""
    return int(min(MAX_FRAME, max(MIN_FRAME, rate // 16)))


class TokenBucket:
    """`rate` tokens (bytes) per second, at most `burst` saved up; starts full."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now

    def tokens(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def take(self, n: int, now: float) -> bool:
        """Spend `n` tokens (capped at `burst`) if the bucket holds them; else spend nothing."""
        n = min(n, self.burst)
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def delay(self, n: int, now: float) -> float:
        """Seconds until `take(n)` can succeed (0 if it can now)."""
        n = min(n, self.burst)
        self._refill(now)
        return max(0.0, (n - self._tokens) / self.rate)
