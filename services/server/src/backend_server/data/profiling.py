"""Task profiling records, written only by this organization's worker (local, not on the orchestrator)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backend_common.db.replica import ComputeTask, TaskProfile, TaskProfilingStep
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from backend_server import render
from backend_server.data.common import Page
from backend_server.listing import PageRequest, check_page

# The reference hides the image build step from task profiles.
HIDDEN_STEPS = frozenset({"build_image"})


def document(profile: TaskProfile, task_end: datetime | None) -> dict[str, Any]:
    duration = None
    if task_end is not None:
        duration = int((task_end - profile.creation_date).total_seconds() * 1_000_000)
    return {
        "compute_task_key": profile.compute_task_key,
        "task_duration": duration,
        "execution_rundown": [
            {"step": step.step, "duration": step.duration_us}
            for step in profile.steps
            if step.step not in HIDDEN_STEPS
        ],
    }


def list_profiles(session: Session, channel: str, page: PageRequest) -> Page:
    count = (
        session.scalar(select(func.count()).select_from(TaskProfile).where(TaskProfile.channel == channel))
        or 0
    )
    check_page(page, count)
    rows = session.execute(
        select(TaskProfile, ComputeTask.end_date)
        .join(ComputeTask, ComputeTask.key == TaskProfile.compute_task_key)
        .where(TaskProfile.channel == channel)
        .options(selectinload(TaskProfile.steps))
        .order_by(TaskProfile.creation_date, TaskProfile.compute_task_key)
        .offset(page.offset)
        .limit(page.size)
    ).all()
    return Page(count, [render.dumps(document(profile, end)) for profile, end in rows])


def get_profile(session: Session, channel: str, task_key: str) -> tuple[TaskProfile, datetime | None] | None:
    row = session.execute(
        select(TaskProfile, ComputeTask.end_date)
        .join(ComputeTask, ComputeTask.key == TaskProfile.compute_task_key)
        .where(TaskProfile.channel == channel, TaskProfile.compute_task_key == task_key)
        .options(selectinload(TaskProfile.steps))
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def create_profile(session: Session, channel: str, task_key: str, now: datetime) -> TaskProfile:
    profile = TaskProfile(compute_task_key=task_key, channel=channel, creation_date=now)
    session.add(profile)
    session.flush()
    return profile


def reset_profile(session: Session, profile: TaskProfile, now: datetime) -> None:
    """The worker re-runs a task: the profile starts again from now, with no steps."""
    profile.creation_date = now
    profile.steps.clear()


def add_step(session: Session, profile: TaskProfile, step: str, duration_us: int) -> TaskProfilingStep:
    position = max((existing.position for existing in profile.steps), default=-1) + 1
    row = TaskProfilingStep(
        compute_task_key=profile.compute_task_key, step=step, position=position, duration_us=duration_us
    )
    profile.steps.append(row)
    session.flush()
    return row


def find_step(profile: TaskProfile, step: str) -> TaskProfilingStep | None:
    return next((existing for existing in profile.steps if existing.step == step), None)
