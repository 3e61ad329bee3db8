"""Test helpers of the server: organizations' backends, live servers, replica synchronisation.

Used by this package's tests and `benchmarks/bench_server.py`; nothing here runs in production.
"""

from __future__ import annotations

import functools
import io
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from backend_common import replica
from backend_common.db import make_engine, make_session_factory, session_scope
from backend_common.db.local import IncomingOrganization, OutgoingOrganization, TokenKind, User, UserRole
from backend_common.orchestrator import OrchestratorClient
from backend_common.passwords import hash_secret
from backend_common.protos import (
    common_pb2,
    computeplan_pb2,
    computetask_pb2,
    datamanager_pb2,
    datasample_pb2,
    event_pb2,
    function_pb2,
    model_pb2,
    organization_pb2,
    performance_pb2,
)
from backend_common.settings import (
    AuthSettings,
    DatabaseSettings,
    HttpSettings,
    OrchestratorSettings,
    OrganizationSettings,
    StorageSettings,
)
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from backend_server.app import create_app
from backend_server.data import accounts
from backend_server.settings import ApiSettings, ServerSettings

CHANNEL = "mychannel"
ORG1, ORG2, ORG3 = "MyOrg1MSP", "MyOrg2MSP", "MyOrg3MSP"
PASSWORD = "a-long-enough-password-1"  # noqa: S105 (test accounts)
SECRET_KEY = "test-secret-key"  # noqa: S105
ORG_SECRETS = {ORG1: "secret-of-org1", ORG2: "secret-of-org2", ORG3: "secret-of-org3"}


def sync_replica(client: OrchestratorClient, database_url: str) -> int:
    """Apply the channel's new events to the replica, as the events service would; returns how many."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_session_factory(engine)) as session:
            cursor = replica.load_cursor(session, client.channel)
            events = list(client.iter_events(event_pb2.EventQueryFilter(), page_size=500))
            if cursor:
                ids = [event.id for event in events]
                events = events[ids.index(cursor) + 1 :] if cursor in ids else events
            replica.apply_events(session, events)
            if events:
                last = events[-1]
                replica.save_cursor(session, client.channel, last.id, last.timestamp.ToDatetime(UTC))
            return len(events)
    finally:
        engine.dispose()


@functools.lru_cache(maxsize=64)
def cached_hash(secret: str) -> str:
    """Argon2 hashes are slow by design: tests hash each password once."""
    return hash_secret(secret)


def server_settings(
    database_url: str,
    *,
    orchestrator_port: int = 1,
    msp_id: str = ORG1,
    media_root: Path,
    port: int = 8000,
    channels: str = '[{"mychannel": {"model_export_enabled": true}}]',
    **api: Any,
) -> ServerSettings:
    return ServerSettings(
        organization=OrganizationSettings(MSP_ID=msp_id, CHANNELS=channels, ORG_NAME=msp_id.lower()),
        orchestrator=OrchestratorSettings(ORCHESTRATOR_PORT=orchestrator_port, ORCHESTRATOR_MAX_ATTEMPTS=1),
        database=DatabaseSettings(DATABASE_URL=database_url, DATABASE_POOL_SIZE=4),
        storage=StorageSettings(
            MEDIA_ROOT=str(media_root / "medias"), SERVERMEDIAS_ROOT=str(media_root / "servermedias")
        ),
        http=HttpSettings(DEFAULT_DOMAIN=f"http://127.0.0.1:{port}"),
        auth=AuthSettings(SECRET_KEY=SECRET_KEY),
        api=ApiSettings(**{"DEFAULT_THROTTLE_RATES": 0, "PASSWORD_MIN_LENGTH": 9, "DEBUG": True, **api}),
    )


@dataclass
class Backend:
    """One organization's server (in-process test client, or live on loopback) and its database."""

    settings: ServerSettings
    database_url: str
    client: TestClient | None = None
    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def msp_id(self) -> str:
        return self.settings.msp_id

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction on the backend's database, committed at the end of the block."""
        engine = make_engine(self.database_url, pool_size=1)
        try:
            with session_scope(make_session_factory(engine)) as session:
                yield session
        finally:
            engine.dispose()

    def add_user(
        self,
        username: str,
        *,
        role: UserRole = UserRole.USER,
        channel: str | None = CHANNEL,
        password: str = PASSWORD,
    ) -> str:
        """Create a user and return a valid token of theirs."""
        with self.session() as session:
            now = datetime.now(UTC)
            user = User(
                username=username,
                password_hash=cached_hash(password),
                channel=channel,
                role=role,
                created_at=now,
            )
            session.add(user)
            session.flush()
            _, value = accounts.create_token(
                session, user.id, kind=TokenKind.IMPLICIT, expires_at=now + timedelta(hours=1), now=now
            )
        self.tokens[username] = value
        return value

    def add_organizations(self, secrets: dict[str, str]) -> None:
        """Incoming credentials of peers (and of itself), and its outgoing ones."""
        with self.session() as session:
            for organization, secret in secrets.items():
                session.merge(
                    IncomingOrganization(organization_id=organization, secret_hash=cached_hash(secret))
                )
                session.merge(
                    OutgoingOrganization(organization_id=organization, secret=ORG_SECRETS[self.msp_id])
                )

    def headers(self, username: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Token {self.tokens[username]}", "Accept": "application/json;version=0.0"}

    def http(self) -> TestClient:
        assert self.client is not None
        return self.client


class LiveServer:
    """uvicorn on a loopback port, in a thread of the test process; stopped by `stop()`."""

    def __init__(self, settings: ServerSettings, port: int) -> None:
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


# --- assets on disk for SDK-driven tests ---------------------------------------------------------------

OPENER = b"""import substratools as tools


class Opener(tools.Opener):
    def fake_data(self, n_samples=None):
        return []

    def get_data(self, folders):
        return folders
"""
DOCKERFILE = b'FROM python:3.11-slim\nCOPY function.py .\nENTRYPOINT ["python3", "function.py"]\n'
FUNCTION = b"""import substratools as tools


@tools.register
def train(inputs, outputs, task_properties):
    pass
"""


def write_dataset_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    opener, description = folder / "opener.py", folder / "description.md"
    opener.write_bytes(OPENER)
    description.write_text("# A dataset\n\nWith a description: é\n")
    return opener, description


def write_function_files(folder: Path, *, archive_format: str = "zip") -> tuple[Path, Path]:
    """A function archive (zip, or tar.gz as substrafl sends) and its description."""
    folder.mkdir(parents=True, exist_ok=True)
    description = folder / "description.md"
    description.write_text("# A function\n")
    if archive_format == "zip":
        archive = folder / "function.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("Dockerfile", DOCKERFILE)
            zipped.writestr("function.py", FUNCTION)
    else:
        archive = folder / "function.tar.gz"
        with tarfile.open(archive, "w:gz") as tarred:
            for name, content in (("Dockerfile", DOCKERFILE), ("function.py", FUNCTION)):
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tarred.addfile(info, io.BytesIO(content))
    return archive, description


def write_sample_folder(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.csv").write_bytes(content)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "labels.csv").write_bytes(content[::-1])
    return folder


# --- replica rows through the events code path -------------------------------------------------------


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _permissions(owner: str, public: bool, authorized: Sequence[str]) -> common_pb2.Permissions:
    ids = list(dict.fromkeys([*authorized, owner]))
    permission = common_pb2.Permission(public=public, authorized_ids=ids)
    return common_pb2.Permissions(process=permission, download=permission)


TRAIN_INPUTS = {
    "opener": function_pb2.FunctionInput(kind=common_pb2.ASSET_DATA_MANAGER),
    "datasamples": function_pb2.FunctionInput(kind=common_pb2.ASSET_DATA_SAMPLE, multiple=True),
    "model": function_pb2.FunctionInput(kind=common_pb2.ASSET_MODEL, optional=True),
}
MODEL_OUTPUTS = {"model": function_pb2.FunctionOutput(kind=common_pb2.ASSET_MODEL)}


class Replica:
    """Builds orchestrator messages and stores them with `backend_common.replica`, as events would."""

    def __init__(
        self, session: Session, channel: str = CHANNEL, *, base: str = "http://127.0.0.1:8000"
    ) -> None:
        self.session = session
        self.channel = channel
        self.base = base
        self.clock = datetime(2024, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        # Distinct, increasing creation dates: listings have a deterministic order.
        self.clock += timedelta(seconds=1)
        return self.clock

    def organization(self, organization_id: str, address: str = "") -> None:
        replica.store_organization(
            self.session,
            self.channel,
            organization_pb2.Organization(
                id=organization_id, address=address, creation_date=timestamp(self.now())
            ),
        )

    def function(
        self,
        owner: str = ORG1,
        *,
        name: str = "function",
        public: bool = False,
        authorized: Sequence[str] = (),
        inputs: dict[str, function_pb2.FunctionInput] | None = None,
        outputs: dict[str, function_pb2.FunctionOutput] | None = None,
        status: int = function_pb2.FUNCTION_STATUS_READY,
        metadata: dict[str, str] | None = None,
    ) -> function_pb2.Function:
        key = str(uuid.uuid4())
        function = function_pb2.Function(
            key=key,
            name=name,
            description=common_pb2.Addressable(
                checksum="a" * 64, storage_address=f"{self.base}/function/{key}/description/"
            ),
            archive=common_pb2.Addressable(
                checksum="b" * 64, storage_address=f"{self.base}/function/{key}/file/"
            ),
            permissions=_permissions(owner, public, authorized),
            owner=owner,
            creation_date=timestamp(self.now()),
            metadata=metadata or {},
            inputs=TRAIN_INPUTS if inputs is None else inputs,
            outputs=MODEL_OUTPUTS if outputs is None else outputs,
            status=status,  # type: ignore[arg-type]
        )
        replica.store_function(self.session, self.channel, function)
        return function

    def data_manager(
        self,
        owner: str = ORG1,
        *,
        name: str = "dataset",
        public: bool = False,
        authorized: Sequence[str] = (),
    ) -> datamanager_pb2.DataManager:
        key = str(uuid.uuid4())
        data_manager = datamanager_pb2.DataManager(
            key=key,
            name=name,
            owner=owner,
            permissions=_permissions(owner, public, authorized),
            description=common_pb2.Addressable(
                checksum="c" * 64, storage_address=f"{self.base}/data_manager/{key}/description/"
            ),
            opener=common_pb2.Addressable(
                checksum="d" * 64, storage_address=f"{self.base}/data_manager/{key}/opener/"
            ),
            creation_date=timestamp(self.now()),
            logs_permission=common_pb2.Permission(public=False, authorized_ids=[owner]),
        )
        replica.store_data_manager(self.session, self.channel, data_manager)
        return data_manager

    def data_sample(self, data_manager_keys: Sequence[str], owner: str = ORG1) -> datasample_pb2.DataSample:
        sample = datasample_pb2.DataSample(
            key=str(uuid.uuid4()),
            data_manager_keys=list(data_manager_keys),
            owner=owner,
            checksum="e" * 64,
            creation_date=timestamp(self.now()),
        )
        replica.store_data_sample(self.session, self.channel, sample)
        return sample

    def plan(
        self, owner: str = ORG1, *, name: str = "plan", tag: str = "", metadata: dict[str, str] | None = None
    ) -> computeplan_pb2.ComputePlan:
        plan = computeplan_pb2.ComputePlan(
            key=str(uuid.uuid4()),
            owner=owner,
            name=name,
            tag=tag,
            metadata=metadata or {},
            creation_date=timestamp(self.now()),
        )
        replica.store_compute_plan(
            self.session, self.channel, plan, creator="admin" if owner == ORG1 else None
        )
        return plan

    def task(
        self,
        function: function_pb2.Function,
        plan: computeplan_pb2.ComputePlan,
        *,
        worker: str = ORG1,
        rank: int = 0,
        status: int = computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT,
        inputs: Sequence[computetask_pb2.ComputeTaskInput] = (),
        outputs: Sequence[str] = ("model",),
        metadata: dict[str, str] | None = None,
        public_outputs: bool = False,
    ) -> computetask_pb2.ComputeTask:
        task = computetask_pb2.ComputeTask(
            key=str(uuid.uuid4()),
            owner=plan.owner,
            compute_plan_key=plan.key,
            rank=rank,
            status=status,  # type: ignore[arg-type]
            worker=worker,
            creation_date=timestamp(self.now()),
            logs_permission=common_pb2.Permission(public=False, authorized_ids=[plan.owner]),
            metadata=metadata or {},
            inputs=list(inputs),
            outputs={
                identifier: computetask_pb2.ComputeTaskOutput(
                    permissions=_permissions(plan.owner, public_outputs, [worker]), transient=False
                )
                for identifier in outputs
            },
            function_key=function.key,
        )
        replica.store_compute_task(self.session, self.channel, task)
        replica.recompute_plan(self.session, plan.key)
        return task

    def task_status(self, task_key: str, status: str) -> None:
        plan_key = replica.update_compute_task_status(self.session, task_key, status, self.now())
        if plan_key:
            replica.recompute_plan(self.session, plan_key)

    def model(
        self,
        task: computetask_pb2.ComputeTask,
        identifier: str = "model",
        *,
        owner: str = ORG1,
        public: bool = False,
    ) -> model_pb2.Model:
        key = str(uuid.uuid4())
        model = model_pb2.Model(
            key=key,
            compute_task_key=task.key,
            address=common_pb2.Addressable(
                checksum="f" * 64, storage_address=f"{self.base}/model/{key}/file/"
            ),
            permissions=_permissions(owner, public, [task.owner]),
            owner=owner,
            creation_date=timestamp(self.now()),
        )
        replica.store_model(self.session, self.channel, model)
        replica.store_output_asset(
            self.session,
            self.channel,
            computetask_pb2.ComputeTaskOutputAsset(
                compute_task_key=task.key,
                compute_task_output_identifier=identifier,
                asset_kind=common_pb2.ASSET_MODEL,
                asset_key=key,
            ),
        )
        return model

    def performance(self, task: computetask_pb2.ComputeTask, identifier: str, value: float) -> None:
        replica.store_performance(
            self.session,
            self.channel,
            performance_pb2.Performance(
                compute_task_key=task.key,
                compute_task_output_identifier=identifier,
                performance_value=value,
                creation_date=timestamp(self.now()),
            ),
        )
        replica.store_output_asset(
            self.session,
            self.channel,
            computetask_pb2.ComputeTaskOutputAsset(
                compute_task_key=task.key,
                compute_task_output_identifier=identifier,
                asset_kind=common_pb2.ASSET_PERFORMANCE,
                asset_key=f"{task.key}|{identifier}",
            ),
        )


def asset_input(identifier: str, key: str) -> computetask_pb2.ComputeTaskInput:
    return computetask_pb2.ComputeTaskInput(identifier=identifier, asset_key=key)


def parent_input(identifier: str, parent: str, output: str = "model") -> computetask_pb2.ComputeTaskInput:
    return computetask_pb2.ComputeTaskInput(
        identifier=identifier,
        parent_task_output=computetask_pb2.ParentTaskOutputRef(
            parent_task_key=parent, output_identifier=output
        ),
    )
