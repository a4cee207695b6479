"""The training round (pipeline) chaining, its schedule, the blind A/B evaluation with its
Bradley-Terry leaderboard, flag rates per version, and the APIs and page that show them.
Task bodies run here through the services; each enqueue is checked on commit."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from labeling.models import ComparisonTask, Judgment, Project, Response
from labeling.services.assignment import judgment_submit, task_assign_next
from tests.training.conftest import fast_params
from tests.training.test_policy import (  # noqa: F401  (fixtures)
    DPO_FAST, EVAL_FAST, SFT_FAST, _policy_run, setup, tiny_policy, train_reward,
)
from training import tasks
from training.models import ModelVersion, TrainingRun
from training.selectors.ab import ab_leaderboard
from training.selectors.runs import pipeline_list, pipeline_spec, run_pipeline_spec
from training.selectors.versions import version_flag_rates
from training.services.candidates import candidates_generate
from training.services.evaluation import policy_evaluate
from training.services.policy import policy_train
from training.services.reward import reward_model_train
from training.services.rounds import pipeline_start, reward_retrain_check
from training.services.runs import run_cancel, run_create, run_fail, run_params_update, run_start, run_succeed
from training.services.schedules import RETRAIN_SCHEDULE_PREFIX

TASKS = ("reward_model_train", "policy_train", "policy_evaluate", "candidates_generate")


@pytest.fixture
def sent(monkeypatch):
    """(task name, run id) of every task sent, in order."""
    out: list[tuple[str, int]] = []
    for name in TASKS:
        monkeypatch.setattr(getattr(tasks, name), "delay", lambda name=name, **kw: out.append((name, kw["run_id"])))
    return out


def _step(pipeline_id, kind) -> TrainingRun:
    return TrainingRun.objects.get(pipeline_id=pipeline_id, kind=kind)


@pytest.mark.django_db
def test_a_round_chains_every_step_and_promotes_by_margin(setup, tiny_reward_base, sent, django_capture_on_commit_callbacks):
    project, base = setup
    spec = pipeline_spec(policy_kind="dpo", auto_promote_margin=-1.0, step_params={
        "reward": fast_params(tiny_reward_base, epochs=2), "dpo": {"config": DPO_FAST, "threads": 1},
        "evaluate": EVAL_FAST, "candidates": {"max_prompts": 4, "device": "cpu"},
    })
    with django_capture_on_commit_callbacks(execute=True):
        first = pipeline_start(project=project, spec=spec)
    assert sent == [("reward_model_train", first.pk)] and first.pipeline_id
    assert pipeline_list(project=project)[0]["status"] == "running"
    assert [s["status"] for s in pipeline_list(project=project)[0]["steps"]] == ["queued", "pending", "pending", "pending"]

    with django_capture_on_commit_callbacks(execute=True):
        rm = reward_model_train(run_id=first.pk)
    dpo = _step(first.pipeline_id, "dpo")
    assert rm.promoted and sent[-1] == ("policy_train", dpo.pk) and dpo.params["trigger"] == "pipeline"
    assert dpo.params["config"] == DPO_FAST and dpo.base_version is None

    with django_capture_on_commit_callbacks(execute=True):
        version = policy_train(run_id=dpo.pk)
    evaluation = _step(first.pipeline_id, "evaluate")
    assert sent[-1] == ("policy_evaluate", evaluation.pk) and evaluation.base_version == version
    assert evaluation.params["auto_promote_margin"] == -1.0 and version.parent == base and not version.promoted
    middle = pipeline_list(project=project)[0]
    assert middle["status"] == "running" and middle["progress"] == pytest.approx(0.5)

    with django_capture_on_commit_callbacks(execute=True):
        policy_evaluate(run_id=evaluation.pk)
    version.refresh_from_db()
    assert version.promoted and "win_rate_vs_parent" in version.metrics["evaluation"]
    candidates = _step(first.pipeline_id, "candidates")
    assert sent[-1] == ("candidates_generate", candidates.pk)

    with django_capture_on_commit_callbacks(execute=True):
        created = candidates_generate(run_id=candidates.pk)
    assert created["tasks"] >= 1 and len(sent) == 4  # the last step queues nothing
    new = Response.objects.filter(model_version=version)
    assert new.exists() and all(r.source == version.name for r in new)
    done = pipeline_list(project=project)[0]
    assert done["status"] == "succeeded" and done["progress"] == 1.0
    assert [s["status"] for s in done["steps"]] == ["succeeded"] * 4 and done["steps"][2]["promotion"]["promoted"]


@pytest.mark.django_db
def test_a_failed_step_ends_the_round_and_a_missing_policy_stops_it(project_factory, tiny_reward_base, sent,
                                                                     django_capture_on_commit_callbacks, models_dir):
    from tests.training.conftest import import_preferences, separable_records

    project = project_factory()
    spec = pipeline_spec(step_params={"reward": fast_params(tiny_reward_base, epochs=1)})
    first = pipeline_start(project=project, spec=spec)
    with django_capture_on_commit_callbacks(execute=True):
        assert reward_model_train(run_id=first.pk) is None  # no judgments: it fails
    assert sent == [] and TrainingRun.objects.filter(pipeline_id=first.pipeline_id).count() == 1
    assert pipeline_list(project=project)[0]["status"] == "failed"

    import_preferences(project, separable_records(8))
    second = pipeline_start(project=project, spec=spec)
    with django_capture_on_commit_callbacks(execute=True):
        assert reward_model_train(run_id=second.pk) is not None
    second.refresh_from_db()
    assert sent == [] and "no promoted policy" in second.params["pipeline_stopped"]
    latest = pipeline_list(project=project)[0]
    assert latest["pipeline_id"] == str(second.pipeline_id) and latest["status"] == "stopped"


@pytest.mark.django_db
def test_a_live_run_of_the_next_kind_stops_the_round(setup, tiny_reward_base, sent, django_capture_on_commit_callbacks):
    project, _ = setup
    manual = run_create(project=project, kind=TrainingRun.Kind.DPO)
    first = pipeline_start(project=project, spec=pipeline_spec(
        step_params={"reward": fast_params(tiny_reward_base, epochs=1)}))
    with django_capture_on_commit_callbacks(execute=True):
        reward_model_train(run_id=first.pk)
    first.refresh_from_db()
    assert f"({manual.pk}) was already live" in first.params["pipeline_stopped"] and sent == []


@pytest.mark.django_db
def test_the_schedule_starts_a_round_with_its_kwargs_and_never_two_at_once(setup, sent):
    project, _ = setup
    project.retrain_min_judgments = 1
    project.save()
    run = reward_retrain_check(project_id=project.pk, policy_kind="ppo", auto_promote_margin=0.05,
                                        step_params={"ppo": {"config": {"iterations": 1}}})
    assert run.pipeline_id and run.params["trigger"] == "schedule"
    assert run.params["pipeline"]["steps"] == ["reward", "ppo", "evaluate", "candidates"]
    assert run.params["pipeline"]["auto_promote_margin"] == 0.05
    run_start(run_id=run.pk)
    run_params_update(run_id=run.pk, data_until_judgment_id=0)
    run_succeed(run_id=run.pk)  # the round goes on to PPO ...
    ppo = _step(run.pipeline_id, "ppo")
    assert ppo.params["config"] == {"iterations": 1}
    # ... so no new round while it is live, though the judgments are still "new".
    assert reward_retrain_check(project_id=project.pk) is None
    run_fail(run_id=ppo.pk, error="x")
    plain = reward_retrain_check(project_id=project.pk)
    assert plain.params == {"trigger": "schedule"} and plain.pipeline_id != run.pipeline_id
    assert run_pipeline_spec(run=plain)["steps"][1] == "dpo"


@pytest.mark.django_db
def test_setup_schedules_writes_pipeline_options_into_the_kwargs(project_factory):
    a = project_factory()
    out = StringIO()
    call_command("setup_schedules", "--policy-kind", "ppo", "--auto-promote-margin", "0.05", "--step-params",
                 json.dumps({"ppo": {"config": {"iterations": 2}}}), stdout=out)
    kwargs = json.loads(PeriodicTask.objects.get(name=RETRAIN_SCHEDULE_PREFIX + a.slug).kwargs)
    assert kwargs == {"project_id": a.pk, "policy_kind": "ppo", "auto_promote_margin": 0.05,
                      "step_params": {"ppo": {"config": {"iterations": 2}}}}
    # The task takes exactly these kwargs.
    tasks.reward_retrain_check.run(**kwargs)
    with pytest.raises(Exception):
        call_command("setup_schedules", "--step-params", json.dumps({"nope": {}}), stdout=out)


def _judge_all(project, user, prefer) -> int:
    """Judge every task the annotator is given: prefer(response) -> bool picks the winner."""
    n = 0
    while True:
        nxt = task_assign_next(annotator=user, project=project)
        if nxt.assignment is None:
            return n
        ids = list(nxt.assignment.shown_order)
        responses = {r.pk: r for r in Response.objects.filter(pk__in=ids)}
        winner = next((i for i in ids if prefer(responses[i])), ids[0])
        loser = [i for i in ids if i != winner]
        judgment_submit(assignment=nxt.assignment, annotator=user, ranking=[[winner], loser],
                        flags={str(loser[0]): ["hallucination"]}, idempotency_key=f"k{nxt.assignment.pk}")
        n += 1


@pytest.mark.django_db
def test_blind_ab_evaluation_feeds_a_bradley_terry_leaderboard(setup, make_user, member, api_client):
    project, base = setup
    _, sft = _policy_run(project, TrainingRun.Kind.SFT, SFT_FAST)
    admin, annotator = member(project, "admin"), member(project, "annotator")

    url = reverse("api-training-ab-evaluations", kwargs={"slug": project.slug})
    assert api_client(annotator).post(url, {"version_a": base.pk, "version_b": sft.pk}, format="json").status_code == 403
    bad = api_client(admin).post(url, {"version_a": sft.pk, "version_b": sft.pk}, format="json")
    assert bad.status_code == 400
    created = api_client(admin).post(url, {"version_a": base.pk, "version_b": sft.pk, "prompts": 12}, format="json")
    assert created.status_code == 201, created.content
    ab = Project.objects.get(slug=created.json()["project"])
    run = TrainingRun.objects.get(pk=created.json()["run"]["id"])
    assert ab.mode == Project.Mode.PAIRWISE and ab.responses_per_task == 2 and run.project == ab
    assert run.kind == "candidates" and run.params["ab"]["versions"] == [base.pk, sft.pk]
    assert ab.prompts.count() == 12 and ab.memberships.filter(user=annotator, role="annotator").exists()

    run.params = {**run.params, "device": "cpu"}
    run.save()
    created = candidates_generate(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    tasks_ = list(ComparisonTask.objects.filter(project=ab))
    assert len(tasks_) == created["tasks"] >= 6
    first_side = set()
    for task in tasks_:
        slots = list(task.slots.select_related("response").order_by("position"))
        assert sorted(s.response.model_version_id for s in slots) == sorted([base.pk, sft.pk])
        first_side.add(slots[0].response.model_version_id)
    assert first_side == {base.pk, sft.pk}  # sides randomised

    # The annotator prefers the SFT version everywhere: it tops the leaderboard with a bootstrap interval.
    judged = _judge_all(ab, annotator, prefer=lambda r: r.model_version_id == sft.pk)
    assert judged == len(tasks_)
    board = ab_leaderboard(project=project, rounds=50)
    assert [row["version_id"] for row in board] == [sft.pk, base.pk]
    for row in board:
        assert row["ci_low"] <= row["rating"] <= row["ci_high"] and row["battles"] == judged
    assert board[0]["win_share"] == 1.0 and board[0]["rating"] > board[1]["rating"]
    # Flag rates from the human judgments, per version (the loser was always flagged).
    flags = version_flag_rates(version_ids=[base.pk, sft.pk])
    assert flags[base.pk]["any_flag_rate"] == 1.0 and flags[base.pk]["flag_rates"] == {"hallucination": 1.0}
    assert flags[sft.pk]["any_flag_rate"] == 0.0 and flags[sft.pk]["responses_judged"] == judged

    body = api_client(annotator).get(reverse("api-training-leaderboard", kwargs={"slug": project.slug})).json()
    assert body["leaderboard"][0]["version_id"] == sft.pk and body["flag_rates"][str(base.pk)]["any_flag_rate"] == 1.0
    listed = api_client(annotator).get(url).json()["evaluations"]
    assert listed[0]["project"] == ab.slug and listed[0]["judgments"] == judged

    page = api_client(admin, token=False).get(reverse("training-runs", kwargs={"slug": project.slug}))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Create blind A/B" in html and "Bradley-Terry" in html and sft.name in html


@pytest.mark.django_db
def test_run_and_pipeline_apis_and_page(setup, member, api_client, sent, django_capture_on_commit_callbacks):
    project, base = setup
    admin, viewer = member(project, "admin"), member(project, "viewer")
    runs_url = reverse("api-training-runs", kwargs={"slug": project.slug})
    with django_capture_on_commit_callbacks(execute=True):
        dpo = api_client(admin).post(runs_url, {"kind": "dpo", "config": {"epochs": 1}}, format="json")
    assert dpo.status_code == 201 and dpo.json()["params"]["promote"] == "never"
    assert sent == [("policy_train", dpo.json()["id"])]
    assert api_client(admin).post(runs_url, {"kind": "dpo"}, format="json").status_code == 409
    assert api_client(admin).post(runs_url, {"kind": "evaluate"}, format="json").status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        ev = api_client(admin).post(runs_url, {"kind": "evaluate", "version": base.pk, "auto_promote_margin": 0.1}, format="json")
    assert ev.status_code == 201 and ev.json()["base_version"] == base.pk and ev.json()["params"]["auto_promote_margin"] == 0.1
    assert sent[-1] == ("policy_evaluate", ev.json()["id"])

    pipes = reverse("api-training-pipelines", kwargs={"slug": project.slug})
    assert api_client(viewer).post(pipes, {}, format="json").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        started = api_client(admin).post(pipes, {"policy_kind": "sft", "auto_promote_margin": 0.02}, format="json")
    assert started.status_code == 201 and started.json()["pipeline_id"] and sent[-1][0] == "reward_model_train"
    assert api_client(admin).post(pipes, {}, format="json").status_code == 409  # a reward run is live
    listed = api_client(viewer).get(pipes).json()["pipelines"]
    assert listed[0]["policy_kind"] == "sft" and listed[0]["auto_promote_margin"] == 0.02
    assert [s["kind"] for s in listed[0]["steps"]] == ["reward", "sft", "evaluate", "candidates"]

    client = api_client(admin, token=False)
    page = client.get(reverse("training-runs", kwargs={"slug": project.slug})).content.decode()
    assert f'data-pipeline-id="{listed[0]["pipeline_id"]}"' in page and "Run a round now" in page
    polled = client.get(reverse("training-runs-json", kwargs={"slug": project.slug})).json()
    assert polled["pipelines"][0]["pipeline_id"] == listed[0]["pipeline_id"]
    # The dashboard buttons queue through the same services.
    run_cancel(run=TrainingRun.objects.get(pk=dpo.json()["id"]))
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("training-policy-train", kwargs={"slug": project.slug}), {"kind": "ppo"})
        client.post(reverse("training-version-evaluate", kwargs={"slug": project.slug, "version_id": base.pk}))
    assert TrainingRun.objects.filter(project=project, kind="ppo", status="queued").exists()
    assert TrainingRun.objects.filter(project=project, kind="evaluate", base_version=base, status="queued").exists()
    assert Judgment.objects.filter(project=project).exists()
