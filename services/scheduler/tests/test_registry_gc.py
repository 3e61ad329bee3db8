"""Garbage collection of function images on a real registry (Debian docker-registry, deletes enabled)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from backend_common.db import session_scope
from backend_common.protos import common_pb2, computeplan_pb2, computetask_pb2, function_pb2
from backend_common.registry import RegistryClient, function_image_tag
from backend_common.registry.oci import Manifest
from backend_common.replica import store_compute_plan, store_compute_task, store_function
from backend_common.testing.registry import BuiltImage, DockerRegistry, build_image
from backend_scheduler import jobs
from backend_scheduler.testing import CHANNEL, ORG, concurrently, now
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session, sessionmaker

GRACE = timedelta(days=1)


def timestamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def checksum() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


@pytest.fixture
def registry(docker_registry: DockerRegistry) -> Iterator[RegistryClient]:
    with RegistryClient(docker_registry.host_port) as client:
        yield client


def push(registry: RegistryClient, repository: str, tag: str, image: BuiltImage) -> None:
    for digest, content in image.blobs.items():
        registry.upload_blob(repository, digest, io.BytesIO(content), len(content))
    registry.put_manifest(repository, tag, Manifest.parse(image.manifest, image.media_type))


def store(
    sessions: sessionmaker[Session],
    archive_checksum: str,
    *,
    created: datetime,
    plan: str | None = None,
    canceled: bool = False,
) -> None:
    """A function of the replica, used by a plan (running, or canceled) if `plan` is given."""
    function = function_pb2.Function(
        key=str(uuid.uuid4()),
        name="function",
        owner=ORG,
        creation_date=timestamp(created),
        archive=common_pb2.Addressable(checksum=archive_checksum, storage_address="http://a.example/"),
        description=common_pb2.Addressable(checksum="d" * 64, storage_address="http://d.example/"),
        status=function_pb2.FUNCTION_STATUS_READY,
    )
    with session_scope(sessions) as session:
        store_function(session, CHANNEL, function)
        if plan is None:
            return
        compute_plan = computeplan_pb2.ComputePlan(key=plan, owner=ORG, creation_date=timestamp(created))
        if canceled:
            compute_plan.cancelation_date.CopyFrom(timestamp(now()))
        store_compute_plan(session, CHANNEL, compute_plan)
        store_compute_task(
            session,
            CHANNEL,
            computetask_pb2.ComputeTask(
                key=str(uuid.uuid4()),
                function_key=function.key,
                compute_plan_key=plan,
                owner=ORG,
                worker=ORG,
                status=computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT,
                creation_date=timestamp(created),
            ),
        )


def test_unused_function_images_are_deleted_and_the_others_kept(
    registry: RegistryClient, sessions: sessionmaker[Session]
) -> None:
    repository = f"substra/user-image-{uuid.uuid4().hex[:8]}"
    old = now() - timedelta(days=3)
    used, unused, recent, shared, unknown = (checksum() for _ in range(5))
    store(sessions, used, created=old, plan=str(uuid.uuid4()))
    store(sessions, unused, created=old, plan=str(uuid.uuid4()), canceled=True)
    store(sessions, recent, created=now() - timedelta(hours=1))
    store(sessions, shared, created=old)
    images = {tag: build_image() for tag in map(function_image_tag, (used, unused, recent, unknown))}
    for tag, image in images.items():
        push(registry, repository, tag, image)
    # An unused function's image that another tag also names: deleting it would delete that tag.
    base = build_image()
    push(registry, repository, function_image_tag(shared), base)
    push(registry, repository, "python-base", base)

    runs = concurrently(
        lambda: jobs.collect_registry_images(sessions, registry, repository, now(), grace=GRACE),
        lambda: jobs.collect_registry_images(sessions, registry, repository, now(), grace=GRACE),
    )
    again = jobs.collect_registry_images(sessions, registry, repository, now(), grace=GRACE)

    assert (sum(runs), again) == (1, 0)
    assert registry.head_manifest(repository, function_image_tag(unused)) is None
    for kept in (used, recent, shared, unknown):
        assert registry.head_manifest(repository, function_image_tag(kept)) is not None
    assert registry.head_manifest(repository, "python-base") is not None


def test_a_repository_never_pushed_to_has_nothing_to_collect(
    registry: RegistryClient, sessions: sessionmaker[Session]
) -> None:
    assert jobs.collect_registry_images(sessions, registry, "substra/nothing-yet", now(), grace=GRACE) == 0
