"""copy_image from OCI layouts, tarballs and registries into a real docker-registry."""

from __future__ import annotations

import io
import json
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_common.registry.client import NotFoundError, RegistryClient, RegistryUnavailableError
from backend_common.registry.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, DigestError
from backend_common.registry.reference import parse_image
from backend_common.testing.registry import (
    BuiltImage,
    DockerRegistry,
    build_image,
    build_index,
    running_docker_registry,
    sha256_digest,
    tar_directory,
    write_docker_archive,
    write_oci_layout,
)
from registry_prepopulate.copy import CopyReport, Destination, RegistrySource, copy_image
from registry_prepopulate.layout import LayoutError, open_local_source


@pytest.fixture
def client(docker_registry: DockerRegistry) -> Iterator[RegistryClient]:
    # A small chunk size so that the bigger layers go through PATCH chunks.
    with RegistryClient(docker_registry.host_port, chunk_size=64 * 1024) as registry:
        yield registry


@pytest.fixture(scope="module")
def other_registry() -> Iterator[DockerRegistry]:
    with running_docker_registry() as registry:
        yield registry


@pytest.fixture
def other_client(other_registry: DockerRegistry) -> Iterator[RegistryClient]:
    with RegistryClient(other_registry.host_port) as registry:
        yield registry


def unique(name: str) -> str:
    return f"test/{name}-{uuid.uuid4().hex[:10]}"


def copy_layout(path: Path, image: str, destination: Destination, **kwargs: dict[str, str]) -> CopyReport:
    with open_local_source(path, parse_image(image)) as source:
        return copy_image(source, destination, **kwargs)


def assert_stored(client: RegistryClient, repository: str, tag: str, image: BuiltImage) -> None:
    """The tag serves the exact manifest, and every child manifest and blob is there, intact."""
    manifest = client.get_manifest(repository, tag)
    assert manifest.content == image.manifest
    assert manifest.digest == image.digest
    assert manifest.media_type == image.media_type
    for digest, (media_type, body) in image.manifests.items():
        child = client.get_manifest(repository, digest)
        assert (child.content, child.media_type) == (body, media_type)
    for digest, content in image.blobs.items():
        out = io.BytesIO()
        client.download_blob(repository, digest, out)
        assert out.getvalue() == content
    assert tag in client.tags(repository)


def test_layout_to_registry_then_nothing_the_second_time(client: RegistryClient, tmp_path: Path) -> None:
    image = build_image(layers=2, extra_layer_bytes=200 * 1024)
    layout = write_oci_layout(tmp_path / "layout", [(image, "1.0")])
    repository = unique("layout")

    first = copy_layout(layout, "tools:1.0", Destination(client, repository))
    assert_stored(client, repository, "1.0", image)
    assert sorted(first.blobs_uploaded) == sorted(image.blobs)
    assert first.manifests_pushed == [image.digest]
    assert first.bytes_uploaded == sum(len(blob) for blob in image.blobs.values())
    assert not first.up_to_date

    second = copy_layout(layout, "tools:1.0", Destination(client, repository))
    assert second.up_to_date
    assert second.blobs_uploaded == second.blobs_mounted == second.manifests_pushed == []
    assert second.bytes_uploaded == 0
    assert second.digest == image.digest


def test_new_version_only_uploads_new_blobs(client: RegistryClient, tmp_path: Path) -> None:
    base = build_image()
    v1 = build_image(shared_layers=base.uncompressed_layers)
    v2 = build_image(shared_layers=base.uncompressed_layers)
    shared = v1.document()["layers"][0]["digest"]
    assert shared == v2.document()["layers"][0]["digest"]
    repository = unique("versions")

    copy_layout(write_oci_layout(tmp_path / "v1", [(v1, "latest")]), "app", Destination(client, repository))
    report = copy_layout(
        write_oci_layout(tmp_path / "v2", [(v2, "latest")]), "app", Destination(client, repository)
    )

    assert not report.up_to_date  # the tag moved from v1 to v2
    assert report.blobs_skipped == [shared]
    assert sorted(report.blobs_uploaded) == sorted(set(v2.blobs) - {shared})
    assert_stored(client, repository, "latest", v2)


def test_registry_to_registry_in_one_server_mounts_blobs(client: RegistryClient, tmp_path: Path) -> None:
    image = build_image(layers=2)
    origin, copy = unique("origin"), unique("copy")
    copy_layout(write_oci_layout(tmp_path / "layout", [(image, "v1")]), "x:v1", Destination(client, origin))

    report = copy_image(
        RegistrySource(client, parse_image(f"{origin}:v1")), Destination(client, copy, "stable")
    )

    assert sorted(report.blobs_mounted) == sorted(image.blobs)
    assert report.blobs_uploaded == []
    assert_stored(client, copy, "stable", image)
    again = copy_image(
        RegistrySource(client, parse_image(f"{origin}:v1")), Destination(client, copy, "stable")
    )
    assert again.up_to_date


def test_registry_to_another_registry(
    client: RegistryClient, other_client: RegistryClient, tmp_path: Path
) -> None:
    image = build_image(layers=2, extra_layer_bytes=150 * 1024)
    repository = unique("cross")
    copy_layout(
        write_oci_layout(tmp_path / "layout", [(image, "v1")]), "x:v1", Destination(client, repository)
    )

    with RegistryClient(client.host) as source_client:
        source = RegistrySource(source_client, parse_image(f"{repository}:v1"), temp_dir=tmp_path)
        report = copy_image(source, Destination(other_client, "mirrored/app"))

    assert sorted(report.blobs_uploaded) == sorted(image.blobs)
    assert report.blobs_mounted == []
    assert_stored(other_client, "mirrored/app", "v1", image)
    assert list(tmp_path.glob("blob-*")) == []  # staged blobs are gone
    again = copy_image(
        RegistrySource(client, parse_image(f"{repository}:v1")), Destination(other_client, "mirrored/app")
    )
    assert again.up_to_date


def test_source_by_digest(client: RegistryClient, other_client: RegistryClient, tmp_path: Path) -> None:
    image = build_image()
    repository = unique("bydigest")
    copy_layout(
        write_oci_layout(tmp_path / "layout", [(image, "v1")]), "x:v1", Destination(client, repository)
    )
    source = RegistrySource(client, parse_image(f"{repository}@{image.digest}"))
    report = copy_image(source, Destination(other_client, repository, "pinned"))
    assert report.digest == image.digest
    assert_stored(other_client, repository, "pinned", image)


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_oci_layout_tarball(client: RegistryClient, tmp_path: Path, compress: bool) -> None:
    image = build_image(layers=3)
    layout = write_oci_layout(tmp_path / "layout", [(image, "2.0")])
    archive = tar_directory(layout, tmp_path / "image.tar", compress=compress)
    repository = unique("tarball")

    report = copy_layout(archive, "tools:2.0", Destination(client, repository))
    assert sorted(report.blobs_uploaded) == sorted(image.blobs)
    assert_stored(client, repository, "2.0", image)
    assert copy_layout(archive, "tools:2.0", Destination(client, repository)).up_to_date


def test_docker_save_archive(client: RegistryClient, tmp_path: Path) -> None:
    image = build_image(layers=2)
    archive = write_docker_archive(tmp_path / "saved.tar", image, ["myapp:1.0"])
    repository = unique("docker-save")

    report = copy_layout(archive, "myapp:1.0", Destination(client, repository))

    manifest = client.get_manifest(repository, "1.0")
    document = json.loads(manifest.content)
    assert manifest.media_type == OCI_MANIFEST
    assert document["config"] == {
        "mediaType": OCI_CONFIG,
        "digest": sha256_digest(image.config),
        "size": len(image.config),
    }
    diff_ids = json.loads(image.config)["rootfs"]["diff_ids"]
    assert [layer["digest"] for layer in document["layers"]] == diff_ids
    assert {layer["mediaType"] for layer in document["layers"]} == {OCI_LAYER}
    for layer, content in zip(document["layers"], image.uncompressed_layers, strict=True):
        out = io.BytesIO()
        client.download_blob(repository, layer["digest"], out)
        assert out.getvalue() == content
    assert len(report.blobs_uploaded) == 3
    # Rebuilding the manifest is deterministic: the second run finds the same digest.
    assert copy_layout(archive, "myapp:1.0", Destination(client, repository)).up_to_date


def test_docker_save_archive_without_tag_takes_its_repo_tag(client: RegistryClient, tmp_path: Path) -> None:
    image = build_image()
    archive = write_docker_archive(tmp_path / "saved.tar", image, ["registry.example/team/app:3.1"])
    repository = unique("docker-save-tag")
    report = copy_layout(archive, "app", Destination(client, repository))
    assert report.destination.endswith(f"{repository}:3.1")
    assert client.tags(repository) == ["3.1"]


def test_multi_arch_index(client: RegistryClient, tmp_path: Path) -> None:
    amd64 = build_image(architecture="amd64")
    arm64 = build_image(architecture="arm64", shared_layers=amd64.uncompressed_layers)
    index = build_index([amd64, arm64])
    layout = write_oci_layout(tmp_path / "layout", [(index, "multi")])
    repository = unique("multiarch")

    report = copy_layout(layout, "base:multi", Destination(client, repository))

    assert_stored(client, repository, "multi", index)
    assert sorted(report.manifests_pushed) == sorted([amd64.digest, arm64.digest, index.digest])
    assert sorted(report.blobs_uploaded) == sorted(index.blobs)  # the shared layer once
    assert copy_layout(layout, "base:multi", Destination(client, repository)).up_to_date

    # And on to another repository through the registry: children by digest, blobs mounted.
    mirror = unique("multiarch-mirror")
    copied = copy_image(
        RegistrySource(client, parse_image(f"{repository}:multi")), Destination(client, mirror)
    )
    assert sorted(copied.blobs_mounted) == sorted(index.blobs)
    assert_stored(client, mirror, "multi", index)


def test_docker_manifest_list(client: RegistryClient, other_client: RegistryClient, tmp_path: Path) -> None:
    index = build_index(
        [build_image(docker_media_types=True), build_image(docker_media_types=True, architecture="arm64")],
        docker_media_types=True,
    )
    repository = unique("manifest-list")
    copy_layout(
        write_oci_layout(tmp_path / "layout", [(index, "v1")]), "x:v1", Destination(client, repository)
    )
    copy_image(RegistrySource(client, parse_image(f"{repository}:v1")), Destination(other_client, repository))
    assert_stored(other_client, repository, "v1", index)


def test_index_child_already_present_is_not_sent_again(client: RegistryClient, tmp_path: Path) -> None:
    amd64, arm64 = build_image(), build_image(architecture="arm64")
    repository = unique("partial")
    copy_layout(
        write_oci_layout(tmp_path / "single", [(amd64, "amd64")]), "x:amd64", Destination(client, repository)
    )

    index = build_index([amd64, arm64])
    report = copy_layout(
        write_oci_layout(tmp_path / "multi", [(index, "all")]), "x:all", Destination(client, repository)
    )

    assert report.manifests_skipped == [amd64.digest]
    assert sorted(report.manifests_pushed) == sorted([arm64.digest, index.digest])
    assert sorted(report.blobs_uploaded) == sorted(arm64.blobs)
    assert_stored(client, repository, "all", index)


def test_unnamed_multi_platform_layout_is_one_index(client: RegistryClient, tmp_path: Path) -> None:
    amd64, arm64 = build_image(), build_image(architecture="arm64")
    layout = write_oci_layout(tmp_path / "layout", [(amd64, None), (arm64, None)])
    repository = unique("unnamed")

    report = copy_layout(layout, "base:3.11", Destination(client, repository))

    stored = client.get_manifest(repository, "3.11")
    assert stored.content == (layout / "index.json").read_bytes()
    assert report.digest == stored.digest
    assert [child.digest for child in stored.references()] == [amd64.digest, arm64.digest]
    for image in (amd64, arm64):
        assert client.get_manifest(repository, image.digest).content == image.manifest


def test_tag_selection_in_a_layout(client: RegistryClient, tmp_path: Path) -> None:
    v1, v2 = build_image(), build_image()
    layout = write_oci_layout(tmp_path / "layout", [(v1, "v1"), (v2, "docker.io/library/app:v2")])
    repository = unique("tags")

    report = copy_layout(layout, "app:v2", Destination(client, repository, "current"))
    assert report.digest == v2.digest
    assert client.tags(repository) == ["current"]

    with pytest.raises(LayoutError, match=r"several images \(tags: docker.io/library/app:v2, v1\)"):
        copy_layout(layout, "app", Destination(client, repository))
    with pytest.raises(LayoutError, match="no image tagged 'v3'"):
        copy_layout(layout, "app:v3", Destination(client, repository))


def test_single_image_layout_without_tag_uses_its_annotation(client: RegistryClient, tmp_path: Path) -> None:
    image = build_image()
    layout = write_oci_layout(tmp_path / "layout", [(image, "1.2.3")])
    repository = unique("annotation")
    report = copy_layout(layout, "app", Destination(client, repository))
    assert report.destination.endswith(":1.2.3")
    assert_stored(client, repository, "1.2.3", image)


def test_tag_moves_to_the_new_digest(client: RegistryClient, tmp_path: Path) -> None:
    old, new = build_image(), build_image()
    repository = unique("moves")
    copy_layout(
        write_oci_layout(tmp_path / "old", [(old, "v")]), "a:v", Destination(client, repository, "stable")
    )
    report = copy_layout(
        write_oci_layout(tmp_path / "new", [(new, "v")]), "a:v", Destination(client, repository, "stable")
    )
    assert not report.up_to_date
    assert_stored(client, repository, "stable", new)


def test_known_blobs_are_mounted_between_images(client: RegistryClient, tmp_path: Path) -> None:
    base = build_image()
    first = build_image(shared_layers=base.uncompressed_layers)
    second = build_image(shared_layers=base.uncompressed_layers)
    shared = first.document()["layers"][0]["digest"]
    known: dict[str, str] = {}
    destination_a, destination_b = unique("known-a"), unique("known-b")

    copy_layout(
        write_oci_layout(tmp_path / "a", [(first, "v")]),
        "a:v",
        Destination(client, destination_a),
        known_blobs=known,
    )
    report = copy_layout(
        write_oci_layout(tmp_path / "b", [(second, "v")]),
        "b:v",
        Destination(client, destination_b),
        known_blobs=known,
    )

    assert report.blobs_mounted == [shared]
    assert shared not in report.blobs_uploaded
    assert_stored(client, destination_b, "v", second)


# -- failures ----------------------------------------------------------------------------------------


def test_missing_layout_path(client: RegistryClient, tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=r"source layout .*nowhere.tar does not exist"):
        copy_layout(tmp_path / "nowhere.tar", "a:v", Destination(client, unique("missing")))


def test_directory_that_is_not_a_layout(client: RegistryClient, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="neither an OCI image layout"):
        copy_layout(tmp_path / "empty", "a:v", Destination(client, unique("empty")))


def test_file_that_is_not_a_tar(client: RegistryClient, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(LayoutError, match="neither a directory nor a readable tar"):
        copy_layout(tmp_path / "notes.txt", "a:v", Destination(client, unique("text")))


def test_missing_source_image_in_registry(client: RegistryClient) -> None:
    with pytest.raises(NotFoundError, match=r"source image .*/test/absent:1.0 not found"):
        copy_image(
            RegistrySource(client, parse_image("test/absent:1.0")), Destination(client, unique("absent"))
        )


def test_unreachable_source_registry(client: RegistryClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        RegistryClient(f"127.0.0.1:{port}") as nowhere,
        pytest.raises(RegistryUnavailableError, match="no answer"),
    ):
        copy_image(RegistrySource(nowhere, parse_image("a/b:1")), Destination(client, unique("unreachable")))


def test_blob_missing_from_layout_leaves_no_tag(client: RegistryClient, tmp_path: Path) -> None:
    image = build_image(layers=2)
    layout = write_oci_layout(tmp_path / "layout", [(image, "v")])
    last_layer = image.document()["layers"][-1]["digest"]
    (layout / "blobs" / "sha256" / last_layer.removeprefix("sha256:")).unlink()
    repository = unique("incomplete")

    with pytest.raises(LayoutError, match=f"blob {last_layer} is missing from the layout"):
        copy_layout(layout, "a:v", Destination(client, repository))
    assert client.head_manifest(repository, "v") is None


def test_corrupt_blob_in_layout_is_refused(client: RegistryClient, tmp_path: Path) -> None:
    image = build_image(extra_layer_bytes=100 * 1024)
    layout = write_oci_layout(tmp_path / "layout", [(image, "v")])
    layer = image.document()["layers"][0]["digest"]
    path = layout / "blobs" / "sha256" / layer.removeprefix("sha256:")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    repository = unique("corrupt")

    with pytest.raises(DigestError, match="the source content hashes to"):
        copy_layout(layout, "a:v", Destination(client, repository))
    assert client.head_manifest(repository, "v") is None
    assert not client.blob_exists(repository, layer)


def test_corrupt_manifest_in_layout(client: RegistryClient, tmp_path: Path) -> None:
    image = build_image()
    layout = write_oci_layout(tmp_path / "layout", [(image, "v")])
    manifest_path = layout / "blobs" / "sha256" / image.digest.removeprefix("sha256:")
    manifest_path.write_bytes(image.manifest + b" ")
    with pytest.raises(LayoutError, match="manifest content has digest"):
        copy_layout(layout, "a:v", Destination(client, unique("badmanifest")))


def test_layout_can_be_moved_after_copy(client: RegistryClient, tmp_path: Path) -> None:
    # The copy holds no reference to the layout once done (the tar is closed).
    image = build_image()
    archive = tar_directory(write_oci_layout(tmp_path / "layout", [(image, "v")]), tmp_path / "i.tar")
    copy_layout(archive, "a:v", Destination(client, unique("closed")))
    shutil.move(archive, tmp_path / "moved.tar")
    assert (tmp_path / "moved.tar").is_file()
