"""Failure reports (`orchestrator-grpc.md` 9.11): recording one fails the task or the function."""

from __future__ import annotations

from backend_common.protos import common_pb2, event_pb2, failure_report_pb2

from standalone_orchestrator.domain import function as function_domain
from standalone_orchestrator.domain import task_actions
from standalone_orchestrator.domain.assets import COMPUTE_TASK, FAILURE_REPORT, FUNCTION
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.task_state import Action, Status
from standalone_orchestrator.domain.validation import Checker
from standalone_orchestrator.errors import bad_request, conflict, not_found, permission_denied
from standalone_orchestrator.store import addressables
from standalone_orchestrator.store import compute_tasks as task_store
from standalone_orchestrator.store import failure_reports as store
from standalone_orchestrator.store import functions as function_store

ErrorType = failure_report_pb2.ErrorType
FailedAssetKind = failure_report_pb2.FailedAssetKind

REASON = "failure report registered"
_WITH_LOGS = frozenset({ErrorType.ERROR_TYPE_BUILD, ErrorType.ERROR_TYPE_EXECUTION})
_ERROR_TYPES = frozenset({*_WITH_LOGS, ErrorType.ERROR_TYPE_INTERNAL})


def _validate(new: failure_report_pb2.NewFailureReport) -> None:
    checker = Checker()
    checker.uuid("asset_key", new.asset_key)
    # The reference lets UNSPECIFIED through and fails later on a foreign key (UNKNOWN).
    if new.error_type not in _ERROR_TYPES:
        checker.fail("error_type", "must be a valid value")
    if new.error_type in _WITH_LOGS:
        checker.addressable("logs_address", new.logs_address, present=new.HasField("logs_address"))
    elif new.HasField("logs_address"):
        checker.fail("logs_address", "must be blank")
    if new.asset_type and new.asset_type not in (
        FailedAssetKind.FAILED_ASSET_COMPUTE_TASK,
        FailedAssetKind.FAILED_ASSET_FUNCTION,
    ):
        checker.fail("asset_type", "must be a valid value")
    checker.check(FAILURE_REPORT)


def register_failure_report(
    request: Request, new: failure_report_pb2.NewFailureReport
) -> failure_report_pb2.FailureReport:
    _validate(new)
    connection, channel = request.connection, request.channel
    if new.asset_type == FailedAssetKind.FAILED_ASSET_COMPUTE_TASK:
        task = task_store.get_task(connection, channel, new.asset_key)
        if task is None:
            raise not_found(COMPUTE_TASK, new.asset_key)
        if task.worker != request.requester:
            raise permission_denied(f'only "{task.worker}" worker can register failure report')
        if task.status != Status.STATUS_EXECUTING:
            raise bad_request(
                f'cannot register failure report for task with status "{Status.Name(task.status)}"'
            )
        task_actions.apply_action(request, task, Action.TASK_ACTION_FAILED, REASON)
    elif new.asset_type == FailedAssetKind.FAILED_ASSET_FUNCTION:
        function = function_store.get_function(connection, channel, new.asset_key)
        if function is None:
            raise not_found(FUNCTION, new.asset_key)
        if function.owner != request.requester:
            raise permission_denied("only the function owner can register a failure report for it")
        function_domain.transition_function(request, function, function_domain.Transition.FAILED, REASON)
    else:
        raise bad_request(f"unsupported asset type {FailedAssetKind.Name(new.asset_type)}")
    if store.failure_report_exists(connection, new.asset_key):
        raise conflict(FAILURE_REPORT, new.asset_key)
    report = failure_report_pb2.FailureReport(
        asset_key=new.asset_key,
        error_type=new.error_type,
        creation_date=request.timestamp,
        owner=request.requester,
        asset_type=new.asset_type,
    )
    if new.HasField("logs_address"):
        report.logs_address.CopyFrom(new.logs_address)
        addressables.claim_addresses(connection, channel, [(new.asset_key, new.logs_address)])
    store.insert_failure_report(connection, channel, report)
    request.emit(event_pb2.EVENT_ASSET_CREATED, common_pb2.ASSET_FAILURE_REPORT, report.asset_key, report)
    return report


def get_failure_report(request: Request, asset_key: str) -> failure_report_pb2.FailureReport:
    report = store.get_failure_report(request.connection, request.channel, asset_key)
    if report is None:
        raise not_found(FAILURE_REPORT, asset_key)
    return report
