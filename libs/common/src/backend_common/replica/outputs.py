"""What tasks produce: models, performances, and the output assets linking them to task outputs."""

from __future__ import annotations

from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backend_common.db.replica import ComputeTaskOutputAsset, Model, Performance
from backend_common.protos import common_pb2, computetask_pb2, model_pb2, performance_pb2
from backend_common.replica.conversions import addressable, permissions_columns, table, to_datetime

_models = table(Model)
_output_assets = table(ComputeTaskOutputAsset)
_performances = table(Performance)
# Built once: every task run produces some.
_INSERT_MODEL = (
    insert(_models).on_conflict_do_nothing(index_elements=[_models.c.key]).returning(_models.c.key)
)
_INSERT_OUTPUT_ASSET = (
    insert(_output_assets)
    .on_conflict_do_nothing(
        index_elements=[_output_assets.c.task_key, _output_assets.c.identifier, _output_assets.c.asset_key]
    )
    .returning(_output_assets.c.id)
)
_STORE_MODEL_OUTPUT_ASSET = text(
    """
    WITH named AS (
        UPDATE models SET identifier = :identifier WHERE key = CAST(:asset_key AS uuid) RETURNING key
    )
    INSERT INTO compute_task_output_assets (channel, task_key, identifier, asset_kind, asset_key)
    VALUES (:channel, :task_key, :identifier, :asset_kind, :asset_key)
    ON CONFLICT (task_key, identifier, asset_key) DO NOTHING
    RETURNING id
    """
)
_INSERT_PERFORMANCE = (
    insert(_performances)
    .on_conflict_do_nothing(index_elements=[_performances.c.compute_task_key, _performances.c.identifier])
    .returning(_performances.c.compute_task_key)
)


def store_model(session: Session, channel: str, model: model_pb2.Model) -> bool:
    """Insert a model; True if it was new.

    The model message does not name its task output: the identifier is filled in by the
    COMPUTE_TASK_OUTPUT_ASSET event that follows it.
    """
    address, checksum = addressable(model.address)
    inserted = session.execute(
        _INSERT_MODEL,
        {
            "key": model.key,
            "channel": channel,
            "compute_task_key": model.compute_task_key,
            "identifier": "",
            "owner": model.owner,
            "creation_date": to_datetime(model.creation_date),
            "address": address,
            "checksum": checksum,
            **permissions_columns(model.permissions),
        },
    ).scalar_one_or_none()
    return inserted is not None


def disable_model(session: Session, model_key: str) -> None:
    """A transient output was removed: the model has no address any more (downloads answer 410)."""
    session.execute(update(Model).where(Model.key == model_key).values(address=None, checksum=None))


def store_performance(session: Session, channel: str, performance: performance_pb2.Performance) -> bool:
    inserted = session.execute(
        _INSERT_PERFORMANCE,
        {
            "compute_task_key": performance.compute_task_key,
            "identifier": performance.compute_task_output_identifier,
            "channel": channel,
            "value": performance.performance_value,
            "creation_date": to_datetime(performance.creation_date),
        },
    ).scalar_one_or_none()
    return inserted is not None


def store_output_asset(
    session: Session, channel: str, output_asset: computetask_pb2.ComputeTaskOutputAsset
) -> bool:
    """Link an asset to the task output that produced it (a model key, or `<task>|<identifier>`).

    A model learns its output identifier here, in the same statement.
    """
    kind = common_pb2.AssetKind.Name(output_asset.asset_kind)
    values = {
        "channel": channel,
        "task_key": output_asset.compute_task_key,
        "identifier": output_asset.compute_task_output_identifier,
        "asset_kind": kind,
        "asset_key": output_asset.asset_key,
    }
    statement = _STORE_MODEL_OUTPUT_ASSET if kind == "ASSET_MODEL" else _INSERT_OUTPUT_ASSET
    return session.execute(statement, values).scalar_one_or_none() is not None
