"""Failure reports, one per failed task or function."""

from __future__ import annotations

from backend_common.protos import failure_report_pb2
from sqlalchemy import Connection, insert, select

from standalone_orchestrator.db.tables import failure_reports as table
from standalone_orchestrator.store import codec


def insert_failure_report(
    connection: Connection, channel: str, report: failure_report_pb2.FailureReport
) -> None:
    has_logs = report.HasField("logs_address")
    connection.execute(
        insert(table).values(
            asset_key=report.asset_key,
            channel=channel,
            asset_type=failure_report_pb2.FailedAssetKind.Name(report.asset_type),
            error_type=failure_report_pb2.ErrorType.Name(report.error_type),
            logs_address=report.logs_address.storage_address if has_logs else None,
            logs_checksum=report.logs_address.checksum if has_logs else None,
            owner=report.owner,
            creation_date=codec.to_datetime(report.creation_date),
        )
    )


def get_failure_report(
    connection: Connection, channel: str, asset_key: str
) -> failure_report_pb2.FailureReport | None:
    row = connection.execute(
        select(table).where(table.c.asset_key == asset_key, table.c.channel == channel)
    ).first()
    if row is None:
        return None
    report = failure_report_pb2.FailureReport(
        asset_key=row.asset_key,
        error_type=failure_report_pb2.ErrorType.Value(row.error_type),
        asset_type=failure_report_pb2.FailedAssetKind.Value(row.asset_type),
        owner=row.owner,
        creation_date=codec.timestamp(row.creation_date),
    )
    if row.logs_address is not None:
        report.logs_address.storage_address = row.logs_address
        report.logs_address.checksum = row.logs_checksum
    return report


def failure_report_exists(connection: Connection, asset_key: str) -> bool:
    statement = select(table.c.asset_key).where(table.c.asset_key == asset_key)
    return connection.execute(statement).first() is not None
