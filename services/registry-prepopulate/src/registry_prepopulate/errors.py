"""The one exception family the command reports as a failed item (anything else is a bug).

It is the family of `backend_common.registry` (image references, manifests, the registry client),
which this command extends with its configuration and layout errors.
"""

from __future__ import annotations

from backend_common.registry.errors import ImageError

PrepopulateError = ImageError

__all__ = ["PrepopulateError"]
