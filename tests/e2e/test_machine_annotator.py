"""A machine annotator end to end against a REAL loopback judge (tests/endpoint_server.py's scripted
verdicts, its 429s and slow answers), through the real queue; the first test through the API and a
real Celery worker; two messages for one machine at once in real threads."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import Assignment, Judgment
from labeling.selectors.integrity import integrity_problems
from labeling.selectors.machine_quality import machine_quality_report
from labeling.selectors.quality import judgment_rows, safety_report
from labeling.services.assignment import task_assign_next
from tests.concurrency import run_threads
from tests.endpoint_server import start_server
from tests.labeling.judging import submit, tasks_with_responses
from tests.training.conftest import wait_for
from training.models import MachineAnnotator
from training.services.endpoints import endpoint_version_register
from training.services.machine_annotators import machine_annotator_create, machine_annotator_run, machine_annotator_work

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only]

LOOPBACK = "127.0.0.1/32"
FAST = {"retries": 3, "backoff_s": 0.01, "timeout_s": 20, "concurrency": 2}


@pytest.fixture(scope="module")
def judge_server(tiny_policy):
    server = start_server(tiny_policy)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _loopback_allowed(settings):
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = LOOPBACK


def _project(project_factory, mode="pairwise", k=2, overlap=1, rate=False, **fields):
    """rate: the project asks for Likert ratings and flags, so the machine also asks one rating question
    per response; off, the judge is asked the pair questions only (and the request counts say so)."""
    project = project_factory(mode=mode, responses_per_task=k, overlap=overlap, likert_enabled=rate,
                              flags_enabled=rate, **fields)
    answers = ["ok", "a fuller answer", "the fullest answer of them all"][:k]
    tasks = tasks_with_responses(project, {f"question {i}?": [answers[(i + j) % k] for j in range(k)] for i in range(4)})
    return project, tasks


def _machine(project, server, prefix, *, admin=None, **endpoint):
    version = endpoint_version_register(project=project, name=f"judge-{uuid.uuid4().hex[:6]}", base_url=server.base(prefix),
                                        model="judge", **{**FAST, **endpoint})
    return machine_annotator_create(project=project, name="judge", version_id=version.pk, by=admin)


def _longest_first(judgment) -> bool:
    lengths = dict(judgment.task.responses.values_list("pk", "text"))
    flat = [rid for group in judgment.ranking for rid in group]
    return [len(lengths[r]) for r in flat] == sorted((len(t) for t in lengths.values()), reverse=True)


@pytest.mark.django_db(transaction=True)
def test_a_machine_judges_through_the_api_and_a_worker_past_429s_beside_people(
        project_factory, member, api_client, judge_server, celery_worker_factory):
    worker = celery_worker_factory(PAIRWISE_ENDPOINT_ALLOWED_NETWORKS=LOOPBACK)
    project, tasks = _project(project_factory)
    admin, person = member(project, "admin"), member(project, "annotator")
    prefix = f"/fail/429/2/{uuid.uuid4().hex[:8]}/script/longer"
    version = endpoint_version_register(project=project, name="judge-endpoint", base_url=judge_server.base(prefix),
                                        model="judge", **FAST)
    client = api_client(admin)
    made = client.post(f"/api/training/projects/{project.slug}/machine-annotators/", {"name": "judge", "version": version.pk},
                       format="json")
    assert made.status_code == 201, made.content
    assert made.json()["source"] == "machine:judge" and not made.json()["takes_overlap_seats"]
    run = client.post(f"/api/training/projects/{project.slug}/machine-annotators/{made.json()['id']}/run/")
    assert run.status_code == 202

    judged = lambda: Judgment.objects.filter(project=project, source="machine:judge").count() == len(tasks)  # noqa: E731
    wait_for(judged, timeout=120, worker=worker, what="the machine judging every task")
    machine = MachineAnnotator.objects.get(pk=made.json()["id"])
    assert machine.last_error == ""
    for judgment in Judgment.objects.filter(source="machine:judge"):
        assert _longest_first(judgment) and judgment.machine["consistent"] and not judgment.counts_for_overlap
        assert [p["status"] for p in judgment.machine["pairs"]] == ["consistent"]
    # 2 injected 429s, then each task's pair in both orders.
    assert len(judge_server.requests(prefix)) == 2 + 2 * len(tasks)
    # It took no one's seat: every task is still open to the person, who judges them all.
    for _ in tasks:
        assignment = task_assign_next(annotator=person, project=project).assignment
        assert assignment is not None
        submit(assignment, person, ranking=[[rid] for rid in sorted(assignment.shown_order)])
    assert project.tasks.filter(status="complete").count() == len(tasks)
    assert integrity_problems(project=project) == []
    [row] = machine_quality_report(project=project)
    assert row["items"] == len(tasks) and row["order_consistency"] == 1.0 and row["longer_wins"] == 1.0


@pytest.mark.django_db(transaction=True)
def test_where_the_project_asks_a_machine_rates_and_flags_each_response_apart_from_the_human_flag_rates(
        project_factory, member, judge_server, celery_worker_factory):
    worker = celery_worker_factory(PAIRWISE_ENDPOINT_ALLOWED_NETWORKS=LOOPBACK)
    project, tasks = _project(project_factory, rate=True, custom_flags=[["too_long", "Longer than it needs to be"]])
    person = member(project, "annotator")
    prefix = f"/{uuid.uuid4().hex[:8]}/script/longer+rate"
    machine = _machine(project, judge_server, prefix)
    machine_annotator_run(machine=machine)

    judged = lambda: Judgment.objects.filter(project=project, source="machine:judge").count() == len(tasks)  # noqa: E731
    wait_for(judged, timeout=120, worker=worker, what="the machine judging and rating every task")
    assert MachineAnnotator.objects.get(pk=machine.pk).last_error == ""
    for judgment in Judgment.objects.filter(source="machine:judge"):
        texts = dict(judgment.task.responses.values_list("pk", "text"))
        assert _longest_first(judgment) and judgment.machine["consistent"]  # the ranking as without ratings
        # The scripted rating: 1 + len // 10, and of its two flags only the project's own.
        assert judgment.likert == {str(rid): min(7, 1 + len(t) // 10) for rid, t in texts.items()}
        assert judgment.flags == {str(rid): ["hallucination"] for rid in texts}
        rating = judgment.machine["rating"]
        assert (rating["unparsed"], rating["likert_dropped"], rating["flags_dropped"]) == (0, 0, len(texts))
        assert set(rating["replies"]) == {str(rid) for rid in texts}
    # Per task: its pair in both orders, then each of its two responses alone, the project's flags listed.
    seen = judge_server.requests(prefix)
    assert len(seen) == 4 * len(tasks)
    asks = [r["body"]["messages"][-1]["content"] for r in seen]
    rating_asks = [text for text in asks if "[The Start of the Assistant's Answer]" in text]
    assert len(rating_asks) == 2 * len(tasks)
    assert all("- too_long: Longer than it needs to be" in text and "- hallucination: Hallucination" in text
               for text in rating_asks)
    # A person judges every task without flags: the flag rates per response source are the person's alone.
    for _ in tasks:
        assignment = task_assign_next(annotator=person, project=project).assignment
        submit(assignment, person)
    [row] = safety_report(project=project, rows=judgment_rows(project=project))
    assert row["responses"] == 2 * len(tasks) and row["any_flag_rate"] == 0.0 and row["flags"] == []
    assert integrity_problems(project=project) == []


@pytest.mark.django_db
def test_k_way_ratings_that_contradict_the_ranking_are_dropped_and_the_ranking_kept(project_factory, judge_server):
    # shorter+rate ranks the shortest first but rates the longest highest: a person could not submit that.
    project, _ = _project(project_factory, mode="rank", k=3, rate=True)
    machine = _machine(project, judge_server, "/script/shorter+rate")
    assert machine_annotator_work(machine_id=machine.pk, max_tasks=1)["judged"] == 1
    [judgment] = Judgment.objects.filter(source="machine:judge")
    lengths = dict(judgment.task.responses.values_list("pk", "text"))
    assert [len(lengths[g[0]]) for g in judgment.ranking] == sorted(len(t) for t in lengths.values())
    assert judgment.likert == {} and judgment.flags == {str(rid): ["hallucination"] for rid in lengths}
    rating = judgment.machine["rating"]
    assert rating["likert_contradicts_ranking"] and rating["likert_dropped"] == 3 and rating["flags_dropped"] == 3


@pytest.mark.django_db
def test_order_swaps_that_disagree_are_ties_with_both_replies_kept(project_factory, judge_server):
    project, tasks = _project(project_factory)
    machine = _machine(project, judge_server, "/script/first")
    assert machine_annotator_work(machine_id=machine.pk, max_tasks=len(tasks)) == {"judged": len(tasks), "reason": "batch"}
    for judgment in Judgment.objects.filter(source="machine:judge"):
        assert len(judgment.ranking) == 1 and judgment.machine["consistent"] is False
        [pair] = judgment.machine["pairs"]
        assert pair["replies"] == ["A", "A"] and pair["status"] == "inconsistent" and pair["outcome"] == 0.5
        assert judgment.rationale.count("shown first: 'A'") == 2 and "(inconsistent)" in judgment.rationale
    [row] = machine_quality_report(project=project)
    assert (row["judgments"], row["order_consistency"], row["items"]) == (len(tasks), 0.0, 0)  # no person judged



@pytest.mark.django_db
def test_a_k_way_task_is_ranked_from_its_pairs(project_factory, judge_server):
    project, tasks = _project(project_factory, mode="rank", k=3)
    machine = _machine(project, judge_server, "/script/longer")
    assert machine_annotator_work(machine_id=machine.pk, max_tasks=1)["judged"] == 1
    [judgment] = Judgment.objects.filter(source="machine:judge")
    assert _longest_first(judgment) and len(judgment.machine["pairs"]) == 3 and judgment.machine["consistent"]


@pytest.mark.django_db
def test_a_slow_judge_past_the_timeout_releases_the_lease_and_says_why(project_factory, judge_server):
    project, _ = _project(project_factory)
    machine = _machine(project, judge_server, "/slow/2/script/longer", timeout_s=0.3, retries=0)
    assert machine_annotator_work(machine_id=machine.pk, max_tasks=5) == {"judged": 0, "reason": "error"}
    machine.refresh_from_db()
    assert "timeout" in machine.last_error
    assert not Assignment.objects.filter(annotator=machine.user, state="active").exists()
    assert not Judgment.objects.filter(project=project).exists()
    assert integrity_problems(project=project) == []


@pytest.mark.django_db(transaction=True)
def test_two_messages_at_once_run_one_batch_and_the_other_returns_at_once(project_factory, judge_server):
    project, tasks = _project(project_factory)
    prefix = f"/slow/0.5/{uuid.uuid4().hex[:8]}/script/longer"  # a batch of seconds: the two surely overlap
    machine = _machine(project, judge_server, prefix)
    # More than the tasks: the batch ends with the queue empty and sends no next message.
    results = run_threads(2, lambda _: machine_annotator_work(machine_id=machine.pk, max_tasks=len(tasks) + 5))
    assert sorted(r["judged"] for r in results) == [0, len(tasks)]
    assert {"judged": 0, "reason": "busy"} in results
    assert len(judge_server.requests(prefix)) == 2 * len(tasks)  # the endpoint was asked by one batch only
    assert Judgment.objects.filter(source="machine:judge").count() == len(tasks)
    machine.refresh_from_db()
    assert machine.working_until is None  # the batch let its claim go
    # A live claim turns a message away; a lapsed one (its batch was killed) does not.
    MachineAnnotator.objects.filter(pk=machine.pk).update(working_until=timezone.now() + timedelta(minutes=5))
    assert machine_annotator_work(machine_id=machine.pk, max_tasks=1) == {"judged": 0, "reason": "busy"}
    MachineAnnotator.objects.filter(pk=machine.pk).update(working_until=timezone.now() - timedelta(seconds=1))
    assert machine_annotator_work(machine_id=machine.pk, max_tasks=1)["reason"] not in ("busy", "error")
    assert MachineAnnotator.objects.get(pk=machine.pk).working_until is None
