"""config.tasks_send.task_send_on_commit: services send tasks by name, after the commit, never on rollback,
through the app config.celery builds."""
from __future__ import annotations

import pytest
from django.db import transaction

from config.celery import app
from config.tasks_send import task_send_on_commit

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_registered_task_is_sent_through_its_own_delay_after_the_commit(monkeypatch):
    import training.tasks  # noqa: F401  (registers the task here, as in a worker)

    sent = []
    monkeypatch.setattr(app.tasks["training.tasks.reward_model_train"], "delay", lambda **kw: sent.append(kw))
    with transaction.atomic():
        task_send_on_commit("training.tasks.reward_model_train", run_id=7)
        assert sent == []  # not before the commit
    assert sent == [{"run_id": 7}]


def test_a_rolled_back_write_sends_nothing(monkeypatch):
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append(name))
    with pytest.raises(RuntimeError), transaction.atomic():
        task_send_on_commit("pairwise.tests.never", 1)
        raise RuntimeError("roll back")
    assert sent == []


def test_an_unregistered_task_goes_by_name_with_its_arguments(monkeypatch):
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append((name, kw)))
    with transaction.atomic():
        task_send_on_commit("pairwise.tests.elsewhere", 3, key="v")
    assert sent == [("pairwise.tests.elsewhere", {"args": (3,), "kwargs": {"key": "v"}})]
