"""The registry API v2 client against a real docker-registry (distribution 2.8)."""

from __future__ import annotations

import io
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_common.registry.client import (
    NotFoundError,
    RegistryAuthError,
    RegistryClient,
    RegistryUnavailableError,
)
from backend_common.registry.oci import DigestError, Manifest
from backend_common.testing.registry import DockerRegistry, build_image, build_index, sha256_digest


@pytest.fixture
def client(docker_registry: DockerRegistry) -> Iterator[RegistryClient]:
    with RegistryClient(docker_registry.host_port, chunk_size=64 * 1024) as registry:
        yield registry


@pytest.fixture
def repository() -> str:
    return f"test/client-{uuid.uuid4().hex[:10]}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def push(
    client: RegistryClient, repository: str, tag: str, image_blobs: dict[str, bytes], manifest: Manifest
) -> None:
    for digest, content in image_blobs.items():
        client.upload_blob(repository, digest, io.BytesIO(content), len(content))
    client.put_manifest(repository, tag, manifest)


def test_ping(client: RegistryClient) -> None:
    client.ping()


def test_ping_without_a_server_is_unavailable() -> None:
    with (
        RegistryClient(f"127.0.0.1:{closed_port()}") as client,
        pytest.raises(RegistryUnavailableError) as info,
    ):
        client.ping()
    assert "no answer" in str(info.value)


def test_monolithic_and_chunked_uploads_round_trip(
    client: RegistryClient, repository: str, tmp_path: Path
) -> None:
    small = b"small blob"
    big = build_image(extra_layer_bytes=300 * 1024).uncompressed_layers[0]  # > chunk size: PATCH chunks
    for content in (small, big):
        digest = sha256_digest(content)
        assert not client.blob_exists(repository, digest)
        client.upload_blob(repository, digest, io.BytesIO(content), len(content))
        assert client.blob_exists(repository, digest)
        target = tmp_path / digest.removeprefix("sha256:")
        with target.open("wb") as out:
            assert client.download_blob(repository, digest, out, len(content)) == len(content)
        assert target.read_bytes() == content


def test_single_put_mode(docker_registry: DockerRegistry, repository: str) -> None:
    content = build_image(extra_layer_bytes=200 * 1024).uncompressed_layers[0]
    with RegistryClient(docker_registry.host_port, chunk_size=0) as client:
        client.upload_blob(repository, sha256_digest(content), io.BytesIO(content), len(content))
        assert client.blob_exists(repository, sha256_digest(content))


@pytest.mark.parametrize("size", [100, 200 * 1024])
def test_upload_with_wrong_digest_is_refused(client: RegistryClient, repository: str, size: int) -> None:
    content = b"x" * size
    claimed = sha256_digest(b"something else")
    with pytest.raises(DigestError) as info:
        client.upload_blob(repository, claimed, io.BytesIO(content), len(content))
    assert sha256_digest(content) in str(info.value)
    assert not client.blob_exists(repository, claimed)


def test_truncated_source_is_reported(client: RegistryClient, repository: str) -> None:
    content = b"short"
    with pytest.raises(Exception, match="ended 10 bytes before"):
        client.upload_blob(repository, sha256_digest(content), io.BytesIO(content), len(content) + 10)


def test_manifest_put_get_head_tags(client: RegistryClient, repository: str) -> None:
    image = build_image()
    manifest = Manifest.parse(image.manifest)
    push(client, repository, "v1", image.blobs, manifest)

    head = client.head_manifest(repository, "v1")
    assert head is not None
    assert (head.digest, head.media_type, head.size) == (image.digest, image.media_type, len(image.manifest))
    fetched = client.get_manifest(repository, "v1")
    assert fetched.content == image.manifest
    assert fetched.digest == image.digest
    assert client.get_manifest(repository, image.digest).content == image.manifest
    assert client.tags(repository) == ["v1"]
    assert client.head_manifest(repository, "missing") is None


def test_docker_media_types_and_index(client: RegistryClient, repository: str) -> None:
    amd64 = build_image(docker_media_types=True)
    arm64 = build_image(docker_media_types=True, architecture="arm64")
    index = build_index([amd64, arm64], docker_media_types=True)
    for image in (amd64, arm64):
        push(client, repository, image.digest, image.blobs, Manifest.parse(image.manifest))
    client.put_manifest(repository, "multi", Manifest.parse(index.manifest))

    fetched = client.get_manifest(repository, "multi")
    assert fetched.media_type == index.media_type
    assert fetched.is_index
    assert [child.digest for child in fetched.references()] == [amd64.digest, arm64.digest]


def test_missing_manifest_error_is_clear(client: RegistryClient, repository: str) -> None:
    with pytest.raises(NotFoundError) as info:
        client.get_manifest(repository, "nope")
    message = str(info.value)
    assert f"{repository}:nope" in message
    assert "404" in message
    assert "MANIFEST_UNKNOWN" in message or "NAME_UNKNOWN" in message


def test_missing_blob_download(client: RegistryClient, repository: str) -> None:
    with pytest.raises(NotFoundError):
        client.download_blob(repository, sha256_digest(b"absent"), io.BytesIO())


def test_cross_repository_mount(client: RegistryClient, repository: str) -> None:
    content = b"mount me " + uuid.uuid4().bytes
    digest = sha256_digest(content)
    client.upload_blob(repository, digest, io.BytesIO(content), len(content))
    other = f"{repository}-other"
    assert client.mount_blob(other, digest, repository) is None
    assert client.blob_exists(other, digest)

    # Unknown blob: the registry opens an ordinary upload session instead, which can be used.
    fresh = b"fresh " + uuid.uuid4().bytes
    location = client.mount_blob(other, sha256_digest(fresh), repository)
    assert location is not None
    client.upload_blob(other, sha256_digest(fresh), io.BytesIO(fresh), len(fresh), location=location)
    assert client.blob_exists(other, sha256_digest(fresh))


def test_basic_auth(docker_registry_auth: DockerRegistry, repository: str) -> None:
    assert docker_registry_auth.username and docker_registry_auth.password
    with RegistryClient(docker_registry_auth.host_port) as anonymous, pytest.raises(RegistryAuthError):
        anonymous.ping()
    with (
        RegistryClient(docker_registry_auth.host_port, username="intruder", password="wrong") as wrong,
        pytest.raises(RegistryAuthError, match="401"),
    ):
        wrong.ping()
    with RegistryClient(
        docker_registry_auth.host_port,
        username=docker_registry_auth.username,
        password=docker_registry_auth.password,
        chunk_size=1024,
    ) as client:
        client.ping()
        image = build_image(extra_layer_bytes=4096)
        push(client, repository, "v1", image.blobs, Manifest.parse(image.manifest))
        assert client.get_manifest(repository, "v1").digest == image.digest
    assert httpx.get(f"{docker_registry_auth.url}/v2/{repository}/tags/list").status_code == 401
