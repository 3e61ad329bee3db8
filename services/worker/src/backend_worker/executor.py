"""The executor interface: build a function's environment, run a task in it, cancel, clean up.

An executor turns a function archive into a runnable environment ("image"), keyed by the archive
checksum so identical archives share one, and runs compute tasks in it: a command, the task
directory's inputs (read-only) and outputs and working directory (writable), under limits. The
compute-task logic above it does not know how: this module's `make_executor` picks the
implementation from the settings. Today there is one, `local` (a virtualenv per checksum, tasks as
sandboxed processes); container and Kubernetes executors fit the same shapes (an image tag per
checksum, bind mounts, resource limits).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backend_worker.function_archive import FunctionEntrypoint
from backend_worker.settings import WorkerSettings
from backend_worker.task_directory import TaskDirectory


@dataclass(frozen=True)
class FunctionImage:
    """A function's built environment, shared by every function with the same archive checksum."""

    archive_checksum: str
    entrypoint: FunctionEntrypoint
    # Executor-specific: a directory for the local executor, an image reference for containers.
    location: str


@dataclass(frozen=True)
class ImageUsage:
    """A built environment and when a task last asked for it (Unix time)."""

    archive_checksum: str
    last_used: float


@dataclass(frozen=True)
class Limits:
    """Resources of one task run; None means no limit."""

    timeout_seconds: float | None = None
    memory_bytes: int | None = None
    cpu_seconds: int | None = None
    max_open_files: int | None = None


@dataclass(frozen=True)
class TaskRun:
    """One execution of a function: its entrypoint followed by `arguments`, in `directory`.

    The function sees the directory's inputs and arguments read-only, its outputs and working
    directory (also its HOME) writable, at the paths `Executor.visible_path` gives. Everything it
    prints goes to the directory's log file.
    """

    run_id: str
    image: FunctionImage
    arguments: tuple[str, ...]
    directory: TaskDirectory
    limits: Limits = field(default_factory=Limits)


class RunOutcome(enum.StrEnum):
    EXITED = "exited"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"


@dataclass(frozen=True)
class RunResult:
    outcome: RunOutcome
    exit_code: int | None
    duration_seconds: float
    # The log was cut at the configured maximum.
    log_truncated: bool = False

    @property
    def succeeded(self) -> bool:
        return self.outcome is RunOutcome.EXITED and self.exit_code == 0


class Execution(abc.ABC):
    """A task run in progress."""

    run_id: str

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> RunResult | None:
        """The result once the run is over; None if still running after `timeout` seconds."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop the run now (every process of it); `wait` then reports CANCELED."""


class Executor(abc.ABC):
    """Builds function environments and runs compute tasks in them."""

    name: str

    @abc.abstractmethod
    def check(self) -> None:
        """Raise `SandboxUnavailableError` when tasks cannot be run as configured."""

    @abc.abstractmethod
    def find_image(self, archive_checksum: str) -> FunctionImage | None:
        """The environment already built for this archive checksum, if any."""

    @abc.abstractmethod
    def build_image(self, archive_checksum: str, archive: Path) -> FunctionImage:
        """Build (once per checksum) the environment of the verified archive at `archive`.

        Raises `BuildError` with the build output when the archive or its requirements are at fault.
        """

    @abc.abstractmethod
    def remove_image(self, archive_checksum: str) -> None: ...

    def image_packages(self, image: FunctionImage) -> list[str]:
        """`name==version` of the Python distributions the image provides, when it can tell."""
        return []

    @abc.abstractmethod
    def images(self) -> list[ImageUsage]:
        """The environments built on this host (complete or not), with when each was last used."""

    @abc.abstractmethod
    def remove_image_unused_since(self, archive_checksum: str, since: float) -> bool:
        """Remove the environment if no task asked for it after `since` and no build is under way;
        whether it was removed."""

    @abc.abstractmethod
    def remove_leftovers(self) -> int:
        """Remove the task directories dead processes left; how many."""

    @abc.abstractmethod
    def task_directory(self, run_id: str) -> TaskDirectory:
        """An empty directory for the run's files, reserved until `cleanup(run_id)`."""

    @abc.abstractmethod
    def visible_path(self, host_path: Path) -> str:
        """Where the function sees a host path of its task directory."""

    @abc.abstractmethod
    def start(self, run: TaskRun) -> Execution: ...

    @abc.abstractmethod
    def cancel(self, run_id: str) -> bool:
        """Stop a run of this process by id; False if no such run is in progress."""

    @abc.abstractmethod
    def cleanup(self, run_id: str) -> None:
        """Stop what remains of the run and release its directory (emptied)."""

    def close(self) -> None:  # noqa: B027  (optional: most executors hold nothing)
        """Release what the executor holds between runs."""


ExecutorFactory = Callable[[WorkerSettings], Executor]
_FACTORIES: dict[str, ExecutorFactory] = {}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    _FACTORIES[name] = factory


def executor_names() -> list[str]:
    return sorted(_FACTORIES)


def make_executor(settings: WorkerSettings) -> Executor:
    """The executor named by `COMPUTE_EXECUTOR`, configured from the settings."""
    # Implementations register themselves when imported.
    import backend_worker.local_executor  # noqa: F401, PLC0415

    name = settings.execution.executor
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; available: {', '.join(executor_names())}") from None
    return factory(settings)
