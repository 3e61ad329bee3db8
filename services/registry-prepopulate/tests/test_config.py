"""Settings, the YAML item list, image references and Docker config credentials."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from backend_common.registry.client import RegistryClient
from backend_common.registry.reference import (
    ImageReferenceError,
    parse_image,
    resolve_remote,
    tag_from_ref_name,
)
from pydantic import ValidationError
from registry_prepopulate.__main__ import destination_for
from registry_prepopulate.settings import (
    ConfigError,
    PrepopulateItem,
    PrepopulateSettings,
    docker_credentials,
    load_items,
)

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "repository", "tag", "digest"),
    [
        ("python", "python", None, None),
        ("python:3.11-slim", "python", "3.11-slim", None),
        ("substra/substra-tools:0.20.0", "substra/substra-tools", "0.20.0", None),
        ("localhost:5000/app", "localhost:5000/app", None, None),
        ("localhost:5000/app:1", "localhost:5000/app", "1", None),
        (f"app@{DIGEST}", "app", None, DIGEST),
        (f"ghcr.io/a/b:1@{DIGEST}", "ghcr.io/a/b", "1", DIGEST),
    ],
)
def test_parse_image(text: str, repository: str, tag: str | None, digest: str | None) -> None:
    parsed = parse_image(text)
    assert (parsed.repository, parsed.tag, parsed.digest) == (repository, tag, digest)
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["", "Upper/case", "a:b:c", "app@sha256:123", "app:", "a//b", "-a"])
def test_invalid_images(text: str) -> None:
    with pytest.raises(ImageReferenceError):
        parse_image(text)


@pytest.mark.parametrize(
    ("image", "source_registry", "host", "repository"),
    [
        ("python:3.11", None, "docker.io", "library/python"),
        ("substra/substra-tools:0.20.0", None, "docker.io", "substra/substra-tools"),
        ("substra/substra-tools:0.20.0", "ghcr.io", "ghcr.io", "substra/substra-tools"),
        ("substra-tools:0.20.0", "ghcr.io/substra", "ghcr.io", "substra/substra-tools"),
        ("ghcr.io/substra/substra-tools:1", None, "ghcr.io", "substra/substra-tools"),
        ("team/app:1", "127.0.0.1:5000", "127.0.0.1:5000", "team/app"),
        ("app:1", "registry", "registry", "app"),
        ("python:3.11", "docker.io", "docker.io", "library/python"),
    ],
)
def test_resolve_remote(image: str, source_registry: str | None, host: str, repository: str) -> None:
    resolved_host, reference = resolve_remote(image, source_registry)
    assert (resolved_host, reference.repository) == (host, repository)


def test_docker_hub_uses_its_api_host() -> None:
    with RegistryClient("docker.io", scheme="https") as client:
        assert client.base_url == "https://registry-1.docker.io"


@pytest.mark.parametrize(
    ("ref_name", "tag"),
    [("v1", "v1"), ("docker.io/library/app:v2", "v2"), ("localhost:5000/app", None), ("app@" + DIGEST, None)],
)
def test_tag_from_ref_name(ref_name: str, tag: str | None) -> None:
    assert tag_from_ref_name(ref_name) == tag


def test_destination_is_dst_image_or_image() -> None:
    with RegistryClient("127.0.0.1:5000") as client:
        plain = destination_for(PrepopulateItem(image="substra/tools:0.20"), client)
        assert (plain.repository, plain.tag) == ("substra/tools", "0.20")
        renamed = destination_for(PrepopulateItem(image="python:3.11", dstImage="base/python"), client)
        assert (renamed.repository, renamed.tag) == ("base/python", None)  # None: the source's tag
        retagged = destination_for(
            PrepopulateItem(image="python:3.11", dstImage="base/python:stable"), client
        )
        assert (retagged.repository, retagged.tag) == ("base/python", "stable")
        # Like kaniko's --destination, a registry host in the image name stays part of the path.
        hosted = destination_for(PrepopulateItem(image="ghcr.io/substra/tools:1"), client)
        assert hosted.repository == "ghcr.io/substra/tools"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REGISTRY", "registry.local:5000")
    monkeypatch.setenv("REGISTRY_SCHEME", "https")
    monkeypatch.setenv("REGISTRY_USERNAME", "admin")
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret")
    monkeypatch.setenv("REGISTRY_PREPOPULATE_CONFIG", str(tmp_path / "c.yaml"))
    monkeypatch.setenv("REGISTRY_UPLOAD_CHUNK_SIZE", "0")
    settings = PrepopulateSettings()
    assert settings.registry == "registry.local:5000"
    assert settings.registry_scheme == "https"
    assert (settings.registry_username, settings.password) == ("admin", "s3cret")
    assert "s3cret" not in repr(settings)
    assert settings.config_path == tmp_path / "c.yaml"
    assert settings.upload_chunk_size == 0
    assert settings.wait_attempts == 60


def test_settings_reject_a_url_as_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY", "http://127.0.0.1:5000")
    monkeypatch.setenv("REGISTRY_PREPOPULATE_CONFIG", "c.yaml")
    with pytest.raises(ValidationError, match="REGISTRY_SCHEME"):
        PrepopulateSettings()


def test_load_items_forms_and_relative_paths(tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text("- image: a:1\n  sourceLayout: layouts/a\n- image: b:2\n  sourceRegistry: ghcr.io\n")
    items = load_items(bare)
    assert [item.image for item in items] == ["a:1", "b:2"]
    assert items[0].source_layout == tmp_path / "layouts" / "a"
    assert items[1].source_scheme == "https"

    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text(
        "prepopulate:\n"
        "  - image: c:3\n"
        "    sourceLayout: /abs/c.tar\n"
        "    dockerConfigSecretName: pull-secret\n"
    )
    (item,) = load_items(wrapped)
    assert item.source_layout == Path("/abs/c.tar")
    assert item.docker_config_secret_name == "pull-secret"

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_items(empty) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("image: a", "expected a list of images"),
        ("- image: a\n  typo: 1", "item 0: typo"),
        ("- sourceLayout: x", "item 0: image: Field required"),
        ("- image: a\n  sourceScheme: ftp", "sourceScheme"),
        ("- [unclosed", "not valid YAML"),
    ],
)
def test_load_items_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_items(path)


def test_docker_credentials(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    encoded = base64.b64encode(b"robot:pa:ss").decode()
    config.write_text(
        json.dumps(
            {
                "auths": {
                    "ghcr.io": {"auth": encoded},
                    "https://registry.example:5000": {"username": "u", "password": "p"},
                    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:token").decode()},
                }
            }
        )
    )
    assert docker_credentials(config, "ghcr.io") == ("robot", "pa:ss")
    assert docker_credentials(config, "registry.example:5000") == ("u", "p")
    assert docker_credentials(config, "docker.io") == ("hub", "token")
    assert docker_credentials(config, "quay.io") is None

    config.write_text(json.dumps({"auths": {"ghcr.io": {"auth": "bm90LWEtcGFpcg=="}}}))  # "not-a-pair"
    with pytest.raises(ConfigError, match="not base64 of user:password"):
        docker_credentials(config, "ghcr.io")
    with pytest.raises(ConfigError, match="cannot read the docker config"):
        docker_credentials(tmp_path / "absent.json", "ghcr.io")
