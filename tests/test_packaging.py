"""Every service and the shared library build as separate wheels with their own entry point."""

from __future__ import annotations

import os
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = ROOT / ".local" / "bootstrap" / "bin" / "uv"

PACKAGES = {
    # distribution: (import package, console script)
    "backend-common": ("backend_common", None),
    "backend-server": ("backend_server", "backend-server"),
    "backend-events": ("backend_events", "backend-events"),
    "backend-worker": ("backend_worker", "backend-worker"),
    "backend-scheduler": ("backend_scheduler", "backend-scheduler"),
    "backend-migrations": ("backend_migrations", "backend-migrations"),
    "registry-prepopulate": ("registry_prepopulate", "registry-prepopulate"),
    "standalone-orchestrator": ("standalone_orchestrator", "orchestrator"),
}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    environment = {**os.environ, "UV_SYSTEM_CERTS": "1"}
    subprocess.run(
        [str(UV), "build", "--all-packages", "--wheel", "--out-dir", str(out), "--quiet"],
        cwd=ROOT,
        env=environment,
        check=True,
        timeout=300,
    )
    built: dict[str, Path] = {}
    for wheel in out.glob("*.whl"):
        distribution = wheel.name.split("-")[0].replace("_", "-")
        built[distribution] = wheel
    return built


@pytest.mark.parametrize("distribution", sorted(PACKAGES))
def test_package_builds_alone_with_its_entry_point(wheels: dict[str, Path], distribution: str) -> None:
    import_package, script = PACKAGES[distribution]
    assert distribution in wheels, f"no wheel built for {distribution}: {sorted(wheels)}"
    with zipfile.ZipFile(wheels[distribution]) as wheel:
        names = wheel.namelist()
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
        entry_points = (
            wheel.read(f"{dist_info}/entry_points.txt").decode()
            if f"{dist_info}/entry_points.txt" in names
            else ""
        )
    assert f"{import_package}/__init__.py" in names
    assert f"{import_package}/py.typed" in names
    assert metadata["Requires-Python"] == "<3.12,>=3.11"
    requirements = metadata.get_all("Requires-Dist") or []
    if distribution != "backend-common":
        assert "backend-common" in requirements
        assert f"{script} = {import_package}.__main__:main" in entry_points
    if distribution == "backend-migrations":
        assert any(name.startswith("backend_migrations/alembic/versions/0001_") for name in names)
        assert "backend_migrations/alembic/env.py" in names
    if distribution == "backend-common":
        # The generated orchestrator stubs ship with the shared library.
        assert "backend_common/protos/computetask_pb2.py" in names
