"""A real Celery worker standing in for the compute worker, which does not exist yet.

`celery -A stand_in_worker:app worker` consumes the queues of the events tests' organization; its
`compute_task` only appends its arguments to the file named by `STAND_IN_WORKER_LOG`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from backend_common import queues
from backend_common.celery_app import create_celery_app
from backend_common.settings import CelerySettings
from backend_events.testing import BROKER_DATABASE, ORG_NAME, RESULT_DATABASE

SETTINGS = CelerySettings(
    broker_host="127.0.0.1",
    broker_port=6379,
    broker_database=BROKER_DATABASE,
    result_database=RESULT_DATABASE,
)

app = create_celery_app("events-tests-worker", SETTINGS, ORG_NAME)


@app.task(name=queues.COMPUTE_TASK_TASK)
def compute_task(channel_name: str, task: str, compute_plan_key: str) -> str:
    with Path(os.environ["STAND_IN_WORKER_LOG"]).open("a") as log:
        log.write(json.dumps([channel_name, json.loads(task)["key"], compute_plan_key]) + "\n")
    return "done"


def received(log: Path) -> list[Any]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
