"""DataManagerService, DataSampleService and DatasetService."""

from __future__ import annotations

import pytest
from backend_common.orchestrator import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from backend_common.protos import datamanager_pb2, datasample_pb2
from standalone_orchestrator.testing import ORG1, ORG2, Network, addressable, new_key, permissions


def _new_manager(**overrides: object) -> datamanager_pb2.NewDataManager:
    fields: dict[str, object] = {
        "key": new_key(),
        "name": "dm",
        "new_permissions": permissions(False, [ORG2]),
        "description": addressable(),
        "opener": addressable(),
        "type": "legacy",
        "logs_permission": permissions(False),
        "metadata": {"a": "1"},
    }
    fields.update(overrides)
    return datamanager_pb2.NewDataManager(**fields)  # type: ignore[arg-type]


def test_register_and_get_data_manager(net: Network) -> None:
    new = _new_manager()
    manager = net.client().register_data_manager(new)
    assert manager.owner == ORG1
    assert manager.type == ""  # legacy, dropped
    assert list(manager.permissions.process.authorized_ids) == [ORG2, ORG1]
    assert list(manager.logs_permission.authorized_ids) == [ORG1]
    assert not manager.logs_permission.public
    assert net.client(ORG2).get_data_manager(new.key) == manager
    with pytest.raises(AlreadyExistsError):
        net.client().register_data_manager(new)
    with pytest.raises(NotFoundError):
        net.client().get_data_manager(new_key())


@pytest.mark.parametrize("missing", ["new_permissions", "logs_permission", "opener", "description"])
def test_data_manager_required_fields(net: Network, missing: str) -> None:
    new = _new_manager()
    new.ClearField(missing)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        net.client().register_data_manager(new)


def test_update_data_manager(net: Network) -> None:
    manager = net.data_manager()
    net.client().update_data_manager(manager.key, "renamed")
    assert net.client().get_data_manager(manager.key).name == "renamed"
    with pytest.raises(PermissionDeniedError):
        net.client(ORG2).update_data_manager(manager.key, "mine")
    with pytest.raises(InvalidArgumentError):
        net.client().update_data_manager(manager.key, "")
    with pytest.raises(NotFoundError):
        net.client().update_data_manager(new_key(), "x")


def test_query_data_managers(net: Network) -> None:
    keys = {net.data_manager().key for _ in range(3)}
    listed = [m.key for m in net.client().iter_data_managers(page_size=2)]
    assert keys <= set(listed)
    assert len(listed) == len(set(listed))


def test_register_samples_and_dataset(net: Network) -> None:
    manager = net.data_manager()
    samples = net.client().register_data_samples(
        [
            datasample_pb2.NewDataSample(
                key=new_key(), data_manager_keys=[manager.key], checksum="c" * 64, test_only=True
            )
            for _ in range(3)
        ]
    )
    assert [s.owner for s in samples] == [ORG1] * 3
    assert not any(s.test_only for s in samples)
    assert net.client().get_data_sample(samples[0].key) == samples[0]
    dataset = net.client(ORG2).get_dataset(manager.key)
    assert dataset.data_manager == net.client().get_data_manager(manager.key)
    assert list(dataset.data_sample_keys) == sorted(s.key for s in samples)  # same creation date
    assert net.client().register_data_samples([]) == []


def test_sample_checks(net: Network) -> None:
    manager = net.data_manager()
    other = net.data_manager(ORG2)
    sample = datasample_pb2.NewDataSample(key=new_key(), data_manager_keys=[manager.key], checksum="c" * 64)
    with pytest.raises(InvalidArgumentError):
        net.client().register_data_samples([datasample_pb2.NewDataSample(key="x", checksum="c" * 64)])
    with pytest.raises(InvalidArgumentError):
        net.client().register_data_samples([datasample_pb2.NewDataSample(key=new_key(), checksum="short")])
    with pytest.raises(NotFoundError):
        net.client().register_data_samples(
            [datasample_pb2.NewDataSample(key=new_key(), data_manager_keys=[new_key()], checksum="c" * 64)]
        )
    with pytest.raises(PermissionDeniedError):
        net.client().register_data_samples(
            [datasample_pb2.NewDataSample(key=new_key(), data_manager_keys=[other.key], checksum="c" * 64)]
        )
    net.client().register_data_samples([sample])
    with pytest.raises(AlreadyExistsError):
        net.client().register_data_samples([sample])
    # The batch is all or nothing.
    fresh = datasample_pb2.NewDataSample(key=new_key(), data_manager_keys=[manager.key], checksum="c" * 64)
    with pytest.raises(AlreadyExistsError):
        net.client().register_data_samples([fresh, sample])
    with pytest.raises(NotFoundError):
        net.client().get_data_sample(fresh.key)


def test_update_samples_appends_managers(net: Network) -> None:
    first, second = net.data_manager(), net.data_manager()
    samples = net.samples(first.key, count=2)
    keys = [s.key for s in samples]
    net.client().update_data_samples(keys, [second.key, first.key])
    for key in keys:
        assert list(net.client().get_data_sample(key).data_manager_keys) == [first.key, second.key]
    assert set(net.client().get_dataset(second.key).data_sample_keys) == set(keys)
    with pytest.raises(InvalidArgumentError):
        net.client().update_data_samples([], [first.key])
    with pytest.raises(NotFoundError):
        net.client().update_data_samples([new_key()], [first.key])
    with pytest.raises(PermissionDeniedError):
        net.client(ORG2).update_data_samples(keys, [net.data_manager(ORG2).key])


def test_query_samples_by_keys(net: Network) -> None:
    manager = net.data_manager()
    samples = net.samples(manager.key, count=3)
    wanted = sorted(s.key for s in samples[:2])
    response = net.client().query_data_samples(datasample_pb2.DataSampleQueryFilter(keys=wanted))
    assert sorted(s.key for s in response.data_samples) == wanted
    assert response.next_page_token == ""
