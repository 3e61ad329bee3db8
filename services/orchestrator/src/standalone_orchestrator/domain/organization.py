"""Organizations: each one registers itself, once per channel (`orchestrator-grpc.md` 9.2)."""

from __future__ import annotations

from backend_common.protos import common_pb2, event_pb2, organization_pb2

from standalone_orchestrator.domain.assets import ORGANIZATION
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.validation import Checker, is_url
from standalone_orchestrator.errors import conflict
from standalone_orchestrator.store import organizations as store


def register_organization(request: Request, address: str) -> organization_pb2.Organization:
    checker = Checker()
    if address and not is_url(address):
        checker.fail("address", "must be a valid URL")
    # INVALID_ARGUMENT rather than the reference's UNKNOWN: only ALREADY_EXISTS means success.
    checker.check(ORGANIZATION)
    if store.organization_exists(request.connection, request.channel, request.requester):
        raise conflict(ORGANIZATION, request.requester)
    organization = organization_pb2.Organization(
        id=request.requester, address=address, creation_date=request.timestamp
    )
    store.insert_organization(request.connection, request.channel, organization)
    request.emit(event_pb2.EVENT_ASSET_CREATED, common_pb2.ASSET_ORGANIZATION, organization.id, organization)
    return organization


def get_all_organizations(request: Request) -> list[organization_pb2.Organization]:
    return store.list_organizations(request.connection, request.channel)
