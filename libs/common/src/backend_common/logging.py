"""Structured logging: one JSON object per line on stdout (`operations.md`, section 4.4).

structlog loggers and the standard library's (and so celery, uvicorn, grpc, sqlalchemy) go through
one handler on the root logger whose formatter runs the structlog renderer, so every line has the
same shape: `timestamp` (ISO 8601, UTC), `level`, `logger`, `event`, `service` and any bound
context.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from backend_common.settings import LoggingSettings

# Libraries that install their own handlers or stop propagation; their records must reach the root
# handler instead, or they would be printed twice or as plain text.
_THIRD_PARTY_LOGGERS = (
    "celery",
    "celery.task",
    "celery.redirected",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "sqlalchemy",
    "sqlalchemy.engine",
    "grpc",
)

# Record attributes some libraries add for their own formatters (uvicorn: ANSI-coloured copy).
_DROPPED_EXTRA_KEYS = ("color_message",)

_state: dict[str, Any] = {"service": None, "handler": None}


def _add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Read at each call rather than captured, so reconfiguring changes loggers structlog cached.
    event_dict.setdefault("service", _state["service"])
    return event_dict


def _drop_extra_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in _DROPPED_EXTRA_KEYS:
        event_dict.pop(key, None)
    return event_dict


def _shared_processors() -> list[Processor]:
    """Processors run on structlog events and on stdlib records alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_service,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _renderer_processors(settings: LoggingSettings) -> list[Processor]:
    if settings.json_output:
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    # The console renderer prints exceptions itself and complains when they are already formatted.
    return [structlog.dev.ConsoleRenderer(colors=settings.use_colors)]


def configure_logging(settings: LoggingSettings, service: str) -> None:
    """Route structlog and stdlib logging to stdout through one renderer. Safe to call again."""
    level = logging.getLevelNamesMapping().get(settings.level, logging.INFO)
    _state["service"] = service

    # The processor chain does not depend on the settings, so caching bound loggers stays correct
    # when this function is called again: the level lives on the stdlib loggers, the rendering in
    # the handler below.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(), _drop_extra_keys],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderer_processors(settings),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    previous = _state["handler"]
    if previous is not None:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level)
    _state["handler"] = handler

    for name in _THIRD_PARTY_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
    logging.captureWarnings(True)


def logging_configured() -> bool:
    return _state["handler"] is not None


def get_logger(name: str, **initial_context: Any) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name, **initial_context)
