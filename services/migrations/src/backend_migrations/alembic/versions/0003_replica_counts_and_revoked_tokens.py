"""replica counts and revoked tokens

`replica_counts` holds the number of rows per channel of the big replica tables, maintained by
statement-level triggers, so that unfiltered REST listings get their `count` without scanning.
`revoked_tokens` lists the JWT refresh tokens the server no longer accepts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 23:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COUNTED_TABLES = (
    "compute_plans",
    "compute_tasks",
    "functions",
    "data_managers",
    "data_samples",
    "models",
    "performances",
)

# One function for every counted table: TG_TABLE_NAME is the kind. Statement-level triggers with
# transition tables keep bulk inserts cheap (one counter update per statement and channel).
COUNT_FUNCTION = """
CREATE OR REPLACE FUNCTION replica_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO replica_counts (channel, kind, count)
        SELECT channel, TG_TABLE_NAME, count(*) FROM new_rows GROUP BY channel
        ON CONFLICT (channel, kind) DO UPDATE SET count = replica_counts.count + EXCLUDED.count;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE replica_counts AS counts SET count = counts.count - deleted.n
        FROM (SELECT channel, count(*) AS n FROM old_rows GROUP BY channel) AS deleted
        WHERE counts.channel = deleted.channel AND counts.kind = TG_TABLE_NAME;
    ELSIF TG_OP = 'TRUNCATE' THEN
        DELETE FROM replica_counts WHERE kind = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "replica_counts",
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "kind", name=op.f("pk_replica_counts")),
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index(op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"], unique=False)
    op.execute(COUNT_FUNCTION)
    for table in COUNTED_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_count_insert AFTER INSERT ON {table} "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION replica_count_rows()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_count_delete AFTER DELETE ON {table} "
            "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION replica_count_rows()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_count_truncate AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION replica_count_rows()"
        )
        op.execute(
            f"INSERT INTO replica_counts (channel, kind, count) "  # noqa: S608 (table names of this module)
            f"SELECT channel, '{table}', count(*) FROM {table} GROUP BY channel"
        )


def downgrade() -> None:
    for table in COUNTED_TABLES:
        for suffix in ("insert", "delete", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_count_{suffix} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS replica_count_rows()")
    op.drop_index(op.f("ix_revoked_tokens_expires_at"), table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    op.drop_table("replica_counts")
