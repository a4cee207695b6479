"""training.services.endpoints: an OpenAI-compatible endpoint registered as a policy version, used for
candidate generation and blind A/B evaluations, against a real server on loopback
(tests/endpoint_server.py serving the tiny test policy)."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from labeling.models import ComparisonTask, Response
from tests.endpoint_server import key_digest, start_server
from tests.training.conftest import import_prompts
from training.models import ModelVersion, TrainingRun
from training.services.ab import ab_evaluation_create
from training.services.candidates import candidates_generate
from training.services.endpoints import endpoint_version_register, is_endpoint_version
from training.services.runs import run_create


@pytest.fixture(scope="module")
def endpoint_server(tiny_policy):
    server = start_server(tiny_policy)
    yield server
    server.stop()


FAST = {"retries": 2, "backoff_s": 0.01, "timeout_s": 20, "concurrency": 2}
KEY_VAR = "PAIRWISE_ENDPOINT_KEY_TEST"  # the operator's default prefix


@pytest.fixture(autouse=True)
def _loopback_allowed(settings):
    """The test server is on loopback, which only the operator's allow-list opens."""
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"


@pytest.mark.django_db
def test_register_writes_a_self_describing_folder_and_never_the_key(project_factory, models_dir, monkeypatch):
    monkeypatch.setenv(KEY_VAR, "sk-never-stored")
    project = project_factory()
    version = endpoint_version_register(project=project, name="vllm-llama", base_url="http://127.0.0.1:9/v1",
                                        model="llama", api_key_env=KEY_VAR, temperature=0.7, concurrency=8)
    assert version.kind == ModelVersion.Kind.POLICY and version.status == "ready" and is_endpoint_version(version)
    assert version.config["endpoint"]["api_key_env"] == KEY_VAR and version.config["endpoint"]["top_p"] is None
    folder = Path(version.artifact_path)
    assert folder.is_dir() and folder.parent.parent == models_dir.resolve()
    assert json.loads((folder / "endpoint.json").read_text())["endpoint"] == version.config["endpoint"]
    assert "sk-never-stored" not in json.dumps(version.config) + (folder / "endpoint.json").read_text()

    with pytest.raises(ValidationError) as info:
        endpoint_version_register(project=project, name="", base_url="localhost:8000", model="",
                                  api_key_env="sk-live-123", temperature=5, concurrency=0)
    assert set(info.value.message_dict) == {"name", "base_url", "model", "api_key_env", "temperature", "concurrency"}
    with pytest.raises(ValidationError) as info:
        endpoint_version_register(project=project, name="vllm-llama", base_url="http://127.0.0.1:9/v1", model="llama")
    assert set(info.value.message_dict) == {"name"}
    assert ModelVersion.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_candidates_from_an_endpoint_with_its_key(project_factory, models_dir, endpoint_server, monkeypatch):
    secret = f"sk-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(KEY_VAR, secret)
    project = project_factory(responses_per_task=3, gen_max_new_tokens=6, system_prompt="Be brief.")
    import_prompts(project, 5)
    prefix = f"/key/{key_digest(secret)}"
    version = endpoint_version_register(project=project, name="local-server", base_url=endpoint_server.base(prefix),
                                        model="tiny", api_key_env=KEY_VAR, temperature=1.0, promoted=True, **FAST)
    run = run_create(project=project, kind=TrainingRun.Kind.CANDIDATES, params={"max_prompts": 4})

    created = candidates_generate(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    tasks = list(ComparisonTask.objects.filter(project=project))
    assert created["tasks"] == len(tasks) >= 3 and run.params["created"] == created
    responses = list(Response.objects.filter(prompt__project=project))
    assert responses and all(r.source == "local-server" and r.model_version_id == version.pk for r in responses)
    assert responses[0].generation["endpoint"] == {"base_url": endpoint_server.base(prefix), "model": "tiny"}
    assert responses[0].generation["max_new_tokens"] == 6  # the project's, the version leaving it open
    seen = endpoint_server.requests(prefix)
    assert len(seen) >= 4 and all(r["authorization"] == f"Bearer {secret}" for r in seen)
    assert seen[0]["body"]["messages"][0] == {"role": "system", "content": "Be brief."} and seen[0]["body"]["n"] == 3
    stored = json.dumps([version.config, run.params, run.error], default=str)
    stored += json.dumps([r.generation for r in responses])
    assert secret not in stored  # only the variable's name is kept


@pytest.mark.django_db
def test_candidates_retry_a_flaky_endpoint(project_factory, models_dir, endpoint_server):
    project = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    import_prompts(project, 3)
    prefix = f"/fail/429/2/{uuid.uuid4().hex[:8]}"
    version = endpoint_version_register(project=project, name="flaky", base_url=endpoint_server.base(prefix),
                                        model="tiny", **{**FAST, "concurrency": 1})
    run = run_create(project=project, kind=TrainingRun.Kind.CANDIDATES, base_version=version, params={"max_prompts": 3})
    created = candidates_generate(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert created["tasks"] + created["prompts_skipped"] == 3
    assert Response.objects.filter(prompt__project=project).exclude(source="flaky").count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("prefix, said", [("/fail/503/999/{key}", "answered 503 after 3 attempts: Service Unavailable"),
                                          ("/slow/3", "failed after 3 attempts: no answer within 0.5 s (timeout)")])
def test_a_run_whose_endpoint_keeps_failing_fails_with_its_error_and_creates_nothing(
    project_factory, models_dir, endpoint_server, prefix, said,
):
    project = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    import_prompts(project, 3)
    version = endpoint_version_register(project=project, name="down", model="tiny", promoted=True,
                                        base_url=endpoint_server.base(prefix.format(key=uuid.uuid4().hex[:8])),
                                        **{**FAST, "timeout_s": 0.5})
    run = run_create(project=project, kind=TrainingRun.Kind.CANDIDATES, params={"max_prompts": 3})
    assert candidates_generate(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.error.startswith("EndpointError: endpoint http://127.0.0.1")
    assert said in run.error and "injected" not in run.error, run.error  # never the server's body
    assert not ComparisonTask.objects.filter(project=project).exists()
    assert not Response.objects.filter(prompt__project=project).exists()
    assert version.pk  # the version stays registered


@pytest.mark.django_db
def test_blind_ab_between_an_endpoint_and_a_local_policy(setup, endpoint_server):
    project, base = setup
    version = endpoint_version_register(project=project, name="served", base_url=endpoint_server.base(),
                                        model="tiny", **FAST)
    run = ab_evaluation_create(project=project, version_a=version, version_b=base, prompts=6, seed=3)
    run.params = {**run.params, "device": "cpu"}
    run.save()
    created = candidates_generate(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    tasks = list(ComparisonTask.objects.filter(project=run.project))
    assert len(tasks) == created["tasks"] >= 3
    for task in tasks:
        sources = {s.response.source: s.response.model_version_id for s in task.slots.select_related("response")}
        assert sources == {"served": version.pk, base.name: base.pk}
    served = Response.objects.get(prompt=tasks[0].prompt, source="served")
    assert served.generation["endpoint"]["model"] == "tiny" and served.generation["model_version"] == version.pk
    local = Response.objects.get(prompt=tasks[0].prompt, model_version=base)
    assert "endpoint" not in local.generation and local.generation["seed"] == 4


@pytest.mark.django_db
def test_an_endpoint_version_is_never_trained_from_or_evaluated_locally(setup, models_dir):
    """It has no weights: a policy run with it as parent, or its evaluation, fails with the reason."""
    from tests.training.conftest import DPO_FAST
    from training.services.evaluation import policy_evaluate
    from training.services.policy import policy_train
    from training.services.runs import run_create

    project, _ = setup
    version = endpoint_version_register(project=project, name="remote", base_url="http://127.0.0.1:9/v1", model="m")
    run = run_create(project=project, kind="dpo", base_version=version, params={"config": DPO_FAST})

    assert policy_train(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == "failed" and "model endpoint" in run.error
    evaluation = run_create(project=project, kind="evaluate", base_version=version, params={})
    assert policy_evaluate(run_id=evaluation.pk) is None
    evaluation.refresh_from_db()
    assert evaluation.status == "failed" and "blind A/B" in evaluation.error
