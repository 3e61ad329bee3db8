"""The registry of storage addresses: one asset per address, across channels.

The reference keeps every `Addressable` in one table keyed by storage address, so two assets
sharing an address fail there with an opaque unique violation; here the clash is reported as a
conflict naming the asset holding the address.
"""

from __future__ import annotations

from collections.abc import Sequence

from backend_common.protos import common_pb2
from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects.postgresql import insert

from standalone_orchestrator.db.tables import addressables as table
from standalone_orchestrator.errors import ErrorCode, OrchestratorError


def claim_addresses(
    connection: Connection, channel: str, claims: Sequence[tuple[str, common_pb2.Addressable]]
) -> None:
    """Record that each asset key of `claims` uses its addressable; an asset may reuse its own."""
    owners: dict[str, str] = {}
    checksums: dict[str, str] = {}
    for asset_key, addressable in claims:
        holder = owners.setdefault(addressable.storage_address, asset_key)
        if holder != asset_key:
            raise _clash(addressable.storage_address, holder)
        checksums[addressable.storage_address] = addressable.checksum
    if not owners:
        return
    rows = connection.execute(
        select(table.c.storage_address, table.c.asset_key).where(table.c.storage_address.in_(list(owners)))
    ).all()
    for address, holder in rows:
        if holder != owners[address]:
            raise _clash(address, holder)
    statement = insert(table)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.storage_address], set_={"checksum": statement.excluded.checksum}
        ),
        [
            {"storage_address": address, "checksum": checksums[address], "asset_key": key, "channel": channel}
            for address, key in owners.items()
        ],
    )


def release_addresses(connection: Connection, addresses: Sequence[str]) -> None:
    if addresses:
        connection.execute(delete(table).where(table.c.storage_address.in_(list(addresses))))


def _clash(address: str, holder: str) -> OrchestratorError:
    return OrchestratorError(
        ErrorCode.CONFLICT, f'storage address "{address}" is already used by asset "{holder}"'
    )
