"""/api/training/: runs (list, train now with 409 single flight, detail, cancel), versions (list,
promote, demote, evaluate), role checks; and the /training/ runs page with its JSON and buttons."""
from __future__ import annotations

import gzip
import io
import json

import pytest
from django.urls import reverse

from labeling.models import Membership
from tests.training.conftest import fast_params, import_preferences, separable_records
from training import tasks
from training.models import ModelVersion, TrainingRun
from training.services.reward import reward_model_train
from training.services.runs import run_create


@pytest.fixture
def no_broker(monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.reward_model_train, "delay", lambda **kw: sent.append(kw))
    return sent


@pytest.fixture
def trained(project_factory, tiny_reward_base, models_dir, django_db_blocker):
    """A project with a trained reward version (trained in process, once per test)."""
    project = project_factory()
    import_preferences(project, separable_records(24))
    run = run_create(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base, epochs=8))
    version = reward_model_train(run_id=run.pk)
    assert version is not None, TrainingRun.objects.get(pk=run.pk).error
    return project, version


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

    listed = api_client(annotator).get(url).json()
    assert [r["id"] for r in listed["results"]] == [run_id]
    detail = api_client(annotator).get(reverse("api-training-run", kwargs={"slug": project.slug, "run_id": run_id}))
    assert detail.status_code == 200 and detail.json()["kind"] == "reward"
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
    assert set(as_json.json()) == {"pairs", "accuracy", "mean_margin", "log_loss"} and as_json.json()["pairs"] == 6

    body = gzip.compress("\n".join(json.dumps(r) for r in separable_records(5)).encode())
    upload = io.BytesIO(body)
    upload.name = "pairs.jsonl.gz"
    as_file = api_client(viewer).post(evaluate, {"file": upload}, format="multipart")
    assert as_file.status_code == 200 and as_file.json()["pairs"] == 5
    assert as_file.json()["accuracy"] == as_json.json()["accuracy"] == 1.0

    bad = api_client(viewer).post(evaluate, {"records": [{"prompt": "p", "chosen": 3}]}, format="json")
    assert bad.status_code == 400


@pytest.mark.django_db(transaction=True)
def test_runs_page_json_svg_and_buttons(trained, member, client, no_broker):
    project, version = trained
    admin, viewer = member(project, Membership.Role.ADMIN), member(project, Membership.Role.VIEWER)
    page_url = reverse("training-runs", kwargs={"slug": project.slug})

    client.force_login(viewer)
    page = client.get(page_url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "polyline" in html  # loss and accuracy curves, drawn on the server
    assert "training/runs.js" in html and "<script>" not in html  # no inline scripts
    assert f'data-run-id="{version.produced_by.first().pk}"' in html and version.name in html
    assert "<button" not in html and "<form" not in html  # a viewer gets no buttons

    data = client.get(reverse("training-runs-json", kwargs={"slug": project.slug})).json()
    assert data["runs"][0]["status"] == "succeeded" and data["runs"][0]["progress"] == 1.0
    assert client.post(reverse("training-train", kwargs={"slug": project.slug})).status_code == 403

    client.force_login(admin)
    html = client.get(page_url).content.decode()
    assert "csrfmiddlewaretoken" in html and "Demote" in html and "Train now" in html
    response = client.post(reverse("training-version-demote", kwargs={"slug": project.slug, "version_id": version.pk}))
    assert response.status_code == 302
    assert not ModelVersion.objects.get(pk=version.pk).promoted
    client.post(reverse("training-version-promote", kwargs={"slug": project.slug, "version_id": version.pk}))
    assert ModelVersion.objects.get(pk=version.pk).promoted
    client.post(reverse("training-train", kwargs={"slug": project.slug}))
    queued = TrainingRun.objects.filter(project=project, status="queued").get()
    assert no_broker == [{"run_id": queued.pk}]
    client.post(reverse("training-train", kwargs={"slug": project.slug}))  # single flight: refused with a message
    assert TrainingRun.objects.filter(project=project).count() == 2


def test_runs_page_csrf_is_enforced(project_factory, member, db):
    from django.test import Client

    project = project_factory()
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(member(project, Membership.Role.ADMIN))
    assert csrf_client.post(reverse("training-train", kwargs={"slug": project.slug})).status_code == 403
    assert not TrainingRun.objects.exists()


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
