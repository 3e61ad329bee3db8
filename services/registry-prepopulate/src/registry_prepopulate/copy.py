"""Copy one image (a manifest, or an index and every manifest it lists) into a registry.

Order matters to the registry: blobs before the manifest using them, child manifests before the
index listing them. Idempotent: a tag already at the source digest is left alone, manifests and
blobs already present are not sent again, and blobs present in another repository of the same
registry are mounted instead of uploaded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from backend_common.logging import get_logger
from backend_common.registry.client import NotFoundError, RegistryClient, RegistryError
from backend_common.registry.oci import Descriptor, Manifest
from backend_common.registry.reference import DEFAULT_TAG, ImageReference

_log = get_logger("registry_prepopulate.copy")


class ImageSource(Protocol):
    """Where an image comes from: a registry, an OCI layout, a docker archive."""

    description: str
    tag: str | None  # the tag the source knows the image by, the destination's default

    def root(self) -> Manifest: ...

    def manifest(self, descriptor: Descriptor) -> Manifest: ...

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[IO[bytes]]: ...

    def mount_origin(self) -> tuple[str, str] | None:
        """(registry base URL, repository) when blobs can be mounted from there."""
        ...


class RegistrySource:
    """An image in a registry; each blob is downloaded to an anonymous temp file, then uploaded."""

    def __init__(self, client: RegistryClient, image: ImageReference, temp_dir: Path | None = None) -> None:
        self.client = client
        self.image = image
        self.tag = image.tag
        self.description = f"{client.host}/{image}"
        self._temp_dir = temp_dir
        self._root: Manifest | None = None

    def root(self) -> Manifest:
        if self._root is None:
            try:
                self._root = self.client.get_manifest(self.image.repository, self.image.reference)
            except NotFoundError as exc:
                raise NotFoundError(f"source image {self.description} not found ({exc})") from None
        return self._root

    def manifest(self, descriptor: Descriptor) -> Manifest:
        return self.client.get_manifest(self.image.repository, descriptor.digest)

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[IO[bytes]]:
        # Anonymous: the file disappears when closed, even if the process is killed meanwhile.
        with tempfile.TemporaryFile(dir=self._temp_dir, prefix="blob-") as handle:
            self.client.download_blob(self.image.repository, descriptor.digest, handle, descriptor.size)
            handle.seek(0)
            yield handle

    def mount_origin(self) -> tuple[str, str] | None:
        return self.client.base_url, self.image.repository


@dataclass(frozen=True)
class Destination:
    client: RegistryClient
    repository: str
    tag: str | None = None  # None: the source's tag, else `latest`

    def __str__(self) -> str:
        return f"{self.client.host}/{self.repository}:{self.tag or '<source tag>'}"


@dataclass
class CopyReport:
    source: str
    destination: str
    digest: str = ""
    media_type: str = ""
    up_to_date: bool = False  # the tag already pointed at the digest: nothing was sent
    manifests_pushed: list[str] = field(default_factory=list)
    manifests_skipped: list[str] = field(default_factory=list)
    blobs_uploaded: list[str] = field(default_factory=list)
    blobs_mounted: list[str] = field(default_factory=list)
    blobs_skipped: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "digest": self.digest,
            "up_to_date": self.up_to_date,
            "manifests_pushed": len(self.manifests_pushed),
            "manifests_skipped": len(self.manifests_skipped),
            "blobs_uploaded": len(self.blobs_uploaded),
            "blobs_mounted": len(self.blobs_mounted),
            "blobs_skipped": len(self.blobs_skipped),
            "bytes_uploaded": self.bytes_uploaded,
        }


def copy_image(
    source: ImageSource, destination: Destination, *, known_blobs: dict[str, str] | None = None
) -> CopyReport:
    """Copies `source` to `destination`; `known_blobs` (digest → repository) enables mounts across calls."""
    root = source.root()
    tag = destination.tag or source.tag or DEFAULT_TAG
    target = f"{destination.client.host}/{destination.repository}:{tag}"
    report = CopyReport(source.description, target, digest=root.digest, media_type=root.media_type)
    run = _Run(
        source=source,
        client=destination.client,
        repository=destination.repository,
        report=report,
        known={} if known_blobs is None else known_blobs,
        log=_log.bind(source=source.description, destination=target),
    )

    current = run.client.head_manifest(run.repository, tag)
    if current is not None and current.digest == root.digest:
        report.up_to_date = True
        report.manifests_skipped.append(root.digest)
        run.log.info("destination tag already up to date", digest=root.digest)
        return report
    if current is not None:
        run.log.info("destination tag moves", previous=current.digest, digest=root.digest)

    _copy_contents(run, root)
    run.client.put_manifest(run.repository, tag, root)
    report.manifests_pushed.append(root.digest)
    run.log.info("manifest pushed", digest=root.digest, media_type=root.media_type, tag=tag)
    return report


@dataclass(frozen=True)
class _Run:
    """The state one copy shares between its steps."""

    source: ImageSource
    client: RegistryClient
    repository: str
    report: CopyReport
    known: dict[str, str]
    log: Any


def _copy_contents(run: _Run, manifest: Manifest) -> None:
    """Everything `manifest` refers to, so that the registry accepts it afterwards."""
    report = run.report
    if not manifest.is_index:
        for descriptor in manifest.references():
            _copy_blob(run, descriptor)
        return
    for child in manifest.references():
        if child.digest in report.manifests_pushed or child.digest in report.manifests_skipped:
            continue
        if run.client.head_manifest(run.repository, child.digest) is not None:
            # The registry only accepted it with all its blobs: nothing below it is missing.
            report.manifests_skipped.append(child.digest)
            continue
        child_manifest = run.source.manifest(child)
        _copy_contents(run, child_manifest)
        run.client.put_manifest(run.repository, child.digest, child_manifest)
        report.manifests_pushed.append(child.digest)
        run.log.info(
            "manifest pushed",
            digest=child.digest,
            media_type=child_manifest.media_type,
            platform=child.platform,
        )


def _copy_blob(run: _Run, descriptor: Descriptor) -> None:
    client, repository, digest, report = run.client, run.repository, descriptor.digest, run.report
    if digest in report.blobs_uploaded + report.blobs_mounted + report.blobs_skipped:
        return
    if descriptor.is_foreign:
        run.log.debug("foreign layer not copied", digest=digest, urls=list(descriptor.urls))
        return
    if run.known.get(digest) == repository or client.blob_exists(repository, digest):
        run.known[digest] = repository
        report.blobs_skipped.append(digest)
        run.log.debug("blob already present", digest=digest)
        return

    location: str | None = None
    mount_from = _mount_candidate(run, digest)
    if mount_from is not None:
        try:
            location = client.mount_blob(repository, digest, mount_from)
        except RegistryError as exc:  # a failed mount is only a missed shortcut
            run.log.debug("blob mount refused", digest=digest, origin=mount_from, error=str(exc))
        else:
            if location is None:
                run.known[digest] = repository
                report.blobs_mounted.append(digest)
                run.log.info("blob mounted", digest=digest, origin=mount_from, size=descriptor.size)
                return

    with run.source.open_blob(descriptor) as stream:
        client.upload_blob(repository, digest, stream, descriptor.size, location=location)
    run.known[digest] = repository
    report.blobs_uploaded.append(digest)
    report.bytes_uploaded += descriptor.size
    run.log.info("blob uploaded", digest=digest, size=descriptor.size, media_type=descriptor.media_type)


def _mount_candidate(run: _Run, digest: str) -> str | None:
    """A repository of the destination registry that holds `digest`, if one is known."""
    origin = run.source.mount_origin()
    if origin is not None and origin[0] == run.client.base_url and origin[1] != run.repository:
        return origin[1]
    elsewhere = run.known.get(digest)
    return elsewhere if elsewhere is not None and elsewhere != run.repository else None
