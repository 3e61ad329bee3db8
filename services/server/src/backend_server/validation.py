"""Checks of write payloads done by the server before calling the orchestrator, and proto builders."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from backend_common.protos import common_pb2, function_pb2

from backend_server.errors import ApiError, bad_request

METADATA_KEY_MAX_LENGTH = 50
METADATA_VALUE_MAX_LENGTH = 100
NAME_MAX_LENGTH = 100
INPUT_KINDS = frozenset({"ASSET_DATA_SAMPLE", "ASSET_DATA_MANAGER", "ASSET_MODEL"})
OUTPUT_KINDS = frozenset({"ASSET_MODEL", "ASSET_PERFORMANCE"})


def field_error(name: str, message: str) -> ApiError:
    return bad_request(f"{name}: {message}", **{name: [message]})


def file_error(message: str) -> ApiError:
    """File validation errors on create carry a placeholder key, as in the reference."""
    return ApiError(400, message, extra={"key": "(not computed)"})


def name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not value.strip():
        raise field_error(field, "This field is required.")
    if len(value) > NAME_MAX_LENGTH:
        raise field_error(field, f"Ensure this field has no more than {NAME_MAX_LENGTH} characters.")
    return value


def key(value: Any, field: str = "key") -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise field_error(field, f"“{value}” is not a valid UUID.") from None


def optional_text(value: Any, field: str, max_length: int = 100) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise field_error(field, "Not a valid string.")
    if len(value) > max_length:
        raise field_error(field, f"Ensure this field has no more than {max_length} characters.")
    return value


def metadata(value: Any, *, strict_lengths: bool = True) -> dict[str, str]:
    """`null` is `{}`; keys may not contain `__` (reserved, e.g. `__tag__`); lengths are bounded."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise field_error("metadata", "Expected a dictionary of strings.")
    result: dict[str, str] = {}
    for item_key, item_value in value.items():
        if not isinstance(item_key, str) or not isinstance(item_value, str):
            raise field_error("metadata", "Metadata keys and values must be strings.")
        if "__" in item_key:
            raise field_error("metadata", f'"__" cannot be used in a metadata key: {item_key}')
        if strict_lengths and len(item_key) > METADATA_KEY_MAX_LENGTH:
            raise field_error(
                "metadata", f"The key {item_key} is longer than {METADATA_KEY_MAX_LENGTH} characters."
            )
        if strict_lengths and len(item_value) > METADATA_VALUE_MAX_LENGTH:
            raise field_error(
                "metadata", f"The value of {item_key} is longer than {METADATA_VALUE_MAX_LENGTH} characters."
            )
        result[item_key] = item_value
    return result


def new_permissions(value: Any, field: str = "permissions") -> common_pb2.NewPermissions:
    """`{"public": bool, "authorized_ids": [...]}`; organizations are checked by the orchestrator."""
    if value is None:
        return common_pb2.NewPermissions(public=False, authorized_ids=[])
    if not isinstance(value, Mapping):
        raise field_error(field, "Expected {public, authorized_ids}.")
    public = value.get("public", False)
    authorized_ids = value.get("authorized_ids") or []
    if not isinstance(public, bool):
        raise field_error(field, "public must be a boolean.")
    if not isinstance(authorized_ids, list) or not all(isinstance(item, str) for item in authorized_ids):
        raise field_error(field, "authorized_ids must be a list of organization ids.")
    return common_pb2.NewPermissions(public=public, authorized_ids=authorized_ids)


def _asset_kind(value: Any, allowed: frozenset[str], field: str) -> common_pb2.AssetKind.ValueType:
    if value not in allowed:
        raise field_error(
            field, f"“{value}” is not a valid kind; expected one of {', '.join(sorted(allowed))}."
        )
    return common_pb2.AssetKind.Value(str(value))


def _declarations(value: Any, field: str) -> Mapping[str, Any]:
    """Function inputs/outputs: the dict form, or the SDK's list of `{identifier, ...}`."""
    if value is None:
        return {}
    if isinstance(value, list):
        try:
            return {item["identifier"]: item for item in value}
        except (TypeError, KeyError):
            raise field_error(field, "Each item needs an identifier.") from None
    if not isinstance(value, Mapping):
        raise field_error(field, "Expected a dictionary keyed by identifier.")
    return value


def function_inputs(value: Any) -> dict[str, function_pb2.FunctionInput]:
    result = {}
    for identifier, declaration in _declarations(value, "inputs").items():
        if not isinstance(declaration, Mapping):
            raise field_error("inputs", f"Invalid declaration of input {identifier}.")
        result[str(identifier)] = function_pb2.FunctionInput(
            kind=_asset_kind(declaration.get("kind"), INPUT_KINDS, "inputs"),
            optional=bool(declaration.get("optional", False)),
            multiple=bool(declaration.get("multiple", False)),
        )
    return result


def function_outputs(value: Any) -> dict[str, function_pb2.FunctionOutput]:
    result = {}
    for identifier, declaration in _declarations(value, "outputs").items():
        if not isinstance(declaration, Mapping):
            raise field_error("outputs", f"Invalid declaration of output {identifier}.")
        result[str(identifier)] = function_pb2.FunctionOutput(
            kind=_asset_kind(declaration.get("kind"), OUTPUT_KINDS, "outputs"),
            multiple=bool(declaration.get("multiple", False)),
        )
    return result


def key_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [key(item, field) for item in items]
