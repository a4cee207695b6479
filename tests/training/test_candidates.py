"""Candidate generation from the promoted policy, and install_base_models (tiny random models)."""
from __future__ import annotations

import io
import json
from io import StringIO

import pytest
from django.core.management import call_command

from labeling.models import ComparisonTask, Response
from labeling.services.imports import project_data_import
from training.models import ModelVersion, TrainingRun
from training.selectors.data import candidate_prompts_select
from training.services.candidates import candidates_generate
from training.services.runs import run_create
from training.services.versions import base_models_install


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    from tests.tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _prompts(project, n):
    body = "\n".join(json.dumps({"prompt": f"say something about {i}"}) for i in range(n)).encode()
    project_data_import(project=project, stream=io.BytesIO(body), filename="prompts.jsonl")


@pytest.mark.django_db
def test_install_base_models_is_idempotent(tiny_policy, tiny_reward_base):
    out = StringIO()
    call_command("install_base_models", "--policy", str(tiny_policy), "--reward-base", str(tiny_reward_base), stdout=out)
    call_command("install_base_models", "--policy", str(tiny_policy), "--reward-base", str(tiny_reward_base), stdout=out)
    assert ModelVersion.objects.count() == 2
    policy = ModelVersion.objects.get(kind="policy")
    assert policy.promoted and policy.project is None and policy.config == {"role": "policy-base"}
    reward = ModelVersion.objects.get(kind="reward")
    assert not reward.promoted and reward.config == {"role": "base"}
    assert "(promoted)" in out.getvalue()


@pytest.mark.django_db
def test_candidates_generate_creates_tasks_from_the_promoted_policy(project_factory, tiny_policy, tiny_reward_base):
    base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)
    project = project_factory(responses_per_task=3, gen_max_new_tokens=6, gen_temperature=1.0, gen_top_p=1.0,
                              system_prompt="Be brief.")
    _prompts(project, 5)
    run = run_create(project=project, kind=TrainingRun.Kind.CANDIDATES, params={"max_prompts": 4, "device": "cpu"})

    created = candidates_generate(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    policy = ModelVersion.objects.get(kind="policy", promoted=True)
    tasks = list(ComparisonTask.objects.filter(project=project))
    assert created["tasks"] == len(tasks) >= 3 and run.params["created"] == created
    for task in tasks:
        slots = list(task.slots.select_related("response"))
        assert 2 <= len(slots) <= 3 and [s.position for s in slots] == list(range(len(slots)))
        texts = [s.response.text for s in slots]
        assert len(set(texts)) == len(texts)  # identical samples dropped
    response = Response.objects.filter(prompt__project=project).first()
    assert response.model_version == policy and response.source == policy.name
    assert response.generation["max_new_tokens"] == 6 and response.generation["system_prompt"] == "Be brief."
    # The next round takes the prompt that has no open task first.
    picked = candidate_prompts_select(project=project, limit=1)
    assert picked and not ComparisonTask.objects.filter(prompt=picked[0], status="open").exists()


@pytest.mark.django_db
def test_candidates_without_a_policy_fail_and_create_nothing(project_factory):
    project = project_factory()
    _prompts(project, 2)
    run = run_create(project=project, kind=TrainingRun.Kind.CANDIDATES)
    assert candidates_generate(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "no promoted policy" in run.error
    assert not ComparisonTask.objects.exists()
