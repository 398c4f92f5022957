"""The matcher service as the runtime starts it."""

from __future__ import annotations

from pathlib import Path

from grpc import aio

from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.registry import CounselorRegistry
from services.matcher.servicer import MatcherServicer
from services.runtime.server import Runtime
from services.runtime.service_base import DatabaseService


class MatcherService(DatabaseService):
    name = "matcher"
    full_name = "eap.matcher.v1.MatcherService"
    migrations = Path(__file__).parent / "migrations"
    version_table = "alembic_version_matcher"

    async def started(self, runtime: Runtime) -> None:
        self.registry = CounselorRegistry(self.engine)

    def register(self, server: aio.Server) -> None:
        matcher_pb2_grpc.add_MatcherServiceServicer_to_server(
            MatcherServicer(self.registry), server
        )
