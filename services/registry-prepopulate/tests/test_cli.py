"""The `registry-prepopulate` console script, run as a process on a YAML config, end to end."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from backend_common.registry.client import RegistryClient
from backend_common.registry.oci import Manifest
from backend_common.testing.processes import free_port
from backend_common.testing.registry import (
    DockerRegistry,
    build_image,
    build_index,
    running_docker_registry,
    tar_directory,
    write_docker_archive,
    write_oci_layout,
)

SCRIPT = Path(sys.executable).parent / "registry-prepopulate"
TIMEOUT = 120


@pytest.fixture
def client(docker_registry: DockerRegistry) -> Iterator[RegistryClient]:
    with RegistryClient(docker_registry.host_port) as registry:
        yield registry


def environment(registry: str, config: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY")}
    env.update(REGISTRY=registry, REGISTRY_PREPOPULATE_CONFIG=str(config), LOG_JSON="true", LOG_LEVEL="INFO")
    env.update(extra)
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], check=False, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def events(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON log lines of stdout (every line must be one)."""
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def named(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [record for record in records if record["event"] == event]


def write_config(path: Path, items: list[dict[str, Any]], *, wrapped: bool = True) -> Path:
    path.write_text(yaml.safe_dump({"prepopulate": items} if wrapped else items))
    return path


def test_end_to_end_then_idempotent(
    docker_registry: DockerRegistry,
    docker_registry_auth: DockerRegistry,
    client: RegistryClient,
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    # 1. an OCI layout directory (relative to the config file)
    tools = build_image(layers=2)
    write_oci_layout(tmp_path / "layouts" / "tools", [(tools, "0.20.0")])
    # 2. a multi-arch OCI layout as a tarball, renamed on the way
    index = build_index([build_image(), build_image(architecture="arm64")])
    tarball = tar_directory(write_oci_layout(tmp_path / "multi", [(index, "3.11")]), tmp_path / "multi.tar")
    # 3. a docker save archive
    saved = build_image()
    archive = write_docker_archive(tmp_path / "saved.tar", saved, [f"saved-{suffix}:1"])
    # 4. an image in another registry that needs credentials, given as a Docker config.json
    remote = build_image()
    assert docker_registry_auth.username and docker_registry_auth.password
    with RegistryClient(
        docker_registry_auth.host_port,
        username=docker_registry_auth.username,
        password=docker_registry_auth.password,
    ) as auth_client:
        for digest, content in remote.blobs.items():
            auth_client.upload_blob(f"upstream/remote-{suffix}", digest, io.BytesIO(content), len(content))
        auth_client.put_manifest(f"upstream/remote-{suffix}", "2.0", Manifest.parse(remote.manifest))
    basic = base64.b64encode(
        f"{docker_registry_auth.username}:{docker_registry_auth.password}".encode()
    ).decode()
    (tmp_path / "docker-config.json").write_text(
        json.dumps({"auths": {docker_registry_auth.host_port: {"auth": basic}}})
    )

    config = write_config(
        tmp_path / "prepopulate.yaml",
        [
            {"image": f"substra/tools-{suffix}:0.20.0", "sourceLayout": "layouts/tools"},
            {"image": "python:3.11", "sourceLayout": str(tarball), "dstImage": f"base/python-{suffix}"},
            {"image": f"saved-{suffix}:1", "sourceLayout": str(archive)},
            {
                "image": f"upstream/remote-{suffix}:2.0",
                "sourceRegistry": docker_registry_auth.host_port,
                "sourceScheme": "http",
                "dstImage": f"mirror/remote-{suffix}",
                "dockerConfig": "docker-config.json",
            },
        ],
    )
    env = environment(docker_registry.host_port, config)

    first = run(env)
    assert first.returncode == 0, first.stderr + first.stdout
    records = events(first)
    assert {record["service"] for record in records} == {"registry-prepopulate"}
    assert len(named(records, "image copied")) == 4
    assert named(records, "blob uploaded")
    assert client.get_manifest(f"substra/tools-{suffix}", "0.20.0").digest == tools.digest
    assert client.get_manifest(f"base/python-{suffix}", "3.11").content == index.manifest
    assert client.tags(f"saved-{suffix}") == ["1"]
    assert client.get_manifest(f"mirror/remote-{suffix}", "2.0").digest == remote.digest

    second = run(env)
    assert second.returncode == 0, second.stderr + second.stdout
    records = events(second)
    up_to_date = named(records, "image already up to date")
    assert len(up_to_date) == 4
    assert all(record["blobs_uploaded"] == 0 and record["bytes_uploaded"] == 0 for record in up_to_date)
    assert named(records, "blob uploaded") == named(records, "manifest pushed") == []


def test_a_failed_image_does_not_stop_the_others(
    docker_registry: DockerRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    good = build_image()
    repository = f"test/good-{uuid.uuid4().hex[:8]}"
    write_oci_layout(tmp_path / "good", [(good, "v1")])
    config = write_config(
        tmp_path / "config.yaml",
        [
            {"image": "test/missing:1", "sourceLayout": "missing-layout"},
            {"image": f"{repository}:v1", "sourceLayout": "good"},
        ],
        wrapped=False,
    )
    result = run(environment(docker_registry.host_port, config))

    assert result.returncode == 1
    assert "1 of 2 image(s) not copied" in result.stderr
    assert "missing-layout does not exist" in result.stderr
    failed = named(events(result), "image copy failed")
    assert [record["image"] for record in failed] == ["test/missing:1"]
    assert client.get_manifest(repository, "v1").digest == good.digest


def test_registry_that_never_answers(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", [{"image": "a:1", "sourceLayout": "x"}])
    env = environment(
        f"127.0.0.1:{free_port()}", config, REGISTRY_WAIT_ATTEMPTS="3", REGISTRY_WAIT_INTERVAL_SECONDS="0.05"
    )
    result = run(env)
    assert result.returncode == 1
    assert "is not usable" in result.stderr
    assert "no answer" in result.stderr
    assert len(named(events(result), "waiting for the registry")) == 2


@pytest.mark.registry
def test_waits_for_a_registry_that_starts_late(tmp_path: Path) -> None:
    image = build_image()
    write_oci_layout(tmp_path / "layout", [(image, "v1")])
    config = write_config(tmp_path / "config.yaml", [{"image": "late/app:v1", "sourceLayout": "layout"}])
    port = free_port()
    env = environment(
        f"127.0.0.1:{port}", config, REGISTRY_WAIT_ATTEMPTS="200", REGISTRY_WAIT_INTERVAL_SECONDS="0.1"
    )
    process = subprocess.Popen(
        [str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        seen: list[dict[str, Any]] = []
        # Start the registry only once the command has found it missing.
        while not named(seen, "waiting for the registry"):
            line = process.stdout.readline()
            assert line, (
                f"the command ended early: {process.wait()} {process.stderr.read() if process.stderr else ''}"
            )
            seen.append(json.loads(line))
        with running_docker_registry(port=port) as late, RegistryClient(late.host_port) as client:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, stderr
            assert client.get_manifest("late/app", "v1").digest == image.digest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    records = seen + [json.loads(line) for line in stdout.splitlines()]
    assert named(records, "registry answers")
    assert named(records, "image copied")


def test_destination_with_credentials(docker_registry_auth: DockerRegistry, tmp_path: Path) -> None:
    image = build_image()
    write_oci_layout(tmp_path / "layout", [(image, "v1")])
    config = write_config(tmp_path / "config.yaml", [{"image": "secure/app:v1", "sourceLayout": "layout"}])
    assert docker_registry_auth.username and docker_registry_auth.password

    refused = run(environment(docker_registry_auth.host_port, config))
    assert refused.returncode == 1
    assert "401" in refused.stderr and "authentication" in refused.stderr

    env = environment(
        docker_registry_auth.host_port,
        config,
        REGISTRY_USERNAME=docker_registry_auth.username,
        REGISTRY_PASSWORD=docker_registry_auth.password,
    )
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert docker_registry_auth.password not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [{"image": "a:1", "sourceLayout": "x", "colour": "blue"}],
            "item 0: colour: Extra inputs are not permitted",
        ),
        ([{"image": "Not/Valid:1", "sourceLayout": "x"}], "invalid image reference 'Not/Valid:1'"),
        (
            [{"image": "a:1", "sourceLayout": "x", "sourceRegistry": "ghcr.io"}],
            "either sourceRegistry or sourceLayout",
        ),
    ],
)
def test_invalid_config(tmp_path: Path, items: list[dict[str, Any]], message: str) -> None:
    config = write_config(tmp_path / "config.yaml", items)
    result = run(environment("127.0.0.1:1", config))
    assert result.returncode == 2
    assert message in result.stderr


def test_missing_settings(tmp_path: Path) -> None:
    env = environment("unused", tmp_path / "config.yaml")
    del env["REGISTRY"]
    result = run(env)
    assert result.returncode == 2
    assert "REGISTRY: Field required" in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = run(environment("127.0.0.1:1", tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "cannot read the prepopulate config" in result.stderr


def test_empty_config_does_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("prepopulate: []\n")
    result = run(environment("127.0.0.1:1", config))
    assert result.returncode == 0, result.stderr
    assert named(events(result), "nothing to prepopulate")


def test_config_option_overrides_the_environment(docker_registry: DockerRegistry, tmp_path: Path) -> None:
    image = build_image()
    write_oci_layout(tmp_path / "layout", [(image, "v1")])
    config = write_config(
        tmp_path / "other.yaml", [{"image": f"test/flag-{uuid.uuid4().hex[:8]}:v1", "sourceLayout": "layout"}]
    )
    result = run(environment(docker_registry.host_port, tmp_path / "absent.yaml"), "--config", str(config))
    assert result.returncode == 0, result.stderr
