"""The queue by acquisition score (Project.queue_order uncertainty/disagreement): scored tasks by score,
started ones still first, unscored ones last in today's order; started-first ignores scores; the
settings form and the project API take the order (and suggestions_enabled)."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from labeling.models import Assignment, ComparisonTask, Judgment, Project
from labeling.services.assignment import task_assign_next
from tests.concurrency import run_threads
from tests.labeling.console.test_views import FORM
from tests.labeling.judging import make_tasks, submit

pytestmark = pytest.mark.django_db


def scored_tasks(project, scores):
    tasks = make_tasks(project, len(scores))
    for task, score in zip(tasks, scores):
        ComparisonTask.objects.filter(pk=task.pk).update(acquisition_score=score)
    return tasks


def served(project, user) -> list[tuple[int, str]]:
    """Every task the annotator is served, in order, judging each, with the reason it came by."""
    out = []
    while (got := task_assign_next(annotator=user, project=project)).assignment is not None:
        out.append((got.assignment.task_id, got.reason))
        submit(got.assignment, user)
    return out


@pytest.mark.parametrize("order", ["uncertainty", "disagreement"])
def test_highest_score_first_unscored_last_in_todays_order(project_factory, member, order):
    project = project_factory(mode="pairwise", overlap=1, queue_order=order)
    t = scored_tasks(project, [0.1, 0.9, None, 0.5, None])
    user = member(project, "annotator")
    first = task_assign_next(annotator=user, project=project)
    assert (first.assignment.task_id, first.reason, first.prefetched.task_id) == (t[1].pk, "scored", t[3].pk)
    assert [task for task, _ in served(project, user)] == [t[1].pk, t[3].pk, t[0].pk, t[2].pk, t[4].pk]


def test_started_first_ignores_scores(project_factory, member):
    project = project_factory(mode="pairwise", overlap=1)
    assert project.queue_order == Project.QueueOrder.STARTED_FIRST
    t = scored_tasks(project, [0.1, 0.9, 0.5])
    user = member(project, "annotator")
    with CaptureQueriesContext(connection) as queries:
        assert task_assign_next(annotator=user, project=project).reason == "oldest"
    # Today's queue pays nothing for the acquisition orders: not one statement of theirs runs.
    assert not any("acquisition_score" in q["sql"] for q in queries.captured_queries)
    assert [task for task, _ in served(project, user)] == [t[0].pk, t[1].pk, t[2].pk]


def test_started_tasks_are_finished_before_higher_scores(project_factory, member):
    """Overlap fills as fast as in started-first: a task one annotator judged goes to the next one before
    any untouched task, however high its score."""
    project = project_factory(mode="pairwise", overlap=2, queue_order="uncertainty")
    t = scored_tasks(project, [0.2, 0.9, 0.1])
    a, b = member(project, "annotator"), member(project, "annotator")
    got = task_assign_next(annotator=a, project=project)
    assert (got.assignment.task_id, got.prefetched.task_id) == (t[1].pk, t[0].pk)
    submit(got.assignment, a)
    Assignment.objects.filter(pk=got.prefetched.pk).update(state="released")  # let a's prefetched seat go
    ComparisonTask.objects.filter(pk=t[0].pk).update(active_assignments=0)
    ComparisonTask.objects.filter(pk=t[2].pk).update(acquisition_score=5.0)  # now the highest, but unstarted
    got = task_assign_next(annotator=b, project=project)
    assert (got.assignment.task_id, got.reason) == (t[1].pk, "started")
    assert got.prefetched.task_id == t[2].pk


def test_gold_and_seat_rules_hold_in_score_order(project_factory, member):
    project = project_factory(mode="pairwise", overlap=1, queue_order="uncertainty")
    (gold,) = make_tasks(project, 1, gold=True)
    ComparisonTask.objects.filter(pk=gold.pk).update(acquisition_score=100.0)  # never served as a queue task
    t = scored_tasks(project, [0.3, 0.7])
    a, b = member(project, "annotator"), member(project, "annotator")
    held = task_assign_next(annotator=a, project=project)
    assert {held.assignment.task_id, held.prefetched.task_id} == {t[0].pk, t[1].pk}
    assert task_assign_next(annotator=b, project=project).reason == "empty"  # both seats are held


@pytest.mark.postgres_only
def test_scored_pick_walks_its_partial_index(project_factory, member):
    from labeling.services.assignment.leasing import _PICK_SCORED_SQL

    project = project_factory(mode="pairwise", overlap=3, queue_order="uncertainty")
    scored_tasks(project, [i / 300 for i in range(300)])
    user = member(project, "annotator")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_assignment; ANALYZE labeling_comparisontask")
        cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small would be read whole otherwise
        cursor.execute("EXPLAIN " + _PICK_SCORED_SQL, {"project": project.pk, "gold": False, "overlap": 3,
                                                       "annotator": user.pk})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "task_queue_scored_idx" in plan and "Sort" not in plan, plan


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_never_over_assign_in_score_order(project_factory, member):
    project = project_factory(mode="pairwise", overlap=2, queue_order="disagreement")
    scored_tasks(project, [(i * 7) % 30 / 30 for i in range(20)] + [None] * 10)
    users = [member(project, "annotator") for _ in range(8)]

    def work(i):
        done = 0
        while (result := task_assign_next(annotator=users[i], project=project)).assignment is not None:
            submit(result.assignment, users[i], key=f"u{i}-{result.assignment.pk}")
            done += 1
        return done

    assert sum(run_threads(8, work)) == 60  # every seat filled exactly once
    per_task = ComparisonTask.objects.filter(project=project).values_list("judgments_count", "active_assignments", "status")
    assert set(per_task) == {(2, 0, "complete")}
    assert Judgment.objects.count() == 60


def test_settings_form_and_api_take_the_queue_order_and_suggestions(project_factory, member, api_client):
    project = project_factory(mode="rank", responses_per_task=3)
    admin = member(project, "admin")
    client = Client()
    client.force_login(admin)
    url = reverse("console-settings", args=[project.slug])
    page = client.get(url).content.decode()
    assert 'name="queue_order"' in page and 'value="disagreement"' in page and 'name="suggestions_enabled"' in page
    form = {**FORM, "name": project.name, "queue_order": "uncertainty", "suggestions_enabled": "on"}
    assert client.post(url, form).status_code == 302
    project.refresh_from_db()
    assert (project.queue_order, project.suggestions_enabled) == ("uncertainty", True)
    assert client.post(url, FORM).status_code == 302  # an older form without the field keeps the order
    project.refresh_from_db()
    assert (project.queue_order, project.suggestions_enabled) == ("uncertainty", False)

    api = api_client(admin)
    base = f"/api/projects/{project.slug}/"
    assert api.patch(base, {"queue_order": "sideways"}, format="json").status_code == 400
    response = api.patch(base, {"queue_order": "disagreement", "suggestions_enabled": True}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["queue_order"], response.json()["suggestions_enabled"]) == ("disagreement", True)
    project.refresh_from_db()
    assert (project.queue_order, project.suggestions_enabled) == ("disagreement", True)


def test_the_page_is_not_told_how_a_task_came_first(project_factory, member, api_client):
    project = project_factory(mode="pairwise", overlap=1, queue_order="uncertainty")
    t = scored_tasks(project, [0.2, 0.8])
    client = api_client(member(project, "annotator"), token=False)
    body = client.post(f"/api/projects/{project.slug}/next/", format="json").json()
    assert body["reason"] == "assigned" and body["current"]["task"] == t[1].pk
    assert "acquisition" not in str(body)
