"""Streamed downloads, their permissions, and relays from the owner's backend (rest-api 7)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from backend_common.db.replica import ComputeTask
from backend_common.protos import common_pb2, failure_report_pb2
from backend_common.replica import disable_model, store_failure_report
from backend_common.storage import (
    ASSET_LOGS_BUCKET,
    DATAMANAGER_BUCKET,
    FUNCTION_BUCKET,
    MODEL_BUCKET,
    make_storage,
)
from backend_server.data import files
from backend_server.testing import (
    CHANNEL,
    OPENER,
    ORG1,
    ORG2,
    ORG_SECRETS,
    Backend,
    Replica,
    sync_replica,
    timestamp,
)
from sqlalchemy import update
from standalone_orchestrator.testing import Network

ACCEPT = {"Accept": "application/json;version=0.0"}


def store(backend: Backend, bucket: str, object_key: str, asset_key: str, role: str, content: bytes) -> str:
    stored = make_storage(backend.settings.storage).put(bucket, object_key, [content])
    with backend.session() as session:
        files.add_file(
            session,
            asset_key=asset_key,
            role=role,
            bucket=bucket,
            object_key=object_key,
            checksum=stored.sha256,
            size=stored.size,
            filename=object_key.rsplit("/", 1)[-1],
            now=datetime.now(UTC),
        )
    return stored.sha256


def basic(organization: str, *, proxy: bool = False) -> dict[str, str]:
    credentials = base64.b64encode(f"{organization}:{ORG_SECRETS[organization]}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}", "Substra-Channel-Name": CHANNEL, **ACCEPT}
    if proxy:
        headers["Substra-Proxy-Asset"] = "True"
    return headers


def test_local_downloads_and_permissions(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        mine = replica.data_manager(authorized=[ORG2])
        foreign_private = replica.data_manager(ORG2)
    store(backend, DATAMANAGER_BUCKET, f"datamanagers/{mine.key}/opener.py", mine.key, files.OPENER, OPENER)
    client = backend.http()
    response = client.get(f"/data_manager/{mine.key}/opener/", headers=backend.headers())
    assert response.status_code == 200 and response.content == OPENER
    assert "attachment" in response.headers["content-disposition"]
    assert response.headers["content-length"] == str(len(OPENER))
    # Another organization's worker, with its own credentials.
    assert client.get(f"/data_manager/{mine.key}/opener/", headers=basic(ORG2)).content == OPENER
    denied = client.get(f"/data_manager/{foreign_private.key}/opener/", headers=backend.headers())
    assert denied.status_code == 403 and "detail" in denied.json()
    missing = client.get(
        "/data_manager/5c1d3a3e-0000-4000-8000-000000000000/opener/", headers=backend.headers()
    )
    assert missing.status_code == 404
    invalid = client.get("/data_manager/nope/opener/", headers=backend.headers())
    assert invalid.status_code == 400 and invalid.json() == {"detail": 'key is not a valid UUID: "nope"'}
    # Described but never stored here: gone.
    assert client.get(f"/data_manager/{mine.key}/description/", headers=backend.headers()).status_code == 410


def test_model_downloads_follow_the_export_setting_and_the_process_permission(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        function = replica.function()
        task = replica.task(function, replica.plan())
        model = replica.model(task)
        other_task = replica.task(function, replica.plan())
        private = replica.model(other_task)
        session.execute(update(ComputeTask).where(ComputeTask.key == other_task.key).values(owner=ORG1))
        disabled = replica.model(replica.task(function, replica.plan()))
        disable_model(session, disabled.key)
    content = b"weights"
    store(backend, MODEL_BUCKET, f"models/{model.key}/model", model.key, files.MODEL, content)
    client = backend.http()
    assert client.get(f"/model/{model.key}/file/", headers=backend.headers()).content == content
    # A worker of ORG2 fetching an input: the process permission (ORG2 is not authorized).
    assert client.get(f"/model/{private.key}/file/", headers=basic(ORG2)).status_code == 403
    assert client.get(f"/model/{disabled.key}/file/", headers=backend.headers()).status_code == 410
    settings = backend.settings
    channels = [
        channel.model_copy(update={"model_export_enabled": False})
        for channel in settings.organization.channels
    ]
    organization = settings.organization.model_copy(update={"channels": channels})
    client.app.state.server.settings = settings.model_copy(update={"organization": organization})  # type: ignore[attr-defined]
    refused = client.get(f"/model/{model.key}/file/", headers=backend.headers())
    assert refused.status_code == 403
    assert refused.json() == {"detail": f"Disabled: model_export_enabled is disabled on {ORG1}"}
    # A relayed export from another backend is an export too.
    assert client.get(f"/model/{model.key}/file/", headers=basic(ORG2, proxy=True)).status_code == 403
    assert json.loads(client.get("/info/", headers=backend.headers()).text)["config"] == {
        "model_export_enabled": False
    }


def test_task_logs(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        task = replica.task(replica.function(), replica.plan())
        replica.task_status(task.key, "STATUS_EXECUTING")
        replica.task_status(task.key, "STATUS_FAILED")
    logs = "Traceback (most recent call last):\n  erreur é\n".encode()
    checksum = store(backend, ASSET_LOGS_BUCKET, task.key, task.key, files.LOGS, logs)
    with backend.session() as session:
        store_failure_report(
            session,
            CHANNEL,
            failure_report_pb2.FailureReport(
                asset_key=task.key,
                asset_type=failure_report_pb2.FAILED_ASSET_COMPUTE_TASK,
                error_type=failure_report_pb2.ERROR_TYPE_EXECUTION,
                logs_address=common_pb2.Addressable(
                    checksum=checksum, storage_address=f"http://x/logs/{task.key}/file/"
                ),
                owner=ORG1,
                creation_date=timestamp(datetime.now(UTC)),
            ),
        )
    client = backend.http()
    response = client.get(f"/task/{task.key}/logs/", headers=backend.headers())
    assert response.status_code == 200 and response.text == logs.decode()
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert f"tuple_logs_{task.key}.txt" in response.headers["content-disposition"]
    assert client.get(f"/logs/{task.key}/file/", headers=backend.headers()).content == logs
    # The task's logs permission is private to ORG1.
    assert client.get(f"/task/{task.key}/logs/", headers=basic(ORG2)).status_code == 403
    assert (
        client.get(f"/task/{task.key}/", headers=backend.headers()).json()["error_type"] == "EXECUTION_ERROR"
    )


def test_isolated_mode_answers_gone(backend: Backend) -> None:
    with backend.session() as session:
        manager = Replica(session).data_manager()
    settings = backend.settings
    organization = settings.organization.model_copy(update={"isolated": True})
    backend.http().app.state.server.settings = settings.model_copy(update={"organization": organization})  # type: ignore[attr-defined]
    response = backend.http().get(f"/data_manager/{manager.key}/opener/", headers=backend.headers())
    assert response.status_code == 410 and response.json() == {
        "detail": "Asset not available in isolated mode"
    }
    info = backend.http().get("/info/", headers=backend.headers()).json()
    assert isinstance(info["orchestrator_version"], str)


def test_downloads_are_relayed_from_the_owner_and_verified(
    live_backends: Callable[..., Backend], network: Network
) -> None:
    org1, org2 = live_backends(ORG1), live_backends(ORG2)
    with httpx.Client(base_url=org2.url, headers=org2.headers()) as client:
        created = client.post(
            "/data_manager/",
            data={
                "json": json.dumps(
                    {
                        "name": "shared",
                        "permissions": {"public": False, "authorized_ids": [ORG1]},
                        "logs_permission": {"public": False, "authorized_ids": [ORG1]},
                    }
                )
            },
            files={"data_opener": ("opener.py", OPENER), "description": ("description.md", b"# shared")},
        )
        assert created.status_code == 201, created.text
        private = client.post(
            "/data_manager/",
            data={
                "json": json.dumps(
                    {"name": "private", "permissions": {"public": False, "authorized_ids": []}}
                )
            },
            files={"data_opener": ("opener.py", OPENER), "description": ("description.md", b"# private")},
        )
        assert private.status_code == 201, private.text
    shared_key, private_key = created.json()["key"], private.json()["key"]
    sync_replica(network.client(ORG1, CHANNEL), org1.database_url)
    with httpx.Client(base_url=org1.url, headers=org1.headers()) as client:
        document = client.get(f"/data_manager/{shared_key}/").json()
        assert document["owner"] == ORG2
        # Addresses point at the backend the client talks to, which relays to the owner.
        assert document["opener"]["storage_address"] == f"{org1.url}/data_manager/{shared_key}/opener/"
        relayed = client.get(document["opener"]["storage_address"])
        assert relayed.status_code == 200 and relayed.content == OPENER
        assert client.get(f"/data_manager/{shared_key}/description/").text == "# shared"
        assert client.get(f"/data_manager/{private_key}/opener/").status_code == 403
        # A file that no longer matches its registered checksum is cut short, never delivered whole.
        storage = make_storage(org2.settings.storage)
        stored = [
            path for path in storage.root.rglob("*") if path.name == "opener.py" and shared_key in str(path)
        ]  # type: ignore[attr-defined]
        stored[0].write_bytes(OPENER + b"# tampered\n")
        with pytest.raises(httpx.HTTPError):
            client.get(f"/data_manager/{shared_key}/opener/").raise_for_status()
    assert hashlib.sha256(OPENER).hexdigest() == document["opener"]["checksum"]


def test_function_files_and_image(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        function = replica.function(authorized=[ORG2])
        private = replica.function()
    store(
        backend,
        FUNCTION_BUCKET,
        f"functions/{function.key}/function.zip",
        function.key,
        files.FUNCTION_ARCHIVE,
        b"zip",
    )
    make_storage(backend.settings.storage).put(
        FUNCTION_BUCKET, f"functions/{function.key}/image.zip", [b"image"]
    )
    client = backend.http()
    assert client.get(f"/function/{function.key}/file/", headers=backend.headers()).content == b"zip"
    # Workers of other organizations fetch the built image of functions they may process.
    assert client.get(f"/function/{function.key}/image/", headers=basic(ORG2)).content == b"image"
    assert client.get(f"/function/{private.key}/image/", headers=basic(ORG2)).status_code == 403
    assert client.get(f"/function/{private.key}/file/", headers=backend.headers()).status_code == 410
    profiling = client.get(f"/function/{function.key}/profiling/", headers=backend.headers()).json()
    assert profiling == {"function_key": function.key, "execution_rundown": [], "duration": None}
