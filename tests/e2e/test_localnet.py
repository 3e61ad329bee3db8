"""`scripts/localnet.py` on the running end-to-end network: `up` again changes nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx


def test_up_on_a_running_network_changes_nothing(e2e_network: Any) -> None:
    state_file = e2e_network.home / "network" / "state.json"
    before = json.loads(state_file.read_text())
    again = e2e_network.localnet("up", "--orgs", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing changed" in again.stdout
    assert json.loads(state_file.read_text()) == before
    status = e2e_network.localnet("status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.count("running") == len(before["processes"])
    # Every role of every organization, plus the orchestrator.
    roles = {"server", "events", "worker", "builder", "scheduler-beat", "scheduler-worker"}
    assert set(before["processes"]) == {"orchestrator"} | {
        f"myorg{index}-{role}" for index in (1, 2) for role in roles
    }
    for organization in e2e_network.organizations:
        assert httpx.get(f"{organization.url}/readiness", timeout=5).status_code == 200
