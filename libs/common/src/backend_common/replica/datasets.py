"""Data managers and data samples, with the links between them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, delete, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backend_common.db.replica import DataManager, DataSample, DataSampleDataManager
from backend_common.protos import common_pb2, datamanager_pb2, datasample_pb2
from backend_common.replica.conversions import (
    addressable,
    permission_columns,
    permissions_columns,
    table,
    to_datetime,
)

_samples = table(DataSample)
_links = table(DataSampleDataManager)
# Built once: a channel can have many samples.
_INSERT_SAMPLE = (
    insert(_samples).on_conflict_do_nothing(index_elements=[_samples.c.key]).returning(_samples.c.key)
)
_INSERT_SAMPLES = insert(_samples).on_conflict_do_nothing(index_elements=[_samples.c.key])
_INSERT_LINKS = insert(_links).on_conflict_do_nothing()
_DELETE_LINKS_NOT_IN = text(
    """
    DELETE FROM data_sample_data_managers AS link
    WHERE link.data_sample_key = ANY(CAST(:samples AS uuid[]))
      AND (link.data_sample_key, link.data_manager_key) NOT IN (
        SELECT * FROM unnest(CAST(:pair_samples AS uuid[]), CAST(:pair_managers AS uuid[]))
      )
    """
)
_DELETE_OTHER_LINKS = delete(_links).where(
    _links.c.data_sample_key == bindparam("sample_key"),
    _links.c.data_manager_key.not_in(bindparam("manager_keys", expanding=True)),
)


def _logs_permission(data_manager: datamanager_pb2.DataManager) -> common_pb2.Permission:
    # Missing in old snapshots: private to the owner (compute-engine 2.2).
    if data_manager.HasField("logs_permission"):
        return data_manager.logs_permission
    return common_pb2.Permission(public=False, authorized_ids=[data_manager.owner])


def store_data_manager(session: Session, channel: str, data_manager: datamanager_pb2.DataManager) -> bool:
    """Insert a data manager; True if it was new (a stored one is left for UPDATED events)."""
    description_address, description_checksum = addressable(data_manager.description)
    opener_address, opener_checksum = addressable(data_manager.opener)
    inserted = session.execute(
        insert(DataManager)
        .values(
            key=data_manager.key,
            channel=channel,
            name=data_manager.name,
            owner=data_manager.owner,
            creation_date=to_datetime(data_manager.creation_date),
            metadata_=dict(data_manager.metadata),
            description_address=description_address or "",
            description_checksum=description_checksum or "",
            opener_address=opener_address or "",
            opener_checksum=opener_checksum or "",
            **permission_columns("logs_permission", _logs_permission(data_manager)),
            **permissions_columns(data_manager.permissions),
        )
        .on_conflict_do_nothing(index_elements=[DataManager.key])
        .returning(DataManager.key)
    ).scalar_one_or_none()
    return inserted is not None


def update_data_manager(session: Session, data_manager: datamanager_pb2.DataManager) -> None:
    """Only the name of a data manager can change."""
    session.execute(
        update(DataManager).where(DataManager.key == data_manager.key).values(name=data_manager.name)
    )


def store_data_sample(session: Session, channel: str, data_sample: datasample_pb2.DataSample) -> bool:
    """Insert a data sample and its data-manager links; True if it was new."""
    inserted = session.execute(
        _INSERT_SAMPLE,
        {
            "key": data_sample.key,
            "channel": channel,
            "owner": data_sample.owner,
            "checksum": data_sample.checksum,
            "creation_date": to_datetime(data_sample.creation_date),
        },
    ).scalar_one_or_none()
    _add_links(session, data_sample.key, data_sample.data_manager_keys)
    return inserted is not None


def store_data_samples(
    session: Session, channel: str, data_samples: Sequence[datasample_pb2.DataSample]
) -> None:
    """`store_data_sample` for many samples (registrations come in batches), in two statements."""
    if not data_samples:
        return
    session.execute(
        _INSERT_SAMPLES,
        [
            {
                "key": sample.key,
                "channel": channel,
                "owner": sample.owner,
                "checksum": sample.checksum,
                "creation_date": to_datetime(sample.creation_date),
            }
            for sample in data_samples
        ],
    )
    links = [
        {"data_sample_key": sample.key, "data_manager_key": key}
        for sample in data_samples
        for key in sample.data_manager_keys
    ]
    if links:
        session.execute(_INSERT_LINKS, links)


def replace_data_samples_links(session: Session, data_samples: Sequence[datasample_pb2.DataSample]) -> None:
    """`replace_data_sample_links` for many samples; the last snapshot of a sample wins."""
    latest = {sample.key: list(sample.data_manager_keys) for sample in data_samples}
    if not latest:
        return
    pairs = [(sample_key, manager_key) for sample_key, keys in latest.items() for manager_key in keys]
    session.execute(
        _DELETE_LINKS_NOT_IN,
        {
            "samples": list(latest),
            "pair_samples": [sample_key for sample_key, _ in pairs],
            "pair_managers": [manager_key for _, manager_key in pairs],
        },
    )
    if pairs:
        session.execute(
            _INSERT_LINKS,
            [{"data_sample_key": sample, "data_manager_key": manager} for sample, manager in pairs],
        )


def replace_data_sample_links(session: Session, data_sample: datasample_pb2.DataSample) -> None:
    """Make the sample's links exactly the snapshot's (the orchestrator only ever appends)."""
    keys = list(data_sample.data_manager_keys)
    session.execute(_DELETE_OTHER_LINKS, {"sample_key": data_sample.key, "manager_keys": keys})
    _add_links(session, data_sample.key, keys)


def _add_links(session: Session, data_sample_key: str, data_manager_keys: Sequence[str]) -> None:
    if not data_manager_keys:
        return
    session.execute(
        _INSERT_LINKS,
        [{"data_sample_key": data_sample_key, "data_manager_key": key} for key in data_manager_keys],
    )
