"""Python environments of functions: one virtualenv per archive checksum over a shared base.

The base environment holds `substratools` (and whatever `FUNCTION_BASE_REQUIREMENTS` adds, e.g.
`substrafl`); it is built once per host for a given interpreter and requirement list. A function's
virtualenv sees the base through a `.pth` file, so pip only installs what the function's
`requirements.txt` adds or pins differently (installed in the function's virtualenv, which comes
first on `sys.path`); with everything satisfied pip needs no network. All builds share one pip
cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backend_worker.errors import BuildError
from backend_worker.locks import file_lock

BASE_MARKER = "substra-base.json"
BASE_PTH = "_substra_base.pth"
PIP_OPTIONS = ("--disable-pip-version-check", "--no-input", "--progress-bar", "off")


class EnvironmentSetupError(RuntimeError):
    """The base environment cannot be prepared (an infrastructure failure: retried)."""


@dataclass(frozen=True)
class BaseEnvironment:
    path: Path
    site_packages: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def site_packages(venv: Path) -> Path:
    candidates = sorted((venv / "lib").glob("python3*/site-packages"))
    if len(candidates) != 1:
        raise EnvironmentSetupError(f"cannot find the site-packages of {venv}")
    return candidates[0]


def base_environment_path(parent: Path, python: str, requirements: Sequence[str]) -> Path:
    """A path per (interpreter, requirements): changing either builds a new base, never in place."""
    digest = hashlib.sha256(json.dumps([python, sorted(requirements)]).encode()).hexdigest()[:16]
    return parent / f"base-{digest}"


# What a build may see of the worker's environment: pip's configuration and the network's.
_BUILD_VARIABLES = frozenset(
    {
        "PATH", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    }
)  # fmt: skip


def build_environment(home: Path) -> dict[str, str]:
    """The variables of a requirements installation: none of the worker's secrets."""
    kept = {
        key: value for key, value in os.environ.items() if key in _BUILD_VARIABLES or key.startswith("PIP_")
    }
    return {**kept, "HOME": str(home), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


Isolate = Callable[[list[str]], list[str]]


def _run(
    command: Sequence[str], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )


def ensure_base_environment(
    path: Path, *, python: str, requirements: Sequence[str], pip_cache: Path, timeout: float
) -> BaseEnvironment:
    """The base environment at `path`, created (with its requirements) if missing."""
    marker = path / BASE_MARKER
    expected = {"python": python, "requirements": sorted(requirements)}

    def ready() -> bool:
        try:
            return bool(json.loads(marker.read_text()) == expected)
        except (OSError, ValueError):
            return False

    if not ready():
        with file_lock(path.with_name(path.name + ".lock")):
            if not ready():
                _create_base(
                    path, python=python, requirements=requirements, pip_cache=pip_cache, timeout=timeout
                )
                marker.write_text(json.dumps(expected))
    return BaseEnvironment(path=path, site_packages=site_packages(path))


def _create_base(
    path: Path, *, python: str, requirements: Sequence[str], pip_cache: Path, timeout: float
) -> None:
    if path.exists():
        shutil.rmtree(path)
    steps: list[list[str]] = [[python, "-m", "venv", str(path)]]
    if requirements:
        steps.append(
            [
                str(venv_python(path)),
                "-m",
                "pip",
                "install",
                *PIP_OPTIONS,
                "--cache-dir",
                str(pip_cache),
                *requirements,
            ]
        )
    for command in steps:
        try:
            completed = _run(command, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise EnvironmentSetupError(f"cannot create the base environment {path}: {error}") from error
        if completed.returncode != 0:
            output = completed.stdout[-4000:]
            raise EnvironmentSetupError(
                f"cannot create the base environment {path} ({command[2]}):\n{output}"
            )


def create_function_environment(
    venv: Path,
    *,
    python: str,
    base: BaseEnvironment,
    requirements: Path | None,
    pip_cache: Path,
    timeout: float,
    isolate: Isolate | None = None,
) -> str:
    """Create the function's virtualenv at `venv` and install its requirements; returns the build log.

    The installation runs the archive's code (setup scripts of its requirements): `isolate` wraps
    it in a sandbox, and it gets none of the worker's environment variables. A requirement that
    cannot be installed is the function's fault: `BuildError` with pip's output.
    """
    log: list[str] = []
    if venv.exists():
        shutil.rmtree(venv)
    # No pip of its own: the base's pip is importable through the .pth file.
    command = [python, "-m", "venv", "--without-pip", str(venv)]
    try:
        completed = _run(command, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EnvironmentSetupError(f"cannot create a virtualenv: {error}") from error
    if completed.returncode != 0:
        raise EnvironmentSetupError(f"cannot create a virtualenv at {venv}: {completed.stdout[-4000:]}")
    (site_packages(venv) / BASE_PTH).write_text(f"{base.site_packages}\n")
    if requirements is None:
        log.append("No requirements.txt: the base environment is used as is.\n")
        return "".join(log)
    command = [
        str(venv_python(venv)), "-m", "pip", "install", *PIP_OPTIONS,
        "--cache-dir", str(pip_cache), "-r", requirements.name,
    ]  # fmt: skip
    log.append(f"$ pip install -r {requirements.name}\n")
    if isolate is not None:
        command = isolate(command)
    try:
        # From the archive root: requirements may reference files of the archive (`file:` wheels).
        completed = _run(
            command, timeout=timeout, cwd=requirements.parent, env=build_environment(requirements.parent)
        )
    except subprocess.TimeoutExpired as error:
        output = error.stdout or ""
        log.append(output.decode(errors="replace") if isinstance(output, bytes) else output)
        log.append(f"\nThe installation of the requirements took longer than {timeout:.0f} s.\n")
        raise BuildError("the requirements installation timed out", logs="".join(log)) from error
    log.append(completed.stdout)
    if completed.returncode != 0:
        log.append(f"\npip exited with status {completed.returncode}.\n")
        raise BuildError("the function's requirements cannot be installed", logs="".join(log))
    return "".join(log)


def installed_packages(venv: Path) -> list[str]:
    """`name==version` of what a function's virtualenv provides: its own and the base's."""
    own = site_packages(venv)
    base = own / BASE_PTH
    paths = [str(own), *(base.read_text().splitlines() if base.exists() else [])]
    found = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions(path=paths)
        if dist.metadata["Name"]
    }
    return sorted(found, key=str.lower)


def python_environment(venv: Path, *, home: Path, tmpdir: str) -> dict[str, str]:
    """The environment variables of a function process: nothing of the worker's leaks in."""
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "TMPDIR": tmpdir,
        "VIRTUAL_ENV": str(venv),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
