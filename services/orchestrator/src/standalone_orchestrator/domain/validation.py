"""Field validation, reported as one OE0101 error listing every invalid field.

Rules of `orchestrator-grpc.md` 9.1: UUID keys, names of 1 to 100 characters, metadata keys and
values of at most 100 characters, addressables with a 64-hex checksum and a URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from backend_common.protos import common_pb2

from standalone_orchestrator.errors import OrchestratorError, validation_error

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CHECKSUM = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_LENGTH = 100


def is_uuid(value: str) -> bool:
    return _UUID.match(value) is not None


def is_url(value: str) -> bool:
    if not value or any(character.isspace() for character in value):
        return False
    # Like the reference's validator, a scheme is optional ("host/path" is a URL).
    parts = urlsplit(value if "://" in value else f"http://{value}")
    return bool(parts.scheme) and bool(parts.hostname)


class Checker:
    """Collects field errors; `check(kind)` raises them as one validation error."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def fail(self, field: str, message: str) -> None:
        self.errors.setdefault(field, message)

    def required(self, field: str, value: object) -> bool:
        if not value:
            self.fail(field, "cannot be blank")
            return False
        return True

    def uuid(self, field: str, value: str, *, required: bool = True) -> None:
        if not value:
            if required:
                self.fail(field, "cannot be blank")
        elif not is_uuid(value):
            self.fail(field, "must be a valid UUID")

    def length(self, field: str, value: str, *, minimum: int = 0, maximum: int = MAX_LENGTH) -> None:
        if minimum and not value:
            self.fail(field, "cannot be blank")
        elif len(value) > maximum:
            self.fail(field, f"the length must be between {minimum} and {maximum}")

    def name(self, field: str, value: str) -> None:
        self.length(field, value, minimum=1)

    def metadata(self, field: str, metadata: Mapping[str, str]) -> None:
        for key, value in metadata.items():
            if len(key) > MAX_LENGTH:
                self.fail(field, f"key {key[:20]!r}... is longer than {MAX_LENGTH} characters")
            elif len(value) > MAX_LENGTH:
                self.fail(f"{field}.{key}", f"the length must be no more than {MAX_LENGTH}")

    def addressable(self, field: str, addressable: common_pb2.Addressable, *, present: bool) -> None:
        if not present:
            self.fail(field, "cannot be blank")
            return
        if not addressable.checksum:
            self.fail(f"{field}.checksum", "cannot be blank")
        elif not _CHECKSUM.match(addressable.checksum):
            self.fail(f"{field}.checksum", "must be a 64 characters hexadecimal string")
        if not addressable.storage_address:
            self.fail(f"{field}.storage_address", "cannot be blank")
        elif not is_url(addressable.storage_address):
            self.fail(f"{field}.storage_address", "must be a valid URL")

    def checksum(self, field: str, value: str) -> None:
        if not value:
            self.fail(field, "cannot be blank")
        elif not _CHECKSUM.match(value):
            self.fail(field, "must be a 64 characters hexadecimal string")

    def error(self, kind: str) -> OrchestratorError | None:
        if not self.errors:
            return None
        detail = "; ".join(f"{field}: {message}" for field, message in sorted(self.errors.items()))
        return validation_error(kind, f"{detail}.")

    def check(self, kind: str) -> None:
        error = self.error(kind)
        if error is not None:
            raise error
