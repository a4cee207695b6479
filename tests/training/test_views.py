"""training.views: the runs page, its JSON, SVG curves and buttons."""
from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import Membership
from training.models import ModelVersion, TrainingRun


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
    assert 'action="/training/' not in html and "Train now" not in html  # a viewer gets no buttons

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


@pytest.mark.django_db
@pytest.mark.parametrize("rank, config", [("", None), ("0", {"lora_r": 0}), ("8", {"lora_r": 8, "lora_alpha": 16})])
def test_the_train_now_lora_rank_blank_keeps_the_default_and_zero_trains_every_weight(
        project_factory, member, client, no_broker, rank, config):
    project = project_factory()
    client.force_login(member(project, Membership.Role.ADMIN))
    client.post(reverse("training-train", kwargs={"slug": project.slug}), {"lora_r": rank})
    assert TrainingRun.objects.get(project=project).params.get("config") == config


@pytest.mark.django_db
def test_the_train_now_length_option_reaches_the_run_and_a_made_up_one_is_refused(
        project_factory, member, client, no_broker):
    project = project_factory()
    client.force_login(member(project, Membership.Role.ADMIN))
    url = reverse("training-train", kwargs={"slug": project.slug})
    assert 'name="length_debias"' in client.get(reverse("training-runs", kwargs={"slug": project.slug})).content.decode()
    page = client.post(url, {"length_debias": "regress"}, follow=True).content.decode()
    assert "config: length_debias: one of &#x27;none&#x27;, &#x27;odin&#x27;" in page
    assert not TrainingRun.objects.filter(project=project).exists()
    client.post(url, {"lora_r": "8", "length_debias": "odin"})
    assert TrainingRun.objects.get(project=project).params["config"] == {"lora_r": 8, "lora_alpha": 16, "length_debias": "odin"}


def test_runs_page_csrf_is_enforced(project_factory, member, db):
    from django.test import Client

    project = project_factory()
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(member(project, Membership.Role.ADMIN))
    assert csrf_client.post(reverse("training-train", kwargs={"slug": project.slug})).status_code == 403
    assert not TrainingRun.objects.exists()



@pytest.mark.django_db
def test_version_and_run_pages_show_lineage_metrics_and_every_curve(trained, member, client):
    project, version = trained
    run = version.produced_by.first()
    child = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.REWARD, name="child<script>",
                                        base="b", parent=version, artifact_path=version.artifact_path)
    client.force_login(member(project, Membership.Role.VIEWER))
    html = client.get(reverse("training-version-detail", args=[project.slug, child.pk])).content.decode()
    lineage = html.split('id="lineage"', 1)[1].split("</dd>", 1)[0]
    assert version.name in lineage and "child&lt;script&gt;" in html and "<script>" not in html
    html = client.get(reverse("training-version-detail", args=[project.slug, version.pk])).content.decode()
    assert f"snapshot {version.snapshot_id}" in html and "val_accuracy" in html
    assert reverse("training-run-detail", args=[project.slug, run.pk]) in html
    assert reverse("training-version-card", args=[project.slug, version.pk]) in html
    html = client.get(reverse("training-run-detail", args=[project.slug, run.pk])).content.decode()
    counts = {}
    for point in (p for p in run.metrics_history if "step" in p):
        for key in (k for k, v in point.items() if isinstance(v, (int, float)) and k != "step"):
            counts[key] = counts.get(key, 0) + 1
    curves = [k for k, n in counts.items() if n >= 2]
    assert "loss" in curves and html.count("<polyline") == min(len(curves), 8)
    assert html.index("run %d loss" % run.pk) < html.index("</svg>")  # the loss curve comes first


@pytest.mark.django_db
def test_the_runs_page_registers_a_model_server(project_factory, member, client, models_dir, settings):
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"  # the operator's allow-list opens loopback
    project = project_factory()
    client.force_login(member(project, Membership.Role.ADMIN))
    url = reverse("training-endpoint-create", kwargs={"slug": project.slug})
    client.post(url, {"name": "vllm", "base_url": "http://127.0.0.1:9/v1", "model": "m", "temperature": "hot"})
    assert not ModelVersion.objects.filter(project=project).exists()  # refused: nothing registered
    response = client.post(url, {"name": "vllm", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                 "api_key_env": "PAIRWISE_ENDPOINT_KEY_VLLM", "max_tokens": "64"}, follow=True)
    version = ModelVersion.objects.get(project=project, name="vllm")
    assert version.config["endpoint"]["api_key_env"] == "PAIRWISE_ENDPOINT_KEY_VLLM" and version.kind == "policy"
    assert "Registered the endpoint vllm" in response.content.decode()
