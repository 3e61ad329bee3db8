"""Identity, channels, info, health, metrics and the command line."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from backend_common.orchestrator import UnknownError
from backend_common.protos import info_pb2, info_pb2_grpc
from backend_common.testing.postgres import DatabaseFactory
from google.protobuf import message_factory
from standalone_orchestrator.api.health import HealthCheckRequest, HealthCheckResponse
from standalone_orchestrator.migrations import current_revision, head_revision
from standalone_orchestrator.testing import CHANNEL, ORG1, ORG3, OTHER_CHANNEL, Network


def _call_version(net: Network, metadata: tuple[tuple[str, str], ...]) -> grpc.RpcError:
    with net.grpc_channel() as channel:
        stub = info_pb2_grpc.InfoServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.QueryVersion(info_pb2.QueryVersionParam(), metadata=metadata)
    return error.value  # type: ignore[return-value]


def test_query_version(net: Network) -> None:
    assert net.client().query_version() == "dev"


def test_missing_mspid_is_failed_precondition(net: Network) -> None:
    error = _call_version(net, (("channel", CHANNEL),))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "OE0003: missing or invalid header 'mspid'"


def test_duplicated_mspid_is_failed_precondition(net: Network) -> None:
    error = _call_version(net, (("mspid", ORG1), ("mspid", ORG1), ("channel", CHANNEL)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_missing_channel_is_unknown(net: Network) -> None:
    error = _call_version(net, (("mspid", ORG1),))
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert "missing or invalid header 'channel'" in (error.details() or "")


def test_unknown_organization_is_unknown(net: Network) -> None:
    error = _call_version(net, (("mspid", "Stranger"), ("channel", CHANNEL)))
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert error.details() == 'organization "Stranger" is unknown'


def test_organization_outside_channel_is_refused(net: Network) -> None:
    with pytest.raises(UnknownError) as error:
        net.client(ORG3, OTHER_CHANNEL).query_version()
    assert error.value.details == f'organization "{ORG3}" has not access to channel "{OTHER_CHANNEL}"'


def test_health_check_needs_no_metadata(net: Network) -> None:
    with net.grpc_channel() as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        assert check(HealthCheckRequest()).status == 1  # SERVING
        assert check(HealthCheckRequest(service="orchestrator.ComputeTaskService")).status == 1
        with pytest.raises(grpc.RpcError) as error:
            check(HealthCheckRequest(service="nope.Service"))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_is_a_stream_needing_headers(net: Network) -> None:
    with net.grpc_channel() as channel:
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as error:
            next(iter(watch(HealthCheckRequest())))
        assert error.value.code() == grpc.StatusCode.UNKNOWN
        call = watch(HealthCheckRequest(), metadata=net.stub_metadata())
        assert next(iter(call)).status == 1
        call.cancel()


def test_metrics_endpoint(fresh_orchestrator) -> None:  # type: ignore[no-untyped-def]
    net = fresh_orchestrator(metrics_listen="127.0.0.1:0")
    net.client().query_version()
    port = net.server.metrics_port
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="QueryVersion"' in body
    assert "grpc_server_handling_seconds_bucket" in body
    assert 'orchestrator_events_emitted_total{asset_kind="ASSET_ORGANIZATION"' in body


def _write_config(tmp_path: Path, url: str, **extra: object) -> Path:
    path = tmp_path / "orchestrator.yaml"
    config = {"listen": "127.0.0.1:0", "database_url": url, "channels": {CHANNEL: [ORG1]}, **extra}
    path.write_text(yaml.safe_dump(config))
    return path


def test_migrate_command(tmp_path: Path, empty_database_url: str) -> None:
    config = _write_config(tmp_path, empty_database_url)
    for _ in range(2):  # idempotent
        result = subprocess.run(
            [sys.executable, "-m", "standalone_orchestrator", "migrate", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert current_revision(empty_database_url) == head_revision()


def test_serve_command_starts_and_stops_on_sigterm(tmp_path: Path, database_factory: DatabaseFactory) -> None:
    url = database_factory.create("orchestrator")
    config = _write_config(tmp_path, url, listen="127.0.0.1:0")
    process = subprocess.Popen(
        [sys.executable, "-m", "standalone_orchestrator", "serve", "--config", str(config), "--grace", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "LOG_LEVEL": "INFO"},
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if "orchestrator started" in line:
                break
        assert "orchestrator started" in line, line
        assert current_revision(url) == head_revision()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        database_factory.drop(url)


def test_every_rpc_of_the_contract_is_served(net: Network) -> None:
    """Each method of the 13 services answers (with an error for an empty request, often)."""
    modules = [
        "computeplan", "computetask", "datamanager", "datasample", "dataset", "event",
        "failure_report", "function", "info", "model", "organization", "performance", "profiling",
    ]  # fmt: skip
    served = 0
    with net.grpc_channel() as channel:
        for name in modules:
            descriptor = importlib.import_module(f"backend_common.protos.{name}_pb2").DESCRIPTOR
            for service in descriptor.services_by_name.values():
                for method in service.methods:
                    path = f"/{service.full_name}/{method.name}"
                    request = message_factory.GetMessageClass(method.input_type)()
                    response_type = message_factory.GetMessageClass(method.output_type)
                    if method.server_streaming:
                        call = channel.unary_stream(path, response_deserializer=response_type.FromString)(
                            request.SerializeToString(), metadata=(("channel", CHANNEL),)
                        )
                        with pytest.raises(grpc.RpcError) as error:
                            next(iter(call))
                        assert error.value.code() == grpc.StatusCode.UNKNOWN  # no mspid
                    else:
                        unary = channel.unary_unary(path, response_deserializer=response_type.FromString)
                        try:
                            unary(request.SerializeToString(), metadata=net.stub_metadata(), timeout=10)
                        except grpc.RpcError as error:
                            assert error.details() != "Method not found!", path
                    served += 1
    assert served == 40
