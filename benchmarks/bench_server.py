"""Benchmark of the REST API server (issue 4); prints a JSON summary, exits 1 when a target is missed.

    python benchmarks/bench_server.py [--tasks 100000] [--workers 2] [--upload-mib 1024]

1. `GET /task/` (first page of 100) on a replica of 100,000 tasks, served by `backend-server` with
   2 uvicorn workers: the median latency of sequential requests must be <= 25 ms, and the
   throughput with concurrent keep-alive clients >= 400 requests/s (best of three runs).
2. Uploading a 1 GiB data sample (`POST /data_sample/`, a zip streamed from disk): the peak memory
   growth of the server processes must be <= 100 MiB (Linux peak RSS, reset before the upload).

The replica is seeded with SQL (plans, functions with inputs/outputs, tasks with three inputs and one
output each), as the events service would leave it. The server runs as a subprocess on a database
created and dropped here; the orchestrator (needed by the upload) is the standalone one, in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from backend_common.db import make_engine, make_session_factory, session_scope
from backend_common.db.local import TokenKind, UserRole
from backend_common.testing.postgres import DatabaseFactory, server_url
from backend_common.testing.processes import free_port
from backend_migrations import schema
from backend_server.data import accounts
from backend_server.testing import CHANNEL, ORG1, write_dataset_files
from sqlalchemy import text
from standalone_orchestrator.testing import Network as OrchestratorNetwork
from standalone_orchestrator.testing import register_organizations
from standalone_orchestrator.testing import start_server as start_orchestrator

MEDIAN_TARGET_MS = 25.0
THROUGHPUT_TARGET = 400.0
MEMORY_TARGET_MIB = 100.0
PAGE_PATH = "/task/"


# --- replica ------------------------------------------------------------------------------------------


SEED = """
INSERT INTO functions (key, channel, name, owner, creation_date, metadata, status,
    description_address, description_checksum, archive_address, archive_checksum,
    permissions_process_public, permissions_process_authorized_ids,
    permissions_download_public, permissions_download_authorized_ids)
SELECT gen_random_uuid(), :channel, 'function ' || i, :owner, now() - interval '2 days',
    '{"framework": "torch"}', 'FUNCTION_STATUS_READY',
    'http://org1/description/', md5(i::text) || md5(i::text),
    'http://org1/file/', md5((i + 1)::text) || md5((i + 1)::text), false, ARRAY[:owner, 'MyOrg2MSP'],
    false, ARRAY[:owner, 'MyOrg2MSP']
FROM generate_series(1, :functions) AS i;

INSERT INTO function_inputs (function_key, identifier, kind, optional, multiple)
SELECT key, spec.identifier, spec.kind, spec.optional, spec.multiple FROM functions,
    (VALUES ('datasamples', 'ASSET_DATA_SAMPLE', false, true), ('opener', 'ASSET_DATA_MANAGER', false, false),
            ('models', 'ASSET_MODEL', true, true)) AS spec(identifier, kind, optional, multiple);

INSERT INTO function_outputs (function_key, identifier, kind, multiple)
SELECT key, 'model', 'ASSET_MODEL', false FROM functions;

INSERT INTO compute_plans (key, channel, owner, name, tag, metadata, creator, creation_date, status)
SELECT gen_random_uuid(), :channel, :owner, 'plan ' || i, 'benchmark', jsonb_build_object('run', i::text),
    'admin', now() - interval '1 day', 'PLAN_STATUS_DOING'
FROM generate_series(1, :plans) AS i;

CREATE TEMPORARY TABLE numbered_functions AS
    SELECT key, row_number() OVER (ORDER BY key) - 1 AS n FROM functions;
CREATE TEMPORARY TABLE numbered_plans AS
    SELECT key, row_number() OVER (ORDER BY key) - 1 AS n FROM compute_plans;

INSERT INTO compute_tasks (key, channel, function_key, compute_plan_key, owner, worker, rank, status, tag,
    metadata, creation_date, start_date, end_date, logs_permission_public, logs_permission_authorized_ids)
SELECT gen_random_uuid(), :channel, f.key, p.key, :owner, 'MyOrg2MSP', i % 50,
    CASE WHEN i % 7 = 0 THEN 'STATUS_EXECUTING' ELSE 'STATUS_DONE' END, '',
    jsonb_build_object('round_idx', (i % 50)::text),
    now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval + interval '1 second',
    CASE WHEN i % 7 = 0 THEN NULL ELSE now() - (i || ' seconds')::interval + interval '5 seconds' END,
    false, ARRAY[:owner]
FROM generate_series(1, :tasks) AS i
JOIN numbered_functions AS f ON f.n = i % :functions
JOIN numbered_plans AS p ON p.n = i % :plans;

INSERT INTO compute_task_inputs (task_key, position, identifier, asset_key, parent_task_key,
    parent_task_output_identifier)
SELECT task_key, position, identifier, asset_key, parent_task_key, parent_task_output_identifier FROM (
    SELECT key AS task_key, 0 AS position, 'opener' AS identifier, :data_manager AS asset_key,
        NULL::uuid AS parent_task_key, NULL AS parent_task_output_identifier FROM compute_tasks
    UNION ALL SELECT key, 1, 'datasamples', gen_random_uuid()::text, NULL, NULL FROM compute_tasks
    UNION ALL SELECT key, 2, 'models', NULL, gen_random_uuid(), 'model' FROM compute_tasks
) AS inputs ORDER BY task_key, position;

INSERT INTO compute_task_outputs (task_key, identifier, transient, permissions_process_public,
    permissions_process_authorized_ids, permissions_download_public, permissions_download_authorized_ids)
SELECT key, 'model', false, false, ARRAY[:owner, 'MyOrg2MSP'], false, ARRAY[:owner, 'MyOrg2MSP']
FROM compute_tasks;
"""


def seed(database_url: str, tasks: int) -> float:
    start = time.perf_counter()
    engine = make_engine(database_url, pool_size=1)
    parameters = {
        "channel": CHANNEL,
        "owner": ORG1,
        "functions": 10,
        "plans": max(1, tasks // 1000),
        "tasks": tasks,
        "data_manager": "5a8d1a6e-6b16-4c6f-8b8a-5a3c0e1f2a11",
    }
    with engine.begin() as connection:
        for statement in SEED.split(";"):
            if statement.strip():
                connection.execute(
                    text(statement), {k: v for k, v in parameters.items() if f":{k}" in statement}
                )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.perf_counter() - start


def admin_token(database_url: str) -> str:
    engine = make_engine(database_url, pool_size=1)
    with session_scope(make_session_factory(engine)) as session:
        now = datetime.now(UTC)
        user = accounts.create_user(
            session,
            username="admin",
            password="benchmark-password-1",
            channel=CHANNEL,
            role=UserRole.ADMIN,
            now=now,
        )
        _, token = accounts.create_token(
            session, user.id, kind=TokenKind.IMPLICIT, expires_at=now + timedelta(days=1), now=now
        )
    engine.dispose()
    return token


# --- the server process -----------------------------------------------------------------------------------


def start_server(
    database_url: str, port: int, workers: int, orchestrator_port: int, media: Path
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATABASE_POOL_SIZE": "10",
        "MSP_ID": ORG1,
        "ORG_NAME": "bench",
        "CHANNELS": json.dumps([{CHANNEL: {}}]),
        "ORCHESTRATOR_HOST": "127.0.0.1",
        "ORCHESTRATOR_PORT": str(orchestrator_port),
        "MEDIA_ROOT": str(media),
        "SERVERMEDIAS_ROOT": str(media / "servermedias"),
        "DATA_UPLOAD_MAX_SIZE": str(2 * 1024**3),
        "UPLOAD_SPOOL_DIR": str(media),
        "TMPDIR": str(media),
        "SERVER_BIND_PORT": str(port),
        "SERVER_WORKERS": str(workers),
        "SERVER_ACCESS_LOG": "false",
        "DEFAULT_DOMAIN": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(media / "metrics"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "backend_server"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def server_pids(root: int) -> list[int]:
    """The uvicorn supervisor and its worker processes."""
    pids = [root]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == root:
                pids.append(int(entry.name))
    return pids


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


# --- load ---------------------------------------------------------------------------------------------


async def _client(port: int, token: str, deadline: float, count: int | None, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET {PAGE_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Token {token}\r\n"
        "Accept: application/json;version=0.0\r\n\r\n"
    ).encode()
    done = 0
    try:
        while (count is None or done < count) and time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            body = await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"GET {PAGE_PATH} answered {status}: {body[:200]!r}")
            latencies.append(time.perf_counter() - start)
            done += 1
    finally:
        writer.close()


async def load(
    port: int, token: str, *, concurrency: int, seconds: float, count: int | None = None
) -> dict[str, float]:
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(_client(port, token, deadline, count, latencies) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "median_ms": round(statistics.median(latencies) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 2),
    }


# --- upload -------------------------------------------------------------------------------------------


def make_sample_archive(folder: Path, size: int) -> Path:
    """A zip of one folder holding `size` bytes of incompressible data (stored, as a large binary)."""
    data = folder / "sample.bin"
    generator = random.Random(4)
    with data.open("wb") as file:
        remaining = size
        while remaining:
            chunk = min(remaining, 8 * 1024**2)
            file.write(generator.randbytes(chunk))
            remaining -= chunk
    archive = folder / "sample.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zipped:
        zipped.write(data, "sample.bin")
        zipped.writestr("labels.csv", "label\n1\n")
    data.unlink()
    return archive


def multipart_stream(archive: Path, document: dict[str, Any], boundary: str) -> tuple[Iterator[bytes], int]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="json"\r\n\r\n{json.dumps(document)}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="path"; filename="path"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with archive.open("rb") as file:
            while chunk := file.read(1024**2):
                yield chunk
        yield tail

    return chunks(), len(head) + archive.stat().st_size + len(tail)


def upload(port: int, token: str, media: Path, process: subprocess.Popen[bytes], size: int) -> dict[str, Any]:
    headers = {"Authorization": f"Token {token}", "Accept": "application/json;version=0.0"}
    base = f"http://127.0.0.1:{port}"
    opener, description = write_dataset_files(media / "dataset")
    with httpx.Client(base_url=base, headers=headers, timeout=None) as client:
        with opener.open("rb") as opener_file, description.open("rb") as description_file:
            created = client.post(
                "/data_manager/",
                data={
                    "json": json.dumps(
                        {
                            "name": "bench",
                            "permissions": {"public": True, "authorized_ids": []},
                            "logs_permission": {"public": False, "authorized_ids": []},
                        }
                    )
                },
                files={"data_opener": opener_file, "description": description_file},
            )
        created.raise_for_status()
        data_manager = created.json()["key"]
        with tempfile.TemporaryDirectory(dir=media) as folder:
            archive = make_sample_archive(Path(folder), size)
            boundary = "benchmarkboundary7d1f"
            body, length = multipart_stream(archive, {"data_manager_keys": [data_manager]}, boundary)
            pids = server_pids(process.pid)
            baseline = {pid: memory_kib(pid, "VmRSS") for pid in pids}
            for pid in pids:
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
            start = time.perf_counter()
            response = client.post(
                "/data_sample/",
                content=body,
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(length),
                },
            )
            elapsed = time.perf_counter() - start
            peaks = {pid: memory_kib(pid, "VmHWM") for pid in pids}
    if response.status_code != 201:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:300]}")
    growth = max(peaks[pid] - baseline[pid] for pid in pids) / 1024
    return {
        "archive_bytes": length,
        "seconds": round(elapsed, 2),
        "peak_memory_growth_mib": round(growth, 1),
        "sample_key": response.json()[0]["key"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--upload-mib", type=int, default=1024)
    arguments = parser.parse_args()

    factory = DatabaseFactory(server_url())
    results: dict[str, Any] = {}
    orchestrator_url = factory.create("bench_orchestrator")
    orchestrator = start_orchestrator(orchestrator_url)
    network = OrchestratorNetwork(orchestrator)
    process: subprocess.Popen[bytes] | None = None
    try:
        register_organizations(network)
        database_url = factory.create("bench_server")
        schema.upgrade(database_url)
        results["seed_seconds"] = round(seed(database_url, arguments.tasks), 1)
        token = admin_token(database_url)
        with tempfile.TemporaryDirectory(prefix="bench-server-") as media_directory:
            media = Path(media_directory)
            (media / "servermedias").mkdir()
            port = free_port()
            process = start_server(database_url, port, arguments.workers, orchestrator.port, media)
            asyncio.run(load(port, token, concurrency=arguments.concurrency, seconds=2))  # warm-up
            sequential = asyncio.run(load(port, token, concurrency=1, seconds=30, count=300))
            runs = [
                asyncio.run(load(port, token, concurrency=arguments.concurrency, seconds=arguments.seconds))
                for _ in range(3)
            ]
            best = max(runs, key=lambda run: run["requests_per_second"])
            results["task_list"] = {
                "tasks": arguments.tasks,
                "workers": arguments.workers,
                "sequential": sequential,
                "concurrent_runs": runs,
            }
            results["upload"] = upload(port, token, media, process, arguments.upload_mib * 1024**2)
            stop_server(process)
            process = None
    finally:
        if process is not None:
            stop_server(process)
        network.close()
        orchestrator.stop(grace=0)
        factory.drop_all()

    checks = {
        "median_ms <= 25": results["task_list"]["sequential"]["median_ms"] <= MEDIAN_TARGET_MS,
        "requests_per_second >= 400": best["requests_per_second"] >= THROUGHPUT_TARGET,
        "upload peak memory growth <= 100 MiB": results["upload"]["peak_memory_growth_mib"]
        <= MEMORY_TARGET_MIB,
    }
    results["targets"] = checks
    print(json.dumps(results, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
