"""Functions, their inputs and outputs, and their build profiling steps."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backend_common.db.replica import (
    ComputeTask,
    Function,
    FunctionInput,
    FunctionOutput,
    FunctionProfilingStep,
)
from backend_common.protos import common_pb2, function_pb2, profiling_pb2
from backend_common.replica.compute_plans import running_plans
from backend_common.replica.conversions import addressable, permissions_columns, to_datetime


def store_function(session: Session, channel: str, function: function_pb2.Function) -> bool:
    """Insert a function with its inputs and outputs; True if it was new.

    A function already stored (by the REST handler that registered it, or an earlier delivery of
    its event) is left as it is: later changes arrive as UPDATED events.
    """
    description_address, description_checksum = addressable(function.description)
    archive_address, archive_checksum = addressable(function.archive)
    image_address, image_checksum = addressable(function.image)
    inserted = session.execute(
        insert(Function)
        .values(
            key=function.key,
            channel=channel,
            name=function.name,
            owner=function.owner,
            creation_date=to_datetime(function.creation_date),
            metadata_=dict(function.metadata),
            status=function_pb2.FunctionStatus.Name(function.status),
            description_address=description_address or "",
            description_checksum=description_checksum or "",
            archive_address=archive_address or "",
            archive_checksum=archive_checksum or "",
            image_address=image_address,
            image_checksum=image_checksum,
            **permissions_columns(function.permissions),
        )
        .on_conflict_do_nothing(index_elements=[Function.key])
        .returning(Function.key)
    ).scalar_one_or_none()
    if inserted is None:
        return False
    if function.inputs:
        session.execute(
            insert(FunctionInput).on_conflict_do_nothing(),
            [
                {
                    "function_key": function.key,
                    "identifier": identifier,
                    "kind": common_pb2.AssetKind.Name(spec.kind),
                    "optional": spec.optional,
                    "multiple": spec.multiple,
                }
                for identifier, spec in function.inputs.items()
            ],
        )
    if function.outputs:
        session.execute(
            insert(FunctionOutput).on_conflict_do_nothing(),
            [
                {
                    "function_key": function.key,
                    "identifier": identifier,
                    "kind": common_pb2.AssetKind.Name(spec.kind),
                    "multiple": spec.multiple,
                }
                for identifier, spec in function.outputs.items()
            ],
        )
    return True


def update_function(session: Session, function: function_pb2.Function) -> None:
    """Name and status from the snapshot; the image only when the orchestrator has one.

    The image address is also written locally by the save-image step, which an UPDATED event
    without an image must not erase.
    """
    values: dict[str, object] = {
        "name": function.name,
        "status": function_pb2.FunctionStatus.Name(function.status),
    }
    image_address, image_checksum = addressable(function.image)
    if image_checksum:
        values.update(image_address=image_address, image_checksum=image_checksum)
    session.execute(update(Function).where(Function.key == function.key).values(values))


def store_function_profiling_step(session: Session, channel: str, step: profiling_pb2.ProfilingStep) -> bool:
    """Record a build step of a function (duration in µs); False when the asset is not a function.

    The orchestrator accepts profiling steps for any UUID; only function build steps are mirrored.
    """
    if (
        not _is_uuid(step.asset_key)
        or session.scalar(select(Function.key).where(Function.key == step.asset_key)) is None
    ):
        return False
    statement = insert(FunctionProfilingStep).values(
        function_key=step.asset_key, step=step.step, channel=channel, duration_us=step.duration
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[FunctionProfilingStep.function_key, FunctionProfilingStep.step],
            set_={"duration_us": statement.excluded.duration_us},
        )
    )
    return True


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def archive_checksums_in_use(session: Session, *, created_after: datetime) -> set[str]:
    """Archive checksums of the functions a running plan uses, or registered after `created_after`.

    What the images and environments built from function archives must be kept for: a function
    registered recently may be about to be used by a plan that does not exist yet.
    """
    used_by_running_plans = select(ComputeTask.function_key).where(
        ComputeTask.compute_plan_key.in_(running_plans())
    )
    rows = session.scalars(
        select(Function.archive_checksum)
        .where(or_(Function.key.in_(used_by_running_plans), Function.creation_date > created_after))
        .distinct()
    )
    return {checksum.lower() for checksum in rows if checksum}


def known_archive_checksums(session: Session) -> set[str]:
    """Archive checksums of every function of the replica."""
    rows = session.scalars(select(Function.archive_checksum).distinct())
    return {checksum.lower() for checksum in rows if checksum}
