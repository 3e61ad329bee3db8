"""`backend-migrations`: schema migrations and account creation (the Helm post-install Job)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend_common.db import make_engine, make_session_factory, session_scope
from backend_common.logging import configure_logging, get_logger

from backend_migrations import schema
from backend_migrations.accounts import AccountFileError, AccountFiles, SyncReport, sync_accounts
from backend_migrations.settings import MigrationsSettings

logger = get_logger("backend_migrations")

DEFAULT_ACCOUNTS_DIR = Path("/accounts")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backend-migrations", description=__doc__)
    parser.add_argument("--database-url", help="SQLAlchemy URL; defaults to the DATABASE_* settings")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("upgrade", help="create or upgrade the backend schema")
    commands.add_parser("check", help="exit 1 unless the schema is at the latest revision")
    for name, help_text in (
        ("accounts", "synchronise users and organization credentials from the account files"),
        ("run", "upgrade, then synchronise the accounts (what the Helm Job runs)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--accounts-dir",
            type=Path,
            help=f"directory holding users, incoming_organizations, outgoing_organizations "
            f"(default {DEFAULT_ACCOUNTS_DIR} when no file is named)",
        )
        command.add_argument("--users", type=Path)
        command.add_argument("--incoming-organizations", type=Path)
        command.add_argument("--outgoing-organizations", type=Path)
    return parser


def _account_files(arguments: argparse.Namespace) -> AccountFiles:
    named = AccountFiles(
        users=arguments.users,
        incoming_organizations=arguments.incoming_organizations,
        outgoing_organizations=arguments.outgoing_organizations,
    )
    if arguments.accounts_dir is None and any(vars(named).values()):
        return named
    directory = AccountFiles.from_directory(arguments.accounts_dir or DEFAULT_ACCOUNTS_DIR)
    # A file named on the command line wins over the one of the directory.
    return AccountFiles(
        users=named.users or directory.users,
        incoming_organizations=named.incoming_organizations or directory.incoming_organizations,
        outgoing_organizations=named.outgoing_organizations or directory.outgoing_organizations,
    )


def _log_report(report: SyncReport) -> None:
    for kind in ("users", "incoming_organizations", "outgoing_organizations"):
        counts = getattr(report, kind)
        if counts is None:
            logger.info("accounts skipped", kind=kind, reason="no file")
            continue
        logger.info(
            "accounts synchronised",
            kind=kind,
            created=counts.created,
            updated=counts.updated,
            deleted=counts.deleted,
            unchanged=len(counts.unchanged),
        )


def sync_accounts_command(settings: MigrationsSettings, database_url: str, files: AccountFiles) -> SyncReport:
    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return sync_accounts(
                session,
                files,
                settings.organization.channel_names,
                oidc_enabled=settings.auth.oidc_enabled,
            )
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    settings = MigrationsSettings()
    configure_logging(settings.logging, service="migrations")
    database_url = arguments.database_url or settings.database_url
    try:
        if arguments.command == "check":
            up_to_date = schema.is_up_to_date(database_url)
            print("up to date" if up_to_date else "migrations pending")
            return 0 if up_to_date else 1
        if arguments.command in ("upgrade", "run"):
            schema.upgrade(database_url)
            logger.info("schema at revision", revision=schema.head_revision())
        if arguments.command in ("accounts", "run"):
            _log_report(sync_accounts_command(settings, database_url, _account_files(arguments)))
    except AccountFileError as error:
        print(f"backend-migrations: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
