"""The migrations create the whole backend schema on an empty database, idempotently."""

from __future__ import annotations

import os
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from backend_common.db import Base
from backend_migrations import schema
from sqlalchemy import create_engine, inspect, pool, text


def _schema_snapshot(url: str) -> dict[str, object]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        inspector = inspect(engine)
        snapshot: dict[str, object] = {}
        for table in sorted(inspector.get_table_names()):
            snapshot[table] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                "indexes": sorted(
                    (i["name"] or "", tuple(i["column_names"])) for i in inspector.get_indexes(table)
                ),
                "pk": inspector.get_pk_constraint(table)["constrained_columns"],
                "fks": sorted(fk["name"] or "" for fk in inspector.get_foreign_keys(table)),
            }
        with engine.connect() as connection:
            snapshot["alembic_version"] = connection.execute(
                text("select version_num from alembic_version")
            ).all()
        return snapshot
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_of_the_models(empty_database_url: str) -> None:
    assert schema.current_revision(empty_database_url) is None
    assert not schema.is_up_to_date(empty_database_url)

    schema.upgrade(empty_database_url)

    engine = create_engine(empty_database_url, poolclass=pool.NullPool)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert {"users", "api_tokens", "compute_tasks", "last_events", "stored_files"} <= tables
    assert schema.current_revision(empty_database_url) == schema.head_revision()
    assert schema.is_up_to_date(empty_database_url)


def test_upgrade_twice_changes_nothing(migrated_database_url: str) -> None:
    before = _schema_snapshot(migrated_database_url)
    schema.upgrade(migrated_database_url)
    assert _schema_snapshot(migrated_database_url) == before


def test_migrations_match_the_models(migrated_database_url: str) -> None:
    engine = create_engine(migrated_database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], f"models and migrations differ; add a migration: {differences}"


def test_rest_api_orderings_are_indexed(migrated_database_url: str) -> None:
    engine = create_engine(migrated_database_url, poolclass=pool.NullPool)
    inspector = inspect(engine)
    indexed = {
        table: {tuple(index["column_names"]) for index in inspector.get_indexes(table)}
        for table in (
            "compute_tasks",
            "compute_plans",
            "functions",
            "data_managers",
            "data_samples",
            "models",
        )
    }
    engine.dispose()
    for table, columns in indexed.items():
        assert ("channel", "creation_date", "key") in columns, table
    assert ("compute_plan_key", "status") in indexed["compute_tasks"]
    assert ("channel", "status") in indexed["compute_tasks"]
    assert ("metadata",) in indexed["compute_tasks"]


def _cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    executable = os.path.join(os.path.dirname(sys.executable), "backend-migrations")
    return subprocess.run([executable, *arguments], capture_output=True, text=True, timeout=120, check=False)


def test_console_entry_point_upgrades_and_checks(empty_database_url: str) -> None:
    pending = _cli("--database-url", empty_database_url, "check")
    assert pending.returncode == 1, pending.stderr
    assert "pending" in pending.stdout

    upgraded = _cli("--database-url", empty_database_url, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr

    checked = _cli("--database-url", empty_database_url, "check")
    assert checked.returncode == 0, checked.stderr
    assert "up to date" in checked.stdout
