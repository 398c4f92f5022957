"""The Envoy edge (services/edge/): browsers' protocols in, plain gRPC to
the services; CORS, the token passed through, sizes and mutual TLS."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from google.rpc import error_details_pb2

from eap.matcher.v1 import matcher_pb2 as mpb
from services.edge.config import EdgeConfig, local
from services.edge.process import EdgeProcess
from services.runtime import tls
from tests.access import Secured, bearer
from tests.conftest import Suite
from tests.runtime.test_tls import Encrypted, encrypted  # noqa: F401 (its fixture)

PAGE = "https://eap.pingtung.example"
COUNSELORS = "/eap.matcher.v1.MatcherService/ListCounselors"
GET_CASE = "/eap.matcher.v1.MatcherService/GetCase"
CONNECT_JSON = {"content-type": "application/json", "connect-protocol-version": "1"}


def _call(
    url: str, body: bytes, headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as refusal:
        return refusal.code, {k.lower(): v for k, v in refusal.headers.items()}, refusal.read()


async def call(
    url: str, body: bytes = b"", headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    # The services share this event loop: the blocking client runs beside it.
    return await asyncio.to_thread(_call, url, body, headers or {}, method)


def grpc_web_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_web_frames(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """The messages and the trailers of a gRPC-Web answer."""
    messages, trailers, at = [], {}, 0
    while at < len(body):
        flag, size = body[at], struct.unpack(">I", body[at + 1 : at + 5])[0]
        chunk = body[at + 5 : at + 5 + size]
        if flag & 0x80:
            for line in chunk.decode().strip().split("\r\n"):
                name, _, value = line.partition(":")
                trailers[name.strip().lower()] = value.strip()
        else:
            messages.append(chunk)
        at += 5 + size
    return messages, trailers


@pytest.fixture
async def edge(suite: Suite) -> AsyncIterator[EdgeProcess]:
    """The edge beside the dev suite, allowing one page origin."""
    assert suite.server is not None
    settings = replace(suite.server.runtime.settings, edge_allowed_origins=(PAGE,))
    process = EdgeProcess(
        replace(
            local(settings, f"127.0.0.1:{suite.server.port}", "127.0.0.1:0"),
            allow_loopback_origins=False,
            max_request_bytes=64 * 1024,
        )
    )
    await process.start()
    yield process
    await process.stop()


async def test_browsers_call_over_connect_json_connect_proto_and_grpc_web(
    edge: EdgeProcess,
) -> None:
    status, headers, body = await call(edge.url + COUNSELORS, b"{}", CONNECT_JSON)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert sorted(c["counselorId"] for c in json.loads(body)["counselors"]) == ["C001", "C002"]
    proto = {"content-type": "application/proto", "connect-protocol-version": "1"}
    status, _, body = await call(
        edge.url + COUNSELORS, mpb.ListCounselorsRequest().SerializeToString(), proto
    )
    assert status == 200 and len(mpb.ListCounselorsResponse.FromString(body).counselors) == 2
    web = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    request = grpc_web_frame(mpb.ListCounselorsRequest(page_size=1).SerializeToString())
    status, _, body = await call(edge.url + COUNSELORS, request, web)
    messages, trailers = grpc_web_frames(body)
    assert status == 200 and trailers["grpc-status"] == "0"
    assert [
        c.counselor_id for c in mpb.ListCounselorsResponse.FromString(messages[0]).counselors
    ] == ["C001"]


async def test_refusals_arrive_in_each_protocols_own_form(edge: EdgeProcess) -> None:
    status, _, body = await call(edge.url + GET_CASE, b'{"caseId": "K404"}', CONNECT_JSON)
    error = json.loads(body)
    assert (status, error["code"]) == (404, "not_found") and "case_id" in error["message"]
    # The details travel too: the words for the reader, in Chinese by default.
    (words,) = [d for d in error["details"] if d["type"].endswith("google.rpc.LocalizedMessage")]
    localized = error_details_pb2.LocalizedMessage.FromString(
        base64.b64decode(words["value"] + "==")
    )
    assert (localized.locale, localized.message) == ("zh-TW", "找不到您要的資料。")
    status, _, body = await call(edge.url + GET_CASE, b'{"caseId": 7}', CONNECT_JSON)
    assert json.loads(body)["code"] == "invalid_argument"  # JSON that is no such message
    status, _, body = await call(edge.url + GET_CASE, b'{"caseId": "\xff\xfe"}', CONNECT_JSON)
    assert json.loads(body)["code"] == "invalid_argument"  # and bytes that are no UTF-8
    web = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    request = grpc_web_frame(mpb.GetCaseRequest(case_id="K404").SerializeToString())
    status, headers, body = await call(edge.url + GET_CASE, request, web)
    trailers = {**headers, **grpc_web_frames(body)[1]}
    assert trailers["grpc-status"] == "5"  # NOT_FOUND


async def test_only_allowed_origins_may_call(edge: EdgeProcess) -> None:
    def preflight(origin: str) -> dict[str, str]:
        return {
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,authorization,connect-protocol-version",
        }

    _, allowed, _ = await call(edge.url + COUNSELORS, headers=preflight(PAGE), method="OPTIONS")
    assert allowed["access-control-allow-origin"] == PAGE
    assert "authorization" in allowed["access-control-allow-headers"]
    _, other, _ = await call(
        edge.url + COUNSELORS, headers=preflight("https://evil.example"), method="OPTIONS"
    )
    assert "access-control-allow-origin" not in other
    status, answer, _ = await call(edge.url + COUNSELORS, b"{}", {**CONNECT_JSON, "origin": PAGE})
    assert status == 200 and answer["access-control-allow-origin"] == PAGE
    assert "grpc-status-details-bin" in answer["access-control-expose-headers"]


async def test_a_request_over_the_size_limit_is_refused_at_the_edge(edge: EdgeProcess) -> None:
    huge = json.dumps({"specialty": "x" * 100_000}).encode()
    status, _, _ = await call(edge.url + COUNSELORS, huge, CONNECT_JSON)
    assert status == 413


async def test_the_token_passes_through_to_the_services(secured_suite: Secured) -> None:
    suite = secured_suite
    config = replace(
        local(suite.server.runtime.settings, f"127.0.0.1:{suite.server.port}", "127.0.0.1:0"),
        allow_loopback_origins=False,
    )
    process = EdgeProcess(config)
    await process.start()
    try:
        status, _, body = await call(process.url + COUNSELORS, b"{}", CONNECT_JSON)
        assert (status, json.loads(body)["code"]) == (401, "unauthenticated")
        token = dict(bearer(suite.made.token("employee", "E1")))
        status, _, body = await call(process.url + COUNSELORS, b"{}", {**CONNECT_JSON, **token})
        assert status == 200 and json.loads(body)["counselors"]
    finally:
        await process.stop()


async def test_the_edge_calls_the_services_over_mutual_tls(
    encrypted: Encrypted,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    e = encrypted
    upstream = f"localhost:{e.server.port}"
    config = EdgeConfig(
        listen="127.0.0.1:0",
        admin="127.0.0.1:0",
        upstreams={"quota": upstream, "matcher": upstream, "calendar": upstream},
        tls_dir=str(e.certs / "edge"),
    )
    token = dict(bearer(e.made.token("admin", "eap-admin")))
    for certificate, expected in ((e.certs / "edge", 200), (tmp_path / "stranger", 503)):
        if expected == 503:  # a certificate of another CA: the services refuse the edge
            tls.make_dev_ca(tmp_path / "elsewhere")
            certificate = tmp_path / "elsewhere" / "edge"
        process = EdgeProcess(replace(config, tls_dir=str(certificate)))
        await process.start()
        try:
            status, _, _ = await call(process.url + COUNSELORS, b"{}", {**CONNECT_JSON, **token})
            assert status == expected
        finally:
            await process.stop()


def test_the_clusters_configuration_is_one_envoy_accepts(tmp_path: Path) -> None:
    """What the edge pod's init container writes (`eapctl edge config
    --cluster`) passes Envoy's own validation, TLS and /ready included."""
    import subprocess

    from services.edge.config import cluster, render_json, sds_files
    from services.edge.process import envoy_binary
    from services.runtime.config import Settings

    tls.make_dev_ca(tmp_path / "tls")
    settings = Settings.from_env(
        {
            "EAP_TLS_DIR": str(tmp_path / "tls" / "edge"),
            "EAP_EDGE_ADDRESS": "0.0.0.0:8080",
            "EAP_EDGE_ALLOWED_ORIGINS": "https://eap.pingtung.gov.tw",
        }
    )
    config = cluster(settings, str(tmp_path))
    (tmp_path / "envoy.json").write_text(render_json(config))
    for name, text in sds_files(str(tmp_path / "tls" / "edge")).items():
        (tmp_path / name).write_text(text)
    run = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "envoy.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rendered = json.loads((tmp_path / "envoy.json").read_text())
    addresses = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        for c in rendered["static_resources"]["clusters"]
    }
    assert addresses["quota"]["socket_address"] == {"address": "quota", "port_value": 50051}
    assert addresses["admin"]["socket_address"]["address"] == "127.0.0.1"  # admin: loopback only


async def test_the_booking_page_is_served_at_the_root_keeping_to_its_own_origin(
    edge: EdgeProcess,
) -> None:
    status, headers, body = await call(edge.url + "/", method="GET")
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert '<html lang="zh-Hant-TW">' in body.decode()
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for path in ("/app.js", "/words.js", "/clients.js"):
        status, headers, _ = await call(edge.url + path, method="GET")
        assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    status, _, _ = await call(edge.url + "/style.css", method="GET")
    assert status == 200
    status, _, _ = await call(edge.url + "/nothing-here.js", method="GET")
    assert status == 404
