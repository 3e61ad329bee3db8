"""Failure reports (compute-engine.md 7): logs stored here, the report registered on the orchestrator.

For BUILD and EXECUTION errors the logs are kept in object storage (bucket `substra-asset-logs`,
object named by the asset key) with a `stored_files` record, and published as
`<DEFAULT_DOMAIN>/logs/<asset key>/file/`, where the server serves them according to the logs
permission. INTERNAL errors carry no logs. The orchestrator then fails the task (or the function
and its building tasks).
"""

from __future__ import annotations

from backend_common.logging import get_logger
from backend_common.orchestrator import OrchestratorClient
from backend_common.protos import common_pb2, failure_report_pb2
from backend_common.storage import ASSET_LOGS_BUCKET

from backend_worker.asset_sources import ROLE_LOGS
from backend_worker.context import WorkerContext
from backend_worker.stored_files import store_file

logger = get_logger("backend_worker.failure_reports")

ERROR_TYPES_WITH_LOGS = (failure_report_pb2.ERROR_TYPE_BUILD, failure_report_pb2.ERROR_TYPE_EXECUTION)


def store_logs(context: WorkerContext, asset_key: str, logs: str) -> common_pb2.Addressable:
    stored = store_file(
        context.storage,
        context.sessions,
        asset_key=asset_key,
        role=ROLE_LOGS,
        bucket=ASSET_LOGS_BUCKET,
        object_key=asset_key,
        content=[logs.encode("utf-8", errors="replace")],
        filename=f"{asset_key}.txt",
    )
    return common_pb2.Addressable(
        checksum=stored.sha256,
        storage_address=f"{context.default_domain}/logs/{asset_key}/file/",
    )


def register_failure_report(
    context: WorkerContext,
    client: OrchestratorClient,
    *,
    asset_key: str,
    asset_type: failure_report_pb2.FailedAssetKind.ValueType,
    error_type: failure_report_pb2.ErrorType.ValueType,
    logs: str | None,
) -> None:
    logs_address = None
    if error_type in ERROR_TYPES_WITH_LOGS:
        logs_address = store_logs(context, asset_key, logs or "")
    report = failure_report_pb2.NewFailureReport(
        asset_key=asset_key, error_type=error_type, asset_type=asset_type, logs_address=logs_address
    )
    client.register_failure_report(report)
    logger.info(
        "failure report registered",
        asset_key=asset_key,
        error_type=failure_report_pb2.ErrorType.Name(error_type),
    )
