"""Test helpers: function archives as the SDK builds them, organizations with real storage, and the
download route of a peer backend. Used by this package's tests and benchmark; never in production.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from backend_common.db import replica
from backend_common.db.local import OutgoingOrganization
from backend_common.orchestrator import OrchestratorClient
from backend_common.protos import common_pb2, computetask_pb2, datamanager_pb2, datasample_pb2, function_pb2
from backend_common.storage import DATAMANAGER_BUCKET, DATASAMPLE_BUCKET, FUNCTION_BUCKET
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from backend_worker.asset_sources import (
    ROLE_DATA_SAMPLE,
    ROLE_FUNCTION_ARCHIVE,
    ROLE_MODEL,
    ROLE_OPENER,
    directory_checksum,
)
from backend_worker.context import WorkerContext
from backend_worker.stored_files import record_stored_file

# The functions of the tests, registered with substratools as user scripts do (compute-engine.md 10).
FUNCTION_SCRIPT = '''\
import json
import os
import pickle
import socket
import time

import substratools as tools


def _load(path):
    with open(path) as file:
        return json.load(file)


def _save(value, path):
    with open(path, "w") as file:
        json.dump(value, file)


@tools.register
def train(inputs, outputs, task_properties):
    samples = inputs["datasamples"]
    previous = _load(inputs["model"]) if inputs.get("model") else {"total": 0.0, "history": []}
    total = previous["total"] + sum(sample["x"] for sample in samples)
    history = previous["history"] + [[sample["key"] for sample in samples]]
    _save({"total": total, "history": history, "rank": task_properties["rank"]}, outputs["model"])


@tools.register
def evaluate(inputs, outputs, task_properties):
    tools.save_performance(_load(inputs["model"])["total"], outputs["performance"])


@tools.register
def aggregate(inputs, outputs, task_properties):
    models = [_load(path) for path in inputs["models"]]
    total = sum(model["total"] for model in models) / len(models)
    _save({"total": total, "history": [], "count": len(models)}, outputs["model"])


@tools.register
def share(inputs, outputs, task_properties):
    """A local update as substrafl's train nodes send it: a pickled shared state."""
    with open(outputs["shared"], "wb") as file:
        pickle.dump({"value": float(sum(sample["x"] for sample in inputs["datasamples"]))}, file)


@tools.register
def trivial(inputs, outputs, task_properties):
    _save({"rank": task_properties["rank"]}, outputs["model"])


@tools.register
def fail(inputs, outputs, task_properties):
    print("about to fail")
    raise ValueError("the function failed on purpose")


@tools.register
def sleep(inputs, outputs, task_properties):
    print("sleeping", flush=True)
    time.sleep(float(os.environ.get("SLEEP_SECONDS", "60")))
    _save({"slept": True}, outputs["model"])


@tools.register
def slow(inputs, outputs, task_properties):
    print("working slowly", flush=True)
    time.sleep(4)
    _save({"slow": True}, outputs["model"])


@tools.register
def escape(inputs, outputs, task_properties):
    """Try to reach the network and to write outside the task; report what happened."""
    report = {}
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
        report["network"] = "connected"
    except OSError as error:
        report["network"] = repr(error)
    targets = {
        "parent": os.path.join(os.path.dirname(os.getcwd()), "escaped"),
        "input": inputs.get("model", "/nonexistent"),
        "root": "/escaped",
    }
    for name, path in targets.items():
        try:
            with open(path, "a") as file:
                file.write("escaped")
            report[name] = "written"
        except OSError as error:
            report[name] = repr(error)
    with open("home-file", "w") as file:
        file.write("ok")
    report["home"] = os.environ["HOME"] == os.getcwd()
    _save(report, outputs["model"])
'''

# Appended to every function script: registered functions must come before it.
EXECUTE = """

if __name__ == "__main__":
    tools.execute()
"""

OPENER_SCRIPT = """\
import json
import os

import substratools as tools


class TestOpener(tools.Opener):
    def get_data(self, folders):
        samples = []
        for folder in folders:
            with open(os.path.join(folder, "sample.json")) as file:
                samples.append({"key": os.path.basename(folder), **json.load(file)})
        return samples

    def fake_data(self, n_samples=None):
        return [{"key": "fake", "x": 1.0}] * (n_samples or 1)
"""

SDK_DOCKERFILE = """\
FROM ghcr.io/substra/substra-tools:1.0.0-nvidiacuda11.8.0-base-ubuntu22.04-python3.11
COPY function.py .
ENTRYPOINT ["python3", "function.py", "--function-name", "{name}"]
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sdk_function_archive(
    directory: Path,
    function_name: str,
    *,
    archive_format: str = "zip",
    requirements: str | None = None,
    script: str = FUNCTION_SCRIPT,
    dockerfile: str | None = None,
) -> Path:
    """An archive as users hand it to `substra.Client.add_function`: `function.py` + `Dockerfile`."""
    files = {
        "function.py": (script + EXECUTE).encode(),
        "Dockerfile": (dockerfile or SDK_DOCKERFILE.format(name=function_name)).encode(),
    }
    if requirements is not None:
        files["requirements.txt"] = requirements.encode()
    directory.mkdir(parents=True, exist_ok=True)
    if archive_format == "zip":
        path = directory / f"{function_name}-{uuid.uuid4().hex[:8]}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return path
    path = directory / f"{function_name}-{uuid.uuid4().hex[:8]}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def data_sample_zip(files: Mapping[str, bytes]) -> bytes:
    """A data sample as the SDK uploads it: a zip of the folder's contents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def data_sample_checksum(files: Mapping[str, bytes]) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in files.items():
            path = Path(scratch, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return directory_checksum(Path(scratch))


def function_io(
    inputs: Mapping[str, tuple[common_pb2.AssetKind.ValueType, bool, bool]],
    outputs: Mapping[str, common_pb2.AssetKind.ValueType],
) -> tuple[dict[str, function_pb2.FunctionInput], dict[str, function_pb2.FunctionOutput]]:
    """Inputs as {id: (kind, multiple, optional)} and outputs as {id: kind}."""
    return (
        {
            name: function_pb2.FunctionInput(kind=kind, multiple=multiple, optional=optional)
            for name, (kind, multiple, optional) in inputs.items()
        },
        {name: function_pb2.FunctionOutput(kind=kind) for name, kind in outputs.items()},
    )


TRAIN_IO = function_io(
    {
        "opener": (common_pb2.ASSET_DATA_MANAGER, False, False),
        "datasamples": (common_pb2.ASSET_DATA_SAMPLE, True, False),
        "model": (common_pb2.ASSET_MODEL, False, True),
    },
    {"model": common_pb2.ASSET_MODEL},
)
EVALUATE_IO = function_io(
    {
        "opener": (common_pb2.ASSET_DATA_MANAGER, False, False),
        "datasamples": (common_pb2.ASSET_DATA_SAMPLE, True, False),
        "model": (common_pb2.ASSET_MODEL, False, False),
    },
    {"performance": common_pb2.ASSET_PERFORMANCE},
)
AGGREGATE_IO = function_io(
    {"models": (common_pb2.ASSET_MODEL, True, False)}, {"model": common_pb2.ASSET_MODEL}
)
MODEL_IO = function_io({"model": (common_pb2.ASSET_MODEL, False, True)}, {"model": common_pb2.ASSET_MODEL})
SHARE_IO = function_io(
    {
        "opener": (common_pb2.ASSET_DATA_MANAGER, False, False),
        "datasamples": (common_pb2.ASSET_DATA_SAMPLE, True, False),
    },
    {"shared": common_pb2.ASSET_MODEL},
)
SUBSTRAFL_AGGREGATE_IO = function_io(
    {"shared": (common_pb2.ASSET_MODEL, True, False)}, {"shared": common_pb2.ASSET_MODEL}
)


@dataclass
class BackendOrganization:
    """One organization's backend as the worker sees it: its storage, database and orchestrator."""

    context: WorkerContext
    channel: str

    @property
    def msp_id(self) -> str:
        return self.context.organization_id

    @property
    def orchestrator(self) -> OrchestratorClient:
        return self.context.orchestrator(self.channel)

    def store(self, asset_key: str, role: str, bucket: str, object_key: str, data: bytes) -> str:
        """Keep a file as the server does on upload; returns its checksum."""
        stored = self.context.storage.put(bucket, object_key, [data])
        record_stored_file(
            self.context.sessions,
            asset_key=asset_key,
            role=role,
            bucket=bucket,
            object_key=object_key,
            checksum=stored.sha256,
            size=stored.size,
        )
        return stored.sha256

    def addressable(self, checksum: str, route: str) -> common_pb2.Addressable:
        return common_pb2.Addressable(
            checksum=checksum, storage_address=f"{self.context.default_domain}{route}"
        )

    def register_function(
        self,
        archive: Path,
        io: tuple[dict[str, function_pb2.FunctionInput], dict[str, function_pb2.FunctionOutput]],
        *,
        name: str = "function",
    ) -> function_pb2.Function:
        key = str(uuid.uuid4())
        data = archive.read_bytes()
        checksum = self.store(
            key, ROLE_FUNCTION_ARCHIVE, FUNCTION_BUCKET, f"functions/{key}/{archive.name}", data
        )
        description = b"# function\n"
        inputs, outputs = io
        return self.orchestrator.register_function(
            function_pb2.NewFunction(
                key=key,
                name=name,
                description=self.addressable(sha256(description), f"/function/{key}/description/"),
                archive=self.addressable(checksum, f"/function/{key}/file/"),
                new_permissions=common_pb2.NewPermissions(public=True),
                inputs=inputs,
                outputs=outputs,
            )
        )

    def trust(self, organization_id: str, secret: str) -> None:
        """Record the outgoing credentials this backend presents to `organization_id`."""
        statement = insert(OutgoingOrganization).values(organization_id=organization_id, secret=secret)
        statement = statement.on_conflict_do_update(
            index_elements=[OutgoingOrganization.organization_id], set_={"secret": secret}
        )
        with self.context.sessions() as session, session.begin():
            session.execute(statement)

    def mirror(self, *tasks: computetask_pb2.ComputeTask) -> None:
        """Insert the tasks (and their plan and function) in the local replica, as api-events would.

        Task profiling rows refer to them.
        """
        now = datetime.now(UTC)
        with self.context.sessions() as session, session.begin():
            for task in tasks:
                function = self.orchestrator.get_function(task.function_key)
                plan = self.orchestrator.get_plan(task.compute_plan_key)
                session.execute(
                    insert(replica.Function)
                    .values(
                        key=function.key,
                        channel=self.channel,
                        name=function.name,
                        owner=function.owner,
                        creation_date=now,
                        status=function_pb2.FunctionStatus.Name(function.status),
                        description_address=function.description.storage_address,
                        description_checksum=function.description.checksum,
                        archive_address=function.archive.storage_address,
                        archive_checksum=function.archive.checksum,
                    )
                    .on_conflict_do_nothing()
                )
                session.execute(
                    insert(replica.ComputePlan)
                    .values(key=plan.key, channel=self.channel, owner=plan.owner, creation_date=now)
                    .on_conflict_do_nothing()
                )
                session.execute(
                    insert(replica.ComputeTask)
                    .values(
                        key=task.key,
                        channel=self.channel,
                        function_key=task.function_key,
                        compute_plan_key=task.compute_plan_key,
                        owner=task.owner,
                        worker=task.worker,
                        rank=task.rank,
                        status=computetask_pb2.ComputeTaskStatus.Name(task.status),
                        creation_date=now,
                    )
                    .on_conflict_do_nothing()
                )

    def profile(self, task_key: str) -> dict[str, int]:
        """The task's profiling steps (name → µs), as the server's `/task_profiling/` shows them."""
        with self.context.sessions() as session:
            rows = session.scalars(
                select(replica.TaskProfilingStep)
                .where(replica.TaskProfilingStep.compute_task_key == task_key)
                .order_by(replica.TaskProfilingStep.position)
            )
            return {row.step: row.duration_us for row in rows}

    def register_dataset(
        self, samples: list[Mapping[str, bytes]], *, opener: str = OPENER_SCRIPT
    ) -> tuple[datamanager_pb2.DataManager, list[str]]:
        key = str(uuid.uuid4())
        opener_checksum = self.store(
            key, ROLE_OPENER, DATAMANAGER_BUCKET, f"datamanagers/{key}/opener.py", opener.encode()
        )
        description = b"# dataset\n"
        manager = self.orchestrator.register_data_manager(
            datamanager_pb2.NewDataManager(
                key=key,
                name="dataset",
                new_permissions=common_pb2.NewPermissions(public=True),
                description=self.addressable(sha256(description), f"/data_manager/{key}/description/"),
                opener=self.addressable(opener_checksum, f"/data_manager/{key}/opener/"),
                logs_permission=common_pb2.NewPermissions(public=True),
            )
        )
        new_samples = []
        for files in samples:
            sample_key = str(uuid.uuid4())
            self.store(sample_key, ROLE_DATA_SAMPLE, DATASAMPLE_BUCKET, sample_key, data_sample_zip(files))
            new_samples.append(
                datasample_pb2.NewDataSample(
                    key=sample_key, data_manager_keys=[key], checksum=data_sample_checksum(files)
                )
            )
        registered = self.orchestrator.register_data_samples(new_samples)
        return manager, [sample.key for sample in registered]


def json_sample(x: float) -> dict[str, bytes]:
    return {"sample.json": json.dumps({"x": x}).encode()}


# --- a peer backend's download routes (rest-api.md 7) ---------------------------------------------


@dataclass
class PeerServer:
    """Serves an organization's files to the organizations it knows, as its server would.

    `GET /function/<key>/file/`, `/model/<key>/file/`, `/data_manager/<key>/opener/`: HTTP Basic
    with a known organization and its secret, and a `Substra-Channel-Name` header, are required.
    """

    incoming: dict[str, str]
    # Set once the organization exists (its DEFAULT_DOMAIN is this server's URL).
    owner: BackendOrganization | None = None
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    ROUTES: ClassVar[dict[str, tuple[str, str]]] = {
        "function": (ROLE_FUNCTION_ARCHIVE, "file"),
        "model": (ROLE_MODEL, "file"),
        "data_manager": (ROLE_OPENER, "opener"),
    }

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> PeerServer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                status, body = peer.answer(
                    self.path,
                    self.headers.get("Authorization", ""),
                    self.headers.get("Substra-Channel-Name", ""),
                )
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def answer(self, path: str, authorization: str, channel: str) -> tuple[int, bytes]:
        assert self.owner is not None
        organization = ""
        try:
            scheme, _, token = authorization.partition(" ")
            organization, _, secret = base64.b64decode(token).decode().partition(":")
            if scheme != "Basic" or self.incoming.get(organization) != secret:
                raise ValueError
        except ValueError:
            return HTTPStatus.UNAUTHORIZED, b'{"detail": "Invalid username/password."}'
        self.requests.append((organization, channel, path))
        if channel != self.owner.channel:
            return HTTPStatus.FORBIDDEN, b'{"detail": "unknown channel"}'
        parts = [part for part in path.split("/") if part]
        if len(parts) != 3 or parts[0] not in self.ROUTES or self.ROUTES[parts[0]][1] != parts[2]:
            return HTTPStatus.NOT_FOUND, b'{"detail": "not found"}'
        role = self.ROUTES[parts[0]][0]
        stored = self.owner.context.sources.stored_file(parts[1], role)
        if stored is None:
            return HTTPStatus.GONE, b'{"detail": "Asset not available anymore"}'
        return HTTPStatus.OK, self.owner.context.storage.read_bytes(stored.bucket, stored.object_key)
