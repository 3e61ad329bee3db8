"""A substrafl 1.0 FedAvg experiment, the demo's, run to the end on the end-to-end network."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import substra
from substra.sdk import models

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 2


def test_substrafl_fedavg_runs_to_the_end(
    e2e_network: Any, clients: list[substra.Client], tmp_path: Path
) -> None:
    plot = tmp_path / "performance.png"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "demo" / "fedavg.py"),
            "--mode",
            "remote",
            "--network-file",
            str(e2e_network.description_file),
            "--rounds",
            str(ROUNDS),
            "--plot",
            str(plot),
            "--timeout",
            "400",
        ],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert plot.read_bytes().startswith(b"\x89PNG")
    submitted = re.search(r"compute plan ([0-9a-f-]{36}) submitted", run.stdout)
    assert submitted, run.stdout
    key = submitted.group(1)

    # Both organizations see the same finished plan and the same performances for every round.
    views = [client.get_compute_plan(key) for client in clients]
    assert all(view.status == models.ComputePlanStatus.done for view in views)
    assert views[0].task_count == views[0].done_count == views[1].done_count
    performances = [json.loads(client.get_performances(key).model_dump_json()) for client in clients]
    assert performances[0] == performances[1]
    rounds = sorted(set(performances[0]["round_idx"]))
    assert rounds == list(range(ROUNDS + 1))  # an evaluation before training, then one per round
    assert set(performances[0]["worker"]) == {"MyOrg1MSP", "MyOrg2MSP"}
    assert all(0.0 <= value <= 1.0 for value in performances[0]["performance"])
    for round_idx in rounds:
        assert f"round {round_idx}: mean accuracy" in run.stdout
    # Training helped: the last round's mean accuracy beats the untrained model's.
    by_round: dict[int, list[float]] = {}
    for round_idx, value in zip(performances[0]["round_idx"], performances[0]["performance"], strict=True):
        by_round.setdefault(round_idx, []).append(value)
    assert sum(by_round[ROUNDS]) > sum(by_round[0])
