"""The local executor: environments per archive checksum, sandboxed runs, logs, limits, cancellation."""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from backend_worker.errors import BuildError, SandboxUnavailableError
from backend_worker.executor import Limits, RunOutcome, TaskRun, make_executor
from backend_worker.local_executor import LocalExecutor, _process_tree, idle_start_supported
from backend_worker.sandbox import Bubblewrap, Unsandboxed, make_sandbox
from backend_worker.settings import ExecutionSettings, WorkerSettings
from backend_worker.substratools_command import (
    FunctionInput,
    FunctionOutput,
    argument_lines,
    write_argument_file,
)
from backend_worker.testing import FUNCTION_SCRIPT, sdk_function_archive, sha256

MakeExecutor = Callable[..., LocalExecutor]


def checksum(path: Path) -> str:
    return sha256(path.read_bytes())


def run_function(
    executor: LocalExecutor,
    archive: Path,
    *,
    outputs: tuple[str, ...] = ("model",),
    limits: Limits | None = None,
    inputs: dict[str, bytes] | None = None,
    wait: bool = True,
):  # type: ignore[no-untyped-def]
    image = executor.build_image(checksum(archive), archive)
    run_id = f"task-{time.monotonic_ns()}"
    task_dir = executor.task_directory(run_id)
    for name, data in (inputs or {}).items():
        (task_dir.inputs / name).write_bytes(data)
    lines = argument_lines(1, [], [FunctionOutput(name, str(task_dir.output(name))) for name in outputs])
    write_argument_file(task_dir.arguments_file, lines)
    run = TaskRun(
        run_id=run_id,
        image=image,
        arguments=(f"@{task_dir.arguments_file}",),
        directory=task_dir,
        limits=limits or Limits(timeout_seconds=60),
    )
    execution = executor.start(run)
    if not wait:
        return execution, task_dir
    return execution.wait(), task_dir


def test_build_once_per_checksum(tmp_path: Path, make_executor: MakeExecutor) -> None:
    executor = make_executor()
    archive = sdk_function_archive(tmp_path, "trivial")
    assert executor.find_image(checksum(archive)) is None
    image = executor.build_image(checksum(archive), archive)
    assert image.entrypoint.function_name == "trivial"
    marker = Path(image.location) / "environment.json"
    built_at = marker.stat().st_mtime_ns
    started = time.monotonic()
    again = executor.build_image(checksum(archive), archive)
    assert time.monotonic() - started < 0.1
    assert again == image and marker.stat().st_mtime_ns == built_at
    # Another executor on the same host (another process) reuses it too.
    assert make_executor().find_image(checksum(archive)) == image


def test_requirements_are_installed_over_the_base(tmp_path: Path, make_executor: MakeExecutor) -> None:
    executor = make_executor()
    # Satisfied by the base environment: no download, the base's packages are used.
    satisfied = sdk_function_archive(tmp_path, "trivial", requirements="substratools==1.0.0\n")
    image = executor.build_image(checksum(satisfied), satisfied)
    build_log = (Path(image.location) / "build.log").read_text()
    assert "Requirement already satisfied: substratools==1.0.0" in build_log
    result, _ = run_function(executor, satisfied)
    assert result.succeeded


def test_build_failure_carries_pip_output(tmp_path: Path, make_executor: MakeExecutor) -> None:
    executor = make_executor()
    archive = sdk_function_archive(tmp_path, "trivial", requirements="./no-such-wheel-1.0-py3-none-any.whl\n")
    with pytest.raises(BuildError) as raised:
        executor.build_image(checksum(archive), archive)
    assert "no-such-wheel" in raised.value.logs
    assert "pip exited with status" in raised.value.logs
    assert executor.find_image(checksum(archive)) is None


def test_substrafl_archive_runs_with_its_cloudpickled_code(
    tmp_path: Path, make_executor: MakeExecutor, substrafl_archive: Path
) -> None:
    executor = make_executor()
    image = executor.build_image(checksum(substrafl_archive), substrafl_archive)
    assert image.entrypoint.function_name == "avg_shared_states"
    task_dir = executor.task_directory("task")
    paths = []
    for index, value in enumerate([1.0, 3.0, 8.0]):
        path = task_dir.inputs / f"shared-{index}"
        path.write_bytes(pickle.dumps({"value": value}))
        paths.append(path)
    lines = argument_lines(
        2,
        [FunctionInput("shared", str(path), True) for path in paths],
        [FunctionOutput("shared", str(task_dir.output("shared")))],
    )
    write_argument_file(task_dir.arguments_file, lines)
    execution = executor.start(
        TaskRun(
            run_id="task",
            image=image,
            arguments=(f"@{task_dir.arguments_file}",),
            directory=task_dir,
            limits=Limits(timeout_seconds=60),
        )
    )
    result = execution.wait()
    assert result is not None and result.succeeded, task_dir.log_file.read_text()
    assert pickle.loads(task_dir.output("shared").read_bytes()) == {"value": 4.0, "count": 3}


def test_failure_log_has_the_traceback(tmp_path: Path, make_executor: MakeExecutor) -> None:
    executor = make_executor()
    result, task_dir = run_function(executor, sdk_function_archive(tmp_path, "fail"))
    assert result.outcome is RunOutcome.EXITED and result.exit_code == 1
    log = task_dir.log_file.read_text()
    assert "about to fail" in log
    assert "Traceback (most recent call last):" in log
    assert "ValueError: the function failed on purpose" in log


def test_sandbox_blocks_network_and_writes_outside(
    tmp_path: Path, make_executor: MakeExecutor, worker_root: Path
) -> None:
    root = worker_root
    executor = make_executor(root)
    secret = root / "asset_buffer" / "secret"
    secret.parent.mkdir(parents=True)
    secret.write_text("private")
    result, task_dir = run_function(
        executor, sdk_function_archive(tmp_path, "escape"), inputs={"model": b"{}"}
    )
    assert result.succeeded, task_dir.log_file.read_text()
    report = json.loads(task_dir.output("model").read_text())
    assert "Connection refused" in report["network"] or "unreachable" in report["network"]
    for target in ("parent", "input", "root"):
        assert "Read-only file system" in report[target] or "Permission denied" in report[target], report
    assert report["home"] is True
    assert (task_dir.workdir / "home-file").read_text() == "ok"
    assert not (task_dir.path / "escaped").exists()
    assert (task_dir.inputs / "model").read_bytes() == b"{}"


def test_hidden_directories_are_not_visible(tmp_path: Path, make_executor: MakeExecutor) -> None:
    script = FUNCTION_SCRIPT + (
        "\n@tools.register\n"
        "def look(inputs, outputs, task_properties):\n"
        "    import os\n"
        f"    _save({{'root': os.listdir({str(tmp_path / 'root')!r})}}, outputs['model'])\n"
    )
    executor = make_executor()
    root = tmp_path / "root"
    (root / "asset_buffer" / "models").mkdir(parents=True)
    result, task_dir = run_function(executor, sdk_function_archive(tmp_path, "look", script=script))
    assert result.succeeded, task_dir.log_file.read_text()
    # Only the path to this task's directory and to the environment exist in the sandbox.
    assert sorted(json.loads(task_dir.output("model").read_text())["root"]) == ["environments", "runs"]


def test_cancel_kills_the_whole_run(tmp_path: Path, make_executor: MakeExecutor) -> None:
    executor = make_executor()
    execution, task_dir = run_function(executor, sdk_function_archive(tmp_path, "sleep"), wait=False)
    deadline = time.monotonic() + 10
    while "sleeping" not in task_dir.log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert execution.wait(0.1) is None
    started = time.monotonic()
    assert executor.cancel(execution.run_id)
    result = execution.wait(5)
    assert result is not None and result.outcome is RunOutcome.CANCELED
    assert time.monotonic() - started < 2
    assert not executor.cancel(execution.run_id)


def test_time_limit(tmp_path: Path, make_executor: MakeExecutor) -> None:
    executor = make_executor()
    started = time.monotonic()
    result, _ = run_function(
        executor, sdk_function_archive(tmp_path, "sleep"), limits=Limits(timeout_seconds=1)
    )
    assert result.outcome is RunOutcome.TIMED_OUT
    assert time.monotonic() - started < 5


def test_memory_limit(tmp_path: Path, make_executor: MakeExecutor) -> None:
    script = FUNCTION_SCRIPT + (
        "\n@tools.register\ndef hog(inputs, outputs, task_properties):\n"
        "    data = bytearray(512 * 1024 * 1024)\n"
    )
    executor = make_executor()
    result, task_dir = run_function(
        executor,
        sdk_function_archive(tmp_path, "hog", script=script),
        limits=Limits(timeout_seconds=30, memory_bytes=256 * 1024 * 1024),
    )
    assert result.exit_code != 0
    assert "MemoryError" in task_dir.log_file.read_text()


def test_long_logs_keep_their_end(tmp_path: Path, make_executor: MakeExecutor) -> None:
    script = FUNCTION_SCRIPT + (
        "\n@tools.register\ndef chatty(inputs, outputs, task_properties):\n"
        "    for index in range(20000):\n        print('line', index)\n    raise RuntimeError('the end')\n"
    )
    executor = make_executor(log_max_bytes=20_000)
    result, task_dir = run_function(executor, sdk_function_archive(tmp_path, "chatty", script=script))
    assert result.log_truncated
    log = task_dir.log_file.read_text()
    assert len(log) < 25_000
    assert "line 0\n" in log and "bytes of output skipped" in log and "RuntimeError: the end" in log


def test_unsandboxed_runs_only_when_allowed(tmp_path: Path, make_executor: MakeExecutor) -> None:
    with pytest.raises(SandboxUnavailableError, match="COMPUTE_ALLOW_UNSANDBOXED"):
        make_sandbox("none", allow_unsandboxed=False)
    assert isinstance(make_sandbox("none", allow_unsandboxed=True), Unsandboxed)
    executor = make_executor(sandbox=Unsandboxed())
    result, task_dir = run_function(executor, sdk_function_archive(tmp_path, "trivial"))
    assert result.succeeded, task_dir.log_file.read_text()
    with pytest.raises(SandboxUnavailableError, match="bubblewrap"):
        Bubblewrap("/nonexistent/bwrap").check()


def test_factory_builds_the_configured_executor(tmp_path: Path) -> None:
    settings = WorkerSettings(execution=ExecutionSettings(root_dir=str(tmp_path), sandbox="bubblewrap"))
    executor = make_executor(settings)
    assert isinstance(executor, LocalExecutor) and isinstance(executor.sandbox, Bubblewrap)
    executor.check()
    with pytest.raises(SandboxUnavailableError):
        make_executor(WorkerSettings(execution=ExecutionSettings(root_dir=str(tmp_path), sandbox="none")))


PICKLER = (
    "\nclass Box:\n    def __init__(self, value):\n        self.value = value\n\n"
    "@tools.register\ndef pickler(inputs, outputs, task_properties):\n"
    "    previous = pickle.load(open(inputs['model'], 'rb')).value if inputs.get('model') else 0\n"
    "    assert __name__ == '__main__' and os.getcwd() == os.environ['HOME']\n"
    "    pickle.dump(Box(previous + 1), open(outputs['model'], 'wb'))\n"
)


def test_runs_start_warm_and_behave_as_scripts(tmp_path: Path, make_executor: MakeExecutor) -> None:
    executor = make_executor()
    archive = sdk_function_archive(tmp_path, "pickler", script=FUNCTION_SCRIPT + PICKLER)
    image = executor.build_image(checksum(archive), archive)
    model = b""
    for expected in (1, 2, 3):
        run_id = f"run-{expected}"
        task_dir = executor.task_directory(run_id)
        # The interpreter of the previous run's function waits in the released directory, at idle
        # priority (when the worker may give it its normal priority back).
        waiting = executor._slots[0].waiting
        assert (waiting is not None) == (expected > 1)
        if waiting is not None and idle_start_supported():
            assert os.sched_getscheduler(waiting.popen.pid) == os.SCHED_IDLE
        assert sorted(path.name for path in task_dir.workdir.iterdir()) == (
            ["Dockerfile", "function.py"] if expected > 1 else []
        )
        inputs = []
        if model:
            (task_dir.inputs / "model").write_bytes(model)
            inputs.append(FunctionInput("model", str(task_dir.inputs / "model"), False))
        write_argument_file(
            task_dir.arguments_file,
            argument_lines(0, inputs, [FunctionOutput("model", str(task_dir.output("model")))]),
        )
        execution = executor.start(
            TaskRun(
                run_id=run_id, image=image, arguments=(f"@{task_dir.arguments_file}",), directory=task_dir
            )
        )
        if waiting is not None:
            assert os.SCHED_IDLE not in {
                os.sched_getscheduler(pid) for pid in _process_tree(waiting.popen.pid)
            }
        result = execution.wait(30)
        assert result is not None and result.succeeded, task_dir.log_file.read_text()
        # Objects of classes defined in the script pickle as `__main__.Box`, as with `python function.py`.
        model = task_dir.output("model").read_bytes()
        assert b"__main__" in model and b"Box" in model
        executor.cleanup(run_id)
        assert list(task_dir.outputs.iterdir()) == [] and list(task_dir.inputs.iterdir()) == []
    # Another function: the waiting interpreter is not used.
    other = sdk_function_archive(tmp_path, "trivial")
    other_image = executor.build_image(checksum(other), other)
    result, task_dir = run_function(executor, other)
    assert result.succeeded, task_dir.log_file.read_text()
    assert other_image.entrypoint.function_name == "trivial"
    executor.close()
