"""Fitting a project's label models from its stored judgments: the service, its task, its trigger on
submit and the selectors the console reads."""
import random

import pytest

from labeling.models import LabelModelFit
from labeling.selectors.label_models import label_model_annotators, label_model_votes
from labeling.services import label_models as service
from labeling.services.assignment import task_assign_next
from tests.labeling.judging import ids, judge, make_tasks, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def crowd(project_factory, make_user):
    """40 two-response tasks (position 1 wins every third, position 0 the others), 3 good annotators
    who answer right, a spammer who answers at random and a clicker who picks what was shown first."""
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=5)
    tasks = make_tasks(project, 40)
    good = [make_user(f"good{i}") for i in range(3)]
    spam, first = make_user("spam"), make_user("first")
    rng = random.Random(1)
    for n, task in enumerate(tasks):
        shown = [0, 1] if n % 2 else [1, 0]
        for user in good:
            judge(task, user, [[1], [0]] if n % 3 == 0 else [[0], [1]], shown=shown)
        judge(task, spam, rng.choice([[[0], [1]], [[1], [0]]]), shown=shown)
        judge(task, first, [[shown[0]], [shown[1]]], shown=shown)
    return project, tasks, good, spam, first


def test_votes_read_current_human_judgments_with_shown_order_and_gold(project_factory, make_user):
    project = project_factory(mode="rank", responses_per_task=3)
    task, = make_tasks(project, 1)
    gold, = make_tasks(project, 1, gold=True)
    g = ids(gold)
    gold.gold_ranking = [[g[2]], [g[0], g[1]]]
    gold.save()
    user = make_user()
    old = judge(task, user, [[0], [1], [2]])
    judge(task, user, [[2], [0, 1]], shown=[2, 1, 0], supersedes=old)  # the correction replaces it
    judge(task, user, [[0], [1], [2]], source="hh-rlhf")  # imported: not a crowd vote
    judge(gold, user, [[1], [0], [2]])
    votes, gold_answers, judgments = label_model_votes(project=project)
    assert judgments == 2 and len(votes) == 6
    r = ids(task)
    by_item = {v.item: v for v in votes if v.item[0] in r}
    assert by_item[(r[0], r[1])].outcome == 0 and by_item[(r[0], r[2])].outcome == -1
    assert by_item[(r[0], r[2])].a_first is False
    assert gold_answers == {(g[0], g[1]): 0, (g[0], g[2]): -1, (g[1], g[2]): -1}


def test_fit_stores_flags_and_posteriors_and_a_refit_replaces_it(crowd):
    project, tasks, good, spam, first = crowd
    fit = service.label_model_fit(project_id=project.pk)
    assert fit.judgments == 200 and fit.votes == 200 and set(fit.fits) == {"majority", "dawid-skene", "position-em"}
    view = label_model_annotators(project=project)
    flags = {uid: [f["flag"] for f in s["flags"]] for uid, s in view["annotators"].items()}
    assert flags[first.pk] == ["spammer", "always-first"] and "spammer" in flags[spam.pk]
    assert all(flags[u.pk] == [] for u in good)
    assert view["fit"]["model"] == "dawid-skene" and view["fit"]["judgments"] == 200
    for n in (0, 1):
        r = ids(tasks[n])  # make_tasks gives position 0 the lower id: "a" is position 0
        posterior = fit.posteriors[f"{r[0]}-{r[1]}"]
        assert set(posterior) == {"majority", "dawid-skene", "position-em"}
        assert all(0.0 <= p <= 1.0 for p in posterior.values())
        assert (posterior["dawid-skene"] > 0.5) == (n % 3 != 0) and (posterior["position-em"] > 0.5) == (n % 3 != 0)
    against = fit.fits["dawid-skene"]["versus_majority"]
    assert against["pairs"] == 40 and 0 <= against["flips"] <= against["decided"] <= 40
    assert "versus_majority" not in fit.fits["majority"]
    again = service.label_model_fit(project_id=project.pk)
    assert again.pk == fit.pk and LabelModelFit.objects.filter(project=project).count() == 1


def test_fit_of_a_deleted_or_missing_project_is_a_no_op(project_factory):
    from django.utils import timezone

    project = project_factory()
    project.deleted_at = timezone.now()
    project.save()
    assert service.label_model_fit(project_id=project.pk) is None
    assert service.label_model_fit(project_id=10**9) is None
    assert not LabelModelFit.objects.exists()


def test_empty_project_fits_to_an_empty_fit(project_factory):
    project = project_factory()
    fit = service.label_model_fit(project_id=project.pk)
    assert (fit.judgments, fit.votes, fit.posteriors) == (0, 0, {})
    assert label_model_annotators(project=project)["annotators"] == {}


def test_request_runs_the_task_after_commit(crowd, eager, django_capture_on_commit_callbacks):
    project = crowd[0]
    with django_capture_on_commit_callbacks(execute=True):
        service.label_model_fit_request(project=project)
        assert not LabelModelFit.objects.exists()  # nothing before the commit
    assert LabelModelFit.objects.get(project=project).judgments == 200


def test_submit_queues_a_refit_about_once_per_batch(project_factory, member, monkeypatch):
    sent = []
    monkeypatch.setattr(service, "label_model_fit_request", lambda *, project: sent.append(project.pk))
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=1)
    rng = random.Random(0)
    draws = sum(service.label_model_fit_after_judgment(project=project, rng=rng) for _ in range(20 * service.LABEL_MODEL_BATCH))
    assert 8 <= draws <= 35 and len(sent) == draws  # expected 20
    sent.clear()
    monkeypatch.setattr(service, "LABEL_MODEL_BATCH", 1)  # every submit crosses a batch
    make_tasks(project, 1)
    user = member(project, "annotator")
    submit(task_assign_next(annotator=user, project=project).assignment, user)
    assert sent == [project.pk]
