"""training.services.schedules: the beat schedules and their round options."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from training import tasks
from training.services.schedules import RETRAIN_SCHEDULE_PREFIX


@pytest.mark.django_db
def test_setup_schedules_writes_pipeline_options_into_the_kwargs(project_factory):
    a = project_factory()
    out = StringIO()
    call_command("setup_schedules", "--policy-kind", "ppo", "--auto-promote-margin", "0.05", "--step-params",
                 json.dumps({"ppo": {"config": {"iterations": 2}}}), stdout=out)
    kwargs = json.loads(PeriodicTask.objects.get(name=RETRAIN_SCHEDULE_PREFIX + a.slug).kwargs)
    assert kwargs == {"project_id": a.pk, "policy_kind": "ppo", "auto_promote_margin": 0.05,
                      "step_params": {"ppo": {"config": {"iterations": 2}}}}
    # The task takes exactly these kwargs.
    tasks.reward_retrain_check.run(**kwargs)
    with pytest.raises(Exception):
        call_command("setup_schedules", "--step-params", json.dumps({"nope": {}}), stdout=out)



@pytest.mark.django_db
def test_a_new_project_gets_its_schedule_in_the_same_transaction(project_factory, settings):
    settings.PAIRWISE_RETRAIN_CHECK_MINUTES = 7
    project = project_factory()
    schedule = PeriodicTask.objects.get(name=RETRAIN_SCHEDULE_PREFIX + project.slug)
    assert schedule.task == "training.tasks.reward_retrain_check" and schedule.enabled and schedule.queue == "celery"
    assert json.loads(schedule.kwargs) == {"project_id": project.pk} and schedule.interval.every == 7
    # A project that fails validation leaves no schedule behind.
    with pytest.raises(Exception):
        project_factory(slug="bad-k", responses_per_task=12, mode="rank")
    assert not PeriodicTask.objects.filter(name=RETRAIN_SCHEDULE_PREFIX + "bad-k").exists()
