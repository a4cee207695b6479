"""The queue's acquisition scores on a tiny reward model: each open task's uncertainty is the promoted
model's own 1 - |2p - 1|, disagreement comes from seeded heads on its pooled states, started-first
projects keep none, and a reward run of a project that orders by score rescores its queue (task sent on
commit, run here by an eager Celery)."""
from __future__ import annotations

import io
import json
import math

import pytest

from labeling.models import ComparisonTask, Project
from labeling.services.assignment import task_assign_next
from labeling.services.imports import project_data_import
from tests.training.conftest import REWARD, fast_params, import_preferences, separable_records
from training.services.acquisition import acquisition_scores_update
from training.services.reward import reward_model_train
from training.services.runs import run_create

pytestmark = pytest.mark.django_db

OPEN_PAIRS = [("will you help me move?", "yes, happy to help you move!", "no."),
              ("can you explain tides?", "tides", "the moon pulls the sea, happy to help!"),
              ("what is two plus two?", "yes, happy to help: four!", "five"),
              ("tell me a joke", "no. 7", "no. 8"),
              ("is the sky blue?", "blue", "yes, happy to help, it is blue!")]


@pytest.fixture
def trained(project_factory, tiny_reward_base, models_dir):
    """A pairwise project with a promoted tiny reward model (24 separable imported pairs)."""
    project = project_factory(mode="pairwise", reward_promote_min_heldout_groups=0)
    import_preferences(project, separable_records(24))
    version = reward_model_train(run_id=run_create(project=project, kind=REWARD,
                                                   params=fast_params(tiny_reward_base, epochs=4)).pk)
    assert version is not None and version.promoted
    return project, version


def open_tasks(project) -> list[ComparisonTask]:
    body = "\n".join(json.dumps({"id": f"open{i}", "prompt": p, "responses": [a, b]})
                     for i, (p, a, b) in enumerate(OPEN_PAIRS)).encode()
    project_data_import(project=project, stream=io.BytesIO(body), filename="open.jsonl")
    return list(ComparisonTask.objects.filter(project=project, prompt__external_id__startswith="open").order_by("pk"))


def order(project, queue_order):
    Project.objects.filter(pk=project.pk).update(queue_order=queue_order)
    project.refresh_from_db()


def test_uncertainty_is_the_promoted_models_doubt_and_orders_the_queue(trained, member):
    from training.ml.reward.artifact import load_reward_model, score

    project, version = trained
    tasks = open_tasks(project)
    order(project, "uncertainty")
    done = acquisition_scores_update(project=project)
    assert done == {"order": "uncertainty", "version": version.pk, "scored": len(tasks)}
    model, tokenizer, config = load_reward_model(version.artifact_path)
    for task in tasks:
        task.refresh_from_db()
        slots = list(task.slots.order_by("position").select_related("response"))
        r = score(model, tokenizer, [task.prompt.text] * 2, [s.response.text for s in slots], max_length=config.max_length)
        p = 1 / (1 + math.exp(-(r[0] - r[1])))
        assert task.acquisition_score == pytest.approx(1 - abs(2 * p - 1), abs=1e-5)
    # The imported preferences' complete tasks are not the queue's: they keep no score.
    assert not ComparisonTask.objects.filter(project=project, status="complete", acquisition_score__isnull=False).exists()
    best = max(tasks, key=lambda t: t.acquisition_score)
    user = member(project, "annotator")
    assert task_assign_next(annotator=user, project=project).assignment.task_id == best.pk


def test_disagreement_comes_from_seeded_heads_on_the_models_states(trained):
    project, version = trained
    tasks = open_tasks(project)
    order(project, "disagreement")
    done = acquisition_scores_update(project=project)
    assert done["scored"] == len(tasks) and done["heads"] == 5 and done["labeled_groups"] == 24
    scores = [ComparisonTask.objects.get(pk=t.pk).acquisition_score for t in tasks]
    assert all(0 <= s <= 0.25 for s in scores) and len(set(scores)) > 1
    acquisition_scores_update(project=project)  # seeded by the version: the same scores again
    assert [ComparisonTask.objects.get(pk=t.pk).acquisition_score for t in tasks] == scores


def test_started_first_projects_keep_no_scores_and_no_model_scores_nothing(trained, project_factory):
    project, _ = trained
    tasks = open_tasks(project)
    ComparisonTask.objects.filter(pk=tasks[0].pk).update(acquisition_score=0.7)
    assert acquisition_scores_update(project=project) == {"order": "started-first", "scored": 0, "cleared": 1}
    assert not ComparisonTask.objects.filter(project=project, acquisition_score__isnull=False).exists()

    bare = project_factory(queue_order="uncertainty")
    assert acquisition_scores_update(project=bare)["reason"] == "the project has no promoted reward model"


@pytest.mark.parametrize("queue_order", ["uncertainty", "started-first"])
def test_a_reward_run_rescores_the_queue_of_a_project_that_orders_by_score(
        project_factory, tiny_reward_base, models_dir, django_capture_on_commit_callbacks, queue_order):
    import training.tasks  # noqa: F401  (registers the task, so eager mode runs it here)
    from config.celery import app

    project = project_factory(mode="pairwise", reward_promote_min_heldout_groups=0, queue_order=queue_order)
    import_preferences(project, separable_records(24))
    tasks = open_tasks(project)
    ComparisonTask.objects.filter(pk=tasks[0].pk).update(acquisition_score=-1.0)  # stale: a rescore replaces it
    run = run_create(project=project, kind=REWARD, params=fast_params(tiny_reward_base, epochs=2))
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert reward_model_train(run_id=run.pk) is not None
    finally:
        app.conf.task_always_eager = False
    scores = [ComparisonTask.objects.get(pk=t.pk).acquisition_score for t in tasks]
    if queue_order == "uncertainty":
        assert all(s is not None and 0 <= s <= 1 for s in scores)
    else:  # not sent: the stale score is left alone (a started-first queue never reads it)
        assert scores == [-1.0] + [None] * (len(tasks) - 1)
