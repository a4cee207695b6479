"""training.services.candidates: comparison tasks from the promoted policy."""
from __future__ import annotations

import pytest

from labeling.models import ComparisonTask, Response
from tests.training.conftest import import_prompts
from training.models import ModelVersion, TrainingRun
from training.selectors.data import candidate_prompts_select
from training.services.candidates import candidates_generate
from training.services.runs import run_create
from training.services.versions import base_models_install


@pytest.mark.django_db
def test_candidates_generate_creates_tasks_from_the_promoted_policy(project_factory, tiny_policy, tiny_reward_base):
    base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)
    project = project_factory(responses_per_task=3, gen_max_new_tokens=6, gen_temperature=1.0, gen_top_p=1.0,
                              system_prompt="Be brief.")
    import_prompts(project, 5)
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
    import_prompts(project, 2)
    run = run_create(project=project, kind=TrainingRun.Kind.CANDIDATES)
    assert candidates_generate(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "no promoted policy" in run.error
    assert not ComparisonTask.objects.exists()



@pytest.mark.django_db
def test_the_run_records_its_sampler_and_one_that_insists_on_vllm_fails_cleanly(project_factory, tiny_policy, tiny_reward_base,
                                                                                settings):
    import importlib.util

    base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)
    project = project_factory(responses_per_task=2, gen_max_new_tokens=4, gen_temperature=1.0)
    import_prompts(project, 2)
    run = run_create(project=project, kind=TrainingRun.Kind.CANDIDATES, params={"device": "cpu"})
    assert candidates_generate(run_id=run.pk)["tasks"] >= 1
    run.refresh_from_db()
    assert run.params["generation"]["backend"] == "transformers"  # auto, on the CPU
    assert "generating with transformers" in run.log_tail
    # A deployment that asks for vLLM where it cannot run gets a failed run with the reason, and no task.
    ComparisonTask.objects.all().delete()
    settings.PAIRWISE_GENERATOR = "vllm"  # an operator knob, not a run param
    insists = run_create(project=project, kind=TrainingRun.Kind.CANDIDATES, params={"device": "cpu"})
    assert candidates_generate(run_id=insists.pk) is None
    insists.refresh_from_db()
    reason = "vllm is not installed" if importlib.util.find_spec("vllm") is None else "needs a CUDA device"
    assert insists.status == TrainingRun.Status.FAILED and reason in insists.error
    assert not ComparisonTask.objects.exists()
