"""Conversions between protobuf values and their JSONB (protojson, camelCase) shape."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from backend_common.protos import common_pb2, computetask_pb2, function_pb2
from google.protobuf.timestamp_pb2 import Timestamp

Json = dict[str, Any]


def timestamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


def to_datetime(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def permission_to_json(permission: common_pb2.Permission) -> Json:
    return {"public": permission.public, "authorizedIds": list(permission.authorized_ids)}


def permission_from_json(data: Mapping[str, Any], target: common_pb2.Permission) -> None:
    target.public = bool(data.get("public", False))
    target.authorized_ids.extend(data.get("authorizedIds", ()))


def permissions_to_json(permissions: common_pb2.Permissions) -> Json:
    return {
        "process": permission_to_json(permissions.process),
        "download": permission_to_json(permissions.download),
    }


def permissions_from_json(data: Mapping[str, Any], target: common_pb2.Permissions) -> None:
    permission_from_json(data.get("process", {}), target.process)
    permission_from_json(data.get("download", {}), target.download)


def task_inputs_to_json(inputs: Iterable[computetask_pb2.ComputeTaskInput]) -> list[Json]:
    result: list[Json] = []
    for task_input in inputs:
        if task_input.WhichOneof("ref") == "parent_task_output":
            ref = task_input.parent_task_output
            result.append(
                {
                    "identifier": task_input.identifier,
                    "parentTaskOutput": {
                        "parentTaskKey": ref.parent_task_key,
                        "outputIdentifier": ref.output_identifier,
                    },
                }
            )
        else:
            result.append({"identifier": task_input.identifier, "assetKey": task_input.asset_key})
    return result


def task_inputs_from_json(data: Iterable[Mapping[str, Any]], target: Any) -> None:
    for item in data:
        task_input = target.add()
        task_input.identifier = item["identifier"]
        ref = item.get("parentTaskOutput")
        if ref is not None:
            task_input.parent_task_output.parent_task_key = ref["parentTaskKey"]
            task_input.parent_task_output.output_identifier = ref["outputIdentifier"]
        else:
            task_input.asset_key = item.get("assetKey", "")


def task_outputs_to_json(outputs: Mapping[str, computetask_pb2.ComputeTaskOutput]) -> Json:
    return {
        identifier: {"permissions": permissions_to_json(output.permissions), "transient": output.transient}
        for identifier, output in outputs.items()
    }


def task_outputs_from_json(
    data: Mapping[str, Any], target: MutableMapping[str, computetask_pb2.ComputeTaskOutput]
) -> None:
    for identifier, item in data.items():
        output = target[identifier]
        permissions_from_json(item["permissions"], output.permissions)
        output.transient = bool(item.get("transient", False))


def function_inputs_to_json(inputs: Mapping[str, function_pb2.FunctionInput]) -> Json:
    return {
        identifier: {
            "kind": common_pb2.AssetKind.Name(item.kind),
            "multiple": item.multiple,
            "optional": item.optional,
        }
        for identifier, item in inputs.items()
    }


def function_inputs_from_json(
    data: Mapping[str, Any], target: MutableMapping[str, function_pb2.FunctionInput]
) -> None:
    for identifier, item in data.items():
        entry = target[identifier]
        entry.kind = common_pb2.AssetKind.Value(item["kind"])
        entry.multiple = bool(item.get("multiple", False))
        entry.optional = bool(item.get("optional", False))


def function_outputs_to_json(outputs: Mapping[str, function_pb2.FunctionOutput]) -> Json:
    return {
        identifier: {"kind": common_pb2.AssetKind.Name(item.kind), "multiple": item.multiple}
        for identifier, item in outputs.items()
    }


def function_outputs_from_json(
    data: Mapping[str, Any], target: MutableMapping[str, function_pb2.FunctionOutput]
) -> None:
    for identifier, item in data.items():
        entry = target[identifier]
        entry.kind = common_pb2.AssetKind.Value(item["kind"])
        entry.multiple = bool(item.get("multiple", False))
