"""Profiling steps: nothing is stored but the PROFILING_STEP event (`orchestrator-grpc.md` 9.12)."""

from __future__ import annotations

from backend_common.protos import common_pb2, event_pb2, profiling_pb2

from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.validation import Checker


def register_profiling_step(request: Request, step: profiling_pb2.ProfilingStep) -> None:
    checker = Checker()
    checker.uuid("asset_key", step.asset_key)
    checker.name("step", step.step)
    if not step.duration:
        checker.fail("duration", "cannot be blank")
    checker.check("profiling step")
    request.emit(event_pb2.EVENT_ASSET_CREATED, common_pb2.ASSET_PROFILING_STEP, step.asset_key, step)
