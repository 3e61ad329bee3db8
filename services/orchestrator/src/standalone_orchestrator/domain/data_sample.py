"""Data samples and datasets (`orchestrator-grpc.md` 9.5)."""

from __future__ import annotations

from collections.abc import Sequence

from backend_common.protos import common_pb2, datasample_pb2, dataset_pb2, event_pb2

from standalone_orchestrator.db.tables import data_samples as table
from standalone_orchestrator.domain import pagination
from standalone_orchestrator.domain.assets import DATA_MANAGER, DATA_SAMPLE, ensure_registered
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.data_manager import get_data_manager
from standalone_orchestrator.domain.validation import Checker
from standalone_orchestrator.errors import conflict, not_found, permission_denied
from standalone_orchestrator.store import data_managers as manager_store
from standalone_orchestrator.store import data_samples as store
from standalone_orchestrator.store.common import existing_keys


def _check_managers(request: Request, manager_keys: Sequence[str]) -> None:
    """Every data manager exists and belongs to the requester."""
    managers = manager_store.get_data_managers(request.connection, request.channel, set(manager_keys))
    for key in manager_keys:
        manager = managers.get(key)
        if manager is None:
            raise not_found(DATA_MANAGER, key)
        if manager.owner != request.requester:
            raise permission_denied(f'requester does not own the datamanager "{key}"')


def register_data_samples(
    request: Request, samples: Sequence[datasample_pb2.NewDataSample]
) -> list[datasample_pb2.DataSample]:
    if not samples:
        return []
    ensure_registered(request, request.requester)
    existing = existing_keys(request.connection, table.c.key, table.c.channel, [s.key for s in samples])
    managers = manager_store.get_data_managers(
        request.connection, request.channel, {key for sample in samples for key in sample.data_manager_keys}
    )
    created: list[datasample_pb2.DataSample] = []
    seen: set[str] = set()
    # Checked sample by sample, in order, so the first faulty sample is the one reported.
    for new in samples:
        checker = Checker()
        checker.uuid("key", new.key)
        for index, key in enumerate(new.data_manager_keys):
            checker.uuid(f"data_manager_keys[{index}]", key)
        checker.checksum("checksum", new.checksum)
        checker.check(DATA_SAMPLE)
        for key in new.data_manager_keys:
            manager = managers.get(key)
            if manager is None:
                raise not_found(DATA_MANAGER, key)
            if manager.owner != request.requester:
                raise permission_denied(f'requester does not own the datamanager "{key}"')
        if new.key in existing or new.key in seen:
            other = new.key in existing and existing[new.key] != request.channel
            raise conflict(DATA_SAMPLE, new.key, "in another channel" if other else "")
        seen.add(new.key)
        # `test_only` is a legacy field: accepted, ignored, always false.
        created.append(
            datasample_pb2.DataSample(
                key=new.key,
                data_manager_keys=list(dict.fromkeys(new.data_manager_keys)),
                owner=request.requester,
                checksum=new.checksum,
                creation_date=request.timestamp,
            )
        )
    store.insert_data_samples(request.connection, request.channel, created)
    for sample in created:
        request.emit(event_pb2.EVENT_ASSET_CREATED, common_pb2.ASSET_DATA_SAMPLE, sample.key, sample)
    return created


def update_data_samples(request: Request, keys: Sequence[str], manager_keys: Sequence[str]) -> None:
    checker = Checker()
    if checker.required("keys", list(keys)):
        for index, key in enumerate(keys):
            checker.uuid(f"keys[{index}]", key)
    for index, key in enumerate(manager_keys):
        checker.uuid(f"data_manager_keys[{index}]", key)
    checker.check(DATA_SAMPLE)
    _check_managers(request, manager_keys)
    samples = store.get_data_samples(request.connection, request.channel, set(keys))
    links: list[tuple[str, str, int]] = []
    updated: list[datasample_pb2.DataSample] = []
    for key in dict.fromkeys(keys):
        sample = samples.get(key)
        if sample is None:
            raise not_found(DATA_SAMPLE, key)
        if sample.owner != request.requester:
            raise permission_denied(f'requester does not own the datasample "{key}"')
        # Append-only: links are never removed.
        for manager_key in manager_keys:
            if manager_key not in sample.data_manager_keys:
                links.append((key, manager_key, len(sample.data_manager_keys)))
                sample.data_manager_keys.append(manager_key)
        updated.append(sample)
    store.add_links(request.connection, links)
    for sample in updated:
        request.emit(event_pb2.EVENT_ASSET_UPDATED, common_pb2.ASSET_DATA_SAMPLE, sample.key, sample)


def get_data_sample(request: Request, key: str) -> datasample_pb2.DataSample:
    sample = store.get_data_samples(request.connection, request.channel, [key]).get(key)
    if sample is None:
        raise not_found(DATA_SAMPLE, key)
    return sample


def query_data_samples(
    request: Request, page_token: str, page_size: int, keys: Sequence[str]
) -> tuple[list[datasample_pb2.DataSample], str]:
    offset, size = pagination.parse(page_token, page_size)
    rows = store.query_data_samples(request.connection, request.channel, offset, size, keys)
    return pagination.cut(rows, offset, size)


def get_dataset(request: Request, key: str) -> dataset_pb2.Dataset:
    manager = get_data_manager(request, key)
    sample_keys = store.sample_keys_of_manager(request.connection, request.channel, key)
    return dataset_pb2.Dataset(data_manager=manager, data_sample_keys=sample_keys)
