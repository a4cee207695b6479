"""The queue's hooks for machine annotators (labeling.services.assignment): a seatless lease
(takes_seat=False) and its submit never hold an overlap seat, so a person always still gets the task;
the machine may judge tasks people completed, each task once; the counters and the integrity check agree."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask
from labeling.selectors.integrity import integrity_problems
from labeling.services.assignment import Verdict, assignments_expire_sweep, judgment_submit, task_assign_next
from tests.labeling.judging import make_tasks, submit

pytestmark = pytest.mark.django_db


def _machine_submit(assignment, bot):
    return judgment_submit(assignment=assignment, annotator=bot, idempotency_key=f"m{assignment.pk}",
                           verdict=Verdict(ranking=[list(assignment.shown_order)]), source="machine:m",
                           machine={"consistent": False})


def _counters(task):
    task.refresh_from_db()
    return task.judgments_count, task.active_assignments, task.status


def test_a_seatless_machine_never_takes_a_persons_seat(project_factory, member):
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=1)
    t1, t2 = make_tasks(project, 2)
    person, bot = member(project, "annotator"), member(project, "annotator")
    leased = task_assign_next(annotator=bot, project=project, takes_seat=False)
    assert (leased.assignment.task_id, leased.reason, leased.prefetched.task_id) == (t1.pk, "beside", t2.pk)
    assert not leased.assignment.holds_seat and _counters(t1) == (0, 0, "open")  # its lease holds no seat

    mine = task_assign_next(annotator=person, project=project).assignment
    assert mine.task_id == t1.pk  # the person still gets it
    judgment = _machine_submit(leased.assignment, bot)
    assert (judgment.source, judgment.counts_for_overlap, judgment.counts_for_retrain) == ("machine:m", False, False)
    assert judgment.machine == {"consistent": False}
    assert _counters(t1) == (0, 1, "open")  # neither counted nor closed: the person's seat is still theirs
    submit(mine, person)
    assert _counters(t1) == (1, 0, "complete")
    assert integrity_problems(project=project) == []


def test_a_machine_judges_tasks_people_completed_once_each(project_factory, member):
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=1)
    [task] = make_tasks(project, 1)
    person, bot = member(project, "annotator"), member(project, "annotator")
    submit(task_assign_next(annotator=person, project=project).assignment, person)
    assert _counters(task)[2] == "complete"
    leased = task_assign_next(annotator=bot, project=project, takes_seat=False).assignment
    assert leased.task_id == task.pk
    _machine_submit(leased, bot)
    assert _counters(task) == (1, 0, "complete")
    assert task_assign_next(annotator=bot, project=project, takes_seat=False).reason == "empty"  # once
    # A seat-taking machine is served as a person is: the complete task is not offered again.
    assert task_assign_next(annotator=member(project, "annotator"), project=project).reason == "empty"
    assert integrity_problems(project=project) == []


def test_a_seatless_lease_expiring_frees_no_one_elses_seat(project_factory, member):
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=2)
    [task] = make_tasks(project, 1)
    person, bot = member(project, "annotator"), member(project, "annotator")
    task_assign_next(annotator=person, project=project)
    task_assign_next(annotator=bot, project=project, takes_seat=False)
    assert _counters(task) == (0, 1, "open")
    Assignment.objects.filter(annotator=bot).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignments_expire_sweep() == 1
    assert _counters(task) == (0, 1, "open")  # the person's seat is still counted
    assert integrity_problems(project=project) == []


def test_a_seat_taking_machine_fills_a_seat(project_factory, member):
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=1)
    [task] = make_tasks(project, 1)
    bot = member(project, "annotator")
    leased = task_assign_next(annotator=bot, project=project).assignment
    judgment = _machine_submit(leased, bot)
    assert judgment.counts_for_overlap and _counters(task) == (1, 0, "complete")
    assert ComparisonTask.objects.get(pk=task.pk).status == "complete"
    assert integrity_problems(project=project) == []
