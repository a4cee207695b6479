import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("pairwise")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def task_send_on_commit(name: str, *args, **kwargs) -> None:
    """Send a task by name once the transaction commits (a rolled-back write sends nothing).

    By name, so services never import the task modules that import them. Where this process has
    the task registered (a worker, tests, eager mode) its own delay() sends it, so eager mode and
    monkeypatched tasks behave as for any task; elsewhere the app sends it by name, routed by
    CELERY_TASK_ROUTES all the same."""
    from django.db import transaction

    def send() -> None:
        task = app.tasks.get(name)
        if task is not None:
            task.delay(*args, **kwargs)
        else:
            app.send_task(name, args=args, kwargs=kwargs)

    transaction.on_commit(send)
