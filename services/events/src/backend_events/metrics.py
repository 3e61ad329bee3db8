"""Prometheus metrics of the events service (`substra_events_*`)."""

from __future__ import annotations

from backend_common.metrics import counter, gauge, histogram

CONSUMED = counter(
    "events_consumed_total",
    "Orchestrator events applied to the replica, by kind",
    ["channel", "asset_kind", "event_kind"],
)
LAG = histogram(
    "events_lag_seconds",
    "Time from an event's orchestrator timestamp to the commit of its replica change",
    ["channel"],
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)
LAST_LAG = gauge(
    "events_last_lag_seconds",
    "Lag of the last event applied on the channel",
    ["channel"],
    multiprocess_mode="livemax",
)
RECONNECTS = counter(
    "events_reconnects_total",
    "Times the event stream of a channel was lost and subscribed again",
    ["channel"],
)
STREAM_UP = gauge(
    "events_stream_up",
    "1 while the channel's event stream is subscribed",
    ["channel"],
    multiprocess_mode="livemax",
)
DISPATCHED = counter(
    "events_dispatched_total",
    "Celery tasks sent to the workers, by task name",
    ["task_name"],
)
BATCH_SIZE = histogram(
    "events_batch_size",
    "Events applied per replica transaction",
    ["channel"],
    buckets=(1, 2, 5, 10, 50, 100, 250, 500, 1000, 5000),
)
