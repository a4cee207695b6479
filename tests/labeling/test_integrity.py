"""The integrity checker: a project built by the real services passes, and each corruption (made
behind the services' back, with update() or raw SQL) is named by its check."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, Judgment, PreferencePair
from labeling.selectors.integrity import integrity_problems
from labeling.services.assignment import Verdict, demonstration_submit, judgment_correct, task_assign_next
from tests.labeling.judging import import_rows, judge, make_tasks, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(project_factory, member):
    """Overlap 2, K=3: one task judged twice (complete, one judgment corrected), one judged once,
    one leased; imported preferences in the same project; a demonstrate project alongside."""
    project = project_factory(mode="rank", responses_per_task=3, overlap=2)
    make_tasks(project, 3)
    ann1, ann2 = member(project, "annotator"), member(project, "annotator")
    first = task_assign_next(annotator=ann1, project=project)
    submit(first.assignment, ann1, key="a1")
    corrected = submit(first.prefetched, ann1, key="a2")
    order = corrected.shown_order
    judgment_correct(judgment=corrected, annotator=ann1, verdict=Verdict(ranking=[[order[2]], [order[0], order[1]]]),
                     idempotency_key="a3")
    second = task_assign_next(annotator=ann2, project=project)
    submit(second.assignment, ann2, key="b1")  # second.prefetched stays leased
    import_rows(project, {"id": "imp/1", "prompt": "imported", "chosen": "good", "rejected": "bad"})
    demo = project_factory(mode="demonstrate", responses_per_task=2)
    make_tasks(demo, 1)
    writer = member(demo, "annotator")
    demonstration_submit(assignment=task_assign_next(annotator=writer, project=demo).assignment,
                         annotator=writer, text="the ideal answer", idempotency_key="d1")
    return project, demo, ann1, ann2


def checks(project) -> set[str]:
    return {problem.check for problem in integrity_problems(project=project)}


def judged_task(project) -> ComparisonTask:
    return ComparisonTask.objects.filter(project=project, status="complete", judgments__source="human").distinct().get()


def current_judgment(project) -> Judgment:
    return Judgment.objects.filter(project=project, source="human", superseded_by__isnull=True,
                                   supersedes__isnull=True).order_by("id").first()


def test_a_project_built_by_the_services_is_clean(world):
    project, demo, *_ = world
    assert Judgment.objects.filter(project=project).count() == 5  # 3 submitted, 1 correction, 1 imported
    assert ComparisonTask.objects.filter(project=project, active_assignments=1).count() == 1
    assert integrity_problems(project=project) == []
    assert integrity_problems(project=demo) == []
    assert integrity_problems() == []


def test_judgments_count_off_by_one(world):
    project, *_ = world
    task = judged_task(project)
    ComparisonTask.objects.filter(pk=task.pk).update(judgments_count=F("judgments_count") + 1)
    problems = integrity_problems(project=project)
    assert [p.subject for p in problems if p.check == "task_judgments_count"] == [f"task {task.pk}"]


def test_demonstration_counter_checked_too(world):
    _, demo, *_ = world
    ComparisonTask.objects.filter(project=demo).update(judgments_count=0)
    assert "task_judgments_count" in checks(demo)


def test_active_assignments_counter(world):
    project, *_ = world
    task = ComparisonTask.objects.get(project=project, active_assignments=1)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE labeling_comparisontask SET active_assignments = 0 WHERE id = %s", [task.pk])
    assert checks(project) == {"task_active_assignments"}


def test_expired_but_unswept_lease_still_counts_as_active(world):
    project, *_ = world
    Assignment.objects.filter(project=project, state="active").update(expires_at=timezone.now() - timedelta(hours=1))
    assert integrity_problems(project=project) == []


def test_deleted_pair(world):
    project, *_ = world
    judgment = current_judgment(project)
    PreferencePair.objects.filter(pk=judgment.pairs.order_by("id").first().pk).delete()
    problems = integrity_problems(project=project)
    assert [(p.check, p.subject) for p in problems] == [("judgment_pairs", f"judgment {judgment.pk}")]
    assert "1 missing" in problems[0].detail


def test_pairs_that_disagree_with_the_ranking(world):
    project, *_ = world
    judgment = current_judgment(project)
    Judgment.objects.filter(pk=judgment.pk).update(ranking=list(reversed(judgment.ranking)))
    assert checks(project) == {"judgment_pairs"}


def test_ranking_that_misses_a_response(world):
    project, *_ = world
    judgment = current_judgment(project)
    Judgment.objects.filter(pk=judgment.pk).update(ranking=judgment.ranking[:-1])
    assert checks(project) == {"judgment_ranking"}


def test_superseded_judgment_with_pairs_left(world):
    project, *_ = world
    old = Judgment.objects.get(project=project, superseded_by__isnull=False)
    a, b = old.shown_order[:2]
    PreferencePair.objects.create(project=project, judgment=old, prompt_id=old.task.prompt_id, chosen_id=a, rejected_id=b)
    assert checks(project) == {"superseded_pairs"}


def test_lost_judgment(world):
    project, *_ = world
    judgment = current_judgment(project)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM labeling_preferencepair WHERE judgment_id = %s", [judgment.pk])
        cursor.execute("DELETE FROM labeling_judgment WHERE id = %s", [judgment.pk])
    problems = integrity_problems(project=project)
    assert {p.check for p in problems} == {"assignment_without_result", "task_judgments_count"}
    assert f"assignment {judgment.assignment_id}" in [p.subject for p in problems]


def test_duplicate_judgment(world):
    project, _, ann1, _ = world
    task = judged_task(project)
    judge(task, ann1, [[0], [1], [2]])
    problems = integrity_problems(project=project)
    assert {p.check for p in problems} == {"duplicate_judgment", "task_judgments_count"}
    assert f"annotator {ann1.pk}" in next(p.detail for p in problems if p.check == "duplicate_judgment")


def test_judgment_on_an_assignment_that_is_not_submitted(world):
    project, *_ = world
    judgment = current_judgment(project)
    Assignment.objects.filter(pk=judgment.assignment_id).update(state="skipped")
    assert checks(project) == {"judgment_assignment_mismatch"}


def test_over_assigned_task(world, member):
    project, *_ = world
    task = judged_task(project)
    third = member(project, "annotator")
    now = timezone.now()
    Assignment.objects.create(project=project, task=task, annotator=third, state="active", leased_at=now,
                              expires_at=now + timedelta(minutes=5))
    ComparisonTask.objects.filter(pk=task.pk).update(active_assignments=1)
    problems = integrity_problems(project=project)
    assert [(p.check, p.subject) for p in problems] == [("task_over_assigned", f"task {task.pk}")]


def test_a_requeued_judgment_holds_no_seat(world, member):
    """counts_for_overlap false: the judgment is not in judgments_count, and its submitted assignment
    no longer holds a seat, so a new lease on its reopened task is no over-assignment."""
    project, _, ann1, _ = world
    task = judged_task(project)
    mine = Judgment.objects.get(task=task, annotator=ann1)
    Judgment.objects.filter(pk=mine.pk).update(counts_for_overlap=False)
    assert checks(project) == {"task_judgments_count"}  # the flag alone, without the counter
    ComparisonTask.objects.filter(pk=task.pk).update(judgments_count=F("judgments_count") - 1, status="open")
    assert integrity_problems(project=project) == []  # what a re-queue leaves
    third = member(project, "annotator")
    assert task_assign_next(annotator=third, project=project).assignment.task_id == task.pk
    assert integrity_problems(project=project) == []
    Judgment.objects.filter(pk=mine.pk).update(counts_for_overlap=True)  # the seat claimed again behind the counter's back
    assert checks(project) == {"task_judgments_count", "task_over_assigned"}


def test_status_that_disagrees_with_the_counter(world):
    project, *_ = world
    task = judged_task(project)
    ComparisonTask.objects.filter(pk=task.pk).update(status="open")
    short = ComparisonTask.objects.filter(project=project, judgments_count=1, judgments__source="human").distinct().get()
    ComparisonTask.objects.filter(pk=short.pk).update(status="complete")
    problems = integrity_problems(project=project)
    assert sorted(p.subject for p in problems if p.check == "task_status") == sorted([f"task {task.pk}", f"task {short.pk}"])


def test_other_projects_are_out_of_scope(world, project_factory):
    project, *_ = world
    ComparisonTask.objects.filter(project=project).update(judgments_count=9)
    other = project_factory()
    assert integrity_problems(project=other) == []
    assert "task_judgments_count" in {p.check for p in integrity_problems()}


def test_command_ok(world, capsys):
    project, *_ = world
    call_command("check_integrity", "--project", project.slug)
    assert capsys.readouterr().out.strip() == "ok"


def test_command_lists_problems_and_fails(world, capsys):
    project, *_ = world
    task = judged_task(project)
    ComparisonTask.objects.filter(pk=task.pk).update(judgments_count=7)
    with pytest.raises(CommandError) as failed:
        call_command("check_integrity", "--project", project.slug)
    assert failed.value.returncode == 1
    assert f"task_judgments_count: task {task.pk}: judgments_count 7" in capsys.readouterr().out
    with pytest.raises(CommandError):
        call_command("check_integrity", "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["problems"][0]["subject"] == f"task {task.pk}"


def test_command_unknown_project():
    with pytest.raises(CommandError, match="no project 'nope'"):
        call_command("check_integrity", "--project", "nope")
