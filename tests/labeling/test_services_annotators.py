"""Excluding, re-including and re-queuing an annotator (labeling.services.annotators), through the real
queue services, with the integrity checker as the judge of the counters."""
from __future__ import annotations


import pytest
from django.core.exceptions import ValidationError

from labeling.models import Assignment, ComparisonTask, Judgment, Membership
from labeling.selectors.integrity import integrity_problems
from labeling.services.annotators import (
    EXCLUSION_REASON_MAX_CHARS, annotator_exclude, annotator_include, annotator_tasks_requeue,
)
from labeling.services.assignment import (
    AssignmentConflict, Verdict, assignment_skip, judgment_correct, judgment_submit, task_assign_next,
)
from tests.concurrency import run_threads
from tests.labeling.judging import make_tasks, submit

pytestmark = pytest.mark.django_db


def counters(*tasks) -> list[tuple]:
    return [ComparisonTask.objects.values_list("judgments_count", "active_assignments", "status").get(pk=t.pk)
            for t in tasks]


def membership(project, user) -> Membership:
    return Membership.objects.get(project=project, user=user)


# --- exclude and re-include --------------------------------------------------------------------------

def test_exclude_records_who_and_why_releases_the_leases_and_stops_new_tasks(project_factory, member):
    project = project_factory(mode="pairwise", overlap=1)
    t1, t2, t3, t4 = make_tasks(project, 4)
    admin, spammer, other = member(project, "admin"), member(project, "annotator"), member(project, "annotator")
    done = task_assign_next(annotator=spammer, project=project)
    submit(done.assignment, spammer)
    held = task_assign_next(annotator=spammer, project=project)
    assert {held.assignment.task_id, held.prefetched.task_id} == {t2.pk, t3.pk}

    annotator_exclude(project=project, user=spammer, by=admin, reason="  clicks at random ")

    m = membership(project, spammer)
    assert m.excluded_at is not None and m.excluded_by == admin and m.exclusion_reason == "clicks at random"
    assert set(Assignment.objects.filter(annotator=spammer).values_list("task_id", "state")) == {
        (t1.pk, "submitted"), (t2.pk, "expired"), (t3.pk, "expired")}
    assert counters(t2, t3) == [(0, 0, "open"), (0, 0, "open")]
    refused = task_assign_next(annotator=spammer, project=project)
    assert (refused.assignment, refused.prefetched, refused.reason) == (None, None, "excluded")
    # The seats went back to the pool: someone else takes those tasks.
    got = task_assign_next(annotator=other, project=project)
    assert {got.assignment.task_id, got.prefetched.task_id} == {t2.pk, t3.pk}
    assert Judgment.objects.filter(annotator=spammer).count() == 1  # their judgment stays
    assert integrity_problems(project=project) == []


def test_a_lease_that_slipped_past_the_exclusion_cannot_be_submitted(project_factory, member):
    """The exclusion releases the leases it sees; one taken in a race with it is refused at submit."""
    project = project_factory(mode="pairwise")
    make_tasks(project, 1)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    Membership.objects.filter(project=project, user=user).update(excluded_at="2026-01-01T00:00:00Z")  # committed after the lease
    order = assignment.shown_order
    with pytest.raises(AssignmentConflict) as caught:
        judgment_submit(assignment=assignment, annotator=user, verdict=Verdict(ranking=[[order[0]], [order[1]]]),
                        idempotency_key="late")
    assert caught.value.code == "excluded"
    with pytest.raises(AssignmentConflict, match="excluded"):
        assignment_skip(assignment=assignment, annotator=user)
    assert not Judgment.objects.exists()


def test_excluding_twice_keeps_the_first_record_and_releases_new_leases(project_factory, member):
    project = project_factory(mode="pairwise")
    (task,) = make_tasks(project, 1)
    first, second, user = member(project, "admin"), member(project, "admin"), member(project, "annotator")
    annotator_exclude(project=project, user=user, by=first, reason="spam")
    when = membership(project, user).excluded_at
    Membership.objects.filter(project=project, user=user).update(excluded_at=None)
    lease = task_assign_next(annotator=user, project=project).assignment  # taken while (wrongly) not excluded
    Membership.objects.filter(project=project, user=user).update(excluded_at=when)
    annotator_exclude(project=project, user=user, by=second, reason="")
    m = membership(project, user)
    assert (m.excluded_at, m.excluded_by, m.exclusion_reason) == (when, first, "spam")
    assert Assignment.objects.get(pk=lease.pk).state == "expired" and counters(task) == [(0, 0, "open")]


def test_include_lets_them_take_tasks_again(project_factory, member):
    project = project_factory(mode="pairwise")
    (task,) = make_tasks(project, 1)
    admin, user = member(project, "admin"), member(project, "annotator")
    annotator_exclude(project=project, user=user, by=admin, reason="check")
    assert task_assign_next(annotator=user, project=project).reason == "excluded"
    annotator_include(project=project, user=user, by=admin)
    m = membership(project, user)
    assert (m.excluded_at, m.excluded_by, m.exclusion_reason) == (None, None, "")
    assert task_assign_next(annotator=user, project=project).assignment.task_id == task.pk


def test_non_members_and_long_reasons_are_field_errors(project_factory, member, make_user):
    project, other = project_factory(), project_factory()
    admin, stranger = member(project, "admin"), member(other, "annotator")
    for action in (lambda: annotator_exclude(project=project, user=stranger, by=admin),
                   lambda: annotator_include(project=project, user=stranger, by=admin),
                   lambda: annotator_tasks_requeue(project=project, user=stranger, by=admin)):
        with pytest.raises(ValidationError) as caught:
            action()
        assert set(caught.value.message_dict) == {"user"}
    user = member(project, "annotator")
    with pytest.raises(ValidationError) as caught:
        annotator_exclude(project=project, user=user, by=admin, reason="x" * (EXCLUSION_REASON_MAX_CHARS + 1))
    assert set(caught.value.message_dict) == {"reason"}
    assert membership(project, user).excluded_at is None


# --- re-queue ----------------------------------------------------------------------------------------

def _serve(project, user, expected: list, submit_ids=None):
    """Lease the user's next tasks, check they are `expected` (in order), submit those in submit_ids
    (all by default) and skip the rest."""
    got = task_assign_next(annotator=user, project=project)
    held = [a for a in (got.assignment, got.prefetched) if a is not None]
    assert [a.task_id for a in held] == [t.pk for t in expected]
    for assignment in held:
        if submit_ids is None or assignment.task_id in submit_ids:
            submit(assignment, user, key=f"{user.pk}-{assignment.task_id}")
        else:
            assignment_skip(assignment=assignment, annotator=user)


@pytest.fixture
def judged(project_factory, member):
    """Overlap 2. T1: A and B (complete), T2: A alone (open), T3: B and C (complete), G: gold, answered by A.
    A corrected their judgment of T1."""
    project = project_factory(mode="pairwise", overlap=2, gold_rate=1.0)
    t1, t2, t3 = make_tasks(project, 3)
    (gold,) = make_tasks(project, 1, gold=True)
    admin, a, b, c = (member(project, role) for role in ("admin", "annotator", "annotator", "annotator"))
    _serve(project, a, [gold, t1])
    project.gold_rate = 0.0
    project.save(update_fields=["gold_rate"])
    _serve(project, a, [t2, t3], submit_ids={t2.pk})
    _serve(project, b, [t1, t2], submit_ids={t1.pk})
    _serve(project, b, [t3])
    _serve(project, c, [t2, t3], submit_ids={t3.pk})
    first = Judgment.objects.get(task=t1, annotator=a)
    order = first.shown_order
    judgment_correct(judgment=first, annotator=a, verdict=Verdict(ranking=[[order[1]], [order[0]]]), idempotency_key="fix")
    assert counters(t1, t2, t3, gold) == [(2, 0, "complete"), (1, 0, "open"), (2, 0, "complete"), (1, 0, "open")]
    assert integrity_problems(project=project) == []
    return project, (t1, t2, t3, gold), admin, (a, b, c)


def test_requeue_reopens_exactly_the_tasks_where_the_seat_mattered(judged, member):
    project, (t1, t2, t3, gold), admin, (a, b, c) = judged
    stored = Judgment.objects.count()

    assert annotator_tasks_requeue(project=project, user=a, by=admin) == 1  # T1; T2 was open already

    assert counters(t1, t2, t3, gold) == [(1, 0, "open"), (0, 0, "open"), (2, 0, "complete"), (1, 0, "open")]
    assert Judgment.objects.count() == stored  # nothing deleted
    flags = dict(Judgment.objects.filter(annotator=a).values_list("id", "counts_for_overlap"))
    chain_t1 = set(Judgment.objects.filter(annotator=a, task=t1).values_list("id", flat=True))
    assert len(chain_t1) == 2  # the judgment and its correction
    assert {jid for jid, counts in flags.items() if not counts} == chain_t1 | {Judgment.objects.get(annotator=a, task=t2).pk}
    assert Judgment.objects.get(annotator=a, task=gold).counts_for_overlap  # gold tasks have no seat to give back
    assert not Judgment.objects.filter(annotator__in=[b, c], counts_for_overlap=False).exists()
    assert integrity_problems(project=project) == []

    # Someone new fills the seats; A's submitted assignment on T1 no longer counts as held.
    d = member(project, "annotator")
    _serve(project, d, [t1, t2])
    assert counters(t1, t2) == [(2, 0, "complete"), (1, 0, "open")]
    assert integrity_problems(project=project) == []


def test_requeue_is_idempotent_and_a_later_correction_holds_no_seat(judged):
    project, (t1, t2, t3, gold), admin, (a, _, _) = judged
    assert annotator_tasks_requeue(project=project, user=a, by=admin) == 1
    before = counters(t1, t2, t3, gold)
    assert annotator_tasks_requeue(project=project, user=a, by=admin) == 0
    assert counters(t1, t2, t3, gold) == before
    old = Judgment.objects.get(annotator=a, task=t2)
    order = old.shown_order
    fixed = judgment_correct(judgment=old, annotator=a, verdict=Verdict(ranking=[[order[1]], [order[0]]]),
                             idempotency_key="after")
    assert fixed.counts_for_overlap is False
    assert counters(t1, t2, t3, gold) == before
    assert integrity_problems(project=project) == []


def test_reinclude_does_not_undo_a_requeue(judged):
    project, (t1, t2, t3, gold), admin, (a, _, _) = judged
    annotator_exclude(project=project, user=a, by=admin, reason="spam")
    assert annotator_tasks_requeue(project=project, user=a, by=admin) == 1
    annotator_include(project=project, user=a, by=admin)
    assert counters(t1, t2) == [(1, 0, "open"), (0, 0, "open")]
    assert not Judgment.objects.filter(annotator=a, task__in=[t1, t2], counts_for_overlap=True).exists()
    # Back in the queue, but never served a task they already answered.
    assert task_assign_next(annotator=a, project=project).reason == "empty"


def test_an_archived_task_gives_its_seat_back_but_stays_archived(judged):
    project, (t1, *_), admin, (a, _, _) = judged
    ComparisonTask.objects.filter(pk=t1.pk).update(status="archived")
    assert annotator_tasks_requeue(project=project, user=a, by=admin) == 0
    assert counters(t1) == [(1, 0, "archived")]


# --- concurrency: real threads, each with its own connection ------------------------------------------

def _run_threads(works) -> list:
    return run_threads(len(works), lambda i: works[i]())


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_requeue_racing_submits_on_the_same_tasks_keeps_the_counters(project_factory, member):
    """X judged every task; each of the others holds leases on two of them and submits while X is
    re-queued. Whatever the interleaving, each task ends with one counted judgment (the other's), open."""
    project = project_factory(mode="pairwise", overlap=2)
    tasks = make_tasks(project, 12)
    admin, x = member(project, "admin"), member(project, "annotator")
    for _ in range(len(tasks) // 2):
        got = task_assign_next(annotator=x, project=project)
        submit(got.assignment, x)
        submit(got.prefetched, x)
    others = [member(project, "annotator") for _ in range(len(tasks) // 2)]
    leases = {user.pk: task_assign_next(annotator=user, project=project) for user in others}
    assert all(got.prefetched is not None for got in leases.values())

    def submit_both(user):
        got = leases[user.pk]
        return [submit(got.assignment, user).pk, submit(got.prefetched, user).pk]

    works = [lambda: annotator_tasks_requeue(project=project, user=x, by=admin)]
    works += [lambda user=user: submit_both(user) for user in others]
    reopened, *submitted = _run_threads(works)

    assert sum(len(ids) for ids in submitted) == len(tasks)
    assert 0 <= reopened <= len(tasks)
    assert set(counters(*tasks)) == {(1, 0, "open")}
    assert Judgment.objects.filter(annotator=x, counts_for_overlap=False).count() == len(tasks)
    assert integrity_problems(project=project) == []
