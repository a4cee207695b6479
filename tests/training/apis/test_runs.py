"""training.apis.runs: runs and versions over the REST API."""
from __future__ import annotations

import gzip
import io
import json

import pytest
from django.urls import reverse

from labeling.models import Membership
from tests.training.conftest import import_preferences, separable_records
from training.models import ModelVersion, TrainingRun


@pytest.mark.django_db
def test_train_now_queues_then_conflicts_and_roles_are_enforced(project_factory, member, api_client, no_broker,
                                                                django_capture_on_commit_callbacks):
    project = project_factory()
    admin, annotator = member(project, Membership.Role.ADMIN), member(project, Membership.Role.ANNOTATOR)
    url = reverse("api-training-runs", kwargs={"slug": project.slug})

    assert api_client(annotator).post(url, {"kind": "reward"}, format="json").status_code == 403
    assert api_client().get(url).status_code in (401, 403)
    with django_capture_on_commit_callbacks(execute=True):
        created = api_client(admin).post(url, {"kind": "reward", "config": {"epochs": 2}}, format="json")
    assert created.status_code == 201, created.content
    run_id = created.json()["id"]
    assert created.json()["status"] == "queued" and no_broker == [{"run_id": run_id}]
    assert TrainingRun.objects.get(pk=run_id).params["config"] == {"epochs": 2}

    again = api_client(admin).post(url, {"kind": "reward"}, format="json")
    assert again.status_code == 409 and again.json()["id"] == run_id

    # Reads are for viewers and admins: runs carry params, logs and errors (tests/security/test_defaults.py).
    viewer = member(project, Membership.Role.VIEWER)
    listed = api_client(viewer).get(url).json()
    assert [r["id"] for r in listed["results"]] == [run_id]
    detail_url = reverse("api-training-run", kwargs={"slug": project.slug, "run_id": run_id})
    detail = api_client(viewer).get(detail_url)
    assert detail.status_code == 200 and detail.json()["kind"] == "reward"
    assert api_client(annotator).get(url).status_code == api_client(annotator).get(detail_url).status_code == 403
    other = project_factory()
    assert api_client(admin).get(reverse("api-training-runs", kwargs={"slug": other.slug})).status_code == 404

    cancel = reverse("api-training-run-cancel", kwargs={"slug": project.slug, "run_id": run_id})
    assert api_client(annotator).post(cancel).status_code == 403
    assert api_client(admin).post(cancel).json()["status"] == "cancelled"
    assert api_client(admin).post(url, {"kind": "reward"}, format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_versions_promote_demote_and_evaluate(trained, member, api_client):
    project, version = trained
    admin, viewer = member(project, Membership.Role.ADMIN), member(project, Membership.Role.VIEWER)
    kw = {"slug": project.slug, "version_id": version.pk}

    listed = api_client(viewer).get(reverse("api-training-versions", kwargs={"slug": project.slug})).json()["results"]
    assert [v["id"] for v in listed] == [version.pk] and listed[0]["promoted"] and "history" not in listed[0]["metrics"]

    assert api_client(viewer).post(reverse("api-training-version-demote", kwargs=kw)).status_code == 403
    assert api_client(admin).post(reverse("api-training-version-demote", kwargs=kw)).json()["promoted"] is False
    assert api_client(admin).post(reverse("api-training-version-promote", kwargs=kw)).json()["promoted"] is True

    evaluate = reverse("api-training-version-evaluate", kwargs=kw)
    as_json = api_client(viewer).post(evaluate, {"records": separable_records(6)}, format="json")
    assert as_json.status_code == 200, as_json.content
    assert set(as_json.json()) == {"pairs", "accuracy", "ci95", "mean_margin", "log_loss", "length_baseline", "by_length",
                                   "trained_prompts", "length_margin_corr", "accuracy_shorter_chosen",
                                   "pairs_shorter_chosen", "accuracy_longer_chosen", "pairs_longer_chosen"}
    assert as_json.json()["pairs"] == 6 and as_json.json()["length_baseline"] == 1.0

    body = gzip.compress("\n".join(json.dumps(r) for r in separable_records(5)).encode())
    upload = io.BytesIO(body)
    upload.name = "pairs.jsonl.gz"
    as_file = api_client(viewer).post(evaluate, {"file": upload}, format="multipart")
    assert as_file.status_code == 200 and as_file.json()["pairs"] == 5
    assert as_file.json()["accuracy"] == as_json.json()["accuracy"] == 1.0

    bad = api_client(viewer).post(evaluate, {"records": [{"prompt": "p", "chosen": 3}]}, format="json")
    assert bad.status_code == 400

    # Keeping the result on the version is an admin's write; scoring alone is not.
    kept = {"records": separable_records(4), "name": "polite pairs"}
    assert api_client(viewer).post(evaluate, kept, format="json").status_code == 403
    assert "evaluations" not in ModelVersion.objects.get(pk=version.pk).metrics
    assert api_client(admin).post(evaluate, kept, format="json").status_code == 200
    upload = io.BytesIO(body)
    upload.name = "pairs.jsonl.gz"
    assert api_client(admin).post(evaluate, {"file": upload, "name": "from a file"}, format="multipart").status_code == 200
    evaluations = ModelVersion.objects.get(pk=version.pk).metrics["evaluations"]
    assert {n: (e["pairs"], e["source"]) for n, e in evaluations.items()} == {"polite pairs": (4, ""), "from a file": (5, "pairs.jsonl.gz")}
    listed = api_client(viewer).get(reverse("api-training-versions", kwargs={"slug": project.slug})).json()["results"]
    assert listed[0]["metrics"]["evaluations"]["polite pairs"]["accuracy"] == 1.0

    # A bad line in an upload is named by its number; nothing is kept.
    lines = [json.dumps(r) for r in separable_records(2)] + ["", json.dumps({"prompt": "p", "chosen": "c"})]
    upload = io.BytesIO("\n".join(lines).encode())
    upload.name = "mine.jsonl"
    broken = api_client(admin).post(evaluate, {"file": upload, "name": "broken"}, format="multipart")
    assert broken.status_code == 400 and broken.json() == {"file": "mine.jsonl:4: missing or non-string rejected"}
    assert "broken" not in ModelVersion.objects.get(pk=version.pk).metrics["evaluations"]
    blank = api_client(admin).post(evaluate, {"records": separable_records(2), "name": "  "}, format="json")
    assert blank.status_code == 400 and "1 to 64 characters" in blank.json()["non_field_errors"][0]


@pytest.mark.django_db
def test_bad_input_is_a_400_with_field_errors_not_a_500(project_factory, member, api_client, tmp_path):
    """Found by tests/test_api_fuzz.py: each of these was a 500, or a 400 whose body was a bare list."""
    project = project_factory()
    admin, annotator = member(project, Membership.Role.ADMIN), member(project, Membership.Role.ANNOTATOR)
    reward = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.REWARD, name="r", base="b",
                                         artifact_path=str(tmp_path / "deleted"))
    policy = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.POLICY, name="p", base="b",
                                         artifact_path=str(tmp_path / "p"))
    evaluate = reverse("api-training-version-evaluate", kwargs={"slug": project.slug, "version_id": reward.pk})
    client = api_client(admin)

    listed = client.post(evaluate, [None, None], format="json")
    assert listed.status_code == 400 and "records" in listed.json()
    gone = client.post(evaluate, {"records": separable_records(2)}, format="json")
    assert gone.status_code == 400 and "are gone" in gone.json()["non_field_errors"][0]
    assert api_client(annotator).post(evaluate, {"records": separable_records(2)}, format="json").status_code == 403

    board = reverse("api-training-leaderboard", kwargs={"slug": project.slug})
    assert client.get(board, {"rounds": "abc"}).status_code == 400
    assert client.get(board, {"rounds": "10"}).status_code == 200

    ab = client.post(reverse("api-training-ab-evaluations", kwargs={"slug": project.slug}),
                     {"version_a": policy.pk, "version_b": policy.pk}, format="json")
    assert ab.status_code == 400 and ab.json() == {"non_field_errors": ["Pick two different versions."]}
    pipeline = client.post(reverse("api-training-pipelines", kwargs={"slug": project.slug}),
                           {"step_params": {"nope": {}}}, format="json")
    assert pipeline.status_code == 400 and "step_params" in pipeline.json()



@pytest.mark.django_db
def test_training_runs_take_a_snapshot_and_filters_and_refuse_bad_ones(project_factory, member, api_client, no_broker):
    from training.services.snapshots import training_snapshot_create

    project = project_factory()
    import_preferences(project, separable_records(4))
    admin = member(project, "admin")
    url = reverse("api-training-runs", args=[project.slug])
    snapshot = training_snapshot_create(project=project)
    other = training_snapshot_create(project=project_factory())

    ok = api_client(admin).post(url, {"kind": "reward", "snapshot": snapshot.pk, "include_gold": True}, format="json")
    assert ok.status_code == 201 and ok.json()["params"]["snapshot"] == snapshot.pk and ok.json()["params"]["include_gold"]
    TrainingRun.objects.filter(pk=ok.json()["id"]).update(status=TrainingRun.Status.CANCELLED)
    foreign = api_client(admin).post(url, {"kind": "reward", "snapshot": other.pk}, format="json")
    assert foreign.status_code == 400 and "snapshot" in foreign.json()
    bad = api_client(admin).post(url, {"kind": "dpo", "filters": {"consensus": "majority"}}, format="json")
    assert bad.status_code == 400 and "filters" in bad.json()
    unknown = api_client(admin).post(url, {"kind": "sft", "filters": {"colour": "blue"}}, format="json")
    assert unknown.status_code == 400 and "colour" in unknown.json()


@pytest.mark.django_db
def test_a_reward_run_mixes_in_another_projects_snapshot_its_admin_oversees(project_factory, member, api_client, no_broker):
    from labeling.services.projects import membership_set
    from training.services.snapshots import training_snapshot_create

    project, public = project_factory(), project_factory()
    admin = member(project, "admin")
    url = reverse("api-training-runs", args=[project.slug])
    mixed = training_snapshot_create(project=public)

    hidden = api_client(admin).post(url, {"kind": "reward", "mix_snapshots": [mixed.pk]}, format="json")
    assert hidden.status_code == 400 and hidden.json() == {"mix_snapshots": [f"No training snapshot {mixed.pk} of a project you oversee."]}
    assert api_client(admin).post(url, {"kind": "reward", "mix_snapshots": [0]}, format="json").json() == {
        "mix_snapshots": ["Up to 16 snapshot ids, as a list of positive ids"]}  # training.runspec's message
    assert "mix_snapshots" in api_client(admin).post(url, {"kind": "reward", "mix_snapshots": "7"}, format="json").json()
    membership_set(project=public, user=admin, role="viewer")
    ok = api_client(admin).post(url, {"kind": "reward", "mix_snapshots": [mixed.pk]}, format="json")
    assert ok.status_code == 201 and ok.json()["params"]["mix_snapshots"] == [mixed.pk]
    policy = api_client(admin).post(url, {"kind": "dpo", "mix_snapshots": [mixed.pk]}, format="json")
    assert policy.status_code == 400 and "Only reward runs" in policy.json()["mix_snapshots"][0]


@pytest.mark.django_db
def test_endpoint_registration_api_validates_and_never_stores_the_key(project_factory, member, models_dir, monkeypatch,
                                                                      settings):
    from rest_framework.test import APIClient

    monkeypatch.setenv("PAIRWISE_ENDPOINT_KEY_TEST", "sk-secret-value")
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"  # the operator's allow-list opens loopback
    project = project_factory()
    client = APIClient()
    client.force_authenticate(member(project, "admin"))
    url = f"/api/training/projects/{project.slug}/endpoints/"
    bad = client.post(url, {"name": "", "base_url": "not a url", "model": "m", "concurrency": 0}, format="json")
    assert bad.status_code == 400 and {"name", "base_url", "concurrency"} <= set(bad.json())
    made = client.post(url, {"name": "vllm-8b", "base_url": "http://127.0.0.1:9/v1", "model": "llama",
                             "api_key_env": "PAIRWISE_ENDPOINT_KEY_TEST"}, format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["kind"] == "policy" and body["config"]["endpoint"]["api_key_env"] == "PAIRWISE_ENDPOINT_KEY_TEST"
    assert "sk-secret-value" not in made.content.decode()
    duplicate = client.post(url, {"name": "vllm-8b", "base_url": "http://127.0.0.1:9/v1", "model": "llama"}, format="json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()
