"""Pytest plugin: a real container registry (Debian `docker-registry`, distribution 2.8) for tests.

Fixtures: `docker_registry` (session; anonymous) and `docker_registry_auth` (session; htpasswd Basic
authentication). Each server listens on 127.0.0.1 on a port chosen free at start, keeps its blobs
in a temporary directory (deletes enabled) and is stopped by PID at the end of the session.
`running_docker_registry()` starts more servers for tests that need several. Tests using them get
the `registry` marker (`-m "not registry"` skips them).

The binary comes from `apt-get install -y docker-registry` (`make test` installs it); without it
the fixtures fail rather than skip, so a missing package cannot pass for a green run.

`build_image`, `build_index`, `write_oci_layout`, `write_docker_archive` and `tar_directory` make
real images (gzip tar layers, config with diff_ids, manifests) without network or tools.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend_common.testing.processes import die_with_parent, free_port, stop_process

REGISTRY_BINARY = "/usr/bin/docker-registry"
START_TIMEOUT_SECONDS = 20.0
START_ATTEMPTS = 3  # a port picked free may be taken by someone else before the registry binds it
LOG_TAIL_LINES = 40
TEST_USERNAME = "substra"
TEST_PASSWORD = "substra-registry-test"  # noqa: S105 (a throwaway server's credentials)
# The registry checks the bcrypt hash on every request: the minimum cost keeps tests fast.
BCRYPT_COST = 4


@dataclass(frozen=True)
class DockerRegistry:
    """A running registry: `host_port` is what `REGISTRY` expects, `url` its base URL."""

    host_port: str
    url: str
    pid: int
    directory: Path
    username: str | None = None
    password: str | None = None


class DockerRegistryStartError(RuntimeError):
    pass


class _RegistryExitedError(DockerRegistryStartError):
    pass


def registry_binary() -> Path:
    found = shutil.which("docker-registry")
    return Path(found) if found else Path(REGISTRY_BINARY)


def _bcrypt_hash(password: str) -> str:
    """A bcrypt hash (the only scheme the registry's htpasswd accepts) without Python deps."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd:
        # `-n` prints `user:hash`; the user is irrelevant here.
        output = subprocess.run(
            [htpasswd, "-nbB", "-C", str(BCRYPT_COST), "user", password],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return output.strip().split(":", 1)[1]
    with warnings.catch_warnings():
        # `crypt` is deprecated (gone in 3.13) but glibc's libxcrypt does bcrypt, which is all we need;
        # imported here so that sessions not using authentication never touch it.
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = importlib.import_module("crypt")
    method = getattr(crypt, "METHOD_BLOWFISH", None)
    if method is None or method not in crypt.methods:
        raise DockerRegistryStartError(
            "cannot make a bcrypt htpasswd entry: install apache2-utils (htpasswd) "
            "or use a libc whose crypt() supports bcrypt"
        )
    return str(crypt.crypt(password, crypt.mksalt(method, rounds=2**BCRYPT_COST)))


def _write_config(directory: Path, port: int, credentials: tuple[str, str] | None) -> Path:
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "data")},
            "delete": {"enabled": True},
            # The purger would otherwise wake up and scan the (throwaway) storage in the background.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        # A fixed secret silences the "no secret configured" warning and makes upload state portable.
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if credentials is not None:
        user, password = credentials
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(f"{user}:{_bcrypt_hash(password)}\n")
        config["auth"] = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}}
    path = directory / "config.yml"
    # JSON is valid YAML; the registry reads it as such.
    path.write_text(json.dumps(config, indent=2))
    return path


def _log_tail(directory: Path) -> str:
    path = directory / "registry.log"
    if not path.is_file():
        return "(no registry log)"
    lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return f"--- registry.log (last {len(lines)} lines) ---\n" + "\n".join(lines)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/v2/", timeout=1)  # noqa: S310 (a local http URL we built)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # authentication required: the API is up
    except OSError:
        return False
    return True


def _start_once(
    binary: Path, directory: Path, credentials: tuple[str, str] | None, port: int | None
) -> tuple[subprocess.Popen[bytes], DockerRegistry]:
    data = directory / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir()
    port = port or free_port()
    config = _write_config(directory, port, credentials)
    with (directory / "registry.log").open("wb") as output:
        process = subprocess.Popen(
            [str(binary), "serve", str(config)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C reaches pytest, which then stops the registry cleanly.
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
    host_port = f"127.0.0.1:{port}"
    registry = DockerRegistry(
        host_port=host_port,
        url=f"http://{host_port}",
        pid=process.pid,
        directory=directory,
        username=credentials[0] if credentials else None,
        password=credentials[1] if credentials else None,
    )
    return process, registry


def _wait_ready(process: subprocess.Popen[bytes], registry: DockerRegistry) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _RegistryExitedError(f"docker-registry exited with status {process.returncode}")
        if _answers(registry.url):
            return
        time.sleep(0.05)
    raise DockerRegistryStartError(f"{registry.url}/v2/ did not answer in {START_TIMEOUT_SECONDS} s")


@contextmanager
def running_docker_registry(
    credentials: tuple[str, str] | None = None, port: int | None = None
) -> Iterator[DockerRegistry]:
    """A throwaway registry for the duration of the block; its directory is removed afterwards.

    `credentials` (user, password) turns on htpasswd Basic authentication; `port` fixes the port
    (default: one found free, retried on another if taken meanwhile).
    """
    binary = registry_binary()
    if not binary.is_file():
        raise DockerRegistryStartError(
            f"no docker-registry binary at {binary}: install it with `apt-get install -y docker-registry`"
        )
    directory = Path(tempfile.mkdtemp(prefix="docker-registry-"))
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            process, registry = _start_once(binary, directory, credentials, port)
            try:
                _wait_ready(process, registry)
            except DockerRegistryStartError as exc:
                stop_process(process)
                if isinstance(exc, _RegistryExitedError) and attempt < START_ATTEMPTS and port is None:
                    continue  # most likely the port was taken meanwhile: retry on another one
                raise DockerRegistryStartError(f"{exc}\n{_log_tail(directory)}") from None
            except BaseException:
                stop_process(process)
                raise
            try:
                yield registry
            finally:
                stop_process(process)
            return
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_registry() -> Iterator[DockerRegistry]:
    with running_docker_registry() as registry:
        yield registry


@pytest.fixture(scope="session")
def docker_registry_auth() -> Iterator[DockerRegistry]:
    with running_docker_registry(credentials=(TEST_USERNAME, TEST_PASSWORD)) as registry:
        yield registry


# -- real images built in memory (no network, no tools) ------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BuiltImage:
    """An image manifest or index with every blob and child manifest it needs, all in memory."""

    media_type: str
    manifest: bytes
    blobs: dict[str, bytes]  # digest -> content, for the whole tree
    manifests: dict[str, tuple[str, bytes]]  # child manifests of an index: digest -> (media type, bytes)
    uncompressed_layers: tuple[bytes, ...] = ()  # image manifests only: the layer tars before gzip
    config: bytes = b""
    platform: dict[str, str] | None = None

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def is_index(self) -> bool:
        return self.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST)

    def document(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.manifest)
        return value

    def descriptor(self) -> dict[str, Any]:
        descriptor: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.manifest),
        }
        if self.platform:
            descriptor["platform"] = self.platform
        return descriptor


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def build_image(
    files: dict[str, bytes] | None = None,
    *,
    layers: int = 1,
    extra_layer_bytes: int = 0,
    architecture: str = "amd64",
    os_name: str = "linux",
    docker_media_types: bool = False,
    shared_layers: tuple[bytes, ...] = (),
) -> BuiltImage:
    """A runnable-looking image: `layers` gzip tar layers holding `files` plus a random file each.

    The random file makes every image unique, so tests sharing one registry never see each other's
    blobs. `extra_layer_bytes` of random data make big (incompressible) layers. `shared_layers`
    (uncompressed tars, e.g. another image's `uncompressed_layers`) come first, as a common base.
    """
    uncompressed = list(shared_layers)
    for position in range(layers):
        content = dict(files or {"hello.txt": b"hello\n"})
        content[f"nonce-{position}"] = secrets.token_bytes(16) + secrets.token_bytes(extra_layer_bytes)
        uncompressed.append(_tar(content))
    # mtime=0: the same tar always gzips to the same bytes, so a shared layer keeps its digest.
    compressed = [gzip.compress(layer, mtime=0) for layer in uncompressed]
    config = json.dumps(
        {
            "architecture": architecture,
            "os": os_name,
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer) for layer in uncompressed]},
        },
        sort_keys=True,
    ).encode()
    layer_type = DOCKER_LAYER_GZIP if docker_media_types else OCI_LAYER_GZIP
    media_type = DOCKER_MANIFEST if docker_media_types else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": DOCKER_CONFIG if docker_media_types else OCI_CONFIG,
            "digest": sha256_digest(config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": layer_type, "digest": sha256_digest(layer), "size": len(layer)}
            for layer in compressed
        ],
    }
    blobs = {sha256_digest(blob): blob for blob in [config, *compressed]}
    return BuiltImage(
        media_type=media_type,
        manifest=json.dumps(manifest, indent=2).encode(),
        blobs=blobs,
        manifests={},
        uncompressed_layers=tuple(uncompressed),
        config=config,
        platform={"architecture": architecture, "os": os_name},
    )


def build_index(images: list[BuiltImage], *, docker_media_types: bool = False) -> BuiltImage:
    """A multi-platform index listing `images` (each keeps its platform)."""
    media_type = DOCKER_MANIFEST_LIST if docker_media_types else OCI_INDEX
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [image.descriptor() for image in images],
    }
    blobs: dict[str, bytes] = {}
    manifests: dict[str, tuple[str, bytes]] = {}
    for image in images:
        blobs.update(image.blobs)
        manifests.update(image.manifests)
        manifests[image.digest] = (image.media_type, image.manifest)
    return BuiltImage(
        media_type=media_type,
        manifest=json.dumps(document, indent=2).encode(),
        blobs=blobs,
        manifests=manifests,
    )


def write_oci_layout(directory: Path, images: list[tuple[BuiltImage, str | None]]) -> Path:
    """An OCI image layout holding `images`, each named by its ref.name annotation (None: unnamed)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    entries = []
    for image, ref_name in images:
        contents = {**image.blobs, **{digest: body for digest, (_, body) in image.manifests.items()}}
        contents[image.digest] = image.manifest
        for digest, content in contents.items():
            (blobs / digest.removeprefix("sha256:")).write_bytes(content)
        descriptor = image.descriptor()
        if ref_name is not None:
            descriptor["annotations"] = {REF_NAME_ANNOTATION: ref_name}
        entries.append(descriptor)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    (directory / "index.json").write_text(json.dumps(index, indent=2))
    return directory


def write_docker_archive(path: Path, image: BuiltImage, repo_tags: list[str]) -> Path:
    """A legacy `docker save` tar: manifest.json, `<config hex>.json`, `<id>/layer.tar` (uncompressed)."""
    config_name = sha256_digest(image.config).removeprefix("sha256:") + ".json"
    files = {config_name: image.config}
    layer_names = []
    for layer in image.uncompressed_layers:
        name = f"{hashlib.sha256(layer).hexdigest()}/layer.tar"
        files[name] = layer
        layer_names.append(name)
    entry = {"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}
    files["manifest.json"] = json.dumps([entry]).encode()
    path.write_bytes(_tar(files))
    return path


def tar_directory(directory: Path, archive: Path, *, compress: bool = False) -> Path:
    """`tar -c[z]f archive -C directory .`: members are named `./...`, as tar writes them."""
    with tarfile.open(archive, "w:gz" if compress else "w") as tar:
        tar.add(directory, arcname=".")
    return archive


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "registry: needs the docker-registry server started by the tests")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"docker_registry", "docker_registry_auth"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.registry)
