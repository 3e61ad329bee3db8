"""The Celery work the events service and the scheduler send, and its message formats.

Every message is sent with `send_task` under the reference task name (`backend_common.queues`),
JSON only. Orchestrator objects travel as JSON strings of the message with proto field names and
enum names (`MessageToDict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)`),
like the reference backend's.

* `build_image` on `<org>.builder`: kwargs `{"channel_name": str, "function_serialized": <Function
  JSON>}`. Linked to `save_image_task` on `<org>.worker` with the same kwargs, as an immutable
  signature: it runs only once the build succeeded, and does not receive its result.
* `compute_task` on the plan's `<org>.worker-<i>`: args `[channel_name, <ComputeTask JSON as GetTask
  answered>, compute_plan_key]`.
* `delete_cp_pod_and_dirs` on the plan's `<org>.worker-<i>`: kwargs `{"channel_name": str,
  "compute_plan_key": str}`.
* `remove_transient_outputs_from_orc` on `<org>.worker`: kwargs `{"channel_name": str, "outputs":
  [{"compute_task_key": str, "identifier": str}]}`; the worker calls `DisableOutput` for each and
  ignores refusals.
* `remove_intermediary_models_from_buffer` on `<org>.broadcast` (every worker): kwargs
  `{"model_key": str}`.
* `remove_intermediary_model_from_db` on `<org>.worker`, for models this organization produced:
  kwargs `{"channel_name": str, "model_key": str}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from backend_common import queues
from backend_common.protos import computetask_pb2


def serialize(message: Message) -> str:
    """An orchestrator object as the JSON string tasks receive."""
    return json.dumps(
        MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class Work:
    """One Celery task to send, decided once for its `dedupe_key`."""

    dedupe_key: str
    task_name: str
    queue: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Sent once this task succeeds (a Celery link with an immutable signature).
    then: Work | None = None
    # Set for `compute_task`: recorded in `task_dispatches` too.
    compute_task_key: str | None = None

    def message(self) -> dict[str, Any]:
        """The JSON stored in the outbox and read back to publish."""
        return {
            "args": self.args,
            "kwargs": self.kwargs,
            "then": None
            if self.then is None
            else {**self.then.message(), "task_name": self.then.task_name, "queue": self.then.queue},
        }


def build_image(org_name: str, channel: str, function_json: str, function_key: str) -> Work:
    kwargs = {"channel_name": channel, "function_serialized": function_json}
    return Work(
        dedupe_key=f"build_image:{function_key}",
        task_name=queues.BUILD_IMAGE_TASK,
        queue=queues.builder_queue(org_name),
        kwargs=kwargs,
        then=Work(
            dedupe_key=f"save_image:{function_key}",
            task_name=queues.SAVE_IMAGE_TASK,
            queue=queues.worker_queue(org_name),
            kwargs=kwargs,
        ),
    )


def compute_task(org_name: str, channel: str, task: computetask_pb2.ComputeTask, worker_index: int) -> Work:
    return Work(
        dedupe_key=f"compute_task:{task.key}",
        task_name=queues.COMPUTE_TASK_TASK,
        queue=queues.worker_replica_queue(org_name, worker_index),
        args=[channel, serialize(task), task.compute_plan_key],
        compute_task_key=task.key,
    )


def plan_teardown_occasion(mapping_id: object, task_count: int) -> str:
    """The events service's occasion of a plan teardown: once per worker mapping and number of
    tasks (tasks added later can make the plan run and stop again on the same replica)."""
    return f"{mapping_id}:{task_count}"


def plan_teardown_dedupe_key(plan_key: str, occasion: str) -> str:
    return f"delete_cp_pod_and_dirs:{plan_key}:{occasion}"


def delete_plan_resources(
    org_name: str, channel: str, plan_key: str, worker_index: int, occasion: str
) -> Work:
    """Teardown of a plan's pods and directories on its worker; `occasion` distinguishes teardowns."""
    return Work(
        dedupe_key=plan_teardown_dedupe_key(plan_key, occasion),
        task_name=queues.DELETE_CP_POD_AND_DIRS_TASK,
        queue=queues.worker_replica_queue(org_name, worker_index),
        kwargs={"channel_name": channel, "compute_plan_key": plan_key},
    )


def remove_transient_output(org_name: str, channel: str, task_key: str, identifier: str) -> Work:
    return Work(
        dedupe_key=f"remove_transient_output:{task_key}:{identifier}",
        task_name=queues.REMOVE_TRANSIENT_OUTPUTS_TASK,
        queue=queues.worker_queue(org_name),
        kwargs={
            "channel_name": channel,
            "outputs": [{"compute_task_key": task_key, "identifier": identifier}],
        },
    )


def remove_model_from_buffers(org_name: str, model_key: str) -> Work:
    return Work(
        dedupe_key=f"remove_model_from_buffers:{model_key}",
        task_name=queues.REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK,
        queue=queues.broadcast_queue(org_name),
        kwargs={"model_key": model_key},
    )


def remove_model_from_storage(org_name: str, channel: str, model_key: str) -> Work:
    return Work(
        dedupe_key=f"remove_model_from_storage:{model_key}",
        task_name=queues.REMOVE_INTERMEDIARY_MODEL_FROM_DB_TASK,
        queue=queues.worker_queue(org_name),
        kwargs={"channel_name": channel, "model_key": model_key},
    )
