"""Permissions (`orchestrator-grpc.md` 9.3).

The owner is always appended to `authorized_ids`, even for public permissions, and the download
permission is the process permission: the reference does not manage them separately.
"""

from __future__ import annotations

from backend_common.protos import common_pb2

from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.errors import bad_request


def create_permission(
    request: Request, owner: str, new: common_pb2.NewPermissions | None
) -> common_pb2.Permission:
    public = bool(new and new.public)
    ids = list(new.authorized_ids) if new else []
    if not public:
        registered = request.organization_ids()
        if any(organization not in registered for organization in ids):
            raise bad_request("invalid permission input values")
    if owner not in ids:
        ids.append(owner)
    return common_pb2.Permission(public=public, authorized_ids=ids)


def create_permissions(
    request: Request, owner: str, new: common_pb2.NewPermissions | None
) -> common_pb2.Permissions:
    permission = create_permission(request, owner, new)
    return common_pb2.Permissions(process=permission, download=permission)


def can_process(permissions: common_pb2.Permissions, organization: str) -> bool:
    return permissions.process.public or organization in permissions.process.authorized_ids


def union(first: common_pb2.Permission, second: common_pb2.Permission) -> common_pb2.Permission:
    if first.public or second.public:
        return common_pb2.Permission(public=True)
    ids = list(first.authorized_ids)
    ids.extend(organization for organization in second.authorized_ids if organization not in ids)
    return common_pb2.Permission(public=False, authorized_ids=ids)
