"""Garbage collection of the function images of the registry (`REGISTRY`).

Function images are tagged `function-<16 first characters of the archive checksum>` in
`USER_IMAGE_REPOSITORY`. A tag is deleted when its archive belongs to functions of the replica that
no running plan uses and that were registered more than `REGISTRY_GC_GRACE` ago. Kept: the images
of functions in use or recent, tags this backend does not know (another channel, another tool), and
any image whose manifest one of those shares (deleting a manifest deletes all its tags).

Deleting a manifest (HEAD for its digest, then DELETE by digest: the registry API v2) makes the
image unreachable; its blobs are reclaimed by the registry's own garbage collection
(`registry garbage-collect`), and deletes must be enabled on the registry (`storage.delete.enabled`).
A deleted image is built again (owner) or pushed again from its stored copy when a plan needs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from backend_common.logging import get_logger
from backend_common.registry import (
    NotFoundError,
    RegistryClient,
    RegistryError,
    function_image_tag,
    is_function_image_tag,
)
from backend_common.replica import archive_checksums_in_use, known_archive_checksums
from sqlalchemy.orm import Session, sessionmaker

logger = get_logger("backend_scheduler.jobs.registry")


def collect_registry_images(
    sessions: sessionmaker[Session],
    registry: RegistryClient,
    repository: str,
    now: datetime,
    *,
    grace: timedelta,
) -> int:
    """Delete the unused function images of `repository`; returns how many tags went."""
    try:
        tags = registry.tags(repository)
    except NotFoundError:
        return 0  # nothing pushed yet
    if not tags:
        return 0
    with sessions() as session:
        kept_checksums = archive_checksums_in_use(session, created_after=now - grace)
        known_checksums = known_archive_checksums(session)
    kept = {function_image_tag(checksum) for checksum in kept_checksums}
    known = {function_image_tag(checksum) for checksum in known_checksums}
    digests: dict[str, str] = {}
    for tag in tags:
        descriptor = registry.head_manifest(repository, tag)
        if descriptor is not None:  # listed but already deleted
            digests[tag] = descriptor.digest
    unused = {tag for tag in digests if is_function_image_tag(tag) and tag in known and tag not in kept}
    protected = {digest for tag, digest in digests.items() if tag not in unused}
    removable: dict[str, list[str]] = {}
    for tag in sorted(unused):
        if digests[tag] not in protected:
            removable.setdefault(digests[tag], []).append(tag)
    deleted = 0
    for digest, digest_tags in removable.items():
        try:
            registry.delete_manifest(repository, digest)
        except NotFoundError:
            continue  # deleted meanwhile
        except RegistryError as error:
            logger.warning(
                "function image not deleted", repository=repository, tags=digest_tags, error=str(error)
            )
            if error.status == 405:  # deletes disabled on the registry: the others would fail too
                raise
            continue
        logger.info("unused function image deleted", repository=repository, tags=digest_tags, digest=digest)
        deleted += len(digest_tags)
    return deleted
