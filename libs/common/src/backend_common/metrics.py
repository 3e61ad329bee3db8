"""Prometheus helpers shared by the services (`operations.md`, section 4.3).

Metrics of this project are named `substra_<name>`; create them with `counter`, `gauge` and
`histogram` so the prefix is applied and a module imported twice (tests, reloads) gets the same
metric instead of a duplicate-registration error.

Multiprocess mode: prometheus_client decides when it is imported whether values live in memory or
in per-process files under `PROMETHEUS_MULTIPROC_DIR`, so that variable must be set in the
environment before the process starts (the chart does). `metrics_registry()` then aggregates the
files of every process.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, cast
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from backend_common.settings import MetricsSettings

METRIC_PREFIX = "substra_"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

GaugeMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"
]

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", Counter, Gauge, Histogram)

_metrics: dict[str, Counter | Gauge | Histogram] = {}
_metrics_lock = threading.Lock()


def metric_name(name: str) -> str:
    return name if name.startswith(METRIC_PREFIX) else f"{METRIC_PREFIX}{name}"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def metrics_registry() -> CollectorRegistry:
    """The registry to expose: every process' files in multiprocess mode, this process' otherwise."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    # A fresh registry: the default one also holds this process' in-memory collectors (gc,
    # platform), which would be reported once per scraped process.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def _get_or_create(kind: type[M], name: str, create: Callable[[str], M]) -> M:
    full_name = metric_name(name)
    with _metrics_lock:
        metric = _metrics.get(full_name)
        if metric is None:
            metric = create(full_name)
            _metrics[full_name] = metric
    if not isinstance(metric, kind):
        raise ValueError(f"metric {full_name} already exists as a {type(metric).__name__}")
    return metric


def counter(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
    return _get_or_create(Counter, name, lambda full: Counter(full, documentation, labelnames))


def gauge(
    name: str, documentation: str, labelnames: Sequence[str] = (), multiprocess_mode: GaugeMode = "livesum"
) -> Gauge:
    # `livesum`: in multiprocess mode, the sum over the processes still alive.
    return _get_or_create(
        Gauge,
        name,
        lambda full: Gauge(full, documentation, labelnames, multiprocess_mode=multiprocess_mode),
    )


def histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
) -> Histogram:
    return _get_or_create(
        Histogram, name, lambda full: Histogram(full, documentation, labelnames, buckets=buckets)
    )


class Timer:
    """Observe elapsed seconds into a histogram: `with Timer(h, step="x"):` or `@Timer(h, step="x")`.

    As a decorator it also times coroutine functions (until the coroutine finishes, not until it is
    created, which is what prometheus_client's own `time()` would measure).
    """

    def __init__(self, histogram: Histogram, **labels: str) -> None:
        self._histogram = histogram.labels(**labels) if labels else histogram
        self._starts: list[float] = []

    def _observe_since(self, start: float) -> None:
        self._histogram.observe(perf_counter() - start)

    def __enter__(self) -> Timer:
        self._starts.append(perf_counter())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._observe_since(self._starts.pop())

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):
            coroutine_function = cast(Callable[P, Awaitable[Any]], func)

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                start = perf_counter()
                try:
                    return await coroutine_function(*args, **kwargs)
                finally:
                    self._observe_since(start)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self._observe_since(start)

        return wrapper


@dataclass(frozen=True)
class MetricsServer:
    """A running `/metrics` HTTP server (a daemon thread)."""

    host: str
    port: int
    _server: WSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(settings: MetricsSettings) -> MetricsServer | None:
    """Serve `/metrics` on `METRICS_HOST:METRICS_PORT` (port 0: any free port); None when disabled."""
    if not settings.enabled:
        return None
    server, thread = _start_http_server(settings.port, addr=settings.host, registry=metrics_registry())
    return MetricsServer(host=settings.host, port=server.server_port, _server=server, _thread=thread)


def metrics_asgi_app() -> Callable[..., Any]:
    """An ASGI app answering with the metrics, e.g. `Mount("/metrics", app=metrics_asgi_app())`."""
    return make_asgi_app(registry=metrics_registry())
