"""The whole human-feedback loop in one test, on a REAL Celery worker (prefork, one child) and Postgres:

import -> judgments (judgment_submit) -> reward run -> DPO run -> evaluation -> promotion -> new
candidates, made by the promoted policy, as comparison tasks. One training round (pipeline) chains
the steps: each step's service queues the next when it succeeds, and the worker runs them in turn.
Tiny random models keep it to well under two minutes on two cores.
"""
from __future__ import annotations

import io
import json
import time

import pytest

from labeling.models import ComparisonTask, Judgment, PreferencePair, Response
from labeling.services.assignment import Verdict, judgment_submit, task_assign_next
from labeling.services.imports import project_data_import
from tests.training.conftest import DPO_FAST, EVAL_FAST, changed, fast_params, requestable, wait_for
from training.models import ModelVersion, TrainingRun
from training.selectors.runs import pipeline_list, pipeline_spec
from training.selectors.versions import model_version_promoted_get
from training.services.rounds import pipeline_start
from training.services.versions import base_models_install

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N_PROMPTS = 16


def _import(project):
    records = [
        {"id": f"p{i}", "prompt": f"question number {i}?", "responses": [f"yes, happy to help with {i}!", f"no. {i}"]}
        for i in range(N_PROMPTS)
    ]
    # p4 is held out by the product's split (labeling.splits), so evaluation has a demonstration to score.
    records += [{"id": f"p{i}", "prompt": f"question number {i}?", "demonstration": f"yes, happy to help with {i}!"}
                for i in range(2, 6)]
    records += [{"id": f"new{i}", "prompt": f"a fresh question {i}?"} for i in range(4)]  # for the next round
    body = "\n".join(json.dumps(r) for r in records).encode()
    return project_data_import(project=project, stream=io.BytesIO(body), filename="round0.jsonl")


def _judge_everything(project, annotator) -> int:
    """The annotator always prefers the polite response and flags the other as unhelpful."""
    judged = 0
    while (nxt := task_assign_next(annotator=annotator, project=project)).assignment is not None:
        assignment = nxt.assignment
        texts = dict(Response.objects.filter(pk__in=assignment.shown_order).values_list("pk", "text"))
        polite = next(rid for rid in assignment.shown_order if texts[rid].startswith("yes"))
        rude = [rid for rid in assignment.shown_order if rid != polite]
        judgment_submit(assignment=assignment, annotator=annotator,
                        verdict=Verdict(ranking=[[polite], rude], flags={str(rude[0]): ["fails_instruction"]}),
                        idempotency_key=f"loop-{assignment.pk}")
        judged += 1
    return judged


def test_the_whole_loop_on_a_real_worker(celery_worker, project_factory, member, tiny_policy, tiny_reward_base, models_dir):
    started = time.monotonic()
    base = base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)[ModelVersion.Kind.POLICY]
    # Its few prompts hold out too few groups to measure the reward model: promoted without that check.
    project = project_factory(responses_per_task=2, gen_max_new_tokens=8, gen_temperature=1.0, gen_top_p=1.0,
                              system_prompt="Answer politely.", reward_promote_min_heldout_groups=0)
    annotator = member(project, "annotator")

    # 1. import
    result = _import(project)
    assert result.tasks == N_PROMPTS and result.demonstrations == 4
    # 2. judgments, through the assignment engine
    assert _judge_everything(project, annotator) == N_PROMPTS
    assert Judgment.objects.filter(project=project, source="human").count() == N_PROMPTS
    assert PreferencePair.objects.filter(project=project).count() == N_PROMPTS
    assert not ComparisonTask.objects.filter(project=project, status="open").exists()

    # 3-7. one round: reward -> DPO -> evaluation -> auto-promotion -> candidates, each its own task.
    spec = pipeline_spec(policy_kind="dpo", auto_promote_margin=-1.0, step_params={
        # As a request gives them: the backbone is the installed tiny base, device and threads are settings.
        "reward": requestable(fast_params(tiny_reward_base, epochs=3)),
        "dpo": requestable({"config": DPO_FAST}),
        "evaluate": requestable(EVAL_FAST),
        "candidates": {"max_prompts": 8, "batch_size": 8},
    })
    first = pipeline_start(project=project, spec=spec)

    def finished():
        rounds = pipeline_list(project=project)
        return rounds and rounds[0]["status"] in {"succeeded", "failed", "stopped"} and rounds[0]

    done = wait_for(finished, timeout=150, interval=0.5, worker=celery_worker, what="the training round")
    runs = {r.kind: r for r in TrainingRun.objects.filter(pipeline_id=first.pipeline_id)}
    assert done["status"] == "succeeded", {k: (r.status, r.error[-2000:]) for k, r in runs.items()}
    assert set(runs) == {"reward", "dpo", "evaluate", "candidates"}
    ordered = sorted(runs.values(), key=lambda r: r.started_at)
    assert [r.kind for r in ordered] == ["reward", "dpo", "evaluate", "candidates"]
    for earlier, later in zip(ordered, ordered[1:]):
        assert earlier.finished_at <= later.started_at  # each step queued only once the previous one succeeded
    assert all("pid=" in r.worker and r.progress == 1.0 for r in ordered)

    # The reward model trained on the human judgments and was promoted.
    rm = runs["reward"].result_version
    assert rm.promoted and runs["reward"].params["judgments"] == N_PROMPTS
    # DPO: a new policy version, child of the base, with new weights.
    policy = ModelVersion.objects.get(pk=runs["dpo"].result_version_id)
    assert policy.parent == base and policy.kind == "policy" and runs["dpo"].params["pairs"] > 0

    assert changed(policy.artifact_path, base.artifact_path)
    # Evaluation stored its metrics on the version, then promoted it (margin -1: it only has to exist).
    evaluation = policy.metrics["evaluation"]
    assert {"reward_mean", "win_rate_vs_parent", "kl_per_token", "perplexity", "bleu", "rouge_l"} <= set(evaluation)
    assert evaluation["parent_human_flags"]["responses_judged"] == 0  # imported responses have no version
    assert runs["evaluate"].params["promotion"]["promoted"] and policy.promoted
    assert model_version_promoted_get(project=project, kind="policy") == policy
    # New candidates: comparison tasks whose responses the promoted policy wrote.
    created = runs["candidates"].params["created"]
    assert created["tasks"] >= 1
    new_tasks = ComparisonTask.objects.filter(project=project, status="open")
    assert new_tasks.count() == created["tasks"]
    for task in new_tasks:
        versions = {s.response.model_version_id for s in task.slots.select_related("response")}
        assert versions == {policy.pk}
    assert runs["candidates"].params["policy_version"] == policy.pk
    # The next labeling round starts from them.
    assert task_assign_next(annotator=annotator, project=project).assignment.task in new_tasks
    assert time.monotonic() - started < 170
