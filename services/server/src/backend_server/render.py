"""JSON representations of the assets (`rest-api.md`, section 5).

Tasks and functions are rendered by PostgreSQL (`json_build_object`, prepared statements below): a
page of 100 tasks, each embedding its function, is the hottest response of the API and building it
in Python costs several times more. Everything else is rendered in Python from rows. Both paths
format dates the same way (DRF's: UTC, `Z`, microseconds only when non-zero), so a list item and the
detail of the same asset are identical.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from backend_common.db import replica
from backend_common.replica import PlanState, TaskStatistics

JsonObject = dict[str, Any]

ERROR_TYPES = {
    "ERROR_TYPE_BUILD": "BUILD_ERROR",
    "ERROR_TYPE_EXECUTION": "EXECUTION_ERROR",
    "ERROR_TYPE_INTERNAL": "INTERNAL_ERROR",
}


def dumps(document: object) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


# --- Python side ----------------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def permission(public: bool, authorized_ids: Sequence[str]) -> JsonObject:
    return {"public": public, "authorized_ids": list(authorized_ids)}


def permissions(asset: replica.PermissionsMixin) -> JsonObject:
    return {
        "process": permission(asset.permissions_process_public, asset.permissions_process_authorized_ids),
        "download": permission(asset.permissions_download_public, asset.permissions_download_authorized_ids),
    }


def addressable(storage_address: str, checksum: str) -> JsonObject:
    return {"storage_address": storage_address, "checksum": checksum}


def organization(row: replica.Organization, own_id: str) -> JsonObject:
    return {
        "id": row.id,
        "address": row.address,
        "creation_date": iso(row.creation_date),
        "is_current": row.id == own_id,
    }


def data_manager(row: replica.DataManager, sample_keys: Sequence[str], base_url: str) -> JsonObject:
    return {
        "key": row.key,
        "name": row.name,
        "owner": row.owner,
        "permissions": permissions(row),
        "logs_permission": permission(row.logs_permission_public, row.logs_permission_authorized_ids),
        "description": addressable(
            f"{base_url}/data_manager/{row.key}/description/", row.description_checksum
        ),
        "opener": addressable(f"{base_url}/data_manager/{row.key}/opener/", row.opener_checksum),
        "metadata": row.metadata_,
        "creation_date": iso(row.creation_date),
        "data_sample_keys": list(sample_keys),
    }


def data_sample(row: replica.DataSample, data_manager_keys: Sequence[str]) -> JsonObject:
    # No `path`: the SDK would check it as a directory of the client machine.
    return {
        "key": row.key,
        "owner": row.owner,
        "data_manager_keys": list(data_manager_keys),
        "creation_date": iso(row.creation_date),
    }


def model(row: replica.Model, base_url: str) -> JsonObject:
    address = None
    if row.address:
        address = addressable(f"{base_url}/model/{row.key}/file/", row.checksum or "")
    return {
        "key": row.key,
        "compute_task_key": row.compute_task_key,
        "owner": row.owner,
        "creation_date": iso(row.creation_date),
        "permissions": permissions(row),
        "address": address,
    }


def performance(row: replica.Performance) -> JsonObject:
    return {
        "channel": row.channel,
        "compute_task_key": row.compute_task_key,
        "creation_date": iso(row.creation_date),
        "compute_task_output_identifier": row.identifier,
        "performance_value": row.value,
    }


# --- compute plans ------------------------------------------------------------------------------------

TASK_STATUS_COUNTERS = {
    "STATUS_WAITING_FOR_BUILDER_SLOT": "waiting_builder_slot_count",
    "STATUS_BUILDING": "building_count",
    "STATUS_WAITING_FOR_PARENT_TASKS": "waiting_parent_tasks_count",
    "STATUS_WAITING_FOR_EXECUTOR_SLOT": "waiting_executor_slot_count",
    "STATUS_EXECUTING": "executing_count",
    "STATUS_CANCELED": "canceled_count",
    "STATUS_FAILED": "failed_count",
    "STATUS_DONE": "done_count",
}


def compute_plan(
    plan: replica.ComputePlan,
    statistics: TaskStatistics,
    state: PlanState,
    first_failed_task: str | None,
    *,
    now: datetime | None = None,
) -> JsonObject:
    """Status, dates and counters from the plan's tasks (whose dates are orchestrator timestamps)."""
    now = now or datetime.now(UTC)
    start, end = state.start_date, state.end_date
    duration = int(((end or now) - start).total_seconds()) if start is not None else 0
    document: JsonObject = {
        "key": plan.key,
        "owner": plan.owner,
        "name": plan.name,
        "tag": plan.tag or "",
        "metadata": plan.metadata_ or {},
        "creator": plan.creator,
        "creation_date": iso(plan.creation_date),
        "start_date": iso(start),
        "end_date": iso(end),
        "duration": max(duration, 0),
        "status": state.status,
        "failed_task_key": first_failed_task,
        "task_count": statistics.total,
    }
    for status, counter in TASK_STATUS_COUNTERS.items():
        document[counter] = statistics.count(status)
    if state.status in ("PLAN_STATUS_DONE", "PLAN_STATUS_FAILED", "PLAN_STATUS_CANCELED"):
        document["estimated_end_date"] = document["end_date"]
    elif state.status == "PLAN_STATUS_DOING" and start is not None and document["done_count"]:
        remaining = document["task_count"] - document["done_count"]
        elapsed = (now - start).total_seconds()
        estimate = datetime.fromtimestamp(now.timestamp() + remaining * elapsed / document["done_count"], UTC)
        document["estimated_end_date"] = estimate.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return document


# --- PostgreSQL side ----------------------------------------------------------------------------------
# Statements with positional parameters, run as prepared statements (`backend_server.prepared`).


def _iso(column: str) -> str:
    """The SQL twin of `iso`: UTC, microseconds only when non-zero, `Z`."""
    return (
        f"replace(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '') || 'Z'"
    )


def _permission(public: str, authorized_ids: str) -> str:
    return f"json_build_object('public', {public}, 'authorized_ids', {authorized_ids})"


def _permissions(alias: str) -> str:
    process = _permission(
        f"{alias}.permissions_process_public", f"{alias}.permissions_process_authorized_ids"
    )
    download = _permission(
        f"{alias}.permissions_download_public", f"{alias}.permissions_download_authorized_ids"
    )
    return f"json_build_object('process', {process}, 'download', {download})"


_ERROR_TYPE = (
    "CASE task.error_type "
    + " ".join(f"WHEN '{stored}' THEN '{exposed}'" for stored, exposed in ERROR_TYPES.items())
    + " END"
)

# $1: task keys in page order. Rows: (function key, task document without `function`).
TASK_DOCUMENTS = f"""
SELECT task.function_key::text, json_build_object(
    'key', task.key,
    'owner', task.owner,
    'compute_plan_key', task.compute_plan_key,
    'metadata', task.metadata,
    'status', task.status,
    'worker', task.worker,
    'rank', task.rank,
    'tag', task.tag,
    'creation_date', {_iso("task.creation_date")},
    'start_date', {_iso("task.start_date")},
    'end_date', {_iso("task.end_date")},
    'duration', coalesce(extract(epoch FROM coalesce(task.end_date, now()) - task.start_date)::integer, 0),
    'error_type', {_ERROR_TYPE},
    'logs_permission', {_permission("task.logs_permission_public", "task.logs_permission_authorized_ids")},
    'inputs', coalesce(task.inputs_document, '[]'::json),
    'outputs', coalesce(task.outputs_document, '{{}}'::json)
)::text
FROM unnest($1::text[]::uuid[]) WITH ORDINALITY AS page(key, position)
JOIN compute_tasks AS task ON task.key = page.key
ORDER BY page.position
"""  # noqa: S608 (built from constants of this module only)

# $1: function keys, $2: the API's base URL. Rows: (function key, name, status, function document).
FUNCTION_DOCUMENTS = f"""
SELECT fn.key::text, fn.name, fn.status, json_build_object(
    'key', fn.key,
    'name', fn.name,
    'owner', fn.owner,
    'permissions', {_permissions("fn")},
    'metadata', fn.metadata,
    'creation_date', {_iso("fn.creation_date")},
    'status', fn.status,
    'description', json_build_object(
        'storage_address', $2 || '/function/' || fn.key || '/description/',
        'checksum', fn.description_checksum
    ),
    'archive', json_build_object(
        'storage_address', $2 || '/function/' || fn.key || '/file/',
        'checksum', fn.archive_checksum
    ),
    'inputs', (
        SELECT coalesce(json_object_agg(
            i.identifier, json_build_object('kind', i.kind, 'optional', i.optional, 'multiple', i.multiple)
            ORDER BY i.identifier
        ), '{{}}'::json)
        FROM function_inputs AS i WHERE i.function_key = fn.key
    ),
    'outputs', (
        SELECT coalesce(json_object_agg(
            o.identifier, json_build_object('kind', o.kind, 'multiple', o.multiple) ORDER BY o.identifier
        ), '{{}}'::json)
        FROM function_outputs AS o WHERE o.function_key = fn.key
    )
)::text
FROM unnest($1::text[]::uuid[]) WITH ORDINALITY AS page(key, position)
JOIN functions AS fn ON fn.key = page.key
"""  # noqa: S608 (built from constants of this module only)

# $1: function keys. Rows: (function key, name, status): what may change in a function's document.
FUNCTION_VERSIONS = """
SELECT fn.key::text, fn.name, fn.status
FROM unnest($1::text[]::uuid[]) AS page(key) JOIN functions AS fn ON fn.key = page.key
"""


def splice_function(task_json: str, function_json: str) -> str:
    """`{"function": <function>, ...task fields}` from the task JSON object without `function`.

    Every task of a page embeds its function: rendering each function once per page instead of once
    per task halves the cost of a page.
    """
    return '{"function":' + function_json + "," + task_json[1:]
