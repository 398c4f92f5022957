"""The demo's last step: the suite as a browser reaches it, through the
Envoy edge (services/edge/), with the calls a web page makes."""

from __future__ import annotations

import asyncio
import json
import struct
import urllib.error
import urllib.request

from eap.calendar.v1 import calendar_pb2 as cpb
from services.edge.process import LocalEdge
from services.runtime.config import Settings
from services.runtime.server import RunningServer

COUNSELORS = "/eap.matcher.v1.MatcherService/ListCounselors"
OFFICE_DAYS = "/eap.calendar.v1.CalendarService/ListOfficeDays"


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as refusal:
        return refusal.code, dict(refusal.headers), refusal.read()


def _preflight(url: str, origin: str) -> str | None:
    request = urllib.request.Request(
        url,
        method="OPTIONS",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,connect-protocol-version",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        allowed: str | None = answer.headers.get("access-control-allow-origin")
    return allowed


async def browser_step(server: RunningServer, settings: Settings) -> None:
    print("\n12. A web page's view: the Envoy edge speaks gRPC-Web and Connect to browsers")
    edge = LocalEdge(settings, listen="127.0.0.1:0")
    await edge.start(server)
    assert edge.process is not None
    url = edge.process.url
    try:
        status, _, body = await asyncio.to_thread(
            _post,
            url + COUNSELORS,
            b'{"pageSize": 3}',
            {"content-type": "application/json", "connect-protocol-version": "1"},
        )
        names = [c["displayName"] for c in json.loads(body).get("counselors", [])]
        print(f"   Connect JSON, POST {COUNSELORS}: HTTP {status}, {', '.join(names)}")
        request = cpb.ListOfficeDaysRequest(start_date="2027-02-26", end_date="2027-03-01")
        message = request.SerializeToString()
        frame = b"\x00" + struct.pack(">I", len(message)) + message
        status, _, body = await asyncio.to_thread(
            _post,
            url + OFFICE_DAYS,
            frame,
            {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
        size = struct.unpack(">I", body[1:5])[0]
        days = cpb.ListOfficeDaysResponse.FromString(body[5 : 5 + size]).days
        closed = [f"{d.date} {d.note}" for d in days if not d.open]
        print(f"   gRPC-Web, {OFFICE_DAYS}: HTTP {status}, closed: {'; '.join(closed)}")
        own = await asyncio.to_thread(_preflight, url + COUNSELORS, url)
        other = await asyncio.to_thread(_preflight, url + COUNSELORS, "https://elsewhere.example")
        print(f"   CORS: a page from {url} may call ({own}); one from elsewhere may not ({other})")
        print(f"   (`make run` keeps the edge up at http://{settings.edge_address})")
    finally:
        await edge.stop()
