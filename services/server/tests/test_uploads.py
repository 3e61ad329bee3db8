"""Multipart creates: bad archives refused with 400 leaving nothing behind; creates via the orchestrator."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from backend_common.db.local import StoredFile, UserRole
from backend_server.app import create_app
from backend_server.testing import (
    CHANNEL,
    DOCKERFILE,
    FUNCTION,
    OPENER,
    ORG1,
    ORG2,
    Backend,
    Replica,
    server_settings,
    sync_replica,
)
from sqlalchemy import func, select
from starlette.testclient import TestClient

ACCEPT = {"Accept": "application/json;version=0.0"}
PERMISSIONS = {"public": False, "authorized_ids": []}


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tarred(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


FUNCTION_ARCHIVE = zipped({"Dockerfile": DOCKERFILE, "function.py": FUNCTION})


def function_document(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "train",
        "permissions": PERMISSIONS,
        "metadata": None,
        "inputs": {"model": {"kind": "ASSET_MODEL", "optional": True, "multiple": False}},
        "outputs": {"model": {"kind": "ASSET_MODEL", "multiple": False}},
        **overrides,
    }


def post_function(backend: Backend, archive: bytes, **overrides: Any) -> Any:
    return backend.http().post(
        "/function/",
        data={"json": json.dumps(function_document(**overrides))},
        files={"file": ("function.zip", archive), "description": ("description.md", b"# train")},
        headers=backend.headers(),
    )


def post_dataset(backend: Backend, **overrides: Any) -> Any:
    document = {"name": "data", "permissions": PERMISSIONS, "logs_permission": PERMISSIONS, "metadata": None}
    return backend.http().post(
        "/data_manager/",
        data={"json": json.dumps({**document, **overrides})},
        files={"data_opener": ("opener.py", OPENER), "description": ("description.md", b"# data")},
        headers=backend.headers(),
    )


def nothing_stored(backend: Backend) -> bool:
    with backend.session() as session:
        rows = session.scalar(select(func.count()).select_from(StoredFile))
    medias = Path(backend.settings.storage.media_root)
    files = [path for path in medias.rglob("*") if path.is_file()] if medias.exists() else []
    return rows == 0 and not files


def test_bad_function_archives_are_refused_and_nothing_is_stored(backend: Backend) -> None:
    cases = {
        "path traversal": zipped({"Dockerfile": DOCKERFILE, "../../evil.py": b"x"}),
        "link pointing out": tarred(
            {"Dockerfile": DOCKERFILE, "f.py": b""}, links={"secrets": "/etc/shadow"}
        ),
        "Dockerfile": zipped({"function.py": FUNCTION, "other.py": b""}),
        "neither a zip nor a tar": b"plain text",
        "compression ratio": zipped({"Dockerfile": DOCKERFILE, "zeros": b"\0" * (110 * 1024**2)}),
    }
    for message, archive in cases.items():
        response = post_function(backend, archive)
        assert response.status_code == 400, (message, response.text)
        assert message in response.json()["detail"] and response.json()["key"] == "(not computed)"
    missing = backend.http().post(
        "/function/",
        data={"json": json.dumps(function_document())},
        files={"description": ("d.md", b"x")},
        headers=backend.headers(),
    )
    assert missing.status_code == 400 and "file" in missing.json()["detail"]
    assert post_function(backend, FUNCTION_ARCHIVE, metadata={"k" * 51: "v"}).status_code == 400
    assert post_function(backend, FUNCTION_ARCHIVE, metadata={"key": "v" * 101}).status_code == 400
    assert post_function(backend, FUNCTION_ARCHIVE, metadata={"a__b": "v"}).status_code == 400
    bad_kind = post_function(backend, FUNCTION_ARCHIVE, inputs={"x": {"kind": "ASSET_NOPE"}})
    assert bad_kind.status_code == 400
    assert nothing_stored(backend)


def test_bad_data_samples_are_refused_and_nothing_is_stored(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        own = replica.data_manager()
        theirs = replica.data_manager(ORG2)
    client = backend.http()

    def upload(data_manager: str, **files: bytes) -> Any:
        return client.post(
            "/data_sample/",
            data={"json": json.dumps({"data_manager_keys": [data_manager]})},
            files={name: (name, content) for name, content in files.items()},
            headers=backend.headers(),
        )

    good = zipped({"data.csv": b"1,2\n"})
    assert upload(own.key, path=zipped({"../../x": b"1"})).status_code == 400
    assert upload(own.key, path=zipped({})).status_code == 400
    assert upload(own.key, path=b"").status_code == 400
    # One bad part refuses the whole request: the good one is not kept either.
    assert (
        upload(own.key, first=good, second=tarred({"x": b"1"}, links={"y": "../../../etc"})).status_code
        == 400
    )
    refused = upload(theirs.key, path=good)
    assert refused.status_code == 400 and "not owned" in refused.json()["detail"]
    assert upload(str(uuid.uuid4()), path=good).status_code == 400
    assert (
        client.post(
            "/data_sample/",
            data={"json": json.dumps({"data_manager_keys": [own.key]})},
            headers=backend.headers(),
        ).status_code
        == 400
    )
    outside = client.post(
        "/data_sample/", json={"data_manager_keys": [own.key], "path": "/etc"}, headers=backend.headers()
    )
    assert outside.status_code == 400 and "not under the server media" in outside.json()["detail"]
    assert nothing_stored(backend)


def test_uploads_over_the_limit_are_refused(backend: Backend) -> None:
    limited = backend.settings.storage.model_copy(update={"data_upload_max_size": 1000})
    backend.http().app.state.server.settings = backend.settings.model_copy(update={"storage": limited})  # type: ignore[attr-defined]
    response = post_function(backend, zipped({"Dockerfile": DOCKERFILE, "big": os.urandom(5000)}))
    assert response.status_code == 413


def test_builder_disabled(backend: Backend) -> None:
    disabled = backend.settings.compute.model_copy(update={"builder_enabled": False})
    backend.http().app.state.server.settings = backend.settings.model_copy(update={"compute": disabled})  # type: ignore[attr-defined]
    response = post_function(backend, FUNCTION_ARCHIVE)
    assert response.status_code == 422 and response.json() == {
        "detail": "No builder available on this organization"
    }


def test_creates_through_the_orchestrator(orchestrated: Backend, tmp_path: Path) -> None:
    backend = orchestrated
    client = backend.http()
    created = post_function(backend, FUNCTION_ARCHIVE, metadata={"framework": "torch"})
    assert created.status_code == 201, created.text
    function = created.json()
    assert function["description"]["storage_address"].endswith(f"/function/{function['key']}/description/")
    assert function["status"] == "FUNCTION_STATUS_WAITING" and function["metadata"] == {"framework": "torch"}
    assert client.get(f"/function/{function['key']}/", headers=backend.headers()).json() == function
    assert (
        client.get(f"/function/{function['key']}/file/", headers=backend.headers()).content
        == FUNCTION_ARCHIVE
    )
    unknown = post_function(
        backend, FUNCTION_ARCHIVE, permissions={"public": False, "authorized_ids": ["Nobody"]}
    )
    assert unknown.status_code == 400 and "invalid permission input values" in unknown.json()["detail"]

    dataset = post_dataset(backend)
    assert dataset.status_code == 201, dataset.text
    data_manager = dataset.json()
    assert data_manager["logs_permission"] == {"public": False, "authorized_ids": [ORG1]}
    (Path(backend.settings.storage.servermedias_root) / "set" / "one").mkdir(parents=True)
    (Path(backend.settings.storage.servermedias_root) / "set" / "one" / "x.csv").write_text("1\n")
    (Path(backend.settings.storage.servermedias_root) / "set" / "two").mkdir()
    (Path(backend.settings.storage.servermedias_root) / "set" / "two" / "y.csv").write_text("2\n")
    samples = client.post(
        "/data_sample/",
        json={
            "data_manager_keys": [data_manager["key"]],
            "path": str(Path(backend.settings.storage.servermedias_root) / "set"),
            "multiple": True,
        },
        headers=backend.headers(),
    )
    assert samples.status_code == 201, samples.text
    assert [set(sample) for sample in samples.json()] == [
        {"key", "checksum", "path", "creation_date", "data_manager_keys", "owner"}
    ] * 2
    uploaded = client.post(
        "/data_sample/",
        data={"json": json.dumps({"data_manager_keys": [data_manager["key"]]})},
        files={"b": ("b", tarred({"x.csv": b"1\n"})), "a": ("a", zipped({"y.csv": b"2\n"}))},
        headers=backend.headers(),
    )
    assert uploaded.status_code == 201
    # One element per part, in part order; the same content gives the same checksum, whatever the format.
    assert [sample["checksum"] for sample in uploaded.json()] == [
        sample["checksum"] for sample in samples.json()
    ]

    plan_key = str(uuid.uuid4())
    plan = client.post(
        "/compute_plan/",
        json={"key": plan_key, "name": "p", "tasks": [{"ignored": True}]},
        headers=backend.headers(),
    )
    assert plan.status_code == 201 and plan.json()["key"] == plan_key and plan.json()["duration"] == 0
    again = client.post("/compute_plan/", json={"key": plan_key, "name": "p"}, headers=backend.headers())
    assert again.status_code == 409 and again.json()["key"] == plan_key
    bad_metadata = client.post(
        "/compute_plan/",
        json={"key": str(uuid.uuid4()), "name": "p", "metadata": {"a__b": "c"}},
        headers=backend.headers(),
    )
    assert bad_metadata.status_code == 400
    no_plan = client.post(
        "/task/bulk_create/",
        json={"tasks": [task_spec(function["key"], str(uuid.uuid4()))]},
        headers=backend.headers(),
    )
    assert no_plan.status_code == 400 and no_plan.json()["detail"] == "Invalid compute plan key"
    mixed = client.post(
        "/task/bulk_create/",
        json={"tasks": [task_spec(function["key"], plan_key), task_spec(function["key"], str(uuid.uuid4()))]},
        headers=backend.headers(),
    )
    assert (
        mixed.status_code == 400
        and mixed.json()["detail"] == "All tasks should have the same compute plan key"
    )
    tasks = client.post(
        "/task/bulk_create/",
        json={"tasks": [task_spec(function["key"], plan_key)]},
        headers=backend.headers(),
    )
    assert tasks.status_code == 200, tasks.text
    [task] = tasks.json()
    assert (
        task["rank"] == 0
        and task["tag"] == ""
        and task["metadata"] == {}
        and task["function"]["key"] == function["key"]
    )
    renamed = client.put(f"/compute_plan/{plan_key}/", json={"name": "renamed"}, headers=backend.headers())
    assert renamed.status_code == 200 and renamed.json() == {}
    canceled = client.post(f"/compute_plan/{plan_key}/cancel/", headers=backend.headers())
    assert canceled.status_code == 200 and canceled.json() == {}
    assert (
        client.get(f"/compute_plan/{plan_key}/", headers=backend.headers()).json()["status"]
        == "PLAN_STATUS_CANCELED"
    )


def task_spec(function_key: str, plan_key: str) -> dict[str, Any]:
    return {
        "key": str(uuid.uuid4()),
        "compute_plan_key": plan_key,
        "function_key": function_key,
        "worker": ORG1,
        "rank": None,
        "tag": None,
        "metadata": None,
        "inputs": [],
        "outputs": {
            "model": {"permissions": {"public": False, "authorized_ids": [ORG1]}, "transient": False}
        },
    }


def test_permission_violations_and_foreign_assets(orchestrated: Backend, network: Any) -> None:
    """Writes on another organization's assets are refused; tasks on functions we may not process are 403."""
    backend = orchestrated
    foreign_function = network.function("MyOrg2MSP", public=False)
    foreign_plan = network.plan("MyOrg2MSP")
    sync_replica(network.client(ORG1, CHANNEL), backend.database_url)
    client = backend.http()
    assert (
        client.put(
            f"/function/{foreign_function.key}/", json={"name": "x"}, headers=backend.headers()
        ).status_code
        == 403
    )
    assert (
        client.put(
            f"/compute_plan/{foreign_plan.key}/", json={"name": "x"}, headers=backend.headers()
        ).status_code
        == 403
    )
    assert (
        client.post(f"/compute_plan/{foreign_plan.key}/cancel/", headers=backend.headers()).status_code == 403
    )
    plan_key = str(uuid.uuid4())
    assert (
        client.post(
            "/compute_plan/", json={"key": plan_key, "name": "p"}, headers=backend.headers()
        ).status_code
        == 201
    )
    denied = client.post(
        "/task/bulk_create/",
        json={"tasks": [task_spec(foreign_function.key, plan_key)]},
        headers=backend.headers(),
    )
    assert denied.status_code == 403, denied.text


@pytest.mark.s3
def test_uploads_and_downloads_on_s3(
    database_url: str, media_root: Path, network: Any, seaweedfs: Any
) -> None:
    """The same create and download through an S3 object storage (SeaweedFS), as in production."""
    settings = server_settings(database_url, orchestrator_port=network.server.port, media_root=media_root)
    storage = settings.storage.model_copy(
        update={
            "objectstore_url": seaweedfs.endpoint_url,
            "objectstore_access_key": seaweedfs.access_key,
            "objectstore_secret_key": seaweedfs.secret_key,
        }
    )
    settings = settings.model_copy(update={"storage": storage})
    backend = Backend(settings=settings, database_url=database_url)
    backend.add_user("admin", role=UserRole.ADMIN)
    with TestClient(create_app(settings)) as client:
        backend.client = client
        created = post_function(backend, FUNCTION_ARCHIVE)
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        assert client.get(f"/function/{key}/file/", headers=backend.headers()).content == FUNCTION_ARCHIVE
        assert client.get(f"/function/{key}/description/", headers=backend.headers()).text == "# train"
        refused = post_function(backend, zipped({"Dockerfile": DOCKERFILE, "../x": b""}))
        assert refused.status_code == 400
