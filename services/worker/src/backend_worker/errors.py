"""How a compute task or a build can fail, and what each failure becomes (compute-engine.md 7).

* `BuildError` and `ExecutionError` are the user's: never retried, they become failure reports of
  error type BUILD / EXECUTION carrying the logs.
* `TaskNotRunnableError` and `TaskCanceledError` end the work silently (the task is canceled or left alone).
* `PermanentError` is ours but retrying cannot help (a refused orchestrator call): INTERNAL report.
* Anything else is treated as infrastructure trouble and retried with backoff.
"""

from __future__ import annotations

from backend_common.orchestrator import OrchestratorError
from backend_common.protos import failure_report_pb2
from grpc import StatusCode


class ComputeError(Exception):
    """Base of the failures the worker knows how to report."""


class UserCodeError(ComputeError):
    """A failure of the user's code whose logs become the failure report."""

    error_type: failure_report_pb2.ErrorType.ValueType = failure_report_pb2.ERROR_TYPE_UNSPECIFIED

    def __init__(self, message: str, logs: str) -> None:
        super().__init__(message)
        self.logs = logs

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.logs))


class BuildError(UserCodeError):
    """The function's environment cannot be built (bad archive, Dockerfile, requirements)."""

    error_type = failure_report_pb2.ERROR_TYPE_BUILD


class ExecutionError(UserCodeError):
    """The function exited with a non-zero status or exceeded its limits."""

    error_type = failure_report_pb2.ERROR_TYPE_EXECUTION


class TaskNotRunnableError(ComputeError):
    """The task is not (or no longer) for this worker to run: the work is dropped."""


class TaskCanceledError(ComputeError):
    """The task's compute plan was canceled; the task is moved to CANCELED."""


class PermanentError(ComputeError):
    """An internal failure that a retry would only repeat."""


class SandboxUnavailableError(Exception):
    """The configured isolation cannot be provided: the worker refuses to run user code.

    Not a `ComputeError`: a configuration that gets fixed lets the retried task run.
    """


# Orchestrator answers that will not change on retry: the request itself is refused.
_PERMANENT_STATUSES = frozenset(
    {
        StatusCode.INVALID_ARGUMENT,
        StatusCode.NOT_FOUND,
        StatusCode.PERMISSION_DENIED,
        StatusCode.FAILED_PRECONDITION,
        StatusCode.UNIMPLEMENTED,
        StatusCode.ALREADY_EXISTS,
        StatusCode.UNAUTHENTICATED,
    }
)


def is_retryable(error: BaseException) -> bool:
    """Whether a failure may be transient (infrastructure): retried with backoff."""
    if isinstance(error, ComputeError):
        return False
    if isinstance(error, OrchestratorError):
        return error.status not in _PERMANENT_STATUSES
    return isinstance(error, Exception)
