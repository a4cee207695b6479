"""The assignment engine: fairness, leases, gold mixing, validation, idempotency and concurrency."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, Demonstration, Judgment, PreferencePair, Prompt
from labeling.services.assignment import (
    AssignmentConflict, Verdict, assignment_skip, assignments_expire_sweep, demonstration_submit, judgment_correct,
    judgment_submit, shown_order_for, task_assign_next,
)
from tests.concurrency import run_threads
from tests.labeling.judging import make_tasks, submit

pytestmark = pytest.mark.django_db


def test_returns_current_and_prefetched_next(project_factory, member):
    project = project_factory(mode="rank", responses_per_task=4)
    t1, t2, _ = make_tasks(project, 3)
    user = member(project, "annotator")
    result = task_assign_next(annotator=user, project=project)
    assert result.reason == "oldest"
    assert (result.assignment.task_id, result.prefetched.task_id) == (t1.pk, t2.pk)
    # The prefetched lease is doubled so it keeps a full lease after it is promoted.
    assert result.prefetched.expires_at - result.prefetched.leased_at == timedelta(seconds=2 * project.lease_seconds)
    again = task_assign_next(annotator=user, project=project)
    assert again.reason == "active" and again.assignment.pk == result.assignment.pk
    assert again.prefetched.pk == result.prefetched.pk
    assert Assignment.objects.filter(annotator=user).count() == 2


def test_overlap_distinct_annotators_and_no_repeat(project_factory, member):
    project = project_factory(mode="pairwise", overlap=2)
    (task,) = make_tasks(project, 1)
    a, b, c = (member(project, "annotator") for _ in range(3))
    for user in (a, b):
        got = task_assign_next(annotator=user, project=project)
        assert got.assignment.task_id == task.pk and got.prefetched is None
        submit(got.assignment, user)
    assert task_assign_next(annotator=c, project=project).reason == "empty"
    assert task_assign_next(annotator=a, project=project).reason == "empty"
    task.refresh_from_db()
    assert (task.judgments_count, task.active_assignments, task.status) == (2, 0, "complete")


def test_skipped_task_is_never_served_again_but_goes_to_others(project_factory, member):
    project = project_factory(mode="pairwise")
    (task,) = make_tasks(project, 1)
    a, b = member(project, "annotator"), member(project, "annotator")
    got = task_assign_next(annotator=a, project=project)
    assignment_skip(assignment=got.assignment, annotator=a)
    task.refresh_from_db()
    assert task.active_assignments == 0
    assert task_assign_next(annotator=a, project=project).reason == "empty"
    assert task_assign_next(annotator=b, project=project).assignment.task_id == task.pk


def test_lease_expiry_returns_task_to_pool(project_factory, member, monkeypatch):
    from labeling.services.assignment import leasing as engine

    project = project_factory(mode="pairwise")
    (task,) = make_tasks(project, 1)
    a, b = member(project, "annotator"), member(project, "annotator")
    got = task_assign_next(annotator=a, project=project)
    assert task_assign_next(annotator=b, project=project).reason == "empty"
    Assignment.objects.filter(pk=got.assignment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    # The hot path reclaims lazily (at most once a second): b gets the task without a sweep job.
    monkeypatch.setattr(engine, "_next_reclaim_at", 0.0)
    again = task_assign_next(annotator=b, project=project)
    assert again.assignment.task_id == task.pk
    assert Assignment.objects.get(pk=got.assignment.pk).state == "expired"
    task.refresh_from_db()
    assert task.active_assignments == 1


def test_sweep_frees_seats(project_factory, member):
    project = project_factory(mode="pairwise", overlap=3)
    (task,) = make_tasks(project, 1)
    users = [member(project, "annotator") for _ in range(3)]
    for user in users:
        task_assign_next(annotator=user, project=project)
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignments_expire_sweep() == 3
    task.refresh_from_db()
    assert task.active_assignments == 0
    assert assignments_expire_sweep() == 0


def test_submit_on_expired_or_foreign_assignment_conflicts(project_factory, member):
    project = project_factory(mode="pairwise")
    make_tasks(project, 2)
    a, b = member(project, "annotator"), member(project, "annotator")
    got = task_assign_next(annotator=a, project=project)
    with pytest.raises(AssignmentConflict) as foreign:
        submit(got.assignment, b)
    assert foreign.value.code == "foreign"
    Assignment.objects.filter(pk=got.assignment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(AssignmentConflict) as expired:
        submit(got.assignment, a)
    assert expired.value.code == "expired" and "expired" in expired.value.message
    assert Judgment.objects.count() == 0
    task = ComparisonTask.objects.get(pk=got.assignment.task_id)
    assert Assignment.objects.get(pk=got.assignment.pk).state == "expired"
    assert task.active_assignments == 0  # the seat was freed by the failed submit itself


def test_reload_returns_own_active_assignment_first(project_factory, member):
    project = project_factory(mode="pairwise")
    make_tasks(project, 5)
    user = member(project, "annotator")
    first = task_assign_next(annotator=user, project=project)
    submit(first.assignment, user)
    second = task_assign_next(annotator=user, project=project)
    assert second.reason == "active" and second.assignment.pk == first.prefetched.pk
    assert second.prefetched is not None and second.prefetched.pk != first.assignment.pk


def test_started_tasks_come_before_older_ones(project_factory, member):
    project = project_factory(mode="pairwise", overlap=2)
    old, new = make_tasks(project, 2)
    starter, other = member(project, "annotator"), member(project, "annotator")
    # The starter judges the newer task first, so it is "started".
    Assignment.objects.all().delete()
    got = task_assign_next(annotator=starter, project=project)
    assignment_skip(assignment=got.assignment, annotator=starter)  # old: skipped
    judged = got.prefetched
    assert judged.task_id == new.pk
    submit(judged, starter)
    result = task_assign_next(annotator=other, project=project)
    assert (result.assignment.task_id, result.reason) == (new.pk, "started")
    assert result.prefetched.task_id == old.pk


def test_gold_mixed_at_rate(project_factory, member):
    project = project_factory(mode="pairwise", gold_rate=0.3)
    make_tasks(project, 200)
    make_tasks(project, 200, gold=True)
    user = member(project, "annotator")
    gold = 0
    for _ in range(150):
        result = task_assign_next(annotator=user, project=project)
        gold += ComparisonTask.objects.get(pk=result.assignment.task_id).is_gold
        submit(result.assignment, user)
    assert 25 <= gold <= 70, gold  # 0.3 * 150 = 45; binomial sd ~5.6
    gold_task = ComparisonTask.objects.filter(is_gold=True, judgments_count=1).first()
    assert gold_task.status == "open"  # gold never completes, others can be checked against it


def test_no_gold_when_rate_zero(project_factory, member):
    project = project_factory(mode="pairwise", gold_rate=0.0)
    make_tasks(project, 5, gold=True)
    user = member(project, "annotator")
    assert task_assign_next(annotator=user, project=project).reason == "empty"


def test_shown_order_is_per_assignment_and_recorded(project_factory, member):
    project = project_factory(mode="rank", responses_per_task=6, overlap=8)
    (task,) = make_tasks(project, 1)
    slot_ids = list(task.slots.values_list("response_id", flat=True))
    orders = set()
    for _ in range(8):
        user = member(project, "annotator")
        assignment = task_assign_next(annotator=user, project=project).assignment
        assert sorted(assignment.shown_order) == sorted(slot_ids)
        assert assignment.shown_order == shown_order_for(task_id=task.pk, annotator_id=user.pk, response_ids=slot_ids)
        orders.add(tuple(assignment.shown_order))
        judgment = submit(assignment, user)
        assert judgment.shown_order == assignment.shown_order
    assert len(orders) > 1


def test_submit_writes_judgment_pairs_and_counters(project_factory, member):
    project = project_factory(mode="rank", responses_per_task=4)
    (task,) = make_tasks(project, 1)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    r = assignment.shown_order
    judgment = submit(
        assignment, user, ranking=[[r[2]], [r[0], r[1]], [r[3]]], likert={str(r[0]): 5, r[1]: 7},
        flags={str(r[3]): ["hallucination"]}, rationale="because", time_spent_ms=1234,
    )
    assert PreferencePair.objects.filter(judgment=judgment).count() == 5  # 6 minus the tie
    assert judgment.likert == {str(r[0]): 5, str(r[1]): 7}
    assert judgment.flags == {str(r[3]): ["hallucination"]}
    task.refresh_from_db()
    assert (task.judgments_count, task.active_assignments, task.status) == (1, 0, "complete")
    assert Assignment.objects.get(pk=assignment.pk).state == "submitted"


@pytest.mark.parametrize("field,kwargs", [
    ("ranking", {"ranking": [[10**9], [10**9 + 1]]}),
    ("ranking", {"ranking": "first"}),
    ("likert", {"likert": "X"}),
    ("likert", {"likert": {"R0": 8}}),
    ("likert", {"likert": {"R0": 0}}),
    ("likert", {"likert": {"999999": 3}}),
    ("flags", {"flags": {"R0": ["not_a_flag"]}}),
    ("flags", {"flags": {"R0": "hallucination"}}),
    ("both_bad", {"both_bad": True}),
    ("time_spent_ms", {"time_spent_ms": -1}),
])
def test_validation_errors(project_factory, member, field, kwargs):
    project = project_factory(mode="pairwise")
    make_tasks(project, 1)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    r0 = str(assignment.shown_order[0])
    kwargs = {k: _subst(v, r0) for k, v in kwargs.items()}
    with pytest.raises(ValidationError) as exc:
        submit(assignment, user, **kwargs)
    assert field in exc.value.message_dict
    assert Judgment.objects.count() == 0
    assert Assignment.objects.get(pk=assignment.pk).state == "active"  # a bad submit keeps the lease


def _subst(value, r0):
    if isinstance(value, dict):
        return {r0 if k == "R0" else k: v for k, v in value.items()}
    return value


def test_custom_flags_are_known(project_factory, member):
    project = project_factory(mode="pairwise", custom_flags=[["too_long", "Too long"]])
    make_tasks(project, 1)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    judgment = submit(assignment, user, flags={str(assignment.shown_order[0]): ["too_long"]})
    assert judgment.flags == {str(assignment.shown_order[0]): ["too_long"]}


def test_pairwise_tie_and_both_bad_give_no_pairs(project_factory, member):
    project = project_factory(mode="pairwise", overlap=2)
    make_tasks(project, 1)
    a, b = member(project, "annotator"), member(project, "annotator")
    tie = task_assign_next(annotator=a, project=project).assignment
    j1 = submit(tie, a, ranking=[list(tie.shown_order)])
    bad = task_assign_next(annotator=b, project=project).assignment
    j2 = submit(bad, b, ranking=[list(bad.shown_order)], both_bad=True)
    assert (j1.both_bad, j2.both_bad) == (False, True)
    assert PreferencePair.objects.count() == 0


def test_idempotent_submit_returns_first_result(project_factory, member):
    project = project_factory(mode="rank", responses_per_task=3)
    make_tasks(project, 2)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    first = submit(assignment, user, key="same")
    again = submit(assignment, user, key="same", ranking=[list(assignment.shown_order)])
    other_key = submit(assignment, user, key="different")  # a double click that made two keys
    assert first.pk == again.pk == other_key.pk
    assert Judgment.objects.count() == 1 and PreferencePair.objects.count() == 3
    task = ComparisonTask.objects.get(pk=assignment.task_id)
    assert task.judgments_count == 1


def test_skipped_assignment_cannot_be_submitted(project_factory, member):
    project = project_factory(mode="pairwise")
    make_tasks(project, 1)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    assignment_skip(assignment=assignment, annotator=user)
    with pytest.raises(AssignmentConflict) as exc:
        submit(assignment, user)
    assert exc.value.code == "skipped"


def test_correction_supersedes_and_replaces_pairs(project_factory, member):
    project = project_factory(mode="rank", responses_per_task=3)
    make_tasks(project, 1)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    r = assignment.shown_order
    old = submit(assignment, user, ranking=[[r[0]], [r[1]], [r[2]]])
    new = judgment_correct(judgment=old, annotator=user, verdict=Verdict(ranking=[[r[2]], [r[0], r[1]]]),
                           idempotency_key="fix")
    assert new.supersedes_id == old.pk and Judgment.objects.filter(pk=old.pk).exists()
    assert set(PreferencePair.objects.values_list("judgment_id", "chosen_id", "rejected_id")) == {
        (new.pk, r[2], r[0]), (new.pk, r[2], r[1])}
    again = Verdict(ranking=[[r[0]], [r[1], r[2]]])
    assert judgment_correct(judgment=old, annotator=user, verdict=again, idempotency_key="fix").pk == new.pk
    with pytest.raises(AssignmentConflict):
        judgment_correct(judgment=old, annotator=user, verdict=again, idempotency_key="fix2")
    assert ComparisonTask.objects.get(pk=assignment.task_id).judgments_count == 1


def test_demonstration_submit(project_factory, member):
    project = project_factory(mode="demonstrate")
    prompt = Prompt.objects.create(project=project, external_id="d", text="write a haiku")
    task = ComparisonTask.objects.create(project=project, prompt=prompt)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    assert assignment.task_id == task.pk and assignment.shown_order == []
    demo = demonstration_submit(assignment=assignment, annotator=user, text="old pond", idempotency_key="d1")
    assert demonstration_submit(assignment=assignment, annotator=user, text="x", idempotency_key="d2").pk == demo.pk
    assert Demonstration.objects.get().prompt_id == prompt.pk
    task.refresh_from_db()
    assert (task.judgments_count, task.status) == (1, "complete")


@pytest.mark.postgres_only
def test_pick_plan_probes_per_candidate_not_anti_join(project_factory, member):
    """With history, the pick must walk the queue index and probe (task, annotator) per candidate."""
    from labeling.services.assignment.leasing import _PICK_SQL

    project = project_factory(mode="pairwise", overlap=3)
    make_tasks(project, 60)
    user = member(project, "annotator")
    for _ in range(20):
        submit(task_assign_next(annotator=user, project=project).assignment, user)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_assignment; ANALYZE labeling_comparisontask")
        cursor.execute("EXPLAIN " + _PICK_SQL, {"project": project.pk, "gold": False, "overlap": 3, "annotator": user.pk})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Anti Join" not in plan, plan
    assert "SubPlan" in plan, plan


# --- concurrency: real threads, each with its own connection ------------------------------------

@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_never_over_assign(project_factory, member):
    project = project_factory(mode="pairwise", overlap=2)
    make_tasks(project, 30)
    users = [member(project, "annotator") for _ in range(8)]

    def work(i):
        done = 0
        while True:
            result = task_assign_next(annotator=users[i], project=project)
            if result.assignment is None:
                return done
            submit(result.assignment, users[i], key=f"u{i}-{result.assignment.pk}")
            done += 1

    done = run_threads(8, work)
    assert sum(done) == 60  # every seat filled exactly once
    per_task = ComparisonTask.objects.filter(project=project).values_list("judgments_count", "active_assignments", "status")
    assert set(per_task) == {(2, 0, "complete")}
    assert Judgment.objects.count() == 60
    assert not Assignment.objects.filter(state="active").exists()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_double_submit_stores_one_judgment(project_factory, member):
    project = project_factory(mode="rank", responses_per_task=4)
    make_tasks(project, 1)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment

    def work(i):
        # Half reuse the key (a retry), half use new keys (a double click that minted two).
        return submit(assignment, user, key="dup" if i % 2 else f"dup{i}").pk

    ids = run_threads(6, work)
    assert len(set(ids)) == 1
    assert Judgment.objects.count() == 1 and PreferencePair.objects.count() == 6
    assert ComparisonTask.objects.get().judgments_count == 1


def test_sweep_task_returns_expired_leases_to_the_pool(project_factory, member):
    from labeling.tasks import assignments_expire_sweep

    project = project_factory(mode="pairwise")
    make_tasks(project, 1)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    Assignment.objects.filter(pk=assignment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignments_expire_sweep.apply().get() == 1
    assert Assignment.objects.get(pk=assignment.pk).state == "expired"
    assert ComparisonTask.objects.get(pk=assignment.task_id).active_assignments == 0


def test_removed_annotator_cannot_submit_a_held_lease(project_factory, member):
    from labeling.services.projects import membership_remove

    project = project_factory(mode="pairwise")
    make_tasks(project, 1)
    user = member(project, "annotator")
    assignment = task_assign_next(annotator=user, project=project).assignment
    membership_remove(project=project, user=user)
    ids = assignment.shown_order
    with pytest.raises(AssignmentConflict, match="no longer an annotator"):
        judgment_submit(assignment=assignment, annotator=user, verdict=Verdict(ranking=[[ids[0]], [ids[1]]]),
                        idempotency_key="gone-1")
    assert Judgment.objects.count() == 0
