"""Settings of registry-prepopulate: the destination registry from the environment, the images from YAML.

The YAML file (`REGISTRY_PREPOPULATE_CONFIG`) is the chart's `containerRegistry.prepopulate` list,
either bare or under a `prepopulate` key:

```yaml
prepopulate:
  - image: substra/substra-tools:0.20.0-nvidiacuda11.8.0-base-ubuntu22.04-python3.10
    sourceRegistry: ghcr.io          # optional; without it the image name says (Docker Hub by default)
    sourceScheme: https              # optional, https by default
    dstImage: substra-tools:latest   # optional; <dstImage or image> names the destination
    dockerConfig: /secrets/config.json  # optional pull credentials (the chart's dockerConfigSecretName)
  - image: python-base:3.11
    sourceLayout: images/python-base.tar  # an OCI layout directory or an OCI/docker-save tar
```

Relative `sourceLayout` and `dockerConfig` paths are relative to the YAML file.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from backend_common.registry.reference import DOCKER_HUB_DOMAIN, api_host, parse_image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry_prepopulate.errors import PrepopulateError

DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024


class ConfigError(PrepopulateError):
    pass


class PrepopulateSettings(BaseSettings):
    """Environment of the command (names shared with the rest of the backend where they exist)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    registry: str = Field(validation_alias="REGISTRY")
    registry_scheme: Literal["http", "https"] = Field(default="http", validation_alias="REGISTRY_SCHEME")
    registry_username: str | None = Field(default=None, validation_alias="REGISTRY_USERNAME")
    registry_password: SecretStr | None = Field(default=None, validation_alias="REGISTRY_PASSWORD")
    config_path: Path = Field(validation_alias="REGISTRY_PREPOPULATE_CONFIG")
    # Like the reference's dockerize init container: wait for the registry, but not forever.
    wait_attempts: int = Field(default=60, ge=1, validation_alias="REGISTRY_WAIT_ATTEMPTS")
    wait_interval_seconds: float = Field(default=1.0, ge=0, validation_alias="REGISTRY_WAIT_INTERVAL_SECONDS")
    http_timeout_seconds: float = Field(default=60.0, gt=0, validation_alias="REGISTRY_HTTP_TIMEOUT_SECONDS")
    # Blobs above this size are sent in PATCH chunks of this size; 0 sends every blob in one PUT.
    upload_chunk_size: int = Field(
        default=DEFAULT_CHUNK_SIZE, ge=0, validation_alias="REGISTRY_UPLOAD_CHUNK_SIZE"
    )
    # Where registry-to-registry copies stage blobs (default: the system temp directory).
    temp_dir: Path | None = Field(default=None, validation_alias="REGISTRY_PREPOPULATE_TMPDIR")

    @field_validator("registry")
    @classmethod
    def _host_port(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value:
            raise ValueError("must name the destination registry as host:port")
        if "://" in value:
            raise ValueError("give host:port only; the scheme goes in REGISTRY_SCHEME")
        return value

    @property
    def password(self) -> str | None:
        return self.registry_password.get_secret_value() if self.registry_password else None


class PrepopulateItem(BaseModel):
    """One image to copy."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    image: str
    source_registry: str | None = Field(default=None, alias="sourceRegistry")
    source_scheme: Literal["http", "https"] = Field(default="https", alias="sourceScheme")
    source_layout: Path | None = Field(default=None, alias="sourceLayout")
    dst_image: str | None = Field(default=None, alias="dstImage")
    docker_config: Path | None = Field(default=None, alias="dockerConfig")
    # Accepted so the chart's list can be used verbatim; a Kubernetes secret cannot be read here
    # (mount it and point `dockerConfig` at its config.json).
    docker_config_secret_name: str | None = Field(default=None, alias="dockerConfigSecretName")

    @field_validator("image", "dst_image")
    @classmethod
    def _valid_reference(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_image(value)
            except PrepopulateError as exc:  # pydantic reports ValueErrors only
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> PrepopulateItem:
        if self.source_layout is not None and self.source_registry is not None:
            raise ValueError("give either sourceRegistry or sourceLayout, not both")
        return self


def load_items(path: Path) -> list[PrepopulateItem]:
    """The items of the YAML file, relative paths made relative to the file; raises ConfigError."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the prepopulate config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"the prepopulate config {path} is not valid YAML: {exc}") from None
    if isinstance(document, dict) and "prepopulate" in document:
        document = document["prepopulate"]
    if document is None:
        return []
    if not isinstance(document, list):
        raise ConfigError(f"{path}: expected a list of images, or one under a `prepopulate` key")
    items = []
    for position, raw in enumerate(document):
        try:
            item = PrepopulateItem.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{path}: item {position}: {format_validation_error(exc)}") from None
        items.append(_relative_to(item, path.parent))
    return items


def _relative_to(item: PrepopulateItem, base: Path) -> PrepopulateItem:
    updates: dict[str, Path] = {}
    if item.source_layout is not None and not item.source_layout.is_absolute():
        updates["source_layout"] = base / item.source_layout
    if item.docker_config is not None and not item.docker_config.is_absolute():
        updates["docker_config"] = base / item.docker_config
    return item.model_copy(update=updates) if updates else item


def format_validation_error(exc: ValidationError) -> str:
    """`FIELD: message` pairs, naming the environment variable or YAML key the user wrote."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def docker_credentials(config_path: Path, registry_host: str) -> tuple[str, str] | None:
    """(username, password) for `registry_host` in a Docker config.json, or None when it has none."""
    try:
        document: Any = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the docker config {config_path}: {exc}") from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in _auth_keys(registry_host):
        entry = auths.get(key)
        if isinstance(entry, dict):
            return _entry_credentials(entry, config_path, key)
    return None


def _auth_keys(host: str) -> list[str]:
    # The Docker CLI writes bare hosts, URLs, and Docker Hub's historical v1 URL.
    hosts = [host, api_host(host)]
    if host == DOCKER_HUB_DOMAIN or api_host(host) != host:
        hosts.append("index.docker.io")
    keys = []
    for name in hosts:
        keys += [name, f"https://{name}", f"http://{name}", f"https://{name}/v1/", f"https://{name}/v2/"]
    return keys


def _entry_credentials(entry: dict[str, Any], config_path: Path, key: str) -> tuple[str, str]:
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            decoded = base64.b64decode(entry["auth"]).decode()
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{config_path}: the auth of {key} is not base64 of user:password") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ConfigError(f"{config_path}: the auth of {key} is not base64 of user:password")
        return username, password
    if isinstance(entry.get("username"), str):
        return entry["username"], str(entry.get("password", ""))
    raise ConfigError(f"{config_path}: the entry of {key} has neither auth nor username")
