"""Client-side rate limits: token buckets for requests and tokens per minute, shared by every request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tasks.core.config import RateLimits

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """Refills at `per_minute / 60` per second up to `capacity`. A request larger than the capacity waits
    for a full bucket and leaves it in debt, so big requests are slowed, never refused."""

    def __init__(self, per_minute: float, capacity: float, clock: Clock = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = capacity
        self.clock = clock
        self.level = capacity
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` may be taken (0 when it may be taken now)."""
        self._refill()
        needed = min(amount, self.capacity)
        return 0.0 if self.level >= needed else (needed - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits, plus a shared pause when the server says so
    (a 429 with Retry-After holds every request, not only the one that got it)."""

    def __init__(self, limits: RateLimits, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        # Bursts of at most ~1 s of the request allowance and ~10 s of the token allowance: a full minute's
        # burst at start-up is what makes providers answer 429.
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self.requests = TokenBucket(rpm, max(1.0, rpm / 60), clock) if rpm else None
        self.tokens = TokenBucket(tpm, max(1.0, tpm / 6), clock) if tpm else None
        self.clock = clock
        self.sleep = sleep
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    async def acquire(self, estimated_tokens: int) -> None:
        # One waiter at a time keeps the order fair and the buckets consistent.
        async with self._lock:
            while True:
                wait = max(self.paused_until - self.clock(),
                           self.requests.wait_time(1) if self.requests else 0.0,
                           self.tokens.wait_time(estimated_tokens) if self.tokens else 0.0)
                if wait <= 0:
                    break
                await self.sleep(wait)
            if self.requests:
                self.requests.take(1)
            if self.tokens:
                self.tokens.take(estimated_tokens)

    def settle(self, estimated_tokens: int, used_tokens: int) -> None:
        """Correct the token bucket once the real usage is known."""
        if self.tokens:
            difference = estimated_tokens - used_tokens
            if difference > 0:
                self.tokens.give_back(difference)
            else:
                self.tokens.take(-difference)
