"""Benchmark of the local network (issue 8): the demo's substrafl FedAvg, remote against subprocess.

Starts its own network with `scripts/localnet.py` (two organizations, every process real, ports
shifted by 30000 and databases prefixed `bench_demo` so that a `make network` can run beside it),
runs `demo/fedavg.py --mode remote` on it, then the same experiment in the SDK's local subprocess
mode, one run each, and stops the network. The wall time of each run is the demo's own (from its
first client call to the plot). Target: remote <= 1.5 x subprocess.

`python benchmarks/bench_demo.py [--rounds N]`; exits non-zero when the target is missed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCALNET = [sys.executable, str(ROOT / "scripts" / "localnet.py")]
TARGET_RATIO = 1.5


def run_demo(mode: str, rounds: int, network_file: Path, plot: Path) -> tuple[float, list[str]]:
    command = [
        sys.executable, str(ROOT / "demo" / "fedavg.py"), "--mode", mode, "--rounds", str(rounds),
        "--network-file", str(network_file), "--plot", str(plot),
    ]  # fmt: skip
    started = time.monotonic()
    # The SDK's subprocess mode writes its `local-worker/` in the working directory.
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=1800, cwd=plot.parent
    )
    elapsed = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"demo ({mode}) failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    reported = re.search(r"wall time ([0-9.]+)s", completed.stdout)
    accuracies = re.findall(r"round (\d+): mean accuracy ([0-9.]+)", completed.stdout)
    return (float(reported.group(1)) if reported else elapsed), [f"{r}:{a}" for r, a in accuracies]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as scratch:
        home = Path(scratch)
        options = ["--home", str(home), "--port-offset", "30000", "--prefix", "bench_demo", "--redis-db", "2"]
        started = time.monotonic()
        up = subprocess.run(
            [*LOCALNET, *options, "up", "--orgs", "2"], capture_output=True, text=True, check=False
        )
        if up.returncode != 0:
            print(up.stdout, up.stderr)
            return 1
        print(f"network up in {time.monotonic() - started:.1f}s")
        try:
            remote, remote_accuracies = run_demo(
                "remote", arguments.rounds, home / "network.yaml", home / "remote.png"
            )
        finally:
            subprocess.run([*LOCALNET, *options, "down"], capture_output=True, check=False)
        local, local_accuracies = run_demo(
            "subprocess", arguments.rounds, home / "network.yaml", home / "local.png"
        )
    ratio = remote / local
    print(f"FedAvg, 2 organizations, {arguments.rounds} rounds")
    print(f"  remote (local network): {remote:.1f}s  accuracies {' '.join(remote_accuracies)}")
    print(f"  subprocess mode:        {local:.1f}s  accuracies {' '.join(local_accuracies)}")
    print(f"  ratio remote/subprocess: {ratio:.2f} (target <= {TARGET_RATIO})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
