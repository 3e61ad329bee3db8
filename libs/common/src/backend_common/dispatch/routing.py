"""Which worker replica holds a compute plan (compute-engine 3.4).

A plan is pinned to one replica while it has live resources there: its tasks and its teardown go to
`<org>.worker-<i>`. A plan without an open mapping goes to the replica with the fewest open
mappings, the lowest index on a tie. The worker's teardown releases the mapping.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backend_common.db.local import ComputePlanWorkerMapping

# Built once: asked for every batch of events with final tasks.
_OPEN_MAPPINGS = select(
    ComputePlanWorkerMapping.compute_plan_key,
    ComputePlanWorkerMapping.id,
    ComputePlanWorkerMapping.worker_index,
).where(
    ComputePlanWorkerMapping.compute_plan_key.in_(bindparam("plan_keys", expanding=True)),
    ComputePlanWorkerMapping.release_date.is_(None),
)


def open_mappings(session: Session, plan_keys: list[str]) -> dict[str, tuple[str, int]]:
    """Plan key → (mapping id, replica index), for the plans among `plan_keys` that are pinned."""
    if not plan_keys:
        return {}
    rows = session.execute(_OPEN_MAPPINGS, {"plan_keys": plan_keys})
    return {str(plan_key): (str(mapping_id), int(index)) for plan_key, mapping_id, index in rows}


def open_worker_index(session: Session, plan_key: str) -> int | None:
    """The replica the plan is pinned to, if it is."""
    mapping = open_mappings(session, [plan_key]).get(plan_key)
    return None if mapping is None else mapping[1]


def least_loaded_worker(open_mappings: dict[int, int], replicas: int) -> int:
    """The replica with the fewest open mappings, the lowest index on a tie."""
    return min(range(replicas), key=lambda index: (open_mappings.get(index, 0), index))


def worker_index_for_plan(session: Session, plan_key: str, replicas: int) -> int:
    """The plan's replica, pinning the plan to the least loaded one first if needed."""
    index = open_worker_index(session, plan_key)
    if index is not None:
        return index
    rows = session.execute(
        select(ComputePlanWorkerMapping.worker_index, func.count())
        .where(ComputePlanWorkerMapping.release_date.is_(None))
        .group_by(ComputePlanWorkerMapping.worker_index)
    ).all()
    chosen = least_loaded_worker({row[0]: row[1] for row in rows}, replicas)
    session.execute(
        insert(ComputePlanWorkerMapping)
        .values(compute_plan_key=plan_key, worker_index=chosen)
        .on_conflict_do_nothing(index_elements=["compute_plan_key"], index_where=text("release_date IS NULL"))
    )
    # Another writer may have pinned the plan first: its choice wins.
    pinned = open_worker_index(session, plan_key)
    assert pinned is not None
    return pinned
