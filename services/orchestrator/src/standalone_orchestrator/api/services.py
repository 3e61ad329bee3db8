"""The unary RPCs of the 13 services: each one unpacks its message and calls the domain.

`@rpc(service, method, write=...)` registers a handler; the request message type is read from
the annotation of its `param`. Writes take the channel's lock; reads run on a read-only snapshot
(the reference's list of read-only methods).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, TypeVar

from backend_common.protos import (
    computeplan_pb2,
    computetask_pb2,
    datamanager_pb2,
    datasample_pb2,
    dataset_pb2,
    event_pb2,
    failure_report_pb2,
    function_pb2,
    info_pb2,
    model_pb2,
    organization_pb2,
    performance_pb2,
    profiling_pb2,
)
from google.protobuf import empty_pb2

from standalone_orchestrator.api.rpc import UnaryRpc
from standalone_orchestrator.domain import (
    compute_plan,
    compute_task,
    data_manager,
    data_sample,
    event,
    failure_report,
    function,
    model,
    organization,
    performance,
    profiling,
    task_actions,
)
from standalone_orchestrator.domain.context import Request

Handler = TypeVar("Handler", bound=Callable[..., Any])

_RPCS: list[UnaryRpc[Any, Any]] = []


def rpc(service: str, method: str, *, write: bool) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        request_type = typing.get_type_hints(handler)["param"]
        _RPCS.append(UnaryRpc(service, method, request_type, handler, write))
        return handler

    return register


# --- OrganizationService ---------------------------------------------------------------------------


@rpc("OrganizationService", "RegisterOrganization", write=True)
def register_organization(
    request: Request, param: organization_pb2.RegisterOrganizationParam
) -> organization_pb2.Organization:
    return organization.register_organization(request, param.address)


@rpc("OrganizationService", "GetAllOrganizations", write=False)
def get_all_organizations(
    request: Request, param: organization_pb2.GetAllOrganizationsParam
) -> organization_pb2.GetAllOrganizationsResponse:
    return organization_pb2.GetAllOrganizationsResponse(
        organizations=organization.get_all_organizations(request)
    )


# --- FunctionService -------------------------------------------------------------------------------


@rpc("FunctionService", "RegisterFunction", write=True)
def register_function(request: Request, param: function_pb2.NewFunction) -> function_pb2.Function:
    return function.register_function(request, param)


@rpc("FunctionService", "GetFunction", write=False)
def get_function(request: Request, param: function_pb2.GetFunctionParam) -> function_pb2.Function:
    return function.get_function(request, param.key)


@rpc("FunctionService", "QueryFunctions", write=False)
def query_functions(
    request: Request, param: function_pb2.QueryFunctionsParam
) -> function_pb2.QueryFunctionsResponse:
    functions, token = function.query_functions(
        request, param.page_token, param.page_size, param.filter.compute_plan_key
    )
    return function_pb2.QueryFunctionsResponse(Functions=functions, next_page_token=token)


@rpc("FunctionService", "UpdateFunction", write=True)
def update_function(
    request: Request, param: function_pb2.UpdateFunctionParam
) -> function_pb2.UpdateFunctionResponse:
    function.update_function(request, param)
    return function_pb2.UpdateFunctionResponse()


@rpc("FunctionService", "ApplyFunctionAction", write=True)
def apply_function_action(
    request: Request, param: function_pb2.ApplyFunctionActionParam
) -> function_pb2.ApplyFunctionActionResponse:
    # The reason is always "User action": the reference's handler passes none.
    function.apply_function_action(request, param.function_key, param.action)
    return function_pb2.ApplyFunctionActionResponse()


# --- DataManagerService ----------------------------------------------------------------------------


@rpc("DataManagerService", "RegisterDataManager", write=True)
def register_data_manager(
    request: Request, param: datamanager_pb2.NewDataManager
) -> datamanager_pb2.DataManager:
    return data_manager.register_data_manager(request, param)


@rpc("DataManagerService", "GetDataManager", write=False)
def get_data_manager(
    request: Request, param: datamanager_pb2.GetDataManagerParam
) -> datamanager_pb2.DataManager:
    return data_manager.get_data_manager(request, param.key)


@rpc("DataManagerService", "QueryDataManagers", write=False)
def query_data_managers(
    request: Request, param: datamanager_pb2.QueryDataManagersParam
) -> datamanager_pb2.QueryDataManagersResponse:
    managers, token = data_manager.query_data_managers(request, param.page_token, param.page_size)
    return datamanager_pb2.QueryDataManagersResponse(data_managers=managers, next_page_token=token)


@rpc("DataManagerService", "UpdateDataManager", write=True)
def update_data_manager(
    request: Request, param: datamanager_pb2.UpdateDataManagerParam
) -> datamanager_pb2.UpdateDataManagerResponse:
    data_manager.update_data_manager(request, param.key, param.name)
    return datamanager_pb2.UpdateDataManagerResponse()


# --- DataSampleService -----------------------------------------------------------------------------


@rpc("DataSampleService", "RegisterDataSamples", write=True)
def register_data_samples(
    request: Request, param: datasample_pb2.RegisterDataSamplesParam
) -> datasample_pb2.RegisterDataSamplesResponse:
    samples = data_sample.register_data_samples(request, param.samples)
    return datasample_pb2.RegisterDataSamplesResponse(data_samples=samples)


@rpc("DataSampleService", "UpdateDataSamples", write=True)
def update_data_samples(
    request: Request, param: datasample_pb2.UpdateDataSamplesParam
) -> datasample_pb2.UpdateDataSamplesResponse:
    data_sample.update_data_samples(request, param.keys, param.data_manager_keys)
    return datasample_pb2.UpdateDataSamplesResponse()


@rpc("DataSampleService", "QueryDataSamples", write=False)
def query_data_samples(
    request: Request, param: datasample_pb2.QueryDataSamplesParam
) -> datasample_pb2.QueryDataSamplesResponse:
    samples, token = data_sample.query_data_samples(
        request, param.page_token, param.page_size, param.filter.keys
    )
    return datasample_pb2.QueryDataSamplesResponse(data_samples=samples, next_page_token=token)


@rpc("DataSampleService", "GetDataSample", write=False)
def get_data_sample(request: Request, param: datasample_pb2.GetDataSampleParam) -> datasample_pb2.DataSample:
    return data_sample.get_data_sample(request, param.key)


# --- DatasetService --------------------------------------------------------------------------------


@rpc("DatasetService", "GetDataset", write=False)
def get_dataset(request: Request, param: dataset_pb2.GetDatasetParam) -> dataset_pb2.Dataset:
    return data_sample.get_dataset(request, param.key)


# --- ComputePlanService ----------------------------------------------------------------------------


@rpc("ComputePlanService", "RegisterPlan", write=True)
def register_plan(request: Request, param: computeplan_pb2.NewComputePlan) -> computeplan_pb2.ComputePlan:
    return compute_plan.register_plan(request, param)


@rpc("ComputePlanService", "GetPlan", write=False)
def get_plan(request: Request, param: computeplan_pb2.GetComputePlanParam) -> computeplan_pb2.ComputePlan:
    return compute_plan.get_plan(request, param.key)


@rpc("ComputePlanService", "ApplyPlanAction", write=True)
def apply_plan_action(
    request: Request, param: computeplan_pb2.ApplyPlanActionParam
) -> computeplan_pb2.ApplyPlanActionResponse:
    compute_plan.apply_plan_action(request, param.key, param.action)
    return computeplan_pb2.ApplyPlanActionResponse()


@rpc("ComputePlanService", "QueryPlans", write=False)
def query_plans(
    request: Request, param: computeplan_pb2.QueryPlansParam
) -> computeplan_pb2.QueryPlansResponse:
    plans, token = compute_plan.query_plans(request, param.page_token, param.page_size, param.filter.owner)
    return computeplan_pb2.QueryPlansResponse(plans=plans, next_page_token=token)


@rpc("ComputePlanService", "UpdatePlan", write=True)
def update_plan(
    request: Request, param: computeplan_pb2.UpdateComputePlanParam
) -> computeplan_pb2.UpdateComputePlanResponse:
    compute_plan.update_plan(request, param.key, param.name)
    return computeplan_pb2.UpdateComputePlanResponse()


@rpc("ComputePlanService", "IsPlanRunning", write=False)
def is_plan_running(
    request: Request, param: computeplan_pb2.IsPlanRunningParam
) -> computeplan_pb2.IsPlanRunningResponse:
    return computeplan_pb2.IsPlanRunningResponse(is_running=compute_plan.is_plan_running(request, param.key))


# --- ComputeTaskService ----------------------------------------------------------------------------


@rpc("ComputeTaskService", "RegisterTasks", write=True)
def register_tasks(
    request: Request, param: computetask_pb2.RegisterTasksParam
) -> computetask_pb2.RegisterTasksResponse:
    return computetask_pb2.RegisterTasksResponse(tasks=compute_task.register_tasks(request, param.tasks))


@rpc("ComputeTaskService", "QueryTasks", write=False)
def query_tasks(
    request: Request, param: computetask_pb2.QueryTasksParam
) -> computetask_pb2.QueryTasksResponse:
    tasks, token = compute_task.query_tasks(request, param.page_token, param.page_size, param.filter)
    return computetask_pb2.QueryTasksResponse(tasks=tasks, next_page_token=token)


@rpc("ComputeTaskService", "GetTask", write=False)
def get_task(request: Request, param: computetask_pb2.GetTaskParam) -> computetask_pb2.ComputeTask:
    return compute_task.get_task(request, param.key)


@rpc("ComputeTaskService", "ApplyTaskAction", write=True)
def apply_task_action(
    request: Request, param: computetask_pb2.ApplyTaskActionParam
) -> computetask_pb2.ApplyTaskActionResponse:
    task_actions.apply_task_action(request, param.compute_task_key, param.action, param.log)
    return computetask_pb2.ApplyTaskActionResponse()


@rpc("ComputeTaskService", "GetTaskInputAssets", write=False)
def get_task_input_assets(
    request: Request, param: computetask_pb2.GetTaskInputAssetsParam
) -> computetask_pb2.GetTaskInputAssetsResponse:
    assets = compute_task.get_task_input_assets(request, param.compute_task_key)
    return computetask_pb2.GetTaskInputAssetsResponse(assets=assets)


@rpc("ComputeTaskService", "DisableOutput", write=True)
def disable_output(
    request: Request, param: computetask_pb2.DisableOutputParam
) -> computetask_pb2.DisableOutputResponse:
    compute_task.disable_output(request, param.compute_task_key, param.identifier)
    return computetask_pb2.DisableOutputResponse()


# --- ModelService ----------------------------------------------------------------------------------


@rpc("ModelService", "RegisterModel", write=True)
def register_model(request: Request, param: model_pb2.NewModel) -> model_pb2.Model:
    return model.register_models(request, [param])[0]


@rpc("ModelService", "RegisterModels", write=True)
def register_models(
    request: Request, param: model_pb2.RegisterModelsParam
) -> model_pb2.RegisterModelsResponse:
    return model_pb2.RegisterModelsResponse(models=model.register_models(request, param.models))


@rpc("ModelService", "GetModel", write=False)
def get_model(request: Request, param: model_pb2.GetModelParam) -> model_pb2.Model:
    return model.get_model(request, param.key)


@rpc("ModelService", "GetComputeTaskOutputModels", write=False)
def get_compute_task_output_models(
    request: Request, param: model_pb2.GetComputeTaskModelsParam
) -> model_pb2.GetComputeTaskModelsResponse:
    models = model.get_compute_task_output_models(request, param.compute_task_key)
    return model_pb2.GetComputeTaskModelsResponse(models=models)


# --- PerformanceService ----------------------------------------------------------------------------


@rpc("PerformanceService", "RegisterPerformance", write=True)
def register_performance(
    request: Request, param: performance_pb2.NewPerformance
) -> performance_pb2.Performance:
    return performance.register_performance(request, param)


@rpc("PerformanceService", "QueryPerformances", write=False)
def query_performances(
    request: Request, param: performance_pb2.QueryPerformancesParam
) -> performance_pb2.QueryPerformancesResponse:
    performances, token = performance.query_performances(
        request, param.page_token, param.page_size, param.filter
    )
    return performance_pb2.QueryPerformancesResponse(Performances=performances, next_page_token=token)


# --- FailureReportService --------------------------------------------------------------------------


@rpc("FailureReportService", "RegisterFailureReport", write=True)
def register_failure_report(
    request: Request, param: failure_report_pb2.NewFailureReport
) -> failure_report_pb2.FailureReport:
    return failure_report.register_failure_report(request, param)


@rpc("FailureReportService", "GetFailureReport", write=False)
def get_failure_report(
    request: Request, param: failure_report_pb2.GetFailureReportParam
) -> failure_report_pb2.FailureReport:
    return failure_report.get_failure_report(request, param.asset_key)


# --- ProfilingService ------------------------------------------------------------------------------


@rpc("ProfilingService", "RegisterProfilingStep", write=True)
def register_profiling_step(request: Request, param: profiling_pb2.ProfilingStep) -> empty_pb2.Empty:
    profiling.register_profiling_step(request, param)
    return empty_pb2.Empty()


# --- EventService (the stream lives in api.events) -------------------------------------------------


@rpc("EventService", "QueryEvents", write=False)
def query_events(request: Request, param: event_pb2.QueryEventsParam) -> event_pb2.QueryEventsResponse:
    payloads, token = event.query_events(request, param.page_token, param.page_size, param.filter, param.sort)
    response = event_pb2.QueryEventsResponse(next_page_token=token)
    for payload in payloads:
        response.events.add().MergeFromString(payload)
    return response


# --- InfoService -----------------------------------------------------------------------------------


def unary_rpcs(version: str) -> list[UnaryRpc[Any, Any]]:
    """Every unary RPC; QueryVersion answers the configured version."""

    def query_version(request: Request, param: info_pb2.QueryVersionParam) -> info_pb2.QueryVersionResponse:
        return info_pb2.QueryVersionResponse(orchestrator=version)

    return [*_RPCS, UnaryRpc("InfoService", "QueryVersion", info_pb2.QueryVersionParam, query_version, False)]
