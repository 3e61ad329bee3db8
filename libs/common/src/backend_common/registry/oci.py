"""Media types, digests, descriptors and manifests shared by registries, OCI layouts and tarballs."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from backend_common.registry.errors import ImageError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

INDEX_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_MANIFEST_MEDIA_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
MANIFEST_MEDIA_TYPES = INDEX_MEDIA_TYPES | IMAGE_MANIFEST_MEDIA_TYPES
# Sent as Accept: without it registries down-convert to (or refuse with) the legacy schema 1.
MANIFEST_ACCEPT = ", ".join(sorted(MANIFEST_MEDIA_TYPES))

# Layers a registry may not host (Windows base layers): they are fetched from their `urls` instead.
FOREIGN_LAYER_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)

# Same cap as the distribution registry: a manifest is small, a bigger one is a mistake.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([a-f0-9]+)$")


class DigestError(ImageError):
    pass


class ManifestError(ImageError):
    pass


def split_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a digest; raises on anything else (digests also become file paths)."""
    match = _DIGEST_RE.match(digest)
    if not match or len(match.group(2)) != _DIGEST_HEX_LENGTHS[match.group(1)]:
        raise DigestError(f"invalid or unsupported digest {digest!r} (expected sha256:<64 hex>)")
    return match.group(1), match.group(2)


def is_digest(value: str) -> bool:
    try:
        split_digest(value)
    except DigestError:
        return False
    return True


def hasher_for(digest: str) -> Any:
    """A fresh hashlib object of the digest's algorithm (typed Any: hashlib's type is private)."""
    algorithm, _ = split_digest(digest)
    return hashlib.new(algorithm)


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def digest_like(reference: str, data: bytes) -> str:
    """The digest of `data` with the algorithm of `reference`."""
    hasher = hasher_for(reference)
    hasher.update(data)
    return f"{hasher.name}:{hasher.hexdigest()}"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    platform: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def from_json(cls, value: object, where: str) -> Descriptor:
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: a descriptor must be an object, got {value!r}")
        digest = value.get("digest")
        size = value.get("size")
        if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
            raise ManifestError(f"{where}: descriptor without a valid digest and size: {value!r}")
        split_digest(digest)
        urls = value.get("urls") or ()
        annotations = value.get("annotations") or {}
        platform = value.get("platform")
        return cls(
            media_type=str(value.get("mediaType", "")),
            digest=digest,
            size=size,
            urls=tuple(str(url) for url in urls),
            annotations={str(key): str(val) for key, val in annotations.items()},
            platform=platform if isinstance(platform, dict) else None,
        )

    @property
    def is_foreign(self) -> bool:
        # Only skippable when it says where to get it; otherwise the registry wants the blob.
        return self.media_type in FOREIGN_LAYER_MEDIA_TYPES and bool(self.urls)


@dataclass(frozen=True)
class Manifest:
    """The exact bytes of a manifest or index: re-serialising would change its digest."""

    media_type: str
    content: bytes
    digest: str

    @classmethod
    def parse(cls, content: bytes, media_type: str | None = None, digest: str | None = None) -> Manifest:
        """Checks the bytes against `digest` when given; infers the media type when not given."""
        if len(content) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest of {len(content)} bytes exceeds {MAX_MANIFEST_BYTES}")
        actual = digest_like(digest, content) if digest else sha256_digest(content)
        if digest and actual != digest:
            raise DigestError(f"manifest content has digest {actual}, expected {digest}")
        document = _json_object(content)
        declared = document.get("mediaType")
        resolved = media_type or (declared if isinstance(declared, str) else None) or _guess(document)
        if resolved not in MANIFEST_MEDIA_TYPES:
            raise ManifestError(
                f"unsupported manifest media type {resolved!r} for {actual} "
                f"(supported: {MANIFEST_ACCEPT}; schema 1 manifests are not)"
            )
        manifest = cls(media_type=resolved, content=content, digest=actual)
        manifest.references()  # validates the descriptors now rather than mid-copy
        return manifest

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    def document(self) -> dict[str, Any]:
        return _json_object(self.content)

    def references(self) -> list[Descriptor]:
        """Child manifests of an index; config then layers of an image manifest."""
        document = self.document()
        where = f"manifest {self.digest}"
        if self.is_index:
            children = document.get("manifests")
            if not isinstance(children, list):
                raise ManifestError(f"{where}: an index needs a `manifests` list")
            return [Descriptor.from_json(child, where) for child in children]
        layers = document.get("layers")
        if "config" not in document or not isinstance(layers, list):
            raise ManifestError(f"{where}: an image manifest needs `config` and a `layers` list")
        return [Descriptor.from_json(document["config"], where)] + [
            Descriptor.from_json(layer, where) for layer in layers
        ]


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    return document


def _guess(document: dict[str, Any]) -> str | None:
    # OCI makes `mediaType` optional; the structure tells an index from an image manifest.
    if "manifests" in document:
        return OCI_INDEX
    if "layers" in document and "config" in document:
        return OCI_MANIFEST
    return None
