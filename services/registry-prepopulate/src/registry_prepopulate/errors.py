"""The one exception family the command reports as a failed item (anything else is a bug)."""

from __future__ import annotations


class PrepopulateError(Exception):
    """An image could not be copied; the message says which and why."""
