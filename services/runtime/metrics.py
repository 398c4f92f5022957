"""The standard gRPC server metrics, named as go-grpc-prometheus names them,
so that stock dashboards and alerts work unchanged; plus the runtime's own.

Labels carry service and method names and status codes only.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

GRPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    _RPC_LABELS,
)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    (*_RPC_LABELS, "grpc_code"),
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving a request to sending its status.",
    _RPC_LABELS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UNEXPECTED_ERRORS = Counter(
    "eap_unexpected_errors_total",
    "Handler exceptions that were not an expected refusal (answered INTERNAL).",
    ("grpc_service", "grpc_method"),
)
STORE_UP = Gauge(
    "eap_store_up",
    "1 when the last probe of a store (database, redis) succeeded, else 0; "
    "each tenant's database apart.",
    ("service", "store", "tenant"),
)
STORE_ERRORS = Counter(
    "eap_store_errors_total",
    "Failed probes or operations against a store.",
    ("service", "store"),
)
RATE_LIMITED = Counter(
    "eap_rate_limited_total",
    "Calls refused RESOURCE_EXHAUSTED because their caller went over its rate limit.",
    ("role",),
)
CALLS_SHED = Counter(
    "eap_calls_shed_total",
    "Calls refused RESOURCE_EXHAUSTED at once because the process was serving "
    "its limit of calls (EAP_MAX_CONCURRENT_RPCS).",
    ("grpc_service", "grpc_method"),
)
