"""`backend-events`: the organization's link to the orchestrator event stream.

* `register`: register this organization in every configured channel, then exit.
* `consume`: register (unless `ISOLATED`), then consume every channel's events until SIGTERM or
  SIGINT: keep the replica, dispatch work, report readiness (`EVENTS_READINESS_FILE`) and metrics.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from backend_common.logging import configure_logging, get_logger
from backend_common.metrics import start_metrics_server
from backend_common.orchestrator import OrchestratorClient, OrchestratorError

from backend_events.registration import register_organization
from backend_events.service import EventsService
from backend_events.settings import EventsSettings

logger = get_logger("backend_events")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backend-events", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register", help="register this organization in every configured channel")
    register.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds (default: keep trying)"
    )
    commands.add_parser("consume", help="register, then consume the event stream of every channel")
    return parser


def register_everywhere(
    settings: EventsSettings, timeout: float | None, sleep: Callable[[float], None] = time.sleep
) -> None:
    for channel in settings.organization.channel_names:
        with OrchestratorClient(
            settings.orchestrator, msp_id=settings.organization.msp_id, channel=channel
        ) as client:
            register_organization(client, settings.http.default_domain, deadline_seconds=timeout, sleep=sleep)


def _sleep_unless(stop: threading.Event, delay: float) -> None:
    if stop.wait(delay):
        raise _StoppedError


def register(settings: EventsSettings, timeout: float | None) -> int:
    if settings.organization.isolated:
        print("ISOLATED is set: nothing to register", file=sys.stderr)
        return 0
    try:
        register_everywhere(settings, timeout)
    except OrchestratorError as error:
        print(f"backend-events: registration failed: {error}", file=sys.stderr)
        return 1
    return 0


class _StoppedError(Exception):
    """A signal arrived while waiting for the orchestrator."""


def consume(settings: EventsSettings) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        logger.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not settings.organization.isolated:
        try:
            register_everywhere(settings, timeout=None, sleep=lambda delay: _sleep_unless(stop, delay))
        except _StoppedError:
            return 0
    metrics_server = start_metrics_server(settings.metrics)
    service = EventsService(settings)
    service.start()
    try:
        while not stop.wait(timeout=1.0):
            pass
    finally:
        service.stop()
        if metrics_server is not None:
            metrics_server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    settings = EventsSettings()
    configure_logging(settings.logging, service="events")
    if arguments.command == "consume":
        return consume(settings)
    return register(settings, arguments.timeout)


if __name__ == "__main__":
    sys.exit(main())
