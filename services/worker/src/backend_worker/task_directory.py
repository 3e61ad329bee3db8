"""The directory of a compute task run.

    inputs/data_samples/<sample key>/...   read-only for the function
    inputs/openers/<data manager key>/__init__.py
    inputs/models/<model key>
    outputs/<identifier>                   written by the function
    workdir/                               the function's cwd and HOME (a copy of its code)
    arguments/arguments.txt                the substratools argument file (read-only)
    task.log                               stdout and stderr of the function (not visible to it)

The sub-directories are mount points of the function's sandbox, which may be set up before the
run's files arrive: they are emptied between runs, never replaced. Inputs are hard links into the
asset buffer (same file system), so staging costs no copy; the function sees them read-only.
Data-sample folders are named by the sample key, as functions rely on (compute-engine.md 10.3).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class TaskDirectory:
    path: Path

    @property
    def inputs(self) -> Path:
        return self.path / "inputs"

    @property
    def outputs(self) -> Path:
        return self.path / "outputs"

    @property
    def workdir(self) -> Path:
        return self.path / "workdir"

    @property
    def arguments(self) -> Path:
        return self.path / "arguments"

    @property
    def arguments_file(self) -> Path:
        return self.arguments / "arguments.txt"

    @property
    def log_file(self) -> Path:
        return self.path / "task.log"

    @property
    def mount_points(self) -> tuple[Path, ...]:
        return (self.inputs, self.outputs, self.workdir, self.arguments)

    def data_sample(self, key: str) -> Path:
        return self.inputs / "data_samples" / _checked(key)

    def opener(self, data_manager_key: str) -> Path:
        return self.inputs / "openers" / _checked(data_manager_key) / "__init__.py"

    def model(self, key: str) -> Path:
        return self.inputs / "models" / _checked(key)

    def output(self, identifier: str) -> Path:
        # Identifiers are user-chosen (metric names): only a plain file name is used as is.
        if _SAFE_NAME.fullmatch(identifier) and identifier not in (".", ".."):
            return self.outputs / identifier
        return self.outputs / f"output-{uuid.uuid5(uuid.NAMESPACE_URL, identifier).hex}"

    def create(self) -> None:
        """The sub-directories, existing and empty."""
        for directory in self.mount_points:
            directory.mkdir(parents=True, exist_ok=True)
        self.clear()

    def clear(self, *, keep_workdir: bool = False) -> None:
        """Empty the sub-directories (they stay: they may be mount points)."""
        for directory in self.mount_points:
            if directory == self.workdir and keep_workdir:
                continue
            empty_directory(directory)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def empty_directory(directory: Path) -> None:
    if not directory.is_dir():
        return
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)


def plan_directory(root: Path, compute_plan_key: str) -> Path:
    return root / "compute_plans" / _checked(compute_plan_key)


def _checked(key: str) -> str:
    # Keys are UUIDs from the orchestrator; anything else must not become a path.
    if not _SAFE_NAME.fullmatch(key):
        raise ValueError(f"invalid asset key {key!r}")
    return key


def link_file(source: Path, destination: Path) -> None:
    """Hard-link `source` at `destination` (a copy across file systems)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except FileExistsError:
        destination.unlink()
        os.link(source, destination)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(source, destination)


def link_tree(source: Path, destination: Path) -> None:
    """Recreate the directories of `source` at `destination` and hard-link its files."""
    for directory, subdirectories, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        target = destination / relative
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            link_file(Path(directory, name), target / name)
        subdirectories.sort()
