"""Checks shared by the asset modules: names used in messages, key uniqueness, registration."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Column

from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.errors import conflict, not_found
from standalone_orchestrator.store.common import existing_keys

# Asset names as they appear in error messages.
ORGANIZATION = "organization"
FUNCTION = "function"
DATA_MANAGER = "datamanager"
DATA_SAMPLE = "datasample"
COMPUTE_PLAN = "computeplan"
COMPUTE_TASK = "computetask"
MODEL = "model"
PERFORMANCE = "performance"
FAILURE_REPORT = "failure report"


def ensure_new_keys(
    request: Request, kind: str, key: Column[Any], channel: Column[Any], keys: Collection[str]
) -> None:
    """ALREADY_EXISTS for the first key already stored, in this channel or in another one.

    Keys are unique across channels; the reference only looks in the request's channel and then
    fails on insert with an opaque unique violation when the key lives in another channel.
    """
    found = existing_keys(request.connection, key, channel, keys)
    for candidate in keys:
        if candidate in found:
            other = found[candidate] != request.channel
            raise conflict(kind, candidate, "in another channel" if other else "")


def ensure_registered(request: Request, organization: str) -> None:
    """The organization must be registered in the channel before it owns or runs anything.

    The reference relies on a foreign key for owners (an opaque UNKNOWN error); report it as the
    unknown worker is reported.
    """
    if organization not in request.organization_ids():
        raise not_found(ORGANIZATION, organization)
