"""Typed client of the orchestrator gRPC API (`orchestrator-grpc.md`, sections 4, 7, 8 and 11).

One method per RPC of the 13 services, named in snake_case. Conventions:

* `Register*` methods take the `New*` message (or a sequence of them);
* `Get*` and actions take the key and scalars;
* `Query*` methods take an optional filter message, `page_token` and `page_size`, and return the
  response with its `next_page_token`; `iter_*` methods follow the tokens and yield every item;
* empty responses give None, responses with a single field are unwrapped (a list, a bool, a str).

Every call carries the `mspid`, `channel` and `reqid` metadata. Unary calls have a deadline and are
retried on UNAVAILABLE only, with exponential backoff and jitter; any failure raises the typed
exception of `backend_common.orchestrator.errors`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import grpc

from backend_common.orchestrator.errors import InternalError, from_rpc_error
from backend_common.protos import (
    common_pb2,
    computeplan_pb2,
    computeplan_pb2_grpc,
    computetask_pb2,
    computetask_pb2_grpc,
    datamanager_pb2,
    datamanager_pb2_grpc,
    datasample_pb2,
    datasample_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    failure_report_pb2,
    failure_report_pb2_grpc,
    function_pb2,
    function_pb2_grpc,
    info_pb2,
    info_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
    organization_pb2,
    organization_pb2_grpc,
    performance_pb2,
    performance_pb2_grpc,
    profiling_pb2,
    profiling_pb2_grpc,
)
from backend_common.settings import OrchestratorSettings

logger = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ItemT = TypeVar("ItemT")

RETRYABLE_STATUS = grpc.StatusCode.UNAVAILABLE


def backoff_delay(
    attempt: int, initial: float, maximum: float, rng: Callable[[float, float], float] = random.uniform
) -> float:
    """Delay before retry number `attempt` (1-based): doubling from `initial`, capped, jittered.

    The jitter keeps at least half of the delay so that backends restarting together spread out
    without hammering a recovering orchestrator.
    """
    ceiling = min(maximum, initial * 2 ** (attempt - 1))
    return rng(ceiling / 2, ceiling)


def new_request_id() -> str:
    # Same shape as the ids the orchestrator generates when `reqid` is absent.
    return uuid.uuid4().hex[:8]


def _read(path: str | None, what: str) -> bytes:
    if not path:
        raise ValueError(f"{what} is required for this orchestrator transport")
    return Path(path).read_bytes()


def channel_options(settings: OrchestratorSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", settings.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", settings.keepalive_max_pings_without_data),
    ]


def build_channel(settings: OrchestratorSettings) -> grpc.Channel:
    """An insecure, TLS or mutual-TLS channel to `ORCHESTRATOR_HOST:ORCHESTRATOR_PORT`.

    mTLS implies TLS: a client certificate is never sent in clear, and a configuration enabling
    only mTLS must not silently fall back to an insecure channel.
    """
    options = channel_options(settings)
    if not (settings.tls_enabled or settings.mtls_enabled):
        return grpc.insecure_channel(settings.target, options=options)
    # Without a CA file, gRPC verifies the server against the system roots.
    root = Path(settings.tls_server_cacert_path).read_bytes() if settings.tls_server_cacert_path else None
    if settings.mtls_enabled:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=_read(settings.tls_client_key_path, "ORCHESTRATOR_TLS_CLIENT_KEY_PATH"),
            certificate_chain=_read(settings.tls_client_cert_path, "ORCHESTRATOR_TLS_CLIENT_CERT_PATH"),
        )
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.secure_channel(settings.target, credentials, options=options)


def paginate(fetch: Callable[[str], tuple[Sequence[ItemT], str]]) -> Iterator[ItemT]:
    """Yield the items of every page, `fetch(page_token) -> (items, next_page_token)`."""
    token = ""
    while True:
        items, next_token = fetch(token)
        yield from items
        if not next_token:
            return
        if next_token == token:
            # A server repeating a token would make this loop forever.
            raise InternalError(f"page token {token!r} returned again")
        token = next_token


class OrchestratorClient:
    """The calls of one organization (`msp_id`) on one channel."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        msp_id: str,
        channel: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.msp_id = msp_id
        self.channel = channel
        self._sleep = sleep
        self._grpc_channel = build_channel(settings)
        self._organizations = organization_pb2_grpc.OrganizationServiceStub(self._grpc_channel)
        self._functions = function_pb2_grpc.FunctionServiceStub(self._grpc_channel)
        self._data_managers = datamanager_pb2_grpc.DataManagerServiceStub(self._grpc_channel)
        self._data_samples = datasample_pb2_grpc.DataSampleServiceStub(self._grpc_channel)
        self._datasets = dataset_pb2_grpc.DatasetServiceStub(self._grpc_channel)
        self._plans = computeplan_pb2_grpc.ComputePlanServiceStub(self._grpc_channel)
        self._tasks = computetask_pb2_grpc.ComputeTaskServiceStub(self._grpc_channel)
        self._models = model_pb2_grpc.ModelServiceStub(self._grpc_channel)
        self._performances = performance_pb2_grpc.PerformanceServiceStub(self._grpc_channel)
        self._failure_reports = failure_report_pb2_grpc.FailureReportServiceStub(self._grpc_channel)
        self._profiling = profiling_pb2_grpc.ProfilingServiceStub(self._grpc_channel)
        self._events = event_pb2_grpc.EventServiceStub(self._grpc_channel)
        self._info = info_pb2_grpc.InfoServiceStub(self._grpc_channel)

    # --- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        self._grpc_channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------------

    def _metadata(self, request_id: str) -> tuple[tuple[str, str], ...]:
        return (("mspid", self.msp_id), ("channel", self.channel), ("reqid", request_id))

    def _unary(
        self, name: str, method: grpc.UnaryUnaryMultiCallable[RequestT, ResponseT], request: RequestT
    ) -> ResponseT:
        # One request id for every attempt, so the orchestrator logs show the retries together.
        request_id = new_request_id()
        max_attempts = max(1, self.settings.max_attempts)
        attempt = 1
        while True:
            try:
                return method(
                    request, timeout=self.settings.timeout_seconds, metadata=self._metadata(request_id)
                )
            except grpc.RpcError as error:
                status = error.code()
                if status != RETRYABLE_STATUS or attempt >= max_attempts:
                    raise from_rpc_error(error, method=name) from error
                delay = backoff_delay(
                    attempt, self.settings.retry_initial_delay_seconds, self.settings.retry_max_delay_seconds
                )
                logger.warning(
                    "orchestrator %s unavailable (attempt %d/%d, reqid %s), retrying in %.2fs: %s",
                    name,
                    attempt,
                    max_attempts,
                    request_id,
                    delay,
                    error.details(),
                )
                self._sleep(delay)
                attempt += 1

    # --- OrganizationService -----------------------------------------------------------------------

    def register_organization(self, address: str = "") -> organization_pb2.Organization:
        """Register the caller (`mspid`) in the channel; ALREADY_EXISTS means it already is."""
        request = organization_pb2.RegisterOrganizationParam(address=address)
        return self._unary("RegisterOrganization", self._organizations.RegisterOrganization, request)

    def get_all_organizations(self) -> list[organization_pb2.Organization]:
        request = organization_pb2.GetAllOrganizationsParam()
        response = self._unary("GetAllOrganizations", self._organizations.GetAllOrganizations, request)
        return list(response.organizations)

    # --- FunctionService ---------------------------------------------------------------------------

    def register_function(self, function: function_pb2.NewFunction) -> function_pb2.Function:
        return self._unary("RegisterFunction", self._functions.RegisterFunction, function)

    def get_function(self, key: str) -> function_pb2.Function:
        return self._unary("GetFunction", self._functions.GetFunction, function_pb2.GetFunctionParam(key=key))

    def query_functions(
        self, filter: function_pb2.FunctionQueryFilter | None = None, page_token: str = "", page_size: int = 0
    ) -> function_pb2.QueryFunctionsResponse:
        request = function_pb2.QueryFunctionsParam(page_token=page_token, page_size=page_size, filter=filter)
        return self._unary("QueryFunctions", self._functions.QueryFunctions, request)

    def iter_functions(
        self, filter: function_pb2.FunctionQueryFilter | None = None, page_size: int = 0
    ) -> Iterator[function_pb2.Function]:
        def fetch(token: str) -> tuple[Sequence[function_pb2.Function], str]:
            response = self.query_functions(filter, token, page_size)
            return response.Functions, response.next_page_token

        return paginate(fetch)

    def update_function(self, key: str, name: str = "", image: common_pb2.Addressable | None = None) -> None:
        request = function_pb2.UpdateFunctionParam(key=key, name=name, image=image)
        self._unary("UpdateFunction", self._functions.UpdateFunction, request)

    def apply_function_action(self, function_key: str, action: function_pb2.FunctionAction.ValueType) -> None:
        request = function_pb2.ApplyFunctionActionParam(function_key=function_key, action=action)
        self._unary("ApplyFunctionAction", self._functions.ApplyFunctionAction, request)

    # --- DataManagerService ------------------------------------------------------------------------

    def register_data_manager(
        self, data_manager: datamanager_pb2.NewDataManager
    ) -> datamanager_pb2.DataManager:
        return self._unary("RegisterDataManager", self._data_managers.RegisterDataManager, data_manager)

    def get_data_manager(self, key: str) -> datamanager_pb2.DataManager:
        request = datamanager_pb2.GetDataManagerParam(key=key)
        return self._unary("GetDataManager", self._data_managers.GetDataManager, request)

    def query_data_managers(
        self, page_token: str = "", page_size: int = 0
    ) -> datamanager_pb2.QueryDataManagersResponse:
        request = datamanager_pb2.QueryDataManagersParam(page_token=page_token, page_size=page_size)
        return self._unary("QueryDataManagers", self._data_managers.QueryDataManagers, request)

    def iter_data_managers(self, page_size: int = 0) -> Iterator[datamanager_pb2.DataManager]:
        def fetch(token: str) -> tuple[Sequence[datamanager_pb2.DataManager], str]:
            response = self.query_data_managers(token, page_size)
            return response.data_managers, response.next_page_token

        return paginate(fetch)

    def update_data_manager(self, key: str, name: str) -> None:
        request = datamanager_pb2.UpdateDataManagerParam(key=key, name=name)
        self._unary("UpdateDataManager", self._data_managers.UpdateDataManager, request)

    # --- DataSampleService -------------------------------------------------------------------------

    def register_data_samples(
        self, samples: Sequence[datasample_pb2.NewDataSample]
    ) -> list[datasample_pb2.DataSample]:
        request = datasample_pb2.RegisterDataSamplesParam(samples=samples)
        response = self._unary("RegisterDataSamples", self._data_samples.RegisterDataSamples, request)
        return list(response.data_samples)

    def update_data_samples(self, keys: Sequence[str], data_manager_keys: Sequence[str]) -> None:
        request = datasample_pb2.UpdateDataSamplesParam(keys=keys, data_manager_keys=data_manager_keys)
        self._unary("UpdateDataSamples", self._data_samples.UpdateDataSamples, request)

    def query_data_samples(
        self,
        filter: datasample_pb2.DataSampleQueryFilter | None = None,
        page_token: str = "",
        page_size: int = 0,
    ) -> datasample_pb2.QueryDataSamplesResponse:
        request = datasample_pb2.QueryDataSamplesParam(
            page_token=page_token, page_size=page_size, filter=filter
        )
        return self._unary("QueryDataSamples", self._data_samples.QueryDataSamples, request)

    def iter_data_samples(
        self, filter: datasample_pb2.DataSampleQueryFilter | None = None, page_size: int = 0
    ) -> Iterator[datasample_pb2.DataSample]:
        def fetch(token: str) -> tuple[Sequence[datasample_pb2.DataSample], str]:
            response = self.query_data_samples(filter, token, page_size)
            return response.data_samples, response.next_page_token

        return paginate(fetch)

    def get_data_sample(self, key: str) -> datasample_pb2.DataSample:
        request = datasample_pb2.GetDataSampleParam(key=key)
        return self._unary("GetDataSample", self._data_samples.GetDataSample, request)

    # --- DatasetService ----------------------------------------------------------------------------

    def get_dataset(self, key: str) -> dataset_pb2.Dataset:
        return self._unary("GetDataset", self._datasets.GetDataset, dataset_pb2.GetDatasetParam(key=key))

    # --- ComputePlanService ------------------------------------------------------------------------

    def register_plan(self, plan: computeplan_pb2.NewComputePlan) -> computeplan_pb2.ComputePlan:
        return self._unary("RegisterPlan", self._plans.RegisterPlan, plan)

    def get_plan(self, key: str) -> computeplan_pb2.ComputePlan:
        return self._unary("GetPlan", self._plans.GetPlan, computeplan_pb2.GetComputePlanParam(key=key))

    def apply_plan_action(self, key: str, action: computeplan_pb2.ComputePlanAction.ValueType) -> None:
        request = computeplan_pb2.ApplyPlanActionParam(key=key, action=action)
        self._unary("ApplyPlanAction", self._plans.ApplyPlanAction, request)

    def query_plans(
        self, filter: computeplan_pb2.PlanQueryFilter | None = None, page_token: str = "", page_size: int = 0
    ) -> computeplan_pb2.QueryPlansResponse:
        request = computeplan_pb2.QueryPlansParam(page_token=page_token, page_size=page_size, filter=filter)
        return self._unary("QueryPlans", self._plans.QueryPlans, request)

    def iter_plans(
        self, filter: computeplan_pb2.PlanQueryFilter | None = None, page_size: int = 0
    ) -> Iterator[computeplan_pb2.ComputePlan]:
        def fetch(token: str) -> tuple[Sequence[computeplan_pb2.ComputePlan], str]:
            response = self.query_plans(filter, token, page_size)
            return response.plans, response.next_page_token

        return paginate(fetch)

    def update_plan(self, key: str, name: str) -> None:
        request = computeplan_pb2.UpdateComputePlanParam(key=key, name=name)
        self._unary("UpdatePlan", self._plans.UpdatePlan, request)

    def is_plan_running(self, key: str) -> bool:
        request = computeplan_pb2.IsPlanRunningParam(key=key)
        return self._unary("IsPlanRunning", self._plans.IsPlanRunning, request).is_running

    # --- ComputeTaskService ------------------------------------------------------------------------

    def register_tasks(
        self, tasks: Sequence[computetask_pb2.NewComputeTask]
    ) -> list[computetask_pb2.ComputeTask]:
        """The registered tasks, in the topological order the orchestrator answers with."""
        request = computetask_pb2.RegisterTasksParam(tasks=tasks)
        return list(self._unary("RegisterTasks", self._tasks.RegisterTasks, request).tasks)

    def query_tasks(
        self, filter: computetask_pb2.TaskQueryFilter | None = None, page_token: str = "", page_size: int = 0
    ) -> computetask_pb2.QueryTasksResponse:
        request = computetask_pb2.QueryTasksParam(page_token=page_token, page_size=page_size, filter=filter)
        return self._unary("QueryTasks", self._tasks.QueryTasks, request)

    def iter_tasks(
        self, filter: computetask_pb2.TaskQueryFilter | None = None, page_size: int = 0
    ) -> Iterator[computetask_pb2.ComputeTask]:
        def fetch(token: str) -> tuple[Sequence[computetask_pb2.ComputeTask], str]:
            response = self.query_tasks(filter, token, page_size)
            return response.tasks, response.next_page_token

        return paginate(fetch)

    def get_task(self, key: str) -> computetask_pb2.ComputeTask:
        return self._unary("GetTask", self._tasks.GetTask, computetask_pb2.GetTaskParam(key=key))

    def apply_task_action(
        self, compute_task_key: str, action: computetask_pb2.ComputeTaskAction.ValueType, log: str = ""
    ) -> None:
        request = computetask_pb2.ApplyTaskActionParam(
            compute_task_key=compute_task_key, action=action, log=log
        )
        self._unary("ApplyTaskAction", self._tasks.ApplyTaskAction, request)

    def get_task_input_assets(self, compute_task_key: str) -> list[computetask_pb2.ComputeTaskInputAsset]:
        request = computetask_pb2.GetTaskInputAssetsParam(compute_task_key=compute_task_key)
        return list(self._unary("GetTaskInputAssets", self._tasks.GetTaskInputAssets, request).assets)

    def disable_output(self, compute_task_key: str, identifier: str) -> None:
        request = computetask_pb2.DisableOutputParam(compute_task_key=compute_task_key, identifier=identifier)
        self._unary("DisableOutput", self._tasks.DisableOutput, request)

    # --- ModelService ------------------------------------------------------------------------------

    def register_model(self, model: model_pb2.NewModel) -> model_pb2.Model:
        """Deprecated in the contract: prefer `register_models`."""
        return self._unary("RegisterModel", self._models.RegisterModel, model)

    def register_models(self, models: Sequence[model_pb2.NewModel]) -> list[model_pb2.Model]:
        request = model_pb2.RegisterModelsParam(models=models)
        return list(self._unary("RegisterModels", self._models.RegisterModels, request).models)

    def get_model(self, key: str) -> model_pb2.Model:
        return self._unary("GetModel", self._models.GetModel, model_pb2.GetModelParam(key=key))

    def get_compute_task_output_models(self, compute_task_key: str) -> list[model_pb2.Model]:
        request = model_pb2.GetComputeTaskModelsParam(compute_task_key=compute_task_key)
        return list(
            self._unary("GetComputeTaskOutputModels", self._models.GetComputeTaskOutputModels, request).models
        )

    # --- PerformanceService ------------------------------------------------------------------------

    def register_performance(
        self, performance: performance_pb2.NewPerformance
    ) -> performance_pb2.Performance:
        return self._unary("RegisterPerformance", self._performances.RegisterPerformance, performance)

    def query_performances(
        self,
        filter: performance_pb2.PerformanceQueryFilter | None = None,
        page_token: str = "",
        page_size: int = 0,
    ) -> performance_pb2.QueryPerformancesResponse:
        request = performance_pb2.QueryPerformancesParam(
            page_token=page_token, page_size=page_size, filter=filter
        )
        return self._unary("QueryPerformances", self._performances.QueryPerformances, request)

    def iter_performances(
        self, filter: performance_pb2.PerformanceQueryFilter | None = None, page_size: int = 0
    ) -> Iterator[performance_pb2.Performance]:
        def fetch(token: str) -> tuple[Sequence[performance_pb2.Performance], str]:
            response = self.query_performances(filter, token, page_size)
            return response.Performances, response.next_page_token

        return paginate(fetch)

    # --- FailureReportService ----------------------------------------------------------------------

    def register_failure_report(
        self, report: failure_report_pb2.NewFailureReport
    ) -> failure_report_pb2.FailureReport:
        return self._unary("RegisterFailureReport", self._failure_reports.RegisterFailureReport, report)

    def get_failure_report(self, asset_key: str) -> failure_report_pb2.FailureReport:
        request = failure_report_pb2.GetFailureReportParam(asset_key=asset_key)
        return self._unary("GetFailureReport", self._failure_reports.GetFailureReport, request)

    # --- ProfilingService --------------------------------------------------------------------------

    def register_profiling_step(self, step: profiling_pb2.ProfilingStep) -> None:
        """`step.duration` is in microseconds, as the reference backend sends it."""
        self._unary("RegisterProfilingStep", self._profiling.RegisterProfilingStep, step)

    # --- EventService ------------------------------------------------------------------------------

    def query_events(
        self,
        filter: event_pb2.EventQueryFilter | None = None,
        page_token: str = "",
        page_size: int = 0,
        sort: common_pb2.SortOrder.ValueType = common_pb2.UNSPECIFIED,
    ) -> event_pb2.QueryEventsResponse:
        request = event_pb2.QueryEventsParam(
            page_token=page_token, page_size=page_size, filter=filter, sort=sort
        )
        return self._unary("QueryEvents", self._events.QueryEvents, request)

    def iter_events(
        self,
        filter: event_pb2.EventQueryFilter | None = None,
        page_size: int = 0,
        sort: common_pb2.SortOrder.ValueType = common_pb2.UNSPECIFIED,
    ) -> Iterator[event_pb2.Event]:
        def fetch(token: str) -> tuple[Sequence[event_pb2.Event], str]:
            response = self.query_events(filter, token, page_size, sort)
            return response.events, response.next_page_token

        return paginate(fetch)

    def subscribe_to_events(self, start_event_id: str = "") -> Generator[event_pb2.Event, None, None]:
        """The channel's events after `start_event_id` (exclusive; "" = from the first), then live ones.

        The stream never ends on its own, so it has no deadline and is not retried here: on an error
        the caller resubscribes from the last event it processed. Closing the iterator cancels the call.
        """
        request = event_pb2.SubscribeToEventsParam(start_event_id=start_event_id)
        call = self._events.SubscribeToEvents(request, metadata=self._metadata(new_request_id()))
        try:
            yield from call
        except grpc.RpcError as error:
            raise from_rpc_error(error, method="SubscribeToEvents") from error
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves cancel() unannotated

    # --- InfoService -------------------------------------------------------------------------------

    def query_version(self) -> str:
        """The orchestrator's version string."""
        return self._unary("QueryVersion", self._info.QueryVersion, info_pb2.QueryVersionParam()).orchestrator


class OrchestratorClients:
    """One organization's clients, one per channel, made on first use; safe across threads."""

    def __init__(self, settings: OrchestratorSettings, msp_id: str) -> None:
        self.settings = settings
        self.msp_id = msp_id
        self._clients: dict[str, OrchestratorClient] = {}
        self._lock = threading.Lock()

    def get(self, channel: str) -> OrchestratorClient:
        with self._lock:
            client = self._clients.get(channel)
            if client is None:
                client = OrchestratorClient(self.settings, self.msp_id, channel)
                self._clients[channel] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
