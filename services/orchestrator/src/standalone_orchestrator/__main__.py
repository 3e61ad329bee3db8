"""`orchestrator serve --config FILE` and `orchestrator migrate --config FILE`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from backend_common.logging import configure_logging, get_logger
from backend_common.settings import LoggingSettings

from standalone_orchestrator.api.server import OrchestratorServer
from standalone_orchestrator.config import load_config
from standalone_orchestrator.migrations import upgrade


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description="Standalone Substra orchestrator")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="create or upgrade the schema, then serve gRPC")
    serve.add_argument("--config", required=True, help="YAML configuration file")
    serve.add_argument("--skip-migrations", action="store_true", help="do not touch the schema at start")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds given to calls in flight at stop")
    migrate = commands.add_parser("migrate", help="create or upgrade the schema and exit")
    migrate.add_argument("--config", required=True, help="YAML configuration file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(LoggingSettings(), service="orchestrator")
    logger = get_logger("standalone_orchestrator")
    config = load_config(args.config)
    if args.command == "migrate":
        upgrade(config.database_url)
        logger.info("schema up to date")
        return 0

    if not args.skip_migrations:
        upgrade(config.database_url)
    server = OrchestratorServer(config)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("stopping", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    stopping.wait()
    server.stop(args.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
