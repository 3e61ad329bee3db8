"""`backend-worker check` and the refusal to run compute tasks without the configured sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXECUTABLE = str(Path(sys.executable).parent / "backend-worker")


def run(*arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXECUTABLE, *arguments],
        env={**os.environ, "ENABLE_METRICS": "false", **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_passes_with_bubblewrap(tmp_path: Path) -> None:
    assert run("check", SUBTUPLE_DIR=str(tmp_path)).returncode == 0


def test_worker_refuses_to_start_without_its_sandbox(tmp_path: Path) -> None:
    missing = run("check", SUBTUPLE_DIR=str(tmp_path), BWRAP_PATH="/nonexistent/bwrap")
    assert missing.returncode == 1
    assert "refusing to run compute tasks" in missing.stderr and "bubblewrap" in missing.stderr
    unsandboxed = run("worker", SUBTUPLE_DIR=str(tmp_path), COMPUTE_SANDBOX="none")
    assert unsandboxed.returncode == 1
    assert "COMPUTE_ALLOW_UNSANDBOXED" in unsandboxed.stderr
    allowed = run(
        "check", SUBTUPLE_DIR=str(tmp_path), COMPUTE_SANDBOX="none", COMPUTE_ALLOW_UNSANDBOXED="true"
    )
    assert allowed.returncode == 0
