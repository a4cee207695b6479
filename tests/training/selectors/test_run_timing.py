"""training.selectors.runs.run_timing: elapsed time, speed and time left of a run, as its pages show them."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from training.models import TrainingRun
from training.selectors.runs import run_as_dict, run_timing
from training.services.runs import run_create

pytestmark = pytest.mark.django_db


def test_elapsed_speed_and_time_left(project_factory):
    project = project_factory()
    run = run_create(project=project, kind=TrainingRun.Kind.REWARD)
    assert run_timing(run=run) == {"elapsed_s": None, "steps": None, "steps_per_s": None, "eta_s": None,
                                   "text": "waiting for a worker"}
    now = timezone.now()
    run.status, run.started_at, run.progress = TrainingRun.Status.RUNNING, now - timedelta(seconds=100), 0.25
    run.metrics_history = [{"step": 10, "loss": 0.7}, {"step": 50, "loss": 0.5}, {"note": "no step"}]
    timing = run_timing(run=run, now=now)
    # 50 steps in 100 s; a quarter done in 100 s leaves three quarters: 300 s.
    assert (timing["elapsed_s"], timing["steps"], timing["steps_per_s"], timing["eta_s"]) == (100.0, 50, 0.5, 300.0)
    assert timing["text"] == "1 min 40 s elapsed · 0.5 steps/s · about 5 min 00 s left"
    # No progress reported yet: no estimate rather than a wrong one.
    run.progress = 0.0
    assert run_timing(run=run, now=now)["eta_s"] is None
    assert run_timing(run=run, now=now)["text"].endswith("time left unknown until it reports progress")
    # Finished: the time it took, and no time left.
    run.status, run.progress, run.finished_at = TrainingRun.Status.SUCCEEDED, 1.0, now - timedelta(seconds=40)
    done = run_timing(run=run, now=now + timedelta(hours=1))
    assert (done["elapsed_s"], done["eta_s"], done["text"]) == (60.0, None, "1 min 00 s in all · 0.833 steps/s")


def test_ppo_counts_iterations_and_the_json_carries_it(project_factory):
    project = project_factory()
    run = run_create(project=project, kind=TrainingRun.Kind.PPO)
    now = timezone.now()
    run.status, run.started_at, run.progress = TrainingRun.Status.RUNNING, now - timedelta(hours=2), 0.5
    run.metrics_history = [{"iteration": 3, "reward": 0.1}, {"step": 999}]
    timing = run_timing(run=run, now=now)
    assert timing["steps"] == 3 and timing["text"].startswith("2 h 00 min elapsed · 0.000417 iterations/s")
    assert timing["eta_s"] == pytest.approx(7200, abs=2)
    assert run_as_dict(run)["timing"]["steps"] == 3


def test_the_run_page_shows_it_and_polls_while_the_run_is_live(project_factory, member):
    from django.test import Client
    from django.urls import reverse

    project = project_factory()
    run = run_create(project=project, kind=TrainingRun.Kind.REWARD)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING, started_at=timezone.now() - timedelta(seconds=90), progress=0.5,
        metrics_history=[{"step": 45, "loss": 0.4}])
    client = Client()
    client.force_login(member(project, "viewer"))
    url = reverse("training-run-detail", args=[project.slug, run.pk])
    html = client.get(url).content.decode()
    timing = html.split('<dd id="run-timing">')[1].split("</dd>")[0]
    # 45 steps, half done, after 90 s (plus the seconds this test takes): as much again left.
    assert re.fullmatch(r"1 min 3\d s elapsed · 0\.[45]\d* steps/s · about 1 min 3\d s left", timing), timing
    assert "training/runs.js" in html and 'data-run-id="%d"' % run.pk in html
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED, finished_at=timezone.now())
    html = client.get(url).content.decode()
    assert "in all" in html.split('<dd id="run-timing">')[1].split("</dd>")[0] and "training/runs.js" not in html
