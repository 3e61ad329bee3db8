"""Logging configuration, checked on the stdout of a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

SCRIPT = """
import logging
import sys

import structlog

from backend_common.logging import configure_logging, get_logger
from backend_common.settings import LoggingSettings

# A library handler installed before ours (uvicorn does this), which would print plain text twice.
uvicorn_logger = logging.getLogger("uvicorn.error")
uvicorn_logger.addHandler(logging.StreamHandler(sys.stdout))
uvicorn_logger.propagate = False

log = get_logger("tests.structlog")  # before configuration, as module-level loggers are
configure_logging(LoggingSettings(), service="first")
log.info("before reconfiguration")  # structlog caches this logger now
configure_logging(LoggingSettings(), service="test-service")  # again: no duplicated line
log = log.bind(request_id="r-1")

structlog.contextvars.bind_contextvars(channel="mychannel")
log.info("structured event", compute_plan_key="cp-1", count=3)
log.debug("debug event")
logging.getLogger("tests.stdlib").warning("stdlib %s", "record", extra={"asset_key": "a-1"})
logging.getLogger("celery.worker").info("celery record")
uvicorn_logger.info("uvicorn record")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed")
"""


def run_script(**env: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "LOG_LEVEL": "INFO", "LOG_JSON": "true", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stderr == ""
    return completed.stdout.splitlines()


def records_by_event(lines: list[str]) -> dict[str, dict[str, Any]]:
    records = [json.loads(line) for line in lines]
    by_event = {record["event"]: record for record in records}
    assert len(by_event) == len(records), "a line was printed twice"
    return by_event


def test_every_line_is_a_json_object_with_the_common_keys() -> None:
    records = records_by_event(run_script())
    assert set(records) == {
        "before reconfiguration",
        "structured event",
        "stdlib record",
        "celery record",
        "uvicorn record",
        "failed",
    }
    for record in records.values():
        assert {"timestamp", "level", "logger", "event", "service"} <= record.keys()
        timestamp = datetime.fromisoformat(record["timestamp"])
        assert timestamp.utcoffset() == UTC.utcoffset(None)
        assert abs((datetime.now(UTC) - timestamp).total_seconds()) < 60


def test_structlog_event_carries_bound_context() -> None:
    records = records_by_event(run_script())
    assert records["before reconfiguration"]["service"] == "first"
    event = records["structured event"]
    assert event["service"] == "test-service"  # reconfiguring reached a logger bound before
    assert event["level"] == "info"
    assert event["logger"] == "tests.structlog"
    assert (event["request_id"], event["channel"]) == ("r-1", "mychannel")
    assert (event["compute_plan_key"], event["count"]) == ("cp-1", 3)


def test_stdlib_records_go_through_the_same_renderer() -> None:
    records = records_by_event(run_script())
    stdlib = records["stdlib record"]
    assert (stdlib["level"], stdlib["logger"], stdlib["service"]) == (
        "warning",
        "tests.stdlib",
        "test-service",
    )
    assert stdlib["asset_key"] == "a-1"
    assert stdlib["channel"] == "mychannel"
    assert records["celery record"]["logger"] == "celery.worker"
    assert records["uvicorn record"]["logger"] == "uvicorn.error"


def test_exceptions_are_rendered_inside_the_json_object() -> None:
    failed = records_by_event(run_script())["failed"]
    assert failed["level"] == "error"
    assert "ZeroDivisionError" in failed["exception"]


def test_level_comes_from_the_settings() -> None:
    records = records_by_event(run_script(LOG_LEVEL="warning"))
    assert set(records) == {"stdlib record", "failed"}
    records = records_by_event(run_script(LOG_LEVEL="DEBUG"))
    assert records["debug event"]["level"] == "debug"


def test_console_rendering_when_json_is_off() -> None:
    lines = run_script(LOG_JSON="false")
    output = "\n".join(lines)
    assert "structured event" in output
    assert "stdlib record" in output
    assert "ZeroDivisionError" in output
    first = lines[0]
    assert not first.startswith("{")
    assert "\x1b[" not in output  # LOGGING_USE_COLORS defaults to off
