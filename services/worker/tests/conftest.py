"""Fixtures of the worker tests: real Postgres, Redis, object storage and standalone orchestrator.

* The base environment of functions (substratools 1.0 + substrafl 1.0, from PyPI once) is kept
  under `.local/worker-test/` with the shared pip cache, so later sessions need no network.
* The orchestrator runs as its own process (`orchestrator serve`) on a fresh database, with the
  organizations `MyOrg1MSP` and `MyOrg2MSP` registered on `mychannel`.
* Each organization's backend database is migrated once per session; tests use fresh keys.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from backend_common.orchestrator import OrchestratorClient, OrchestratorError
from backend_common.settings import (
    CelerySettings,
    DatabaseSettings,
    HttpSettings,
    MetricsSettings,
    OrchestratorSettings,
    OrganizationSettings,
    StorageSettings,
)
from backend_common.storage import ObjectStorage
from backend_common.testing.postgres import DatabaseFactory
from backend_common.testing.processes import free_port
from backend_common.testing.seaweedfs import SeaweedFS
from backend_migrations.schema import upgrade
from backend_worker.context import WorkerContext
from backend_worker.function_environment import (
    BaseEnvironment,
    base_environment_path,
    ensure_base_environment,
)
from backend_worker.local_executor import LocalExecutor
from backend_worker.sandbox import Bubblewrap
from backend_worker.settings import ExecutionSettings, WorkerSettings, default_python
from backend_worker.testing import BackendOrganization

REPOSITORY = Path(__file__).resolve().parents[3]
TEST_ENVIRONMENTS = REPOSITORY / ".local" / "worker-test"
PIP_CACHE = TEST_ENVIRONMENTS / "pip-cache"
PYTHON = default_python()
BASE_REQUIREMENTS = ["substratools==1.0.0", "substrafl==1.0.0"]
SUBSTRAFL_ARCHIVE_SCRIPT = Path(__file__).parent / "substrafl_archive.py"

CHANNEL = "mychannel"
ORG1, ORG2 = "MyOrg1MSP", "MyOrg2MSP"
BROKER_DATABASE, RESULT_DATABASE = 4, 5


@pytest.fixture(scope="session")
def base_environment() -> BaseEnvironment:
    path = base_environment_path(TEST_ENVIRONMENTS, PYTHON, BASE_REQUIREMENTS)
    return ensure_base_environment(
        path, python=PYTHON, requirements=BASE_REQUIREMENTS, pip_cache=PIP_CACHE, timeout=900
    )


@pytest.fixture
def make_executor(
    tmp_path: Path, base_environment: BaseEnvironment
) -> Iterator[Callable[..., LocalExecutor]]:
    made: list[LocalExecutor] = []

    def make(root: Path | None = None, **options: object) -> LocalExecutor:
        root = root or tmp_path / "root"
        arguments: dict[str, object] = {
            "environments_dir": root / "environments",
            "sandbox": Bubblewrap(),
            "python": PYTHON,
            "base_requirements": BASE_REQUIREMENTS,
            "pip_cache_dir": PIP_CACHE,
            "base_environment": base_environment.path,
            "hidden_paths": [root],
            "build_timeout": 300.0,
        }
        arguments.update(options)
        executor = LocalExecutor(**arguments)  # type: ignore[arg-type]
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()


@pytest.fixture(scope="session")
def substrafl_archive(tmp_path_factory: pytest.TempPathFactory, base_environment: BaseEnvironment) -> Path:
    """A function archive built by substrafl 1.0 itself (tar.gz, requirements, cloudpickle)."""
    directory = tmp_path_factory.mktemp("substrafl")
    completed = subprocess.run(
        [str(base_environment.python), str(SUBSTRAFL_ARCHIVE_SCRIPT), str(directory)],
        capture_output=True,
        text=True,
        check=False,
        cwd=directory,
    )
    assert completed.returncode == 0, completed.stderr
    return Path(completed.stdout.strip().splitlines()[-1])


# --- the orchestrator -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Orchestrator:
    port: int
    pid: int

    def settings(self) -> OrchestratorSettings:
        return OrchestratorSettings(host="127.0.0.1", port=self.port, max_attempts=3)

    def client(self, msp_id: str, channel: str = CHANNEL) -> OrchestratorClient:
        return OrchestratorClient(self.settings(), msp_id, channel)


@pytest.fixture(scope="session")
def orchestrator(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Orchestrator]:
    database_url = database_factory.create("orchestrator")
    directory = tmp_path_factory.mktemp("orchestrator")
    port = free_port()
    config = directory / "orchestrator.yaml"
    config.write_text(
        yaml.safe_dump(
            {"listen": f"127.0.0.1:{port}", "database_url": database_url, "channels": {CHANNEL: [ORG1, ORG2]}}
        )
    )
    executable = Path(sys.executable).parent / "orchestrator"
    log = (directory / "orchestrator.log").open("wb")
    process = subprocess.Popen(
        [str(executable), "serve", "--config", str(config), "--grace", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Orchestrator(port=port, pid=process.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (directory / "orchestrator.log").read_text()
            try:
                probe = OrchestratorSettings(host="127.0.0.1", port=port, max_attempts=1)
                with OrchestratorClient(probe, ORG1, CHANNEL) as client:
                    client.query_version()
                break
            except OrchestratorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for organization in (ORG1, ORG2):
            with server.client(organization) as client:
                client.register_organization(f"http://{organization.lower()}.test")
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        database_factory.drop(database_url)


# --- organizations --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def backend_databases(database_factory: DatabaseFactory) -> dict[str, str]:
    """One migrated backend database per organization."""
    urls = {}
    for organization in (ORG1, ORG2):
        url = database_factory.create("backend")
        upgrade(url)
        urls[organization] = url
    return urls


@pytest.fixture
def celery_settings() -> Iterator[CelerySettings]:
    for database in (BROKER_DATABASE, RESULT_DATABASE):
        redis.Redis(host="127.0.0.1", port=6379, db=database).flushdb()
    yield CelerySettings(
        broker_host="127.0.0.1",
        broker_database=BROKER_DATABASE,
        result_database=RESULT_DATABASE,
        task_max_retries=0,
    )
    for database in (BROKER_DATABASE, RESULT_DATABASE):
        redis.Redis(host="127.0.0.1", port=6379, db=database).flushdb()


def worker_settings(
    *,
    msp_id: str,
    root: Path,
    database_url: str,
    orchestrator: Orchestrator,
    base_environment: BaseEnvironment,
    default_domain: str = "http://backend.test",
    storage: StorageSettings | None = None,
    celery: CelerySettings | None = None,
    **execution: object,
) -> WorkerSettings:
    org_name = msp_id.lower().removesuffix("msp")
    return WorkerSettings(
        organization=OrganizationSettings(org_name=org_name, msp_id=msp_id, channels=[{"name": CHANNEL}]),
        orchestrator=orchestrator.settings(),
        database=DatabaseSettings(url_override=database_url, pool_size=3),
        celery=celery or CelerySettings(task_max_retries=0),
        storage=storage or StorageSettings(media_root=str(root / "medias")),
        execution=ExecutionSettings(
            root_dir=str(root / "subtuple"),
            base_environment=str(base_environment.path),
            base_requirements=BASE_REQUIREMENTS,
            pip_cache_dir=str(PIP_CACHE),
            python=PYTHON,
            cancel_poll_seconds=0.25,
            **execution,
        ),
        http=HttpSettings(default_domain_override=default_domain),
        metrics=MetricsSettings(enabled=False),
    )


@pytest.fixture
def worker_root() -> Iterator[Path]:
    """Worker directories outside /tmp, which the sandbox replaces by a private writable tmpfs:
    there they get the read-only surroundings they have in production."""
    root = Path("/var/tmp") / f"substra-worker-test-{uuid.uuid4().hex[:12]}"
    root.mkdir(parents=True)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_organization(
    worker_root: Path,
    orchestrator: Orchestrator,
    backend_databases: dict[str, str],
    base_environment: BaseEnvironment,
) -> Iterator[Callable[..., BackendOrganization]]:
    """Backends of MyOrg1MSP / MyOrg2MSP for one test (storage on disk unless one is given)."""
    made: list[WorkerContext] = []

    def make(
        msp_id: str = ORG1,
        *,
        storage: ObjectStorage | None = None,
        default_domain: str = "http://backend.test",
        **execution: object,
    ) -> BackendOrganization:
        settings = worker_settings(
            msp_id=msp_id,
            root=worker_root / msp_id,
            database_url=backend_databases[msp_id],
            orchestrator=orchestrator,
            base_environment=base_environment,
            default_domain=default_domain,
            **execution,
        )
        context = WorkerContext.from_settings(settings, storage=storage)
        made.append(context)
        return BackendOrganization(context=context, channel=CHANNEL)

    yield make
    for context in made:
        context.close()


@pytest.fixture
def seaweedfs_storage_settings(seaweedfs: SeaweedFS) -> StorageSettings:
    return StorageSettings(
        objectstore_url=seaweedfs.endpoint_url,
        objectstore_access_key=seaweedfs.access_key,
        objectstore_secret_key=seaweedfs.secret_key,
        objectstore_region=seaweedfs.region,
    )


def _worker_environment(settings: WorkerSettings, celery: CelerySettings) -> dict[str, str]:
    """The environment variables giving a `backend-worker` process the same configuration."""
    execution = settings.execution
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(("CELERY_", "DATABASE_"))},
        "ORG_NAME": settings.organization.org_name,
        "MSP_ID": settings.organization.msp_id,
        "CHANNELS": '[{"%s": {}}]' % CHANNEL,  # noqa: UP031
        "HOSTNAME": "worker-0",
        "ORCHESTRATOR_HOST": settings.orchestrator.host,
        "ORCHESTRATOR_PORT": str(settings.orchestrator.port),
        "DATABASE_URL": settings.database_url,
        "CELERY_BROKER_HOST": celery.broker_host,
        "CELERY_BROKER_DATABASE": str(celery.broker_database),
        "CELERY_RESULT_DATABASE": str(celery.result_database),
        "CELERY_TASK_MAX_RETRIES": "0",
        "MEDIA_ROOT": settings.storage.media_root,
        "SUBTUPLE_DIR": str(settings.root_dir),
        "FUNCTION_PYTHON": execution.python,
        "FUNCTION_BASE_ENVIRONMENT": str(execution.base_environment),
        "FUNCTION_BASE_REQUIREMENTS": " ".join(execution.base_requirements),
        "FUNCTION_PIP_CACHE_DIR": str(execution.pip_cache_dir),
        "COMPUTE_CANCEL_POLL_SECONDS": str(execution.cancel_poll_seconds),
        "DEFAULT_DOMAIN": settings.http.default_domain,
        "ENABLE_METRICS": "false",
        "LOG_JSON": "false",
    }


@pytest.fixture
def worker_environment() -> Callable[[WorkerSettings, CelerySettings], dict[str, str]]:
    return _worker_environment
