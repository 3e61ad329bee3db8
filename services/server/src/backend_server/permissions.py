"""Access rules of downloads and logs (`rest-api.md` 7.1, step 3)."""

from __future__ import annotations

from collections.abc import Sequence

from backend_common.db.replica import ComputeTask, Function, Model, PermissionsMixin

from backend_server.authentication import Caller
from backend_server.errors import ApiError
from backend_server.settings import ServerSettings


def allows(public: bool, authorized_ids: Sequence[str], organization: str) -> bool:
    return public or organization in authorized_ids


def can_process(asset: PermissionsMixin, organization: str) -> bool:
    return allows(asset.permissions_process_public, asset.permissions_process_authorized_ids, organization)


def can_download(asset: PermissionsMixin, organization: str) -> bool:
    return allows(asset.permissions_download_public, asset.permissions_download_authorized_ids, organization)


def denied(organization: str) -> ApiError:
    return ApiError(403, f"You are not allowed to access this asset from organization {organization}")


def check_process(asset: PermissionsMixin, caller: Caller, settings: ServerSettings) -> None:
    """Openers, descriptions, function archives and images: the process permission."""
    organization = caller.acting_organization(settings.msp_id)
    if not can_process(asset, organization):
        raise denied(organization)


def check_model_download(model: Model, caller: Caller, settings: ServerSettings) -> None:
    """A worker fetching an input needs process; an export (user, or relay) needs the export setting."""
    organization = caller.acting_organization(settings.msp_id)
    if caller.is_organization and not caller.proxy_asset:
        if not can_process(model, organization):
            raise denied(organization)
        return
    channel = settings.organization.channel(caller.channel)
    if channel is None or not channel.model_export_enabled:
        raise ApiError(403, f"Disabled: model_export_enabled is disabled on {settings.msp_id}")
    if not can_download(model, organization):
        raise denied(organization)


def check_task_logs(
    task: ComputeTask, function: Function | None, caller: Caller, settings: ServerSettings
) -> None:
    """Build failures are the function's: its process permission applies; else the task's logs permission."""
    organization = caller.acting_organization(settings.msp_id)
    if task.error_type == "ERROR_TYPE_BUILD" and function is not None:
        allowed = can_process(function, organization)
    else:
        allowed = allows(task.logs_permission_public, task.logs_permission_authorized_ids, organization)
    if not allowed:
        raise denied(organization)
