"""Container registries: image references, manifests, and a client of the registry HTTP API v2.

Function images are named `<REGISTRY>/<USER_IMAGE_REPOSITORY>:function-<first 16 characters of the
archive checksum>` (compute-engine.md 5.1): identical archives share one image.
"""

from __future__ import annotations

from backend_common.registry.client import (
    NotFoundError,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
)
from backend_common.registry.errors import ImageError

FUNCTION_IMAGE_TAG_PREFIX = "function-"
FUNCTION_IMAGE_TAG_CHECKSUM_LENGTH = 16


def function_image_tag(archive_checksum: str) -> str:
    """The tag of the image of a function archive."""
    return FUNCTION_IMAGE_TAG_PREFIX + archive_checksum.lower()[:FUNCTION_IMAGE_TAG_CHECKSUM_LENGTH]


def is_function_image_tag(tag: str) -> bool:
    checksum = tag.removeprefix(FUNCTION_IMAGE_TAG_PREFIX)
    return (
        tag.startswith(FUNCTION_IMAGE_TAG_PREFIX)
        and len(checksum) == FUNCTION_IMAGE_TAG_CHECKSUM_LENGTH
        and all(character in "0123456789abcdef" for character in checksum)
    )


__all__ = [
    "FUNCTION_IMAGE_TAG_CHECKSUM_LENGTH",
    "FUNCTION_IMAGE_TAG_PREFIX",
    "ImageError",
    "NotFoundError",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailableError",
    "function_image_tag",
    "is_function_image_tag",
]
