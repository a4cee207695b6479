"""Issue 24, points 3 and 4: every request to start work goes through one run spec
(training.runspec + training.services.runspec). A project admin of project A, from every entry point
(the runs, pipelines and A/B APIs, the training page's forms, the management commands, a beat
schedule's kwargs), names unknown keys, bad types, project B's ids and operator-only knobs: each is
refused naming the field, and nothing is queued.

On main before the fix: the pipelines API stored step_params as given ({"candidates": {"ab":
{"versions": [B's]}}} generated from B's versions into A; base paths, threads, device, output_dir
passed through), trainer config keys that do not exist were dropped ({"epoch": 2} trained one epoch),
and the runs API and forms ignored unknown fields."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from io import StringIO
from typing import Any, Callable

import pytest
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.urls import reverse

from labeling.models import Judgment, Membership
from tests.training.conftest import import_preferences, separable_records
from training.models import ModelVersion, TrainingRun
from training.services.rounds import reward_retrain_check
from training.services.snapshots import training_snapshot_create
from training.services.versions import model_version_register

pytestmark = pytest.mark.django_db


@dataclass
class World:
    a: Any  # the attacker's project (they are its admin)
    b: Any  # another tenant's project
    admin: Any
    a1: ModelVersion  # A's own policy version
    base: ModelVersion  # the shared base policy (project=None): allowed
    b1: ModelVersion  # B's policy versions (one stands for B's endpoint)
    b2: ModelVersion
    b_reward: ModelVersion  # B's trained reward model: not a shared backbone
    b_snapshot: int


@pytest.fixture
def world(project_factory, member, tmp_path, settings) -> World:
    settings.PAIRWISE_MAX_PROCESSES = 2

    def version(project, kind, name, **fields):
        folder = tmp_path / name
        folder.mkdir()
        return model_version_register(project=project, kind=kind, name=name, base="x", artifact_path=folder, **fields)

    a, b = project_factory(retrain_min_judgments=1), project_factory()
    import_preferences(a, separable_records(4))
    import_preferences(b, separable_records(4))
    Judgment.objects.filter(project=a).update(counts_for_retrain=True)  # so the scheduled check would start a round
    return World(
        a=a, b=b, admin=member(a, Membership.Role.ADMIN), a1=version(a, "policy", "a1"),
        base=version(None, "policy", "shared-policy", config={"role": "policy-base"}),
        b1=version(b, "policy", "b1"), b2=version(b, "policy", "b2-endpoint"), b_reward=version(b, "reward", "b-rm"),
        b_snapshot=training_snapshot_create(project=b).pk,
    )


OPERATOR_KEYS = [("accelerate_config", "/etc/accelerate/other.yaml"), ("threads", 64), ("device", "cuda:1"),
                 ("output_dir", "/srv/pairwise/models/b"), ("backend", "vllm")]

# (case id, payload builder, the field the refusal must name)
RUNS_API: list[tuple[str, Callable[[World], dict], str]] = [
    ("unknown key", lambda w: {"kind": "reward", "epochs": 2}, "epochs"),
    ("unknown config key", lambda w: {"kind": "reward", "config": {"epoch": 2}}, "config"),
    ("config bad type", lambda w: {"kind": "dpo", "config": {"epochs": "2"}}, "config"),
    ("bad type", lambda w: {"kind": "reward", "snapshot": "latest"}, "snapshot"),
    ("bad kind", lambda w: {"kind": ["reward"]}, "kind"),
    ("other kind's key", lambda w: {"kind": "ppo", "mix_snapshots": [w.b_snapshot]}, "mix_snapshots"),
    ("B's parent", lambda w: {"kind": "dpo", "version": w.b1.pk}, "version"),
    ("B's version to evaluate", lambda w: {"kind": "evaluate", "version": w.b1.pk}, "version"),
    ("B's endpoint for candidates", lambda w: {"kind": "candidates", "version": w.b2.pk}, "version"),
    ("B's snapshot", lambda w: {"kind": "reward", "snapshot": w.b_snapshot}, "snapshot"),
    ("B's snapshot mixed in", lambda w: {"kind": "reward", "mix_snapshots": [w.b_snapshot]}, "mix_snapshots"),
    ("B's reward model as backbone", lambda w: {"kind": "reward", "base": w.b_reward.pk}, "base"),
    ("base path", lambda w: {"kind": "reward", "base": "/srv/pairwise/models/b/reward-run3"}, "base"),
    ("base hub id", lambda w: {"kind": "reward", "base": "someone/private-model"}, "base"),
    ("processes over cap", lambda w: {"kind": "dpo", "processes": 8}, "processes"),
    ("config device", lambda w: {"kind": "sft", "config": {"device": "cuda:1"}}, "config"),
    *[(f"operator {k}", (lambda k, v: lambda w: {"kind": "dpo", k: v})(k, v), k) for k, v in OPERATOR_KEYS],
]

PIPELINES_API: list[tuple[str, Callable[[World], dict], str]] = [
    ("unknown key", lambda w: {"policy_kind": "dpo", "colour": "blue"}, "colour"),
    ("bad type", lambda w: {"auto_promote_margin": "big"}, "auto_promote_margin"),
    ("unknown config key", lambda w: {"step_params": {"dpo": {"config": {"epoch": 2}}}}, "step_params"),
    ("step bad type", lambda w: {"step_params": {"dpo": {"config": {"beta": "high"}}}}, "step_params"),
    ("B's versions through A/B", lambda w: {"step_params": {"candidates": {"ab": {"versions": [w.b1.pk, w.b2.pk]}}}},
     "step_params"),
    ("B's version for candidates", lambda w: {"step_params": {"candidates": {"version": w.b2.pk}}}, "step_params"),
    ("B's snapshot", lambda w: {"step_params": {"reward": {"snapshot": w.b_snapshot}}}, "step_params"),
    ("B's snapshot mixed in", lambda w: {"step_params": {"reward": {"mix_snapshots": [w.b_snapshot]}}}, "step_params"),
    ("B's reward model as backbone", lambda w: {"step_params": {"reward": {"base": w.b_reward.pk}}}, "step_params"),
    ("base path", lambda w: {"step_params": {"reward": {"base": "/srv/pairwise/models/b/reward-run3"}}}, "step_params"),
    ("processes over cap", lambda w: {"step_params": {"dpo": {"processes": 8}}}, "step_params"),
    *[(f"operator {k}", (lambda k, v: lambda w: {"step_params": {"dpo": {k: v}}})(k, v), "step_params")
      for k, v in OPERATOR_KEYS],
]

AB_API: list[tuple[str, Callable[[World], dict], str]] = [
    ("unknown key", lambda w: {"version_a": w.a1.pk, "version_b": w.base.pk, "seed": 1}, "seed"),
    ("bad type", lambda w: {"version_a": "a1", "version_b": w.base.pk}, "version_a"),
    ("B's versions", lambda w: {"version_a": w.b1.pk, "version_b": w.a1.pk}, "version"),
    ("prompts over cap", lambda w: {"version_a": w.a1.pk, "version_b": w.base.pk, "prompts": 10**6}, "prompts"),
]


def _runs(world: World) -> int:
    return TrainingRun.objects.count()


@pytest.mark.parametrize("url, payload, field", [
    *[pytest.param("api-training-runs", p, f, id=f"runs: {c}") for c, p, f in RUNS_API],
    *[pytest.param("api-training-pipelines", p, f, id=f"pipelines: {c}") for c, p, f in PIPELINES_API],
    *[pytest.param("api-training-ab-evaluations", p, f, id=f"ab: {c}") for c, p, f in AB_API],
])
def test_the_apis_refuse_naming_the_field_and_queue_nothing(world, api_client, url, payload, field):
    before = _runs(world)
    response = api_client(world.admin).post(reverse(url, kwargs={"slug": world.a.slug}), payload(world), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert _runs(world) == before


def test_the_apis_answer_with_the_allowed_names(world, api_client):
    client = api_client(world.admin)
    runs = reverse("api-training-runs", kwargs={"slug": world.a.slug})
    body = client.post(runs, {"kind": "dpo", "config": {"epoch": 2}}, format="json").json()
    assert body["config"][0].startswith("epoch: unknown key; allowed:") and "epochs" in body["config"][0]
    body = client.post(runs, {"kind": "dpo", "threads": 2}, format="json").json()
    assert "operator-only (settings.PAIRWISE_TRAIN_THREADS)" in body["threads"][0]
    pipes = reverse("api-training-pipelines", kwargs={"slug": world.a.slug})
    body = client.post(pipes, {"step_params": {"candidates": {"ab": {"versions": [world.b1.pk]}}}}, format="json").json()
    assert body["step_params"][0].startswith("candidates.ab: unknown key; allowed: max_prompts, batch_size")


def test_the_apis_still_take_a_valid_request(world, api_client):
    """The control: the same admin's valid requests are queued, ids of A and the shared bases accepted."""
    client = api_client(world.admin)
    made = client.post(reverse("api-training-runs", kwargs={"slug": world.a.slug}),
                       {"kind": "dpo", "version": world.a1.pk, "config": {"epochs": 1}, "processes": 2}, format="json")
    assert made.status_code == 201, made.json()
    run = TrainingRun.objects.get(pk=made.json()["id"])
    assert run.base_version == world.a1 and run.params == {"trigger": "api", "config": {"epochs": 1}, "processes": 2,
                                                          "promote": "never"}
    ab = client.post(reverse("api-training-ab-evaluations", kwargs={"slug": world.a.slug}),
                     {"version_a": world.a1.pk, "version_b": world.base.pk, "prompts": 2}, format="json")
    assert ab.status_code == 201, ab.json()
    round_ = client.post(reverse("api-training-pipelines", kwargs={"slug": world.a.slug}),
                         {"step_params": {"dpo": {"config": {"epochs": 1}}, "candidates": {"max_prompts": 4}}}, format="json")
    assert round_.status_code == 201, round_.json()


# ------------------------------------------------------------------------------------- forms

FORMS: list[tuple[str, Callable[[World], dict], Callable[[World], dict], str]] = [
    # (url name, url kwargs, POST data, the field the message names)
    ("training-train", lambda w: {}, lambda w: {"lora_r": "many"}, "lora_r"),
    ("training-train", lambda w: {}, lambda w: {"lora_r": "4", "epochs": "2"}, "epochs"),
    ("training-train", lambda w: {}, lambda w: {"device": "cuda:1"}, "device"),
    ("training-train", lambda w: {}, lambda w: {"base": "/srv/pairwise/models/b"}, "base"),
    ("training-policy-train", lambda w: {}, lambda w: {"kind": "dpo", "threads": "64"}, "threads"),
    ("training-policy-train", lambda w: {}, lambda w: {"kind": "dpo", "accelerate_config": "/etc/x.yaml"}, "accelerate_config"),
    ("training-policy-train", lambda w: {}, lambda w: {"kind": "reward"}, "kind"),
    ("training-policy-train", lambda w: {}, lambda w: {"kind": "dpo", "version": str(w.b1.pk)}, "version"),
    ("training-pipeline-start", lambda w: {}, lambda w: {"auto_promote_margin": "big"}, "auto_promote_margin"),
    ("training-pipeline-start", lambda w: {}, lambda w: {"policy_kind": "dpo", "step_params": "{}"}, "step_params"),
    ("training-pipeline-start", lambda w: {}, lambda w: {"policy_kind": "reward"}, "policy_kind"),
    ("training-version-evaluate", lambda w: {"version_id": w.a1.pk}, lambda w: {"auto_promote_margin": "x"},
     "auto_promote_margin"),
    ("training-version-evaluate", lambda w: {"version_id": w.a1.pk}, lambda w: {"output_dir": "/tmp/x"}, "output_dir"),
    ("training-ab-create", lambda w: {}, lambda w: {"version_a": str(w.b1.pk), "version_b": str(w.a1.pk)}, "version"),
    ("training-ab-create", lambda w: {}, lambda w: {"version_a": "a", "version_b": str(w.a1.pk)}, "version_a"),
    ("training-ab-create", lambda w: {}, lambda w: {"version_a": str(w.a1.pk), "version_b": str(w.base.pk), "seed": "1"},
     "seed"),
]


@pytest.mark.parametrize("name, kwargs, data, field", [pytest.param(*case, id=f"{case[0]}: {case[3]}") for case in FORMS])
def test_the_training_page_forms_refuse_naming_the_field_and_queue_nothing(world, client, name, kwargs, data, field):
    client.force_login(world.admin)
    before = _runs(world)
    response = client.post(reverse(name, kwargs={"slug": world.a.slug, **kwargs(world)}), data(world))
    assert response.status_code == 302
    shown = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert shown and all(level == "error" for level, _ in shown) and field in shown[0][1], shown
    assert _runs(world) == before


def test_a_form_cannot_evaluate_another_project_s_version(world, client):
    client.force_login(world.admin)
    url = reverse("training-version-evaluate", kwargs={"slug": world.a.slug, "version_id": world.b1.pk})
    assert client.post(url).status_code == 404 and not TrainingRun.objects.exists()
    assert client.post(reverse("training-policy-train", kwargs={"slug": world.a.slug}), {"kind": "dpo"}).status_code == 302
    assert TrainingRun.objects.filter(kind="dpo").count() == 1  # the control: a valid form queues its run


# ----------------------------------------------------------------------------------- commands

COMMANDS: list[tuple[Callable[[World], list[str]], str]] = [
    (lambda w: ["train_reward_model", "--config", json.dumps({"epoch": 2})], "config"),
    (lambda w: ["train_reward_model", "--config", json.dumps({"lr": "fast"})], "config"),
    (lambda w: ["train_reward_model", "--config", json.dumps({"device": "cuda:1"})], "config"),
    (lambda w: ["train_reward_model", "--base", "/srv/pairwise/models/b/reward-run3"], "base"),
    (lambda w: ["train_reward_model", "--base", str(w.b_reward.pk)], "base"),
    (lambda w: ["train_reward_model", "--snapshot", str(w.b_snapshot)], "snapshot"),
    (lambda w: ["train_policy", "--kind", "dpo", "--parent", str(w.b1.pk)], "version"),
    (lambda w: ["train_policy", "--kind", "dpo", "--processes", "8"], "processes"),
    (lambda w: ["train_policy", "--kind", "ppo", "--processes", "2"], "processes"),
    (lambda w: ["train_policy", "--kind", "dpo", "--config", json.dumps({"output_dir": "/tmp/x"})], "config"),
    (lambda w: ["generate_candidates", "--max-prompts", "0"], "max_prompts"),
]
SCHEDULES: list[tuple[Callable[[World], dict], str]] = [
    (lambda w: {"device": "cuda:1"}, "device"),
    (lambda w: {"policy_kind": "reward"}, "policy_kind"),
    (lambda w: {"step_params": {"candidates": {"ab": {"versions": [w.b1.pk, w.b2.pk]}}}}, "step_params"),
    (lambda w: {"step_params": {"dpo": {"config": {"epoch": 2}}}}, "step_params"),
    (lambda w: {"step_params": {"dpo": {"threads": 8}}}, "step_params"),
    (lambda w: {"step_params": {"reward": {"base": "/srv/pairwise/models/b/reward-run3"}}}, "step_params"),
    (lambda w: {"step_params": {"reward": {"snapshot": w.b_snapshot}}}, "step_params"),
    (lambda w: {"step_params": {"dpo": {"processes": 8}}}, "step_params"),
]


@pytest.mark.parametrize("args, field", [pytest.param(a, f, id=f"{i}: {f}") for i, (a, f) in enumerate(COMMANDS)])
def test_the_commands_refuse_naming_the_field_and_queue_nothing(world, args, field):
    argv = args(world)
    before = _runs(world)
    with pytest.raises(CommandError) as exc:
        call_command(argv[0], "--project", world.a.slug, *argv[1:], stdout=StringIO(), stderr=StringIO())
    assert f"{field}:" in str(exc.value), str(exc.value)
    assert _runs(world) == before


@pytest.mark.parametrize("kwargs, field", [pytest.param(k, f, id=f"{i}: {f}") for i, (k, f) in enumerate(SCHEDULES)])
def test_a_schedule_s_kwargs_are_refused_naming_the_field_and_start_nothing(world, caplog, kwargs, field):
    options = kwargs(world)
    with caplog.at_level(logging.ERROR, logger="training.services.rounds"):
        assert reward_retrain_check(project_id=world.a.pk, **options) is None
    assert field in caplog.text and not TrainingRun.objects.exists()
    with pytest.raises(CommandError) as exc:  # and setup_schedules will not write them into any schedule
        call_command("setup_schedules", *_schedule_argv(options), stdout=StringIO())
    message = str(exc.value)  # a value argparse refuses is named by its flag (--policy-kind)
    assert field in message or f"--{field.replace('_', '-')}" in message, message


def _schedule_argv(options: dict[str, Any]) -> list[str]:
    argv = []
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", json.dumps(value) if isinstance(value, dict) else str(value)]
    return argv


def test_the_commands_and_the_schedule_still_take_a_valid_request(world):
    """The control: the same requests with A's own ids and allowed values are queued."""
    call_command("train_policy", "--project", world.a.slug, "--kind", "dpo", "--parent", str(world.a1.pk),
                 "--processes", "2", stdout=StringIO())
    run = TrainingRun.objects.get(kind="dpo")
    assert run.base_version == world.a1 and run.params["processes"] == 2
    scheduled = reward_retrain_check(project_id=world.a.pk, step_params={"dpo": {"config": {"epochs": 1}}})
    assert scheduled is not None and scheduled.params["pipeline"]["params"] == {"dpo": {"config": {"epochs": 1}}}


def test_a_stored_round_spec_is_checked_again_when_its_next_step_is_queued(world):
    """A spec edited in the database after it was checked cannot smuggle a step param in."""
    from training.services.runs import run_start, run_succeed
    from training.services.versions import model_version_promote

    model_version_promote(version=world.base)  # so the round would go on to its policy step
    run = reward_retrain_check(project_id=world.a.pk, step_params={"dpo": {"config": {"epochs": 1}}})
    spec = run.params["pipeline"]
    spec["params"]["dpo"] = {"config": {"epochs": 1}, "accelerate_config": "/etc/other.yaml"}
    TrainingRun.objects.filter(pk=run.pk).update(params={**run.params, "pipeline": spec})
    run_start(run_id=run.pk)
    run_succeed(run_id=run.pk)
    run.refresh_from_db()
    assert "dpo.accelerate_config: operator-only" in run.params["pipeline_stopped"]
    assert not TrainingRun.objects.filter(kind="dpo").exists()
