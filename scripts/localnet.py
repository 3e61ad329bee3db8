"""A local Substra network on loopback: one standalone orchestrator and N organizations.

    python scripts/localnet.py up [--orgs N]    # start (a running network is left as it is)
    python scripts/localnet.py down             # stop everything it started, drop its databases
    python scripts/localnet.py status

Each organization gets its own database, object storage directory, accounts and processes
(migrations, server, events, worker, builder, scheduler beat and worker); all share the machine's
PostgreSQL and Redis. Logs go to `.local/logs/`, the description of the network to
`.local/network.yaml` (msp_id, url, username, password of each organization).

Several networks can run side by side (the end-to-end tests start their own): `--home` moves the
state, logs and description, `--port-offset` shifts every port, `--prefix` names the databases and
`--redis-db` picks the Redis databases (broker N, results N+1).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

POSTGRES_URL = os.environ.get(
    "LOCALNET_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CHANNEL = "mychannel"
ORCHESTRATOR_PORT = 9000
ORCHESTRATOR_METRICS_PORT = 8484
SERVER_BASE_PORT = 8000
METRICS_BASE_PORT = 9200
READY_TIMEOUT_SECONDS = 120
# What every function environment sees without installing it: the network's "base image". With
# substrafl and numpy there, a substrafl function's requirements are already satisfied and its
# build takes seconds instead of a resolution against PyPI.
FUNCTION_BASE_REQUIREMENTS = os.environ.get(
    "LOCALNET_FUNCTION_BASE_REQUIREMENTS", "substratools==1.0.0 substrafl==1.0.0 numpy"
)
# Shared by every network of this checkout (pip's cache and the base environments are safe to
# share: the cache is concurrency-safe, a base is built once under a file lock and only read).
FUNCTION_CACHE = ROOT / ".local" / "function-cache"


# The processes of each organization, each with its own metrics port (in this order).
ROLES: dict[str, list[str]] = {
    "server": [str(BIN / "backend-server")],
    "events": [str(BIN / "backend-events"), "consume"],
    "worker": [str(BIN / "backend-worker"), "worker"],
    "builder": [str(BIN / "backend-worker"), "builder"],
    "scheduler-beat": [str(BIN / "backend-scheduler"), "beat"],
    "scheduler-worker": [str(BIN / "backend-scheduler"), "worker"],
}


@dataclass(frozen=True)
class Layout:
    """Where one network keeps its state and which ports, databases and Redis databases it uses."""

    home: Path = ROOT / ".local"
    port_offset: int = 0
    prefix: str = "localnet"
    redis_db: int = 0

    @property
    def network_dir(self) -> Path:
        return self.home / "network"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_file(self) -> Path:
        return self.network_dir / "state.json"

    @property
    def description_file(self) -> Path:
        return self.home / "network.yaml"

    @property
    def orchestrator_port(self) -> int:
        return ORCHESTRATOR_PORT + self.port_offset

    @property
    def orchestrator_metrics_port(self) -> int:
        return ORCHESTRATOR_METRICS_PORT + self.port_offset

    def ports(self, count: int) -> list[int]:
        """Every loopback port a network of `count` organizations listens on."""
        ports = [self.orchestrator_port, self.orchestrator_metrics_port]
        for organization in (Organization(index, self) for index in range(1, count + 1)):
            metrics = range(organization.metrics_port, organization.metrics_port + len(ROLES))
            ports += [organization.port, *metrics]
        return ports

    @property
    def orchestrator_database(self) -> str:
        return f"{self.prefix}_orchestrator"


@dataclass(frozen=True)
class Organization:
    index: int
    layout: Layout = Layout()

    @property
    def name(self) -> str:
        return f"myorg{self.index}"

    @property
    def msp_id(self) -> str:
        return f"MyOrg{self.index}MSP"

    @property
    def port(self) -> int:
        return SERVER_BASE_PORT + self.layout.port_offset + self.index - 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def username(self) -> str:
        return f"org-{self.index}"

    @property
    def password(self) -> str:
        return f"p@sswr0d4{self.index}"

    @property
    def database(self) -> str:
        return f"{self.layout.prefix}_{self.name}"

    @property
    def metrics_port(self) -> int:
        return METRICS_BASE_PORT + self.layout.port_offset + 10 * self.index

    @property
    def directory(self) -> Path:
        return self.layout.network_dir / self.name

    def secret_towards(self, peer: Organization) -> str:
        # Pairing rule (operations.md 3.2): A's outgoing secret towards B is B's incoming secret for A.
        return f"secret-{self.msp_id}-to-{peer.msp_id}"


def database_url(name: str) -> str:
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def create_databases(names: list[str]) -> None:
    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for name in names:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def drop_databases(names: list[str]) -> None:
    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for name in names:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def purge_queues(layout: Layout, organizations: list[Organization]) -> None:
    """Remove messages a previous network left in Redis for these organizations' queues."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=layout.redis_db)
    for organization in organizations:
        for pattern in (f"{organization.name}*", f"_kombu.binding.{organization.name}*"):
            keys = list(client.scan_iter(match=pattern, count=500))
            if keys:
                client.delete(*keys)


def write_accounts(organization: Organization, organizations: list[Organization]) -> Path:
    accounts = organization.directory / "accounts"
    accounts.mkdir(parents=True, exist_ok=True)
    (accounts / "users").write_text(f"{organization.username} {organization.password} {CHANNEL}\n")
    (accounts / "incoming_organizations").write_text(
        "".join(f"{peer.msp_id} {peer.secret_towards(organization)}\n" for peer in organizations)
    )
    (accounts / "outgoing_organizations").write_text(
        "".join(f"{peer.msp_id} {organization.secret_towards(peer)}\n" for peer in organizations)
    )
    return accounts


def organization_environment(organization: Organization) -> dict[str, str]:
    return {
        **os.environ,
        "ORG_NAME": organization.name,
        "MSP_ID": organization.msp_id,
        "CHANNELS": json.dumps([{CHANNEL: {"restricted": False, "model_export_enabled": True}}]),
        "DATABASE_URL": database_url(organization.database),
        "ORCHESTRATOR_HOST": "127.0.0.1",
        "ORCHESTRATOR_PORT": str(organization.layout.orchestrator_port),
        "CELERY_BROKER_HOST": REDIS_HOST,
        "CELERY_BROKER_PORT": str(REDIS_PORT),
        "CELERY_BROKER_DATABASE": str(organization.layout.redis_db),
        "CELERY_RESULT_DATABASE": str(organization.layout.redis_db + 1),
        "MEDIA_ROOT": str(organization.directory / "medias"),
        "SERVERMEDIAS_ROOT": str(organization.directory / "servermedias"),
        "SUBTUPLE_DIR": str(organization.directory / "subtuple"),
        "DEFAULT_DOMAIN": organization.url,
        "SERVER_BIND_HOST": "127.0.0.1",
        "SERVER_BIND_PORT": str(organization.port),
        "SERVER_WORKERS": "2",
        "SECRET_KEY": f"localnet-secret-key-{organization.name}",
        "CELERYBEAT_SCHEDULE_FILE": str(organization.directory / "celerybeat-schedule"),
        "FUNCTION_BASE_REQUIREMENTS": FUNCTION_BASE_REQUIREMENTS,
        "FUNCTION_BASE_ENVIRONMENT": str(base_environment()),
        "FUNCTION_PIP_CACHE_DIR": str(FUNCTION_CACHE / "pip"),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
    }


def start(layout: Layout, name: str, command: list[str], environment: dict[str, str]) -> int:
    log = (layout.log_dir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        command,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=ROOT,
    )
    print(f"  started {name} (pid {process.pid})")
    return process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_state(layout: Layout) -> dict[str, object] | None:
    return json.loads(layout.state_file.read_text()) if layout.state_file.exists() else None


def wait_ready(layout: Layout, organizations: list[Organization], processes: dict[str, int]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    pending = {organization.msp_id: organization for organization in organizations}
    while pending and time.monotonic() < deadline:
        for name, pid in processes.items():
            if not alive(pid):
                raise SystemExit(f"{name} exited; see {layout.log_dir / (name + '.log')}")
        for msp_id, organization in list(pending.items()):
            try:
                if httpx.get(f"{organization.url}/readiness", timeout=2).status_code == 200:
                    print(f"  {msp_id} ready at {organization.url}")
                    del pending[msp_id]
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    if pending:
        waiting = ", ".join(pending)
        raise SystemExit(f"not ready after {READY_TIMEOUT_SECONDS}s: {waiting}; see {layout.log_dir}")


def base_environment() -> Path:
    # One per (interpreter, requirements), as the worker names them: never rebuilt in place.
    from backend_worker.function_environment import base_environment_path  # noqa: PLC0415
    from backend_worker.settings import default_python  # noqa: PLC0415

    requirements = FUNCTION_BASE_REQUIREMENTS.split()
    return base_environment_path(FUNCTION_CACHE / "bases", default_python(), requirements)


def migrate(layout: Layout, organizations: list[Organization]) -> None:
    """Every organization's schema and accounts, all at once (each takes a few seconds of start-up),
    and the functions' base environment (built on the first start only)."""
    print("migrating the organizations' databases, preparing the functions' base environment")
    steps = {
        "functions-base": ([str(BIN / "backend-worker"), "prepare"], organizations[0]),
        **{
            f"{organization.name}-migrations": (
                [
                    str(BIN / "backend-migrations"),
                    "run",
                    "--accounts-dir",
                    str(write_accounts(organization, organizations)),
                ],
                organization,
            )
            for organization in organizations
        },
    }
    running = {
        name: subprocess.Popen(
            command,
            env=organization_environment(organization),
            stdout=(layout.log_dir / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        for name, (command, organization) in steps.items()
    }
    failed = [name for name, process in running.items() if process.wait() != 0]
    if failed:
        logs = ", ".join(str(layout.log_dir / f"{name}.log") for name in failed)
        raise SystemExit(f"start-up steps failed; see {logs}")


def up(layout: Layout, count: int) -> None:
    state = read_state(layout)
    if state is not None:
        pids = state["processes"]
        assert isinstance(pids, dict)
        if all(alive(int(pid)) for pid in pids.values()) and state["orgs"] == count:
            print(f"network of {count} organizations already running; nothing changed")
            return
        print("network partly stopped or of another size: restarting it")
        down(layout)

    organizations = [Organization(index, layout) for index in range(1, count + 1)]
    layout.network_dir.mkdir(parents=True, exist_ok=True)
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    databases = [layout.orchestrator_database, *(organization.database for organization in organizations)]
    create_databases(databases)
    purge_queues(layout, organizations)
    processes: dict[str, int] = {}
    state = {"orgs": count, "databases": databases, "processes": processes}

    def save() -> None:
        layout.state_file.write_text(json.dumps(state, indent=2))

    try:
        orchestrator_config = layout.network_dir / "orchestrator.yaml"
        orchestrator_config.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{layout.orchestrator_port}",
                    "metrics_listen": f"127.0.0.1:{layout.orchestrator_metrics_port}",
                    "database_url": database_url(layout.orchestrator_database),
                    "channels": {CHANNEL: [organization.msp_id for organization in organizations]},
                }
            )
        )
        print("starting the orchestrator")
        processes["orchestrator"] = start(
            layout,
            "orchestrator",
            [str(BIN / "orchestrator"), "serve", "--config", str(orchestrator_config)],
            dict(os.environ),
        )
        save()
        migrate(layout, organizations)
        for organization in organizations:
            print(f"starting {organization.msp_id}")
            environment = organization_environment(organization)
            for offset, (role, command) in enumerate(ROLES.items()):
                role_environment = {
                    **environment,
                    "METRICS_PORT": str(organization.metrics_port + offset),
                    "HOSTNAME": f"{role}-0",
                }
                processes[f"{organization.name}-{role}"] = start(
                    layout, f"{organization.name}-{role}", command, role_environment
                )
                save()
        wait_ready(layout, organizations, processes)
    except BaseException:
        print("start failed: stopping what was started")
        down(layout)
        raise

    layout.description_file.write_text(
        yaml.safe_dump(
            {
                "channel": CHANNEL,
                "orchestrator": f"127.0.0.1:{layout.orchestrator_port}",
                "organizations": [
                    {
                        "msp_id": organization.msp_id,
                        "url": organization.url,
                        "username": organization.username,
                        "password": organization.password,
                    }
                    for organization in organizations
                ],
            },
            sort_keys=False,
        )
    )
    print(f"network ready: {layout.description_file}")


def down(layout: Layout) -> None:
    state = read_state(layout)
    if state is None:
        print("no network running")
        return
    pids = state["processes"]
    assert isinstance(pids, dict)
    for name, pid in pids.items():
        if alive(int(pid)):
            os.killpg(int(pid), signal.SIGTERM)
            print(f"  stopping {name} (pid {pid})")
    deadline = time.monotonic() + 20
    while any(alive(int(pid)) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids.values():
        if alive(int(pid)):
            os.killpg(int(pid), signal.SIGKILL)
    databases = state["databases"]
    assert isinstance(databases, list)
    drop_databases([str(name) for name in databases])
    purge_queues(layout, [Organization(index, layout) for index in range(1, int(str(state["orgs"])) + 1)])
    layout.state_file.unlink()
    layout.description_file.unlink(missing_ok=True)
    print("network stopped")


def status(layout: Layout) -> int:
    state = read_state(layout)
    if state is None:
        print("no network running")
        return 1
    pids = state["processes"]
    assert isinstance(pids, dict)
    for name, pid in pids.items():
        print(f"{name:28} pid {pid:>7}  {'running' if alive(int(pid)) else 'STOPPED'}")
    return 0 if all(alive(int(pid)) for pid in pids.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("LOCALNET_HOME", ROOT / ".local")))
    parser.add_argument("--port-offset", type=int, default=int(os.environ.get("LOCALNET_PORT_OFFSET", "0")))
    parser.add_argument("--prefix", default=os.environ.get("LOCALNET_PREFIX", "localnet"))
    parser.add_argument("--redis-db", type=int, default=int(os.environ.get("LOCALNET_REDIS_DB", "0")))
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up")
    up_parser.add_argument("--orgs", type=int, default=int(os.environ.get("ORGS", "2")))
    commands.add_parser("down")
    commands.add_parser("status")
    arguments = parser.parse_args()
    if not arguments.prefix.isidentifier():
        parser.error("--prefix must be an identifier (it names databases)")
    layout = Layout(arguments.home.resolve(), arguments.port_offset, arguments.prefix, arguments.redis_db)
    if arguments.command == "up":
        if not 1 <= arguments.orgs <= 8:
            parser.error("--orgs must be between 1 and 8")
        up(layout, arguments.orgs)
        return 0
    if arguments.command == "down":
        down(layout)
        return 0
    return status(layout)


if __name__ == "__main__":
    sys.exit(main())
