"""Sending a Celery task from a service, by name and after the commit.

Apart from config.celery on purpose: that module builds the app, which autodiscovers every app's
tasks module, and those import the services; a service importing it would close that circle."""
from __future__ import annotations

from celery import current_app
from django.db import transaction


def task_send_on_commit(name: str, *args, **kwargs) -> None:
    """Send a task by name once the transaction commits (a rolled-back write sends nothing).

    By name, so services never import the task modules that import them. Where this process has
    the task registered (a worker, tests, eager mode) its own delay() sends it, so eager mode and
    monkeypatched tasks behave as for any task; elsewhere the app sends it by name, routed by
    CELERY_TASK_ROUTES all the same. The app is Celery's current one: config.celery's, which
    config/__init__.py builds before any service is imported."""

    def send() -> None:
        task = current_app.tasks.get(name)
        if task is not None:
            task.delay(*args, **kwargs)
        else:
            current_app.send_task(name, args=args, kwargs=kwargs)

    transaction.on_commit(send)
