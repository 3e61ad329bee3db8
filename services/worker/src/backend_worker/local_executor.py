"""The `local` executor: virtualenvs as function images, sandboxed child processes as task runs.

Layout under the environments directory (one per worker host):

    <checksum>/code/             the unpacked archive (read-only for tasks)
    <checksum>/venv/             the function's virtualenv over the base environment
    <checksum>/build.log         pip's output
    <checksum>/environment.json  written last: the image is ready
    <checksum>/.last-used        touched each time a task asks for the image (maintenance)
    base-<hash>/                 the shared base environment
    .locks/                      one lock per checksum; `.build.lock` serialises builds

Runs happen in task directories `<runs>/<executor id>-<n>` that this executor reuses (one per
concurrent run). For each run, the function's code is copied into the working directory
(substratools writes `./model/` and `./chainkeys/` there, and user code may write next to its
files) and `<venv>/bin/python -u <script> --function-name <name> @<arguments file>` is run in the
sandbox, a fresh process each time. The process is started when the directory is released by the
previous run, for the same function: it waits, imported, for its task (see `BOOTSTRAP`), so the
interpreter's start-up is paid between tasks rather than in them.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from backend_common.logging import get_logger

from backend_worker.errors import BuildError
from backend_worker.executor import (
    Execution,
    Executor,
    FunctionImage,
    ImageUsage,
    Limits,
    RunOutcome,
    RunResult,
    TaskRun,
    register_executor,
)
from backend_worker.function_archive import FunctionEntrypoint, script_path, unpack_function
from backend_worker.function_environment import (
    base_environment_path,
    create_function_environment,
    ensure_base_environment,
    installed_packages,
    python_environment,
    venv_python,
)
from backend_worker.locks import LockTimeoutError, file_lock
from backend_worker.sandbox import HOST_SECRETS, Mount, Sandbox, make_sandbox
from backend_worker.settings import WorkerSettings
from backend_worker.task_directory import TaskDirectory, empty_directory

logger = get_logger("backend_worker.local_executor")

ENVIRONMENT_FILE = "environment.json"
LAST_USED_FILE = ".last-used"
# A waiting interpreter gives up after this long without a task.
IDLE_SECONDS = 600

# What the function's interpreter runs (`python -u -c BOOTSTRAP`): warm up, wait for the task,
# then run the script as `python <script> <arguments>` would (`__main__`, argv, sys.path[0]), with
# tracebacks that start in the user's code.
BOOTSTRAP = f"""
import json, os, runpy, select, sys, traceback
try:
    import substratools
except ImportError:
    pass
ready = select.select([sys.stdin], [], [], {IDLE_SECONDS})[0]
line = sys.stdin.readline() if ready else ""
if not line:
    sys.exit(0)
script, *arguments = json.loads(line)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
sys.argv = [script, *arguments]
sys.path[0] = os.path.dirname(os.path.abspath(script))
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    raise
except BaseException as error:
    frame = error.__traceback__
    while frame is not None and frame.tb_frame.f_code.co_filename != script:
        frame = frame.tb_next
    traceback.print_exception(type(error), error, frame or error.__traceback__)
    sys.exit(1)
"""
_CHECKSUM = re.compile(r"[0-9a-fA-F]{8,128}")
_READ_CHUNK = 64 * 1024
# How long to wait for the log pipe to drain once the process group is gone.
_PUMP_JOIN_SECONDS = 5.0


class LogWriter:
    """Copies a process's output to a file, keeping its beginning and its end beyond `max_bytes`.

    The end matters most (tracebacks are printed last), the beginning tells what the run was doing.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self._file = path.open("wb", buffering=0)  # readable while the task runs
        self._head_left = max(max_bytes // 2, 0)
        self._tail_max = max(max_bytes - self._head_left, 0)
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_size = 0
        self.skipped = 0

    def write(self, chunk: bytes) -> None:
        if self._head_left:
            head, chunk = chunk[: self._head_left], chunk[self._head_left :]
            self._file.write(head)
            self._head_left -= len(head)
        if not chunk:
            return
        self._tail.append(chunk)
        self._tail_size += len(chunk)
        # Whole chunks leave the front; the first kept one is cut when the file is closed.
        while self._tail and self._tail_size - len(self._tail[0]) >= self._tail_max:
            dropped = self._tail.popleft()
            self._tail_size -= len(dropped)
            self.skipped += len(dropped)

    def close(self) -> None:
        tail = b"".join(self._tail)
        cut = max(len(tail) - self._tail_max, 0)
        self.skipped += cut
        if self.skipped:
            self._file.write(f"\n[... {self.skipped} bytes of output skipped ...]\n".encode())
        self._file.write(tail[cut:])
        self._file.close()


def _pump(stream: IO[bytes], writer: LogWriter) -> None:
    try:
        while chunk := os.read(stream.fileno(), _READ_CHUNK):
            writer.write(chunk)
    finally:
        stream.close()
        writer.close()


def limit_options(limits: Limits) -> list[str]:
    """`prlimit` options for the run's limits (util-linux, always present on Debian).

    Setting them in the command itself, rather than in a `preexec_fn`, keeps process creation
    thread-safe in a worker that runs threads.
    """
    options = ["--core=0:0"]

    def capped(kind: int, soft: int, hard: int) -> str:
        # Without CAP_SYS_RESOURCE a hard limit can only be lowered.
        _, current_hard = resource.getrlimit(kind)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        return f"{soft}:{hard}"

    if limits.memory_bytes:
        options.append(f"--as={capped(resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes)}")
    if limits.cpu_seconds:
        # SIGXCPU at the soft limit (Python dies of it), SIGKILL a little later.
        options.append(f"--cpu={capped(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 5)}")
    if limits.max_open_files:
        nofile = capped(resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files)
        options.append(f"--nofile={nofile}")
    return options


def _process_tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            threads = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for thread in threads:
            with contextlib.suppress(OSError):
                pending.extend(
                    int(child)
                    for child in Path(f"/proc/{current}/task/{thread}/children").read_text().split()
                )
    return found


def promote(pid: int) -> None:
    """Give a process started at idle priority (and its descendants) the normal scheduling policy."""
    for member in _process_tree(pid):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(member, os.SCHED_OTHER, os.sched_param(0))


@functools.cache
def idle_start_supported() -> bool:
    """Whether this worker may give a process started at idle priority its normal priority back
    (CAP_SYS_NICE, usually absent from containers): otherwise processes start normally."""
    probe = subprocess.Popen(["sleep", "5"], stdin=subprocess.DEVNULL)
    try:
        os.sched_setscheduler(probe.pid, os.SCHED_IDLE, os.sched_param(0))
        os.sched_setscheduler(probe.pid, os.SCHED_OTHER, os.sched_param(0))
        return os.sched_getscheduler(probe.pid) == os.SCHED_OTHER
    except OSError:
        return False
    finally:
        probe.kill()
        probe.wait()


class SandboxProcess:
    """A function's interpreter in its sandbox, started ahead of its task and waiting for it.

    It runs `BOOTSTRAP`: imports substratools (what every function does first), then waits for one
    line on stdin, the script and its arguments, and runs the script as `python <script> <args>`
    would. Starting it while the worker is between tasks hides the interpreter's start-up.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log_path: Path,
        log_max_bytes: int,
        idle: bool = False,
    ) -> None:
        self.idle = idle
        self.writer = LogWriter(log_path, log_max_bytes)
        try:
            self.popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            self.writer.close()
            raise
        if idle:
            # Started ahead, it gets only CPU time nobody else wants, until its task comes. Set
            # from here rather than by a wrapper: `promote` must never run before it.
            with contextlib.suppress(OSError):
                os.sched_setscheduler(self.popen.pid, os.SCHED_IDLE, os.sched_param(0))
        self.started = time.monotonic()
        self.pidfd = os.pidfd_open(self.popen.pid)
        assert self.popen.stdout is not None
        self.pump = threading.Thread(target=_pump, args=(self.popen.stdout, self.writer), daemon=True)
        self.pump.start()

    def usable(self) -> bool:
        """Alive, and far from giving up waiting (a task sent as it leaves would be lost)."""
        return self.popen.poll() is None and time.monotonic() - self.started < IDLE_SECONDS - 60

    def go(self, command: list[str]) -> bool:
        """Hand the process its task; False if it is gone (it gives up when idle too long)."""
        assert self.popen.stdin is not None
        if self.idle:
            promote(self.popen.pid)
            self.idle = False
        try:
            self.popen.stdin.write((json.dumps(command) + "\n").encode())
            self.popen.stdin.close()
        except (BrokenPipeError, ValueError):
            return False
        return True

    def kill(self) -> None:
        # The run is its own process group (and, sandboxed, its own PID namespace, which dies
        # with bubblewrap): one signal stops every process of it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def exited(self, timeout: float | None) -> bool:
        """Whether the process exited within `timeout` seconds (woken at once when it does)."""
        if self.popen.poll() is not None:
            return True
        # Popen.wait(timeout) polls with sleeps of up to 50 ms; a pidfd wakes us at the exit.
        readable, _, _ = select.select([self.pidfd], [], [], timeout)
        return bool(readable) and self.popen.poll() is not None

    def close(self) -> None:
        """Once exited: stop stragglers, drain the log, release the descriptors."""
        # Background processes of an unsandboxed run may still hold the pipe open.
        self.kill()
        self.popen.wait()
        self.pump.join(_PUMP_JOIN_SECONDS)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.popen.stdin.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)


class LocalExecution(Execution):
    def __init__(
        self,
        run_id: str,
        process: SandboxProcess,
        timeout_seconds: float | None,
    ) -> None:
        self.run_id = run_id
        self._process = process
        self._started = time.monotonic()
        self._deadline = self._started + timeout_seconds if timeout_seconds else None
        self._canceled = False
        self._timed_out = False
        self._result: RunResult | None = None
        self._lock = threading.Lock()

    def cancel(self) -> None:
        self._canceled = True
        self._process.kill()

    def wait(self, timeout: float | None = None) -> RunResult | None:
        if self._result is not None:
            return self._result
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            limits = [t for t in (until, self._deadline) if t is not None]
            if self._process.exited(max(min(limits) - now, 0.0) if limits else None):
                break
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline and not self._timed_out:
                self._timed_out = True
                self._process.kill()
                continue
            if until is not None and now >= until:
                return None
        return self._finish()

    def _finish(self) -> RunResult:
        with self._lock:
            if self._result is not None:
                return self._result
            duration = time.monotonic() - self._started
            self._process.close()
            if self._canceled:
                outcome = RunOutcome.CANCELED
            elif self._timed_out:
                outcome = RunOutcome.TIMED_OUT
            else:
                outcome = RunOutcome.EXITED
            self._result = RunResult(
                outcome=outcome,
                exit_code=self._process.popen.returncode,
                duration_seconds=duration,
                log_truncated=self._process.writer.skipped > 0,
            )
            return self._result


@dataclass
class _Slot:
    """A task directory of this executor, and the interpreter waiting in it for the next run."""

    directory: TaskDirectory
    run_id: str | None = None
    waiting: SandboxProcess | None = None
    # What the waiting process was started for: the image's checksum and the limits.
    waiting_for: tuple[str, Limits] | None = None
    execution: LocalExecution | None = None
    # The last run's image and limits: the next run likely has the same.
    last: tuple[FunctionImage, Limits] | None = None


class LocalExecutor(Executor):
    name = "local"

    def __init__(
        self,
        *,
        environments_dir: Path,
        sandbox: Sandbox,
        python: str,
        base_requirements: Sequence[str],
        pip_cache_dir: Path,
        base_environment: Path | None = None,
        hidden_paths: Sequence[Path] = (),
        build_timeout: float = 3600.0,
        archive_max_bytes: int = 10 * 1024**3,
        log_max_bytes: int = 10 * 1024 * 1024,
        runs_dir: Path | None = None,
        warm_start: bool = True,
    ) -> None:
        self.environments_dir = environments_dir.absolute()
        # Task directories of the runs; by default next to the environments.
        self.runs_dir = (runs_dir or self.environments_dir.parent / "runs").absolute()
        self.warm_start = warm_start
        self.sandbox = sandbox
        self.python = python
        self.base_requirements = list(base_requirements)
        self.pip_cache_dir = pip_cache_dir.absolute()
        self.base_environment = (
            base_environment.absolute()
            if base_environment is not None
            else base_environment_path(self.environments_dir, python, self.base_requirements)
        )
        self.hidden_paths = [*(path.absolute() for path in hidden_paths), *HOST_SECRETS]
        self.build_timeout = build_timeout
        self.archive_max_bytes = archive_max_bytes
        self.log_max_bytes = log_max_bytes
        self.prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        # This executor's task directories are `<runs>/<id>-<n>`; `<runs>/<id>.lock` stays locked
        # while it lives, so that directories of dead processes can be told apart and removed.
        self._id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._liveness: int | None = None

    # --- images -----------------------------------------------------------------------------------

    def check(self) -> None:
        self.sandbox.check()

    def _image_dir(self, archive_checksum: str) -> Path:
        if not _CHECKSUM.fullmatch(archive_checksum):
            raise ValueError(f"invalid archive checksum {archive_checksum!r}")
        return self.environments_dir / archive_checksum.lower()

    def _image_lock(self, archive_checksum: str) -> Path:
        """Held while the checksum's environment is built or removed."""
        return self.environments_dir / ".locks" / f"{archive_checksum.lower()}.lock"

    def find_image(self, archive_checksum: str) -> FunctionImage | None:
        image_dir = self._image_dir(archive_checksum)
        try:
            description = json.loads((image_dir / ENVIRONMENT_FILE).read_text())
        except (OSError, ValueError):
            return None
        # When a task last asked for it (`images`): the maintenance keeps what is used.
        with contextlib.suppress(OSError):
            (image_dir / LAST_USED_FILE).touch()
        entrypoint = FunctionEntrypoint(
            entrypoint=tuple(description["entrypoint"]),
            script=description["script"],
            arguments=tuple(description["arguments"]),
        )
        return FunctionImage(
            archive_checksum=archive_checksum, entrypoint=entrypoint, location=str(image_dir)
        )

    def build_image(self, archive_checksum: str, archive: Path) -> FunctionImage:
        image = self.find_image(archive_checksum)
        if image is not None:
            return image
        with file_lock(self._image_lock(archive_checksum)):
            # Another process may have built it while this one waited.
            image = self.find_image(archive_checksum)
            if image is not None:
                return image
            with file_lock(self.environments_dir / ".locks" / ".build.lock"):
                return self._build(archive_checksum, archive)

    def _build(self, archive_checksum: str, archive: Path) -> FunctionImage:
        image_dir = self._image_dir(archive_checksum)
        if image_dir.exists():
            shutil.rmtree(image_dir)  # what a crashed build left
        image_dir.mkdir(parents=True)
        try:
            base = ensure_base_environment(
                self.base_environment,
                python=self.python,
                requirements=self.base_requirements,
                pip_cache=self.pip_cache_dir,
                timeout=self.build_timeout,
            )
            code_dir = image_dir / "code"
            entrypoint = unpack_function(archive, code_dir, max_bytes=self.archive_max_bytes)
            requirements = code_dir / "requirements.txt"
            venv = image_dir / "venv"
            self.pip_cache_dir.mkdir(parents=True, exist_ok=True)

            def isolate(command: list[str]) -> list[str]:
                # With network (packages come from an index), writing only the environment and the
                # shared pip cache.
                return self.sandbox.wrap(
                    command,
                    workdir=code_dir,
                    mounts=[Mount(venv, writable=True), Mount(self.pip_cache_dir, writable=True)],
                    readable=[base.path],
                    hidden=self.hidden_paths,
                    network=True,
                )

            log = create_function_environment(
                venv,
                python=self.python,
                base=base,
                requirements=requirements if requirements.is_file() else None,
                pip_cache=self.pip_cache_dir,
                timeout=self.build_timeout,
                isolate=isolate,
            )
            (image_dir / "build.log").write_text(log)
            description = {
                "archive_checksum": archive_checksum,
                "entrypoint": list(entrypoint.entrypoint),
                "script": script_path(code_dir, entrypoint),
                "arguments": list(entrypoint.arguments),
                "base_environment": str(base.path),
            }
            temporary = image_dir / f".{ENVIRONMENT_FILE}.tmp"
            temporary.write_text(json.dumps(description))
            temporary.replace(image_dir / ENVIRONMENT_FILE)
        except BaseException:
            shutil.rmtree(image_dir, ignore_errors=True)
            raise
        image = self.find_image(archive_checksum)
        if image is None:
            raise BuildError("the built environment cannot be read back", logs="")
        return image

    def remove_image(self, archive_checksum: str) -> None:
        for slot in self._slots:
            if slot.waiting_for is not None and slot.waiting_for[0] == archive_checksum:
                self._discard_waiting(slot)
        with file_lock(self._image_lock(archive_checksum)):
            shutil.rmtree(self._image_dir(archive_checksum), ignore_errors=True)

    def image_packages(self, image: FunctionImage) -> list[str]:
        return installed_packages(Path(image.location) / "venv")

    def images(self) -> list[ImageUsage]:
        found: list[ImageUsage] = []
        if not self.environments_dir.is_dir():
            return found
        for image_dir in self.environments_dir.iterdir():
            if not _CHECKSUM.fullmatch(image_dir.name) or not image_dir.is_dir():
                continue
            last_used = _last_used(image_dir)
            if last_used is not None:
                found.append(ImageUsage(archive_checksum=image_dir.name, last_used=last_used))
        return found

    def remove_image_unused_since(self, archive_checksum: str, since: float) -> bool:
        image_dir = self._image_dir(archive_checksum)
        try:
            # Held by a build of this checksum: never wait for it, never remove what it writes.
            with file_lock(self._image_lock(archive_checksum), timeout=0):
                last_used = _last_used(image_dir)
                if last_used is None or last_used > since:
                    return False
                for slot in self._slots:
                    if slot.waiting_for is not None and slot.waiting_for[0] == archive_checksum:
                        self._discard_waiting(slot)
                shutil.rmtree(image_dir, ignore_errors=True)
        except LockTimeoutError:
            return False
        # The lock file stays: a builder may have it open already.
        return True

    # --- runs -------------------------------------------------------------------------------------

    def visible_path(self, host_path: Path) -> str:
        return str(host_path)

    def remove_leftovers(self) -> int:
        """Remove the task directories of dead executors (their liveness lock is free)."""
        removed = 0
        if not self.runs_dir.is_dir():
            return removed
        for lock in self.runs_dir.glob("*.lock"):
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue  # removed by another process meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live executor's
            else:
                for directory in self.runs_dir.glob(f"{lock.stem}-*"):
                    shutil.rmtree(directory, ignore_errors=True)
                    removed += 1
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return removed

    def _claim_runs_dir(self) -> None:
        """Take this executor's liveness lock; remove the task directories of dead executors."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.remove_leftovers()
        fd = os.open(self.runs_dir / f"{self._id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._liveness = fd

    def task_directory(self, run_id: str) -> TaskDirectory:
        with self._lock:
            if self._liveness is None:
                self._claim_runs_dir()
            slot = next((slot for slot in self._slots if slot.run_id is None), None)
            if slot is None:
                slot = _Slot(TaskDirectory(self.runs_dir / f"{self._id}-{len(self._slots)}"))
                slot.directory.create()
                self._slots.append(slot)
            slot.run_id = run_id
        return slot.directory

    def _slot(self, run_id: str) -> _Slot | None:
        with self._lock:
            return next((slot for slot in self._slots if slot.run_id == run_id), None)

    def _spawn(
        self, slot: _Slot, image: FunctionImage, limits: Limits, *, ahead: bool = False
    ) -> SandboxProcess:
        """Start an interpreter of `image` in the slot, its code copied in the working directory."""
        directory = slot.directory
        image_dir = Path(image.location)
        description = json.loads((image_dir / ENVIRONMENT_FILE).read_text())
        venv = image_dir / "venv"
        empty_directory(directory.workdir)
        shutil.copytree(image_dir / "code", directory.workdir, symlinks=True, dirs_exist_ok=True)
        if self.sandbox.private_tmp:
            tmpdir = "/tmp"  # noqa: S108  (the sandbox's own tmpfs)
        else:
            (directory.workdir / ".tmp").mkdir(exist_ok=True)
            tmpdir = str(directory.workdir / ".tmp")
        command = [self.prlimit, *limit_options(limits), "--", str(venv_python(venv)), "-u", "-c", BOOTSTRAP]
        argv = self.sandbox.wrap(
            command,
            workdir=directory.workdir,
            mounts=[
                Mount(directory.inputs),
                Mount(directory.outputs, writable=True),
                Mount(directory.arguments),
            ],
            readable=[image_dir, Path(description["base_environment"])],
            hidden=self.hidden_paths,
        )
        process = SandboxProcess(
            argv,
            cwd=directory.workdir,
            env=python_environment(venv, home=directory.workdir, tmpdir=tmpdir),
            log_path=directory.log_file,
            log_max_bytes=self.log_max_bytes,
            idle=ahead and idle_start_supported(),
        )
        slot.waiting, slot.waiting_for = process, (image.archive_checksum, limits)
        return process

    def _discard_waiting(self, slot: _Slot) -> None:
        if slot.waiting is not None:
            slot.waiting.kill()
            slot.waiting.close()
        slot.waiting, slot.waiting_for = None, None

    def start(self, run: TaskRun) -> Execution:
        slot = self._slot(run.run_id)
        if slot is None or slot.directory != run.directory:
            raise ValueError(f"run {run.run_id} has no task directory of this executor")
        command = [run.image.entrypoint.script, *run.image.entrypoint.arguments, *run.arguments]
        process = slot.waiting
        if (
            process is None
            or slot.waiting_for != (run.image.archive_checksum, run.limits)
            or not process.usable()
            or not process.go(command)
        ):
            self._discard_waiting(slot)
            process = self._spawn(slot, run.image, run.limits)
            if not process.go(command):
                raise RuntimeError("the function's interpreter exited before its task")
        slot.waiting, slot.waiting_for = None, None
        slot.last = (run.image, run.limits)
        execution = LocalExecution(run.run_id, process, run.limits.timeout_seconds)
        slot.execution = execution
        return execution

    def cancel(self, run_id: str) -> bool:
        slot = self._slot(run_id)
        if slot is None or slot.execution is None or slot.execution.wait(0) is not None:
            return False
        slot.execution.cancel()
        return True

    def cleanup(self, run_id: str) -> None:
        slot = self._slot(run_id)
        if slot is None:
            return
        if slot.execution is not None:
            if slot.execution.wait(0) is None:
                slot.execution.cancel()
            slot.execution.wait(_PUMP_JOIN_SECONDS)
            slot.execution = None
        slot.directory.clear()
        if self.warm_start and slot.last is not None and slot.waiting is None:
            # The next task most likely runs the same function: have its interpreter ready.
            try:
                self._spawn(slot, *slot.last, ahead=True)
            except Exception as error:  # an optimisation only: the next run starts cold
                logger.warning("cannot start the next interpreter ahead", error=repr(error))
                self._discard_waiting(slot)
        with self._lock:
            slot.run_id = None

    def close(self) -> None:
        """Stop the waiting interpreters (running ones belong to their tasks)."""
        for slot in self._slots:
            self._discard_waiting(slot)
        if self._liveness is not None:
            os.close(self._liveness)
            self._liveness = None


def _last_used(image_dir: Path) -> float | None:
    """When a task last asked for the environment; an environment never used since its build dates
    from it, an incomplete one (a build under way or crashed) from its directory."""
    for path in (image_dir / LAST_USED_FILE, image_dir / ENVIRONMENT_FILE, image_dir):
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            continue
    return None


def local_executor_from_settings(settings: WorkerSettings) -> LocalExecutor:
    execution = settings.execution
    root = settings.root_dir
    sandbox = make_sandbox(
        execution.sandbox, allow_unsandboxed=execution.allow_unsandboxed, bwrap_path=execution.bwrap_path
    )
    hidden = [root, Path(settings.storage.media_root), Path(settings.storage.servermedias_root)]
    # The worker's credentials towards the orchestrator.
    orchestrator = settings.orchestrator
    hidden += [
        Path(path) for path in (orchestrator.tls_client_key_path, orchestrator.tls_client_cert_path) if path
    ]
    return LocalExecutor(
        environments_dir=root / "environments",
        sandbox=sandbox,
        python=execution.python,
        base_requirements=execution.base_requirements,
        pip_cache_dir=Path(execution.pip_cache_dir) if execution.pip_cache_dir else root / "pip-cache",
        base_environment=Path(execution.base_environment) if execution.base_environment else None,
        hidden_paths=hidden,
        build_timeout=float(settings.compute.image_build_timeout),
        archive_max_bytes=execution.archive_max_unpacked_bytes,
        log_max_bytes=execution.task_log_max_bytes,
        runs_dir=root / "runs",
        warm_start=execution.warm_start,
    )


register_executor(LocalExecutor.name, local_executor_from_settings)
