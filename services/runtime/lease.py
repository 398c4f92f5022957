"""A short lease in Redis so that one replica at a time does a periodic chore.

The chores that use it (sweeping expired holds) are safe to run on every
replica at once; the lease only spares the database N replicas' identical
polling. So without Redis, or when Redis fails, every replica just does it.
"""

from __future__ import annotations

import os
import socket

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.runtime import metrics

OWNER = f"{socket.gethostname()}:{os.getpid()}"


async def take_turn(
    redis: Redis | None, service: str, chore: str, seconds: float, scope: str = ""
) -> bool:
    """True when this process should do `chore` now: it holds the lease, or
    there is no Redis to hold one in. `scope` tells apart deployments (or
    tests) that share one Redis but not one database."""
    if redis is None:
        return True
    key = f"eap:{service}:lease:{chore}" + (f":{scope}" if scope else "")
    try:
        if await redis.set(key, OWNER, nx=True, px=int(seconds * 1000)):
            return True
        holder = await redis.get(key)
        return holder in (OWNER, OWNER.encode())
    except RedisError:
        metrics.STORE_ERRORS.labels(service, "redis").inc()
        return True
