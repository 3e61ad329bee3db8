"""The Celery application of the worker and builder processes."""

from __future__ import annotations

from backend_common.celery_app import create_celery_app
from celery import Celery

from backend_worker.settings import WorkerSettings
from backend_worker.tasks import register_tasks


def create_app(settings: WorkerSettings) -> Celery:
    app = create_celery_app("worker", settings.celery, settings.organization.org_name)
    register_tasks(app, settings)
    return app
