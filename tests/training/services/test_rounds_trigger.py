"""What starts a scheduled training round: new human judgments (imported ones only when their import
asked), never an import by itself, and never again right after someone cancelled the round."""
from __future__ import annotations

import pytest

from labeling.models import ComparisonTask, Judgment
from tests.labeling.judging import judge, tasks_with_responses
from tests.training.conftest import import_preferences, separable_records
from training.models import TrainingRun
from training.selectors.data import reward_new_judgments_count, reward_retrain_mark
from training.services.rounds import pipeline_start, reward_retrain_check
from training.services.runs import run_cancel, run_params_update, run_start

pytestmark = pytest.mark.django_db


def human_judgments(project, annotator, n: int, prefix: str) -> list[Judgment]:
    tasks_with_responses(project, {f"{prefix} {i}": [f"a {prefix} {i}", f"b {prefix} {i}"] for i in range(n)})
    tasks = ComparisonTask.objects.filter(project=project, prompt__text__startswith=f"{prefix} ").order_by("id")
    return [judge(task, annotator, [[0], [1]]) for task in tasks]


def test_an_import_never_starts_a_round_by_itself(project_factory, member):
    project = project_factory(mode="pairwise", retrain_min_judgments=3)
    import_preferences(project, separable_records(40))  # 40 imported judgments, over the threshold ten times
    assert reward_new_judgments_count(project=project) == 0
    assert reward_retrain_check(project_id=project.pk) is None and not TrainingRun.objects.exists()
    # Human judgments count ...
    annotator = member(project, "annotator")
    human_judgments(project, annotator, 2, "h")
    assert reward_new_judgments_count(project=project) == 2 and reward_retrain_check(project_id=project.pk) is None
    # ... and so do imported ones whose import asked.
    import_preferences(project, [dict(r, id=f"c{r['id']}", prompt=f"c {r['prompt']}") for r in separable_records(1)],
                       count_for_retrain=True)
    assert reward_new_judgments_count(project=project) == 3
    run = reward_retrain_check(project_id=project.pk)
    assert run is not None and run.params["trigger"] == "schedule"


def test_a_cancelled_round_waits_for_judgments_beyond_its_data(project_factory, member):
    project = project_factory(mode="pairwise", retrain_min_judgments=3)
    annotator = member(project, "annotator")
    had = human_judgments(project, annotator, 3, "first")
    queued = reward_retrain_check(project_id=project.pk)
    assert queued is not None
    assert run_cancel(run=queued)
    # Cancelled while queued: the data it had is every judgment up to the cancel, so the next
    # check, a second later, starts nothing.
    assert reward_retrain_mark(project=project) == had[-1].pk
    assert reward_retrain_check(project_id=project.pk) is None and reward_retrain_check(project_id=project.pk) is None
    # An admin can still start one by hand; cancelled while training, its snapshot marks its data.
    manual = pipeline_start(project=project)
    run_start(run_id=manual.pk)
    run_params_update(run_id=manual.pk, data_until_judgment_id=had[-1].pk)
    more = human_judgments(project, annotator, 2, "during")  # arrived after its snapshot
    assert run_cancel(run=manual)
    assert reward_retrain_mark(project=project) == had[-1].pk  # the two later ones were not in its data
    assert reward_retrain_check(project_id=project.pk) is None  # 2 < 3
    human_judgments(project, annotator, 1, "after")
    again = reward_retrain_check(project_id=project.pk)
    assert again is not None and again.pk not in (queued.pk, manual.pk) and more
