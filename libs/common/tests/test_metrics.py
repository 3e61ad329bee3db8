"""Prometheus helpers: the `/metrics` server over real HTTP, and multiprocess aggregation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from backend_common.metrics import (
    METRIC_PREFIX,
    MULTIPROC_DIR_ENV,
    Timer,
    counter,
    histogram,
    metric_name,
    metrics_asgi_app,
    metrics_registry,
    start_metrics_server,
)
from backend_common.settings import MetricsSettings
from prometheus_client import REGISTRY

LOCAL_SETTINGS = MetricsSettings(host="127.0.0.1", port=0)


def unique(name: str) -> str:
    # The default registry is shared by every test of the process.
    return f"{name}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)


def test_names_carry_the_prefix() -> None:
    assert metric_name("tasks_total") == "substra_tasks_total"
    assert metric_name("substra_tasks_total") == "substra_tasks_total"
    name = unique("prefixed")
    created = counter(name, "A counter.")
    assert counter(name, "A counter.") is created  # a second definition gets the same metric
    assert created._name == f"{METRIC_PREFIX}{name}"
    with pytest.raises(ValueError, match="already exists"):
        histogram(name, "Not a counter.")


def test_server_answers_metrics_over_http(single_process: None) -> None:
    assert metrics_registry() is REGISTRY
    name = unique("requests")
    requests_total = counter(f"{name}_total", "Requests.", ["method"])
    requests_total.labels(method="GET").inc(3)

    server = start_metrics_server(LOCAL_SETTINGS)
    assert server is not None
    try:
        assert server.port > 0
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
        assert response.status_code == 200
        assert f'substra_{name}_total{{method="GET"}} 3.0' in response.text
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


def test_disabled_metrics_start_no_server() -> None:
    assert start_metrics_server(MetricsSettings(enabled=False, port=0)) is None


def test_asgi_app_serves_the_same_metrics(single_process: None) -> None:
    name = unique("asgi")
    counter(f"{name}_total", "Served by the ASGI app.").inc()

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=metrics_asgi_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
            return await client.get("/metrics")

    response = asyncio.run(fetch())
    assert response.status_code == 200
    assert f"substra_{name}_total 1.0" in response.text


def test_timer_observes_blocks_functions_and_coroutines() -> None:
    name = unique("duration_seconds")
    duration = histogram(name, "Durations.", ["step"])

    with Timer(duration, step="block"):
        time.sleep(0.02)

    @Timer(duration, step="function")
    def work(value: int) -> int:
        return value * 2

    @Timer(duration, step="coroutine")
    async def wait(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    assert work(21) == 42
    assert asyncio.run(wait(0.05)) == "done"

    def sample(suffix: str, step: str) -> float:
        value = REGISTRY.get_sample_value(f"substra_{name}_{suffix}", {"step": step})
        assert value is not None
        return value

    assert sample("count", "block") == 1.0
    assert sample("sum", "block") >= 0.02
    assert sample("count", "function") == 1.0
    assert sample("count", "coroutine") == 1.0
    assert sample("sum", "coroutine") >= 0.05  # the awaited time, not just creating the coroutine


WRITER = """
import sys
from backend_common.metrics import counter, histogram
jobs = counter("multiprocess_jobs_total", "Jobs.", ["kind"])
jobs.labels(kind="build").inc(int(sys.argv[1]))
histogram("multiprocess_job_seconds", "Job durations.").observe(float(sys.argv[1]))
"""


def test_multiprocess_mode_aggregates_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # prometheus_client picks multiprocess values at import, so the writers are fresh processes.
    env = {**os.environ, MULTIPROC_DIR_ENV: str(tmp_path)}
    for amount in ("2", "3"):
        subprocess.run([sys.executable, "-c", WRITER, amount], env=env, check=True, timeout=60)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process

    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    assert metrics_registry() is not REGISTRY
    server = start_metrics_server(LOCAL_SETTINGS)
    assert server is not None
    try:
        text = httpx.get(server.url, timeout=10).text
    finally:
        server.stop()
    assert 'substra_multiprocess_jobs_total{kind="build"} 5.0' in text
    assert "substra_multiprocess_job_seconds_count 2.0" in text
    assert "substra_multiprocess_job_seconds_sum 5.0" in text
    # Only the files: not this process' in-memory collectors.
    assert "python_gc_objects_collected_total" not in text
