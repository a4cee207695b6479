"""training.apis.policy and the runs page: rounds, A/B and leaderboard endpoints."""
from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import Judgment
from training.models import TrainingRun
from training.services.runs import run_cancel


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

