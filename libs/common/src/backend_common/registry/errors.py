"""The exception family of image and registry operations."""

from __future__ import annotations


class ImageError(Exception):
    """An image, manifest, reference or registry operation failed; the message says which and why."""
