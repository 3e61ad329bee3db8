"""Federated averaging of a numpy logistic regression over several organizations, with substrafl.

    python demo/fedavg.py                      # against the network of `make network` (.local/network.yaml)
    python demo/fedavg.py --mode subprocess    # the SDK's local subprocess mode, for comparison

Each organization holds its own synthetic data (generated here, never sent anywhere): a training set
and a test set, behind a data manager whose opener reads `data.npz` files. The first organization
also aggregates. Each round trains locally on every organization, averages the updates, and
evaluates the model on every test set; the accuracy per round is printed and plotted to a PNG.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import substra
import yaml
from matplotlib.figure import Figure
from substra.sdk.schemas import DataSampleSpec, DatasetSpec, Permissions
from substrafl.algorithms import Algo
from substrafl.dependency import Dependency
from substrafl.evaluation_strategy import EvaluationStrategy
from substrafl.experiment import execute_experiment
from substrafl.nodes import AggregationNode, TestDataNode, TrainDataNode
from substrafl.remote import remote_data
from substrafl.strategies import FedAvg
from substrafl.strategies.schemas import FedAvgAveragedState, FedAvgSharedState, StrategyName

ROOT = Path(__file__).resolve().parents[1]
NETWORK_FILE = ROOT / ".local" / "network.yaml"
FEATURES = 5

OPENER = '''
import pathlib

import numpy as np
import substratools as tools


class NpzOpener(tools.Opener):
    """Concatenates the `data.npz` of every data-sample folder into {"x", "y"}."""

    def get_data(self, folders):
        parts = [np.load(pathlib.Path(folder) / "data.npz") for folder in folders]
        return {"x": np.concatenate([p["x"] for p in parts]), "y": np.concatenate([p["y"] for p in parts])}

    def fake_data(self, n_samples=None):
        n = n_samples or 10
        return {"x": np.random.normal(size=(n, 5)), "y": np.random.randint(0, 2, size=n).astype(float)}
'''


class LogisticRegression(Algo):  # type: ignore[misc]
    """Logistic regression trained by a few full-batch gradient steps per round."""

    def __init__(self, learning_rate: float = 0.5, local_steps: int = 10) -> None:
        super().__init__(learning_rate=learning_rate, local_steps=local_steps)
        self.learning_rate = learning_rate
        self.local_steps = local_steps
        self.weights = np.zeros(FEATURES + 1)

    @property
    def model(self) -> np.ndarray:
        return self.weights

    @property
    def strategies(self) -> list[StrategyName]:
        return [StrategyName.FEDERATED_AVERAGING]

    @staticmethod
    def _design(x: np.ndarray) -> np.ndarray:
        return np.hstack([x, np.ones((len(x), 1))])

    @remote_data  # type: ignore[untyped-decorator]
    def train(
        self, data_from_opener: dict[str, np.ndarray], shared_state: FedAvgAveragedState | None = None
    ) -> FedAvgSharedState:
        if shared_state is not None:
            self.weights = self.weights + shared_state.avg_parameters_update[0]
        design, labels = self._design(data_from_opener["x"]), data_from_opener["y"]
        weights = self.weights.copy()
        for _ in range(self.local_steps):
            predictions = 1 / (1 + np.exp(-design @ weights))
            weights -= self.learning_rate * design.T @ (predictions - labels) / len(labels)
        update = weights - self.weights
        self.weights = weights
        return FedAvgSharedState(n_samples=len(labels), parameters_update=[update])

    def predict(self, data_from_opener: dict[str, np.ndarray], shared_state: Any = None) -> np.ndarray:
        return np.asarray(1 / (1 + np.exp(-self._design(data_from_opener["x"]) @ self.weights)))

    def load_local_state(self, path: Path) -> LogisticRegression:
        self.weights = np.load(path, allow_pickle=False)
        return self

    def save_local_state(self, path: Path) -> None:
        with open(path, "wb") as file:
            np.save(file, self.weights, allow_pickle=False)


def accuracy(data_from_opener: dict[str, np.ndarray], predictions: np.ndarray) -> float:
    return float(np.mean((predictions > 0.5) == (data_from_opener["y"] > 0.5)))


def make_data(directory: Path, organization: int, samples: int, rng: np.random.Generator) -> None:
    """A folder `data.npz` of labelled points; each organization's features are shifted differently."""
    true_weights = np.array([1.5, -2.0, 0.7, 0.0, 1.0])
    x = rng.normal(loc=0.3 * organization, size=(samples, FEATURES))
    y = (rng.random(samples) < 1 / (1 + np.exp(-(x @ true_weights - 0.3 * organization)))).astype(float)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "data.npz", x=x, y=y)


def clients_for(mode: str, organizations: int, network_file: Path) -> list[substra.Client]:
    if mode == "subprocess":
        return [substra.Client(backend_type="subprocess") for _ in range(organizations)]
    if not network_file.exists():
        raise SystemExit(f"{network_file} not found: run `make network` first")
    network = yaml.safe_load(network_file.read_text())
    return [
        substra.Client(
            backend_type="remote", url=entry["url"], username=entry["username"], password=entry["password"]
        )
        for entry in network["organizations"][:organizations]
    ]


def register_data(
    client: substra.Client, index: int, workdir: Path, authorized: list[str], rng: np.random.Generator
) -> tuple[str, list[str], list[str]]:
    """Registers a data manager and its train and test samples; returns their keys."""
    opener = workdir / f"org{index}" / "opener.py"
    opener.parent.mkdir(parents=True, exist_ok=True)
    opener.write_text(OPENER)
    description = workdir / f"org{index}" / "description.md"
    description.write_text(f"# Synthetic data of organization {index}\n")
    permissions = Permissions(public=False, authorized_ids=authorized)
    dataset_key = client.add_dataset(
        DatasetSpec(
            name=f"synthetic-{index}",
            data_opener=opener,
            description=description,
            permissions=permissions,
            logs_permission=permissions,
        )
    )
    keys: dict[str, list[str]] = {}
    for split, samples in (("train", 400), ("test", 200)):
        folder = workdir / f"org{index}" / split
        make_data(folder, index, samples, rng)
        keys[split] = [client.add_data_sample(DataSampleSpec(path=folder, data_manager_keys=[dataset_key]))]
    return dataset_key, keys["train"], keys["test"]


def plot(performances: dict[int, list[float]], output: Path) -> None:
    rounds = sorted(performances)
    # The object-oriented API needs no display and no global backend choice.
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.plot(rounds, [float(np.mean(performances[r])) for r in rounds], marker="o", label="mean accuracy")
    axes.set_xlabel("round")
    axes.set_ylabel("accuracy on the test sets")
    axes.set_title("FedAvg of a logistic regression over the organizations")
    axes.set_ylim(0, 1)
    axes.grid(True)
    axes.legend()
    figure.tight_layout()
    figure.savefig(output)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["remote", "subprocess"], default="remote")
    parser.add_argument("--organizations", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plot", type=Path, default=ROOT / ".local" / "demo-performance.png")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--network-file", type=Path, default=NETWORK_FILE, help="the network's description (remote mode)"
    )
    arguments = parser.parse_args()

    started = time.monotonic()
    clients = clients_for(arguments.mode, arguments.organizations, arguments.network_file)
    organization_ids = [client.organization_info().organization_id for client in clients]
    print(f"organizations: {', '.join(organization_ids)} ({arguments.mode} mode)")
    rng = np.random.default_rng(42)
    workdir = Path(tempfile.mkdtemp(prefix="substra-demo-"))

    train_nodes, test_nodes = [], []
    for index, (client, organization_id) in enumerate(zip(clients, organization_ids, strict=True), start=1):
        dataset_key, train_keys, test_keys = register_data(client, index, workdir, organization_ids, rng)
        train_nodes.append(TrainDataNode(organization_id, dataset_key, train_keys))
        test_nodes.append(TestDataNode(organization_id, dataset_key, test_keys))
        print(f"  {organization_id}: dataset {dataset_key}, 1 train and 1 test sample")

    strategy = FedAvg(algo=LogisticRegression(), metric_functions={"accuracy": accuracy})
    compute_plan = execute_experiment(
        client=clients[0],
        strategy=strategy,
        train_data_nodes=train_nodes,
        aggregation_node=AggregationNode(organization_ids[0]),
        evaluation_strategy=EvaluationStrategy(test_data_nodes=test_nodes, eval_frequency=1),
        num_rounds=arguments.rounds,
        experiment_folder=workdir / "experiment",
        dependencies=Dependency(pypi_dependencies=["numpy"], editable_mode=False),
        name="demo-fedavg-numpy",
    )
    print(f"compute plan {compute_plan.key} submitted")

    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + arguments.timeout
    while True:
        plan = clients[0].get_compute_plan(compute_plan.key)
        done = plan.done_count
        print(f"  {plan.status.value}: {done}/{plan.task_count} tasks done", flush=True)
        performances = clients[0].get_performances(compute_plan.key)
        for task_key, worker, round_idx, value in zip(
            performances.task_key,
            performances.worker,
            performances.round_idx,
            performances.performance,
            strict=True,
        ):
            if (task_key, str(round_idx)) not in seen:
                seen.add((task_key, str(round_idx)))
                print(f"    round {round_idx} on {worker}: accuracy {value:.3f}")
        if plan.status.value in ("PLAN_STATUS_DONE", "PLAN_STATUS_FAILED", "PLAN_STATUS_CANCELED"):
            break
        if time.monotonic() > deadline:
            print(f"timed out after {arguments.timeout:.0f}s")
            return 1
        time.sleep(1)

    if plan.status.value != "PLAN_STATUS_DONE":
        print(f"compute plan ended {plan.status.value}; failed task {plan.failed_task_key}")
        return 1
    per_round: dict[int, list[float]] = {}
    final = clients[0].get_performances(compute_plan.key)
    for round_idx, value in zip(final.round_idx, final.performance, strict=True):
        per_round.setdefault(int(round_idx), []).append(float(value))
    for round_idx in sorted(per_round):
        print(f"round {round_idx}: mean accuracy {np.mean(per_round[round_idx]):.3f}")
    arguments.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(per_round, arguments.plot)
    print(f"plot saved to {arguments.plot}")
    print(f"wall time {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
