"""Per-caller rate limits, shared by every replica through Redis.

Each caller (token subject and role) may make `per_second` calls a second on
average over a window of `WINDOW_SECONDS`, counted in one Redis key per
caller and window (INCR, with the key expiring after the window), so three
replicas hold a caller to one budget, not three. Over it, RESOURCE_EXHAUSTED
with the seconds to the next window. Without Redis each replica counts on
its own. When Redis fails the call goes through: a rate limit protects the
service, and must never be what takes it down.

Keys carry a digest of the subject, never the subject itself. The services'
own calls to each other are not limited: their callers already were.
"""

from __future__ import annotations

import hashlib
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.runtime import metrics
from services.runtime.auth import Identity, Role
from services.runtime.errors import ResourceExhausted

log = logging.getLogger("eap.rate")

WINDOW_SECONDS = 10


class RateLimiter:
    def __init__(self, redis: Redis | None, per_second: int, scope: str = "eap") -> None:
        self._redis = redis
        self._limit = per_second * WINDOW_SECONDS
        self._scope = scope
        self._local: dict[str, int] = {}
        self._local_window = 0

    @property
    def enabled(self) -> bool:
        return self._limit > 0

    async def check(self, identity: Identity) -> None:
        if self._limit <= 0 or identity.role is Role.SERVICE:
            return
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        caller = hashlib.sha256(
            f"{identity.tenant}:{identity.role}:{identity.subject}".encode()
        ).hexdigest()[:24]
        count = await self._count(f"{self._scope}:rate:{caller}:{window}", window)
        if count > self._limit:
            retry = (window + 1) * WINDOW_SECONDS - now
            metrics.RATE_LIMITED.labels(identity.role.value).inc()
            raise ResourceExhausted(
                f"rate limit: at most {self._limit} calls per {WINDOW_SECONDS} s; "
                f"retry in {retry:.1f} s",
                retry,
            )

    async def _count(self, key: str, window: int) -> int:
        if self._redis is not None:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.incr(key)
                    pipe.expire(key, WINDOW_SECONDS * 2)
                    count, _ = await pipe.execute()
                return int(count)
            except (RedisError, OSError):
                metrics.STORE_ERRORS.labels("runtime", "redis").inc()
                log.warning("rate limit not applied: redis unreachable")
                return 0
        if window != self._local_window:
            self._local, self._local_window = {}, window
        self._local[key] = self._local.get(key, 0) + 1
        return self._local[key]
