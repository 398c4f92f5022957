"""The Envoy edge's configuration, from one template for every place it runs:
`make demo` and `make run` beside the services on the loopback, and the
cluster's ConfigMap (deploy/k8s/base/edge.yaml, checked against this).

Browsers cannot speak native gRPC (no HTTP/2 trailers for scripts), so the
edge lets them call every RPC over gRPC-Web or Connect while the services
stay plain gRPC. Its HTTP filters, in order:

- cors: only the configured origins' pages may call (a preflight from any
  other is answered without the allow headers, so the browser refuses);
- grpc_web: gRPC-Web (binary or base64 text) to gRPC;
- connect_grpc_bridge: Connect unary and streaming calls to gRPC;
- router: by gRPC service, to the quota, the matcher or the calendar;
  and the reference booking page's files at the root (static.py).

The `authorization` header passes through untouched: the services check
the token. Requests larger than `max_request_bytes` are refused (413) before
they reach a service, and every call has `timeout_seconds` at most. With a
TLS folder, the edge calls the services over mutual TLS with its own client
certificate (services/runtime/tls.py). Envoy's admin interface (`/ready`
for readiness, `/stats`) listens on the loopback only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.edge.static import largest_body, page_routes
from services.runtime.config import Settings

# The services a browser may reach, by gRPC service name; the audit trail
# is the auditor's, from the command line, never through the edge.
ROUTED = {
    "eap.quota.v1.QuotaService": "quota",
    "eap.matcher.v1.MatcherService": "matcher",
    "eap.calendar.v1.CalendarService": "calendar",
}
# What a browser's call may carry, and what its script may read back.
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "accept-language",
    "x-request-id",
    "x-eap-purpose",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
)
LOOPBACK_ORIGIN = r"http://(127\.0\.0\.1|localhost)(:[0-9]+)?"
EXPOSED_HEADERS = (
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
)


@dataclass(frozen=True)
class EdgeConfig:
    listen: str  # host:port browsers connect to
    admin: str  # host:port of Envoy's admin interface (/ready, /stats)
    upstreams: Mapping[str, str]  # "quota" / "matcher" / "calendar" -> host:port
    allowed_origins: Sequence[str] = ()  # exact origins, e.g. https://eap.pingtung.gov.tw
    allow_loopback_origins: bool = False  # development: pages on this machine, any port
    max_request_bytes: int = 1024 * 1024
    timeout_seconds: float = 30.0
    tls_dir: str | None = None  # the edge's client certificate for mutual TLS
    sds_dir: str | None = None  # where sds_files() are (default: beside the certificate)
    ready_listen: str | None = None  # a listener answering only /ready (kubelet's probe)
    serve_page: bool = True  # the booking page at the root (static.py)


def _typed(name: str) -> str:
    return f"type.googleapis.com/envoy.extensions.{name}"


def _address(text: str) -> dict[str, Any]:
    host, _, port = text.rpartition(":")
    return {"socket_address": {"address": host.strip("[]") or "0.0.0.0", "port_value": int(port)}}


def _cluster(name: str, address: str, config: EdgeConfig) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _typed("upstreams.http.v3.HttpProtocolOptions"),
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(address)}}]}],
        },
    }
    if config.tls_dir:
        folder = (config.sds_dir or config.tls_dir).rstrip("/")
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _typed("transport_sockets.tls.v3.UpstreamTlsContext"),
                "sni": address.rpartition(":")[0],
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    # Files re-read when they change (a renewal): no restart.
                    "tls_certificate_sds_secret_configs": [
                        {"name": "edge-certificate", "sds_config": _file_sds(folder, "certificate")}
                    ],
                    "validation_context_sds_secret_config": {
                        "name": "edge-ca",
                        "sds_config": _file_sds(folder, "ca"),
                    },
                },
            },
        }
    return cluster


def _file_sds(folder: str, which: str) -> dict[str, Any]:
    return {"path_config_source": {"path": f"{folder}/sds-{which}.json"}}


def sds_files(tls_dir: str) -> dict[str, str]:
    """The SDS documents the TLS clusters name, to be written beside the
    certificate files: Envoy watches them and the files they point at."""
    folder = tls_dir.rstrip("/")
    certificate = {
        "resources": [
            {
                "@type": _typed("transport_sockets.tls.v3.Secret"),
                "name": "edge-certificate",
                "tls_certificate": {
                    "certificate_chain": {"filename": f"{folder}/tls.crt"},
                    "private_key": {"filename": f"{folder}/tls.key"},
                    "watched_directory": {"path": folder},
                },
            }
        ]
    }
    ca = {
        "resources": [
            {
                "@type": _typed("transport_sockets.tls.v3.Secret"),
                "name": "edge-ca",
                "validation_context": {
                    "trusted_ca": {"filename": f"{folder}/ca.crt"},
                    "watched_directory": {"path": folder},
                },
            }
        ]
    }
    return {
        "sds-certificate.json": json.dumps(certificate, indent=2),
        "sds-ca.json": json.dumps(ca, indent=2),
    }


def _cors(config: EdgeConfig) -> dict[str, Any]:
    return {
        "@type": _typed("filters.http.cors.v3.CorsPolicy"),
        "allow_origin_string_match": [
            *({"exact": origin} for origin in config.allowed_origins),
            *(
                [{"safe_regex": {"regex": LOOPBACK_ORIGIN}}]
                if config.allow_loopback_origins
                else []
            ),
        ],
        "allow_methods": "GET, POST, OPTIONS",
        "allow_headers": ", ".join(ALLOWED_HEADERS),
        "expose_headers": ", ".join(EXPOSED_HEADERS),
        "max_age": "600",
        # A preflight from another origin is answered here, without the
        # allow headers (the browser then refuses), never sent on.
        "forward_not_matching_preflights": False,
    }


def render(config: EdgeConfig) -> dict[str, Any]:
    """Envoy's bootstrap configuration for `config`."""
    timeout = f"{config.timeout_seconds:g}s"
    pages = page_routes() if config.serve_page else []
    routes: list[dict[str, Any]] = [
        *(
            {
                "match": {"prefix": f"/{service}/"},
                "route": {
                    "cluster": ROUTED[service],
                    "timeout": timeout,
                    # A streaming call may run as long as the call's own deadline.
                    "max_stream_duration": {"grpc_timeout_header_max": timeout},
                },
                # An answer is in the request's codec (JSON for a Connect
                # JSON call), which the services' gRPC core cannot say.
                "response_headers_to_add": [
                    {
                        "header": {"key": "content-type", "value": "%REQ(content-type)%"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
            }
            for service in ROUTED
        ),
        *pages,
    ]
    manager = {
        "@type": _typed("filters.network.http_connection_manager.v3.HttpConnectionManager"),
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "stream_idle_timeout": timeout,
        "request_timeout": timeout,
        "use_remote_address": True,
        "route_config": {
            "name": "eap",
            "max_direct_response_body_size_bytes": max(4096, largest_body(pages) + 1024),
            "virtual_hosts": [
                {
                    "name": "eap",
                    "domains": ["*"],
                    "routes": routes,
                    "typed_per_filter_config": {"envoy.filters.http.cors": _cors(config)},
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.cors",
                "typed_config": {"@type": _typed("filters.http.cors.v3.Cors")},
            },
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": _typed("filters.http.buffer.v3.Buffer"),
                    "max_request_bytes": config.max_request_bytes,
                },
            },
            {
                "name": "envoy.filters.http.grpc_web",
                "typed_config": {"@type": _typed("filters.http.grpc_web.v3.GrpcWeb")},
            },
            {
                "name": "envoy.filters.http.connect_grpc_bridge",
                "typed_config": {
                    "@type": _typed("filters.http.connect_grpc_bridge.v3.FilterConfig")
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _typed("filters.http.router.v3.Router")},
            },
        ],
    }
    listeners = [
        {
            "name": "edge",
            "address": _address(config.listen),
            "per_connection_buffer_limit_bytes": config.max_request_bytes,
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": manager,
                        }
                    ]
                }
            ],
        }
    ]
    clusters = [
        _cluster(name, address, config) for name, address in sorted(config.upstreams.items())
    ]
    if config.ready_listen:
        listeners.append(_ready_listener(config.ready_listen))
        clusters.append(_admin_cluster(config.admin))
    return {
        # File-based SDS (the TLS certificate, re-read on renewal) wants a node.
        "node": {"id": "eap-edge", "cluster": "eap-edge"},
        "admin": {"address": _address(config.admin)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def local(settings: Settings, services_address: str, listen: str | None = None) -> EdgeConfig:
    """The edge beside `eapctl serve all` (every service at one address):
    in development mode the edge's own pages may call it too."""
    return EdgeConfig(
        listen=listen or settings.edge_address,
        admin="127.0.0.1:0",
        upstreams=dict.fromkeys(set(ROUTED.values()), services_address),
        allowed_origins=settings.edge_allowed_origins,
        allow_loopback_origins=settings.development,
        max_request_bytes=settings.edge_max_request_bytes,
        timeout_seconds=settings.edge_timeout_seconds,
        tls_dir=settings.tls_dir,
    )


def _ready_listener(address: str) -> dict[str, Any]:
    """Envoy's admin `/ready`, and nothing else of the admin interface, for
    kubelet: the admin itself stays on the loopback."""
    manager = {
        "@type": _typed("filters.network.http_connection_manager.v3.HttpConnectionManager"),
        "stat_prefix": "ready",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "ready",
                    "domains": ["*"],
                    "routes": [{"match": {"path": "/ready"}, "route": {"cluster": "admin"}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _typed("filters.http.router.v3.Router")},
            }
        ],
    }
    return {
        "name": "ready",
        "address": _address(address),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


def _admin_cluster(address: str) -> dict[str, Any]:
    return {
        "name": "admin",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "admin",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(address)}}]}],
        },
    }


def cluster(settings: Settings, sds_dir: str) -> EdgeConfig:
    """The edge in Kubernetes (`eapctl edge config --cluster`, run by the
    edge pod's init container): every service at its Service's name."""
    return EdgeConfig(
        listen=settings.edge_address,
        admin=CLUSTER_ADMIN,
        upstreams={
            "quota": settings.quota_address or "quota:50051",
            "matcher": settings.matcher_address or "matcher:50051",
            "calendar": settings.calendar_address or "calendar:50051",
        },
        allowed_origins=settings.edge_allowed_origins,
        max_request_bytes=settings.edge_max_request_bytes,
        timeout_seconds=settings.edge_timeout_seconds,
        tls_dir=settings.tls_dir,
        sds_dir=sds_dir,
        ready_listen=CLUSTER_READY,
    )


CLUSTER_ADMIN = "127.0.0.1:9901"
CLUSTER_READY = "0.0.0.0:8081"


def render_json(config: EdgeConfig) -> str:
    return json.dumps(render(config), indent=2, sort_keys=True) + "\n"
