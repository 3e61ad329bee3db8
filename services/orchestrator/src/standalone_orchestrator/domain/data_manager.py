"""Data managers (`orchestrator-grpc.md` 9.5)."""

from __future__ import annotations

from backend_common.protos import common_pb2, datamanager_pb2, event_pb2

from standalone_orchestrator.db.tables import data_managers as table
from standalone_orchestrator.domain import pagination
from standalone_orchestrator.domain.assets import DATA_MANAGER, ensure_new_keys, ensure_registered
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.permissions import create_permission, create_permissions
from standalone_orchestrator.domain.validation import Checker
from standalone_orchestrator.errors import not_found, permission_denied
from standalone_orchestrator.store import addressables
from standalone_orchestrator.store import data_managers as store


def register_data_manager(
    request: Request, new: datamanager_pb2.NewDataManager
) -> datamanager_pb2.DataManager:
    checker = Checker()
    checker.uuid("key", new.key)
    checker.name("name", new.name)
    if not new.HasField("new_permissions"):
        checker.fail("new_permissions", "cannot be blank")
    checker.addressable("description", new.description, present=new.HasField("description"))
    checker.addressable("opener", new.opener, present=new.HasField("opener"))
    checker.metadata("metadata", new.metadata)
    if not new.HasField("logs_permission"):
        checker.fail("logs_permission", "cannot be blank")
    checker.check(DATA_MANAGER)
    ensure_new_keys(request, DATA_MANAGER, table.c.key, table.c.channel, [new.key])
    ensure_registered(request, request.requester)
    owner = request.requester
    # `type` is a legacy field: accepted, never stored, always returned empty.
    manager = datamanager_pb2.DataManager(
        key=new.key,
        name=new.name,
        owner=owner,
        permissions=create_permissions(request, owner, new.new_permissions),
        description=new.description,
        opener=new.opener,
        creation_date=request.timestamp,
        logs_permission=create_permission(request, owner, new.logs_permission),
        metadata=new.metadata,
    )
    addressables.claim_addresses(
        request.connection, request.channel, [(new.key, new.description), (new.key, new.opener)]
    )
    store.insert_data_manager(request.connection, request.channel, manager)
    request.emit(event_pb2.EVENT_ASSET_CREATED, common_pb2.ASSET_DATA_MANAGER, manager.key, manager)
    return manager


def get_data_manager(request: Request, key: str) -> datamanager_pb2.DataManager:
    manager = store.get_data_manager(request.connection, request.channel, key)
    if manager is None:
        raise not_found(DATA_MANAGER, key)
    return manager


def query_data_managers(
    request: Request, page_token: str, page_size: int
) -> tuple[list[datamanager_pb2.DataManager], str]:
    offset, size = pagination.parse(page_token, page_size)
    return pagination.cut(
        store.query_data_managers(request.connection, request.channel, offset, size), offset, size
    )


def update_data_manager(request: Request, key: str, name: str) -> None:
    checker = Checker()
    checker.uuid("key", key)
    checker.name("name", name)
    checker.check(DATA_MANAGER)
    manager = get_data_manager(request, key)
    if manager.owner != request.requester:
        raise permission_denied("requester does not own the datamanager")
    manager.name = name
    store.set_data_manager_name(request.connection, key, name)
    request.emit(event_pb2.EVENT_ASSET_UPDATED, common_pb2.ASSET_DATA_MANAGER, manager.key, manager)
