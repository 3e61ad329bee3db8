"""Local image sources: an OCI image layout or a `docker save` archive, as a directory or a tar.

Tar archives are read in place (members are streamed, nothing is extracted), so a layer is never
held in memory nor copied to disk twice.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from backend_common.registry.oci import (
    MANIFEST_MEDIA_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Descriptor,
    DigestError,
    Manifest,
    ManifestError,
    sha256_digest,
    split_digest,
)
from backend_common.registry.reference import ImageReference, tag_from_ref_name

from registry_prepopulate.errors import PrepopulateError

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MAX_METADATA_BYTES = 16 * 1024 * 1024  # index.json, manifest.json, image configs
READ_SIZE = 1024 * 1024
_MAX_LINK_DEPTH = 16
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayoutError(PrepopulateError):
    pass


class FileTree(Protocol):
    """Read access to the files of a layout, wherever they are stored."""

    description: str

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def open(self, name: str) -> AbstractContextManager[IO[bytes]]: ...


class DirectoryTree:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.description = str(root)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        # manifest.json of a docker archive names files: keep them inside the directory.
        if not path.is_relative_to(self.root):
            raise LayoutError(f"{self.description}: {name!r} points outside the layout")
        return path

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        with self._path(name).open("rb") as handle:
            yield handle


class TarTree:
    def __init__(self, archive: tarfile.TarFile, description: str) -> None:
        self._archive = archive
        self.description = description
        # Later members win, as when the archive is extracted.
        self._members = {_normalize(member.name): member for member in archive.getmembers()}

    def _member(self, name: str) -> tarfile.TarInfo | None:
        key = _normalize(name)
        for _ in range(_MAX_LINK_DEPTH):
            member = self._members.get(key)
            if member is None or member.isfile():
                return member
            if member.issym():  # relative to the link's directory (docker save dedups layers so)
                key = _normalize(posixpath.join(posixpath.dirname(key), member.linkname))
            elif member.islnk():  # hard links name an archive path
                key = _normalize(member.linkname)
            else:
                return None
        raise LayoutError(f"{self.description}: too many levels of links at {name!r}")

    def exists(self, name: str) -> bool:
        return self._member(name) is not None

    def size(self, name: str) -> int:
        member = self._member(name)
        if member is None:
            raise LayoutError(f"{self.description}: no file {name!r}")
        return member.size

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        member = self._member(name)
        handle = self._archive.extractfile(member) if member is not None else None
        if handle is None:
            raise LayoutError(f"{self.description}: no file {name!r}")
        with handle:
            yield handle


def _normalize(name: str) -> str:
    return posixpath.normpath(name.lstrip("/")).removeprefix("./")


def _read_small(tree: FileTree, name: str) -> bytes:
    if not tree.exists(name):
        raise LayoutError(f"{tree.description}: missing {name}")
    size = tree.size(name)
    if size > MAX_METADATA_BYTES:
        raise LayoutError(f"{tree.description}: {name} is {size} bytes, too big for metadata")
    with tree.open(name) as handle:
        data: bytes = handle.read()
        return data


def _read_json(tree: FileTree, name: str) -> Any:
    try:
        return json.loads(_read_small(tree, name))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayoutError(f"{tree.description}: {name} is not valid JSON: {exc}") from None


def _blob_name(digest: str) -> str:
    algorithm, hex_digest = split_digest(digest)
    return f"blobs/{algorithm}/{hex_digest}"


class OciLayoutSource:
    """An OCI image layout: `index.json` names the images, `blobs/<alg>/<hex>` holds everything."""

    def __init__(self, tree: FileTree, image: ImageReference) -> None:
        self._tree = tree
        try:
            index = Manifest.parse(_read_small(tree, "index.json"), OCI_INDEX)
        except (ManifestError, DigestError) as exc:
            raise LayoutError(f"{tree.description}: index.json: {exc}") from None
        self._root, self.tag = _select(index, image, tree.description, self._load)
        self.description = f"OCI layout {tree.description} ({self._root.digest})"

    def root(self) -> Manifest:
        return self._root

    def manifest(self, descriptor: Descriptor) -> Manifest:
        return self._load(descriptor)

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[IO[bytes]]:
        name = _blob_name(descriptor.digest)
        if not self._tree.exists(name):
            raise LayoutError(
                f"{self._tree.description}: blob {descriptor.digest} is missing from the layout"
            )
        return self._tree.open(name)

    def mount_origin(self) -> tuple[str, str] | None:
        return None

    def _load(self, descriptor: Descriptor) -> Manifest:
        name = _blob_name(descriptor.digest)
        if not self._tree.exists(name):
            raise LayoutError(
                f"{self._tree.description}: manifest {descriptor.digest} is missing from the layout"
            )
        media_type = descriptor.media_type if descriptor.media_type in MANIFEST_MEDIA_TYPES else None
        try:
            return Manifest.parse(_read_small(self._tree, name), media_type, descriptor.digest)
        except (ManifestError, DigestError) as exc:
            raise LayoutError(f"{self._tree.description}: {exc}") from None


def _select(
    index: Manifest, image: ImageReference, where: str, load: Callable[[Descriptor], Manifest]
) -> tuple[Manifest, str | None]:
    """The image of `index.json` that `image` designates, and the tag it goes by."""
    entries = index.references()
    if not entries:
        raise LayoutError(f"{where}: index.json lists no image")
    names = {entry.digest: entry.annotations.get(REF_NAME_ANNOTATION) for entry in entries}
    # A multi-platform layout written without names: index.json itself is the image index.
    whole_index = not any(names.values()) and len(entries) > 1 and all(e.platform for e in entries)

    if image.digest:
        chosen = [entry for entry in entries if entry.digest == image.digest]
        if not chosen:
            raise LayoutError(f"{where}: no image with digest {image.digest}")
        return load(chosen[0]), image.tag
    if image.tag:
        chosen = [entry for entry in entries if _names_tag(names[entry.digest], image.tag)]
        if chosen:
            if len({entry.digest for entry in chosen}) > 1:
                raise LayoutError(f"{where}: several images are tagged {image.tag!r}")
            return load(chosen[0]), image.tag
        if not any(names.values()):
            if whole_index:
                return index, image.tag
            if len(entries) == 1:
                return load(entries[0]), image.tag
        raise LayoutError(f"{where}: no image tagged {image.tag!r} (tags: {_tags(names.values())})")
    if whole_index:
        return index, None
    if len(entries) == 1:
        ref_name = names[entries[0].digest]
        return load(entries[0]), tag_from_ref_name(ref_name) if ref_name else None
    raise LayoutError(
        f"{where}: holds several images (tags: {_tags(names.values())}); name one in `image` (name:tag)"
    )


def _names_tag(ref_name: str | None, tag: str) -> bool:
    return ref_name is not None and (ref_name == tag or tag_from_ref_name(ref_name) == tag)


def _tags(ref_names: Iterable[str | None]) -> str:
    return ", ".join(sorted({name for name in ref_names if name})) or "none"


class DockerArchiveSource:
    """A `docker save` archive (legacy format): `manifest.json`, configs and layer tars.

    It has no registry manifest, so one is written: OCI, with the layers as they are stored (usually
    uncompressed tars, whose digest is then the diff_id the config already lists).
    """

    def __init__(self, tree: FileTree, image: ImageReference) -> None:
        self._tree = tree
        entry, self.tag = _docker_entry(_read_json(tree, "manifest.json"), image, tree.description)
        config_name = entry.get("Config")
        layer_names = entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list):
            raise LayoutError(f"{tree.description}: manifest.json entry without Config and Layers")
        config = _read_small(tree, config_name)
        config_digest = sha256_digest(config)
        self._blobs: dict[str, str] = {config_digest: config_name}
        diff_ids = _diff_ids(config, tree.description)
        layers = []
        for position, name in enumerate(layer_names):
            media_type, digest = self._describe_layer(str(name), diff_ids, position)
            self._blobs[digest] = str(name)
            layers.append({"mediaType": media_type, "digest": digest, "size": tree.size(str(name))})
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": layers,
        }
        content = json.dumps(document, separators=(",", ":")).encode()
        self._root = Manifest.parse(content, OCI_MANIFEST)
        self.description = f"docker archive {tree.description}"

    def root(self) -> Manifest:
        return self._root

    def manifest(self, descriptor: Descriptor) -> Manifest:
        raise LayoutError(f"{self.description}: has no manifest {descriptor.digest}")

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[IO[bytes]]:
        name = self._blobs.get(descriptor.digest)
        if name is None:
            raise LayoutError(f"{self.description}: no blob {descriptor.digest}")
        return self._tree.open(name)

    def mount_origin(self) -> tuple[str, str] | None:
        return None

    def _describe_layer(self, name: str, diff_ids: list[str], position: int) -> tuple[str, str]:
        if not self._tree.exists(name):
            raise LayoutError(f"{self._tree.description}: layer {name} is missing")
        with self._tree.open(name) as handle:
            magic = handle.read(4)
        if magic.startswith(_GZIP_MAGIC):
            return OCI_LAYER_GZIP, self._hash(name)
        if magic.startswith(_ZSTD_MAGIC):
            return OCI_LAYER_ZSTD, self._hash(name)
        if position < len(diff_ids):
            # An uncompressed layer's digest is its diff_id; the upload re-checks it anyway.
            return OCI_LAYER, diff_ids[position]
        return OCI_LAYER, self._hash(name)

    def _hash(self, name: str) -> str:
        hasher = hashlib.sha256()
        with self._tree.open(name) as handle:
            while chunk := handle.read(READ_SIZE):
                hasher.update(chunk)
        return f"sha256:{hasher.hexdigest()}"


def _docker_entry(document: Any, image: ImageReference, where: str) -> tuple[dict[str, Any], str | None]:
    if not isinstance(document, list) or not all(isinstance(entry, dict) for entry in document):
        raise LayoutError(f"{where}: manifest.json must be a list of objects")
    if not document:
        raise LayoutError(f"{where}: manifest.json lists no image")

    def repo_tags(entry: dict[str, Any]) -> list[str]:
        return [str(tag) for tag in entry.get("RepoTags") or []]

    if image.tag:
        wanted = str(ImageReference(image.repository, image.tag))
        exact = [entry for entry in document if wanted in repo_tags(entry)]
        by_tag = [entry for entry in document if any(_names_tag(t, image.tag) for t in repo_tags(entry))]
        chosen = exact or by_tag
        if len(chosen) == 1:
            return chosen[0], image.tag
        if not chosen and len(document) == 1 and not repo_tags(document[0]):
            return document[0], image.tag
        all_tags = _tags(tag for entry in document for tag in repo_tags(entry))
        problem = "several images match" if chosen else "no image matches"
        raise LayoutError(f"{where}: {problem} {wanted} (tags: {all_tags})")
    if len(document) == 1:
        tags = repo_tags(document[0])
        return document[0], tag_from_ref_name(tags[0]) if tags else None
    all_tags = _tags(tag for entry in document for tag in repo_tags(entry))
    raise LayoutError(f"{where}: holds several images (tags: {all_tags}); name one in `image` (name:tag)")


def _diff_ids(config: bytes, where: str) -> list[str]:
    try:
        document = json.loads(config)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayoutError(f"{where}: image config is not valid JSON: {exc}") from None
    rootfs = document.get("rootfs") if isinstance(document, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return [str(value) for value in diff_ids] if isinstance(diff_ids, list) else []


@contextmanager
def open_local_source(path: Path, image: ImageReference) -> Iterator[OciLayoutSource | DockerArchiveSource]:
    """The image `image` of the layout or archive at `path` (a directory or a tar, maybe compressed)."""
    if path.is_dir():
        yield _source_for(DirectoryTree(path), image)
        return
    if not path.is_file():
        raise LayoutError(f"source layout {path} does not exist")
    try:
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 (closed below, after the copy)
    except (tarfile.TarError, OSError) as exc:
        raise LayoutError(f"source layout {path} is neither a directory nor a readable tar: {exc}") from None
    with archive:
        try:
            tree = TarTree(archive, str(path))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise LayoutError(f"source layout {path}: corrupt tar archive: {exc}") from None
        yield _source_for(tree, image)


def _source_for(tree: FileTree, image: ImageReference) -> OciLayoutSource | DockerArchiveSource:
    # Docker >= 25 writes both: the OCI side is exact (it keeps the registry manifests).
    if tree.exists("index.json"):
        return OciLayoutSource(tree, image)
    if tree.exists("manifest.json"):
        return DockerArchiveSource(tree, image)
    raise LayoutError(
        f"{tree.description} is neither an OCI image layout (no index.json) "
        "nor a docker save archive (no manifest.json)"
    )
