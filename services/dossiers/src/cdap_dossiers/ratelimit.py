"""Per-caller token buckets (in this process: each replica enforces the limit for the calls it serves)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


class RateLimiter:
    """`rate` calls per second, with bursts of up to `rate` calls."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def check(self, caller: str, rate: float, now: float | None = None) -> RateDecision:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = _Bucket(tokens=rate, stamp=now)
        bucket.tokens = min(rate, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return RateDecision(True, int(rate), int(bucket.tokens), 1)
        wait = math.ceil((1 - bucket.tokens) / rate)
        return RateDecision(False, int(rate), 0, max(wait, 1))

    def headers(self, decision: RateDecision) -> dict[str, str]:
        """IETF RateLimit header fields, plus Retry-After when refused."""
        headers = {
            "RateLimit-Limit": str(decision.limit),
            "RateLimit-Remaining": str(decision.remaining),
            "RateLimit-Reset": str(decision.reset_seconds),
        }
        if not decision.allowed:
            headers["Retry-After"] = str(decision.reset_seconds)
        return headers
