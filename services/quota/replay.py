"""Answers to retried reservations, from Redis.

A frontend that times out retries the same Reserve; the database answers it
correctly (the idempotency record), but a retry storm would each take a
write transaction. The first answer is kept in Redis for the hold's lifetime
so retries cost one GET. Redis is a cache here, never the only copy: on a
miss, an error or no Redis at all, the database path answers.
"""

from __future__ import annotations

import logging

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from eap.quota.v1 import quota_pb2 as pb
from services.runtime import metrics

log = logging.getLogger("eap.quota")
PREFIX = "eap:quota:reserve:"


class ReplayCache:
    def __init__(self, client: redis_asyncio.Redis | None) -> None:
        self._redis = client

    async def get(self, key: str) -> tuple[str, pb.ReserveResponse] | None:
        if self._redis is None:
            return None
        try:
            raw = await self._redis.get(PREFIX + key)
        except RedisError:
            metrics.STORE_ERRORS.labels("quota", "redis").inc()
            return None
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
        fingerprint, _, body = raw.partition(b"\n")
        return fingerprint.decode(), pb.ReserveResponse.FromString(body)

    async def put(
        self, key: str, fingerprint: str, response: pb.ReserveResponse, ttl_seconds: int
    ) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.set(
                PREFIX + key,
                fingerprint.encode() + b"\n" + response.SerializeToString(),
                ex=max(ttl_seconds, 1),
            )
        except RedisError:
            metrics.STORE_ERRORS.labels("quota", "redis").inc()
