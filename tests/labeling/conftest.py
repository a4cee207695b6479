"""Fixtures the labeling tests share."""
import pytest


@pytest.fixture
def eager():
    """Celery runs sent tasks in process (with django_capture_on_commit_callbacks, at the commit)."""
    import labeling.tasks  # noqa: F401  (registers the tasks: they are sent by name, an unknown name goes to the broker)
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False
