"""`backend-events`: the organization's link to the orchestrator event stream."""

from __future__ import annotations

import argparse
import sys

from backend_common.logging import configure_logging
from backend_common.orchestrator import OrchestratorClient, OrchestratorError

from backend_events.registration import register_organization
from backend_events.settings import EventsSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backend-events", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register", help="register this organization in every configured channel")
    register.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds (default: keep trying)"
    )
    return parser


def register_everywhere(settings: EventsSettings, timeout: float | None) -> None:
    for channel in settings.organization.channel_names:
        with OrchestratorClient(
            settings.orchestrator, msp_id=settings.organization.msp_id, channel=channel
        ) as client:
            register_organization(client, settings.http.default_domain, deadline_seconds=timeout)


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    settings = EventsSettings()
    configure_logging(settings.logging, service="events")
    if settings.organization.isolated:
        print("ISOLATED is set: nothing to register", file=sys.stderr)
        return 0
    try:
        register_everywhere(settings, arguments.timeout)
    except OrchestratorError as error:
        print(f"backend-events: registration failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
