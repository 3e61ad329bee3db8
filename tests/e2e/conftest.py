"""A network of `scripts/localnet.py` (orchestrator + two organizations, every process real) for the
end-to-end tests, started once per session beside any network `make network` runs, and stopped after.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import substra
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCALNET = ROOT / "scripts" / "localnet.py"
# Redis databases 10 (broker) and 11 (results): no other test suite uses them.
REDIS_DB = 10
ORGANIZATIONS = 2


@dataclass(frozen=True)
class OrganizationAccess:
    msp_id: str
    url: str
    username: str
    password: str


@dataclass(frozen=True)
class E2ENetwork:
    options: list[str]
    home: Path
    description_file: Path
    organizations: list[OrganizationAccess]

    def localnet(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(LOCALNET), *self.options, *command],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def _load_localnet() -> ModuleType:
    """`scripts/localnet.py`, for the ports it derives from an offset (a script, not a package)."""
    if "localnet" not in sys.modules:
        spec = importlib.util.spec_from_file_location("localnet", LOCALNET)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["localnet"] = module
        spec.loader.exec_module(module)
    return sys.modules["localnet"]


def _ports_free(offset: int) -> bool:
    layout = _load_localnet().Layout(port_offset=offset)
    for port in layout.ports(ORGANIZATIONS):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@pytest.fixture(scope="session")
def e2e_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ENetwork]:
    offset = next((o for o in range(20000, 40000, 1000) if _ports_free(o)), None)
    if offset is None:
        pytest.fail("no free block of loopback ports for the end-to-end network")
    home = tmp_path_factory.mktemp("e2e-network")
    prefix = f"e2e_{uuid.uuid4().hex[:8]}"
    options = [
        "--home",
        str(home),
        "--port-offset",
        str(offset),
        "--prefix",
        prefix,
        "--redis-db",
        str(REDIS_DB),
    ]
    network = E2ENetwork(options=options, home=home, description_file=home / "network.yaml", organizations=[])
    started = network.localnet("up", "--orgs", str(ORGANIZATIONS))
    try:
        if started.returncode != 0:
            logs = "\n".join(
                f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted((home / "logs").glob("*.log"))
            )
            pytest.fail(f"localnet up failed:\n{started.stdout}\n{started.stderr}\n{logs}")
        description = yaml.safe_load(network.description_file.read_text())
        organizations = [OrganizationAccess(**entry) for entry in description["organizations"]]
        yield E2ENetwork(options, home, network.description_file, organizations)
    finally:
        state_file = home / "network" / "state.json"
        pids = json.loads(state_file.read_text())["processes"] if state_file.exists() else {}
        stopped = network.localnet("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        left = [name for name, pid in pids.items() if _alive(int(pid))]
        assert not left, f"still running after `localnet down`: {left}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def clients(e2e_network: E2ENetwork) -> Iterator[list[substra.Client]]:
    """One SDK client per organization, logged in as that organization's user."""
    logged_in = [
        substra.Client(
            backend_type="remote", url=access.url, username=access.username, password=access.password
        )
        for access in e2e_network.organizations
    ]
    yield logged_in
    for client in logged_in:
        client.logout()
