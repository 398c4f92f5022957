"""The demo's last steps: the suite as a browser reaches it, through the
Envoy edge (services/edge/), with the calls a web page makes; then the
booking page itself, signed in as an employee of the sample county, kept
up while someone at the terminal tries it."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

from eap.calendar.v1 import calendar_pb2 as cpb
from services.cli import token_cli
from services.edge.process import LocalEdge
from services.rules.office_time import OFFICE_ZONE
from services.runtime import clock
from services.runtime.auth import Role
from services.runtime.config import Settings
from services.runtime.i18n import tr
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


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
    return text


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


def _free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as probe:
        # As Envoy binds: a port left in TIME_WAIT by a previous run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return False
    return True


async def browser_step(
    server: RunningServer,
    settings: Settings,
    employee: str,
    story_year: int,
    fund_year: Callable[[int], Awaitable[None]],
) -> str:
    """Steps 12 and 13; returns the booking page's address."""
    print(
        "\n" + tr("12. A web page's view: the Envoy edge speaks gRPC-Web and Connect to browsers")
    )
    # At EAP_EDGE_ADDRESS, unless something (`make run`?) holds it already.
    listen = settings.edge_address if _free(settings.edge_address) else "127.0.0.1:0"
    edge = LocalEdge(settings, listen=listen)
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
        closed_days = tr("closed: {days}", days="; ".join(closed))
        print(f"   gRPC-Web, {OFFICE_DAYS}: HTTP {status}, {closed_days}")
        own = await asyncio.to_thread(_preflight, url + COUNSELORS, url)
        other = await asyncio.to_thread(_preflight, url + COUNSELORS, "https://elsewhere.example")
        cors = tr(
            "CORS: a page from {url} may call ({own}); one from elsewhere may not ({other})",
            url=url,
            own=own,
            other=other,
        )
        print(f"   {cors}")
        await _booking_page(url, settings, employee, story_year, fund_year)
    finally:
        await edge.stop()
    return f"{url}/"


async def _booking_page(
    url: str,
    settings: Settings,
    employee: str,
    story_year: int,
    fund_year: Callable[[int], Awaitable[None]],
) -> None:
    print("\n" + tr("13. The booking page, at the edge's root, in Traditional Chinese"))
    page = await asyncio.to_thread(_get, f"{url}/")
    title = page.split("<title", 1)[1].split(">", 1)[1].split("<", 1)[0]
    print(f"   GET {url}/: {title}")
    token = token_cli.mint(settings, Role.EMPLOYEE, employee, minutes=60)
    print(f"   {url}/#token={token}")
    signed_in = tr("(signed in as {employee} for an hour; ?lang=en for English)", employee=employee)
    print(f"   {signed_in}")
    this_year = clock.now().astimezone(OFFICE_ZONE).year
    if this_year != story_year:  # so that free times show from today
        await fund_year(this_year)
        also = tr(
            "the story's budgets, contracts and entitlements hold for {year} too", year=this_year
        )
        print(f"   {also}")
    if sys.stdin.isatty():
        print("   " + tr("The suite stays up while you try it: press Enter to stop."))
        await asyncio.to_thread(sys.stdin.readline)
