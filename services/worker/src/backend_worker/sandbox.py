"""Isolation of function processes (infrastructure.md 9).

With bubblewrap the function runs in its own user, PID, network, IPC and UTS namespaces: no network
(only `lo`), the host's file system read-only, the worker's private directories (other tasks, the
asset buffer, object storage on disk) replaced by empty read-only directories, a private `/tmp`,
no capabilities, and as an unprivileged user. Only its task's outputs and working directory are
writable. Killing the bubblewrap process kills the whole namespace.

Running without a sandbox is possible for development, and only when explicitly allowed.
"""

from __future__ import annotations

import abc
import functools
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backend_worker.errors import SandboxUnavailableError

SANDBOX_UID = 65534
SANDBOX_HOSTNAME = "substra-task"
# Secrets of the host that are no business of a function, hidden whenever they exist. (The
# sandbox's user is the worker's user outside: it could read the worker's own files.)
HOST_SECRETS = (
    Path("/etc/shadow"),
    Path("/etc/gshadow"),
    Path("/run/secrets"),
    Path("/var/run/secrets"),
    Path("/etc/ssh"),
)


@dataclass(frozen=True)
class Mount:
    """A host directory the function sees at the same path, read-only unless `writable`."""

    source: Path
    writable: bool = False


class Sandbox(abc.ABC):
    name: str
    # Whether the function gets a private /tmp (otherwise TMPDIR points into its working directory).
    private_tmp: bool

    @abc.abstractmethod
    def check(self) -> None:
        """Raise `SandboxUnavailableError` when this sandbox cannot run processes here."""

    @abc.abstractmethod
    def wrap(
        self,
        command: Sequence[str],
        *,
        workdir: Path,
        mounts: Sequence[Mount],
        readable: Sequence[Path],
        hidden: Sequence[Path],
        network: bool = False,
    ) -> list[str]:
        """The command line running `command` in `workdir` with access to `mounts` and `readable`.

        `hidden` are directories and files the process must not see (hidden directories may
        contain `readable` paths or mounts, which stay visible). Without `network`, only a
        loopback interface of its own.
        """


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


class Bubblewrap(Sandbox):
    name = "bubblewrap"
    private_tmp = True

    def __init__(self, executable: str = "bwrap") -> None:
        self.executable = executable

    def _resolve(self) -> str:
        resolved = shutil.which(self.executable)
        if resolved is None:
            raise SandboxUnavailableError(
                f"bubblewrap ({self.executable!r}) is not installed: install the Debian package "
                "`bubblewrap`, or set COMPUTE_SANDBOX=none with COMPUTE_ALLOW_UNSANDBOXED=true"
            )
        return resolved

    def check(self) -> None:
        _probe(self._resolve())

    def wrap(
        self,
        command: Sequence[str],
        *,
        workdir: Path,
        mounts: Sequence[Mount],
        readable: Sequence[Path],
        hidden: Sequence[Path],
        network: bool = False,
    ) -> list[str]:
        arguments = [
            self._resolve(),
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",  # noqa: S108  (a private tmpfs)
        ]  # fmt: skip
        masked = [Path("/tmp")]  # noqa: S108
        # Shallowest first, so a deeper hidden directory is not re-exposed by its parent's tmpfs.
        for path in sorted({p.absolute() for p in hidden}, key=lambda p: len(p.parts)):
            if any(_is_within(path, done) for done in masked):
                continue
            if path.is_dir():
                arguments += ["--perms", "0555", "--tmpfs", str(path)]
                masked.append(path)
            elif path.is_file():
                arguments += ["--ro-bind", "/dev/null", str(path)]
        for path in readable:
            arguments += ["--ro-bind", str(path), str(path)]
        for mount in mounts:
            option = "--bind" if mount.writable else "--ro-bind"
            arguments += [option, str(mount.source), str(mount.source)]
        arguments += ["--bind", str(workdir), str(workdir)]
        # The directories bubblewrap created for the mount points are writable by the sandbox's
        # user: freeze the hidden trees once everything is mounted.
        for path in masked[1:]:
            arguments += ["--remount-ro", str(path)]
        arguments += [
            "--unshare-all",
            *(["--share-net"] if network else []),
            "--unshare-user",
            "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID),
            "--cap-drop", "ALL",
            "--hostname", SANDBOX_HOSTNAME,
            "--die-with-parent",
            "--new-session",
            "--chdir", str(workdir),
            "--",
            *command,
        ]  # fmt: skip
        return arguments


@functools.cache
def _probe(executable: str) -> None:
    """Run a trivial sandboxed command once per process: namespaces may be forbidden on this host."""
    command = [
        executable, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
        "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
        "--die-with-parent", "--", "true",
    ]  # fmt: skip
    try:
        completed = subprocess.run(command, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SandboxUnavailableError(f"bubblewrap cannot start: {error}") from error
    if completed.returncode != 0:
        message = completed.stderr.decode(errors="replace").strip()
        raise SandboxUnavailableError(f"bubblewrap cannot create its namespaces here: {message}")


class Unsandboxed(Sandbox):
    """Runs the function as a plain child process of the worker (trusted code only)."""

    name = "none"
    private_tmp = False

    def check(self) -> None:
        return None

    def wrap(
        self,
        command: Sequence[str],
        *,
        workdir: Path,
        mounts: Sequence[Mount],
        readable: Sequence[Path],
        hidden: Sequence[Path],
        network: bool = False,
    ) -> list[str]:
        return list(command)


def make_sandbox(kind: str, *, allow_unsandboxed: bool, bwrap_path: str = "bwrap") -> Sandbox:
    if kind == "bubblewrap":
        return Bubblewrap(bwrap_path)
    if kind == "none":
        if not allow_unsandboxed:
            raise SandboxUnavailableError(
                "COMPUTE_SANDBOX=none runs user code without isolation: "
                "set COMPUTE_ALLOW_UNSANDBOXED=true to allow it"
            )
        return Unsandboxed()
    raise SandboxUnavailableError(f"unknown sandbox {kind!r} (expected bubblewrap or none)")
