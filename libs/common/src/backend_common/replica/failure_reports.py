"""Failure reports: the report itself and the error type and logs shown on the failed tasks."""

from __future__ import annotations

from sqlalchemy import ColumnElement, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backend_common.db.replica import ComputeTask, FailureReport
from backend_common.protos import failure_report_pb2
from backend_common.replica.compute_plans import STATUS_FAILED
from backend_common.replica.conversions import addressable, to_datetime


def store_failure_report(
    session: Session, channel: str, report: failure_report_pb2.FailureReport
) -> list[str]:
    """Store the report and mark the failed tasks; the keys of the tasks marked.

    INTERNAL errors carry no logs and are not stored as reports (compute-engine 2.2), but the
    task still shows its error type. A function's build failure is shown on every task of that
    function that failed.
    """
    error_type = failure_report_pb2.ErrorType.Name(report.error_type)
    logs_address, logs_checksum = addressable(report.logs_address)
    if report.error_type != failure_report_pb2.ERROR_TYPE_INTERNAL:
        session.execute(
            insert(FailureReport)
            .values(
                asset_key=report.asset_key,
                channel=channel,
                asset_type=failure_report_pb2.FailedAssetKind.Name(report.asset_type),
                error_type=error_type,
                logs_address=logs_address,
                logs_checksum=logs_checksum,
                owner=report.owner,
                creation_date=to_datetime(report.creation_date),
            )
            .on_conflict_do_nothing(index_elements=[FailureReport.asset_key])
        )
    failed: ColumnElement[bool]
    if report.asset_type == failure_report_pb2.FAILED_ASSET_FUNCTION:
        failed = (ComputeTask.function_key == report.asset_key) & (ComputeTask.status == STATUS_FAILED)
    else:
        failed = ComputeTask.key == report.asset_key
    keys = session.scalars(
        update(ComputeTask)
        .where(failed)
        .values(
            error_type=error_type,
            logs_address=logs_address,
            logs_checksum=logs_checksum,
            logs_owner=report.owner if logs_address else None,
        )
        .returning(ComputeTask.key)
    ).all()
    return list(keys)
