"""The dispatch policy: which event sends which work to the workers (compute-engine 2.3, 8, 9).

The rules:

* FUNCTION created, owned by this organization: build its image, then save it.
* COMPUTE_TASK created or updated to WAITING_FOR_EXECUTOR_SLOT, with this organization as worker,
  not dispatched yet and runnable (`backend_common.dispatch.compute_tasks`): `compute_task` on the
  plan's worker replica.
* COMPUTE_TASK created or updated to a final status (DONE, CANCELED, FAILED): disable the transient
  outputs this organization produced once their producer and all their consumers are final; tear
  the plan down on its replica once the plan stopped running.
* COMPUTE_PLAN updated with a cancelation date, none of this organization's tasks executing: tear
  the plan down on its replica.
* MODEL disabled: remove it from every worker's buffer, and delete its stored file if this
  organization produced it.

The rules are evaluated on a batch of events once the replica has applied all of them, the
end-of-task rules once for all the batch's final tasks. That is what applying them event by event
would decide, or later: every condition read on the replica only moves forward (a task that is
final stays final, a plan that stopped running is torn down when it stops again), and each piece
of work carries a dedupe key that the outbox records once, so a decision taken again, by a
repeated event or a replay after a crash, sends nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend_common.db.local import TaskDispatch
from backend_common.db.replica import ComputeTask
from backend_common.dispatch import routing, work
from backend_common.dispatch.compute_tasks import Orchestrator, compute_task_work, runnable_task
from backend_common.dispatch.work import Work
from backend_common.protos import common_pb2, computetask_pb2, event_pb2
from backend_common.replica import FINAL_TASK_STATUSES, ReplicaChange, is_plan_running
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

WAITING_FOR_EXECUTOR_SLOT = computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT
FINAL_STATUS_VALUES = frozenset(
    {computetask_pb2.STATUS_DONE, computetask_pb2.STATUS_CANCELED, computetask_pb2.STATUS_FAILED}
)
STATUS_EXECUTING = "STATUS_EXECUTING"

# The transient outputs this organization produced that the given final tasks read or produced,
# once their producer and every consumer are final: what DisableOutput accepts.
_REMOVABLE_TRANSIENT_OUTPUTS = text(
    """
    WITH candidate AS (
        SELECT parent_task_key AS task_key, parent_task_output_identifier AS identifier
        FROM compute_task_inputs
        WHERE task_key = ANY(CAST(:task_keys AS uuid[])) AND parent_task_key IS NOT NULL
        UNION
        SELECT task_key, identifier
        FROM compute_task_outputs
        WHERE task_key = ANY(CAST(:task_keys AS uuid[])) AND transient
    )
    SELECT candidate.task_key, candidate.identifier
    FROM candidate
    JOIN compute_task_outputs AS output
      ON output.task_key = candidate.task_key
     AND output.identifier = candidate.identifier
     AND output.transient
    JOIN compute_tasks AS producer
      ON producer.key = candidate.task_key AND producer.worker = :me AND producer.status IN :final
    WHERE EXISTS (
        SELECT 1 FROM compute_task_inputs AS consumer_input
        WHERE consumer_input.parent_task_key = candidate.task_key
          AND consumer_input.parent_task_output_identifier = candidate.identifier
    )
    AND NOT EXISTS (
        SELECT 1 FROM compute_task_inputs AS consumer_input
        JOIN compute_tasks AS consumer ON consumer.key = consumer_input.task_key
        WHERE consumer_input.parent_task_key = candidate.task_key
          AND consumer_input.parent_task_output_identifier = candidate.identifier
          AND consumer.status NOT IN :final
    )
    ORDER BY candidate.task_key, candidate.identifier
    """
).bindparams(bindparam("final", expanding=True))


@dataclass(frozen=True)
class Decision:
    """Work to send, and the event that caused it."""

    event_id: str
    work: Work


@dataclass(frozen=True)
class DispatchPolicy:
    """The rules for one organization on one channel."""

    org_name: str
    msp_id: str
    channel: str
    worker_replicas: int
    orchestrator: Orchestrator

    def decide(
        self, session: Session, events: Sequence[event_pb2.Event], changes: Sequence[ReplicaChange]
    ) -> list[Decision]:
        """The work a batch of events, already applied to the replica, calls for."""
        decisions: list[Decision] = []
        # Task key → the last event that made it final, and plan key → the last such event.
        final_tasks: dict[str, str] = {}
        final_plans: dict[str, str] = {}
        for event, change in zip(events, changes, strict=True):
            if not change.mirrored:
                continue
            works: list[Work] = []
            kind = (event.asset_kind, event.event_kind)
            if kind == (common_pb2.ASSET_FUNCTION, event_pb2.EVENT_ASSET_CREATED):
                works = self._on_function_created(event)
            elif event.asset_kind == common_pb2.ASSET_COMPUTE_TASK and event.event_kind in (
                event_pb2.EVENT_ASSET_CREATED,
                event_pb2.EVENT_ASSET_UPDATED,
            ):
                task = event.compute_task
                if task.status == WAITING_FOR_EXECUTOR_SLOT and task.worker == self.msp_id:
                    works = self._on_task_waiting_for_executor(session, task)
                elif task.status in FINAL_STATUS_VALUES:
                    final_tasks[task.key] = event.id
                    final_plans[task.compute_plan_key] = event.id
            elif kind == (common_pb2.ASSET_MODEL, event_pb2.EVENT_ASSET_DISABLED):
                works = self._on_model_disabled(event)
            elif kind == (common_pb2.ASSET_COMPUTE_PLAN, event_pb2.EVENT_ASSET_UPDATED) and (
                event.compute_plan.HasField("cancelation_date")
            ):
                works = self._on_plan_canceled(session, event.compute_plan.key)
            decisions += [Decision(event.id, decided) for decided in works]
        if final_tasks:
            decisions += self._on_tasks_final(session, final_tasks, final_plans)
        return decisions

    # --- builds ------------------------------------------------------------------------------------

    def _on_function_created(self, event: event_pb2.Event) -> list[Work]:
        function = event.function
        if function.owner != self.msp_id:
            return []
        return [work.build_image(self.org_name, self.channel, work.serialize(function), function.key)]

    # --- compute tasks -----------------------------------------------------------------------------

    def _on_task_waiting_for_executor(
        self, session: Session, snapshot: computetask_pb2.ComputeTask
    ) -> list[Work]:
        # Already handed to a worker (an earlier event, or before a restart): nothing to ask.
        if session.get(TaskDispatch, snapshot.key) is not None:
            return []
        task = runnable_task(self.orchestrator, snapshot.key)
        if task is None:
            return []
        return [compute_task_work(session, self.org_name, self.channel, task, self.worker_replicas)]

    # --- end of tasks ------------------------------------------------------------------------------

    def _on_tasks_final(
        self, session: Session, final_tasks: dict[str, str], final_plans: dict[str, str]
    ) -> list[Decision]:
        decisions: list[Decision] = []
        rows = session.execute(
            _REMOVABLE_TRANSIENT_OUTPUTS,
            {"task_keys": list(final_tasks), "me": self.msp_id, "final": sorted(FINAL_TASK_STATUSES)},
        )
        last_final_event = next(reversed(final_tasks.values()))
        for producer, identifier in rows:
            producer_key = str(producer)
            # The event of the producer if it ended in this batch, else the batch's last final event.
            event_id = final_tasks.get(producer_key, last_final_event)
            removal = work.remove_transient_output(self.org_name, self.channel, producer_key, str(identifier))
            decisions.append(Decision(event_id, removal))
        for plan_key, mapping in routing.open_mappings(session, list(final_plans)).items():
            teardown = self._plan_teardown(session, plan_key, mapping)
            if teardown is not None:
                decisions.append(Decision(final_plans[plan_key], teardown))
        return decisions

    def _plan_teardown(self, session: Session, plan_key: str, mapping: tuple[str, int]) -> Work | None:
        """Teardown of the plan's resources on its replica, once the plan stopped running.

        Once per mapping and number of tasks: tasks added to the plan later can make it run and stop
        again on the same replica, which then needs another teardown.
        """
        if is_plan_running(session, plan_key):
            return None
        mapping_id, index = mapping
        task_count = session.scalar(
            select(func.count()).select_from(ComputeTask).where(ComputeTask.compute_plan_key == plan_key)
        )
        occasion = work.plan_teardown_occasion(mapping_id, int(task_count or 0))
        return work.delete_plan_resources(self.org_name, self.channel, plan_key, index, occasion)

    def _on_plan_canceled(self, session: Session, plan_key: str) -> list[Work]:
        """A canceled plan stops running without any task event when none of its tasks is in flight.

        A task of this organization still executing keeps its resources: its final event tears
        the plan down.
        """
        mapping = routing.open_mappings(session, [plan_key]).get(plan_key)
        if mapping is None:
            return []
        executing = session.scalar(
            select(func.count())
            .select_from(ComputeTask)
            .where(
                ComputeTask.compute_plan_key == plan_key,
                ComputeTask.worker == self.msp_id,
                ComputeTask.status == STATUS_EXECUTING,
            )
        )
        if executing:
            return []
        teardown = self._plan_teardown(session, plan_key, mapping)
        return [] if teardown is None else [teardown]

    # --- models ------------------------------------------------------------------------------------

    def _on_model_disabled(self, event: event_pb2.Event) -> list[Work]:
        model = event.model
        works = [work.remove_model_from_buffers(self.org_name, model.key)]
        if model.owner == self.msp_id:
            works.append(work.remove_model_from_storage(self.org_name, self.channel, model.key))
        return works
