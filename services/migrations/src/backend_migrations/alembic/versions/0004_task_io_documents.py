"""task inputs and outputs documents

`compute_tasks.inputs_document` and `outputs_document` hold the REST representations of a task's
inputs (in registration order) and outputs, kept by statement-level triggers on
`compute_task_inputs` and `compute_task_outputs`, so that listing tasks needs no per-task subquery.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 23:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INPUTS_DOCUMENT = """
    SELECT coalesce(json_agg(json_build_object(
        'identifier', i.identifier,
        'asset_key', i.asset_key,
        'parent_task_key', i.parent_task_key,
        'parent_task_output_identifier', i.parent_task_output_identifier
    ) ORDER BY i.position), '[]'::json)
    FROM compute_task_inputs AS i WHERE i.task_key = compute_tasks.key
"""

OUTPUTS_DOCUMENT = """
    SELECT coalesce(json_object_agg(o.identifier, json_build_object(
        'permissions', json_build_object(
            'process', json_build_object(
                'public', o.permissions_process_public, 'authorized_ids', o.permissions_process_authorized_ids
            ),
            'download', json_build_object(
                'public', o.permissions_download_public,
                'authorized_ids', o.permissions_download_authorized_ids
            )
        ),
        'transient', o.transient
    ) ORDER BY o.identifier), '{}'::json)
    FROM compute_task_outputs AS o WHERE o.task_key = compute_tasks.key
"""


def _function(name: str, column: str, document: str) -> str:
    # Built from constants of this module only.
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE compute_tasks SET {column} = ({document})
    WHERE compute_tasks.key IN (SELECT DISTINCT task_key FROM changed_rows);
    RETURN NULL;
END
$$
"""  # noqa: S608 (built from constants of this module only)


TRIGGERS = (
    ("compute_task_inputs", "compute_task_inputs_document", "inputs_document", INPUTS_DOCUMENT),
    ("compute_task_outputs", "compute_task_outputs_document", "outputs_document", OUTPUTS_DOCUMENT),
)


def upgrade() -> None:
    op.add_column("compute_tasks", sa.Column("inputs_document", sa.JSON(), nullable=True))
    op.add_column("compute_tasks", sa.Column("outputs_document", sa.JSON(), nullable=True))
    for table, function, column, document in TRIGGERS:
        op.execute(_function(function, column, document))
        # One trigger per event: PostgreSQL allows transition tables only on single-event triggers.
        for event, transition in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            op.execute(
                f"CREATE TRIGGER {function}_{event.lower()} AFTER {event} ON {table} "
                f"REFERENCING {transition} TABLE AS changed_rows "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
            )
        op.execute(f"UPDATE compute_tasks SET {column} = ({document})")  # noqa: S608 (module constants)


def downgrade() -> None:
    for table, function, _, _ in TRIGGERS:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {function}_{event} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.drop_column("compute_tasks", "outputs_document")
    op.drop_column("compute_tasks", "inputs_document")
