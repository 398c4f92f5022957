"""The audit trails over gRPC: what this process's services recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grpc import aio

from eap.audit.v1 import audit_pb2 as pb
from eap.audit.v1 import audit_pb2_grpc
from services.runtime.audit import AuditTrail
from services.runtime.errors import InvalidArgument
from services.runtime.tenancy import TenantRouter

Context = aio.ServicerContext[Any, Any]


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, trails: Sequence[AuditTrail]) -> None:
        self._trails = {trail.name: trail for trail in trails}

    def _trail(self, name: str) -> AuditTrail:
        trail = self._trails.get(name)
        if trail is None:
            known = ", ".join(sorted(self._trails))
            raise InvalidArgument.single("trail", f"one of: {known}")
        return trail

    async def ListAuditEntries(
        self, request: pb.ListAuditEntriesRequest, context: Context
    ) -> pb.ListAuditEntriesResponse:
        trail = self._trail(request.trail)
        if not 0 <= request.page_size <= 1000:
            raise InvalidArgument.single("page_size", "0 (100) to 1000")
        if request.after_seq < 0:
            raise InvalidArgument.single("after_seq", "0 or more")
        entries = await trail.entries(request.after_seq, request.page_size or 100)
        return pb.ListAuditEntriesResponse(
            entries=[
                pb.AuditEntry(
                    seq=e.seq,
                    recorded_at=e.recorded_at,
                    actor=e.actor,
                    role=e.role,
                    action=e.action,
                    record=e.record,
                    purpose=e.purpose,
                    reference=e.reference,
                    prev_hash=e.prev_hash,
                    hash=e.hash,
                )
                for e in entries
            ]
        )

    async def VerifyAuditTrail(
        self, request: pb.VerifyAuditTrailRequest, context: Context
    ) -> pb.VerifyAuditTrailResponse:
        problems = await self._trail(request.trail).verify()
        return pb.VerifyAuditTrailResponse(intact=not problems, problems=problems)


def register(server: aio.Server, trails: Mapping[str, Sequence[AuditTrail]]) -> str | None:
    """Serves each tenant's trails (by tenant), if there are any; the
    service's full name then."""
    if not any(trails.values()):
        return None
    audit_pb2_grpc.add_AuditServiceServicer_to_server(
        TenantRouter({tenant: AuditServicer(own) for tenant, own in trails.items()}),  # type: ignore[arg-type]
        server,
    )
    return str(pb.DESCRIPTOR.services_by_name["AuditService"].full_name)
