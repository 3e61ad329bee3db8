"""Prometheus metrics, named like the reference's go-grpc-prometheus ones where they overlap."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC, by status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_EMITTED = Counter(
    "orchestrator_events_emitted_total",
    "Events committed to the log.",
    ["channel", "asset_kind", "event_kind"],
)
EVENTS_SENT = Counter(
    "orchestrator_events_sent_total",
    "Events sent to subscribers (replayed or live).",
    ["channel"],
)
SUBSCRIBERS = Gauge(
    "orchestrator_event_subscribers",
    "Open SubscribeToEvents streams.",
    ["channel"],
)
