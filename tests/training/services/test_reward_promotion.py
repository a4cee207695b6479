"""A reward run promotes its version only on evidence: enough held-out groups (the project's
reward_promote_min_heldout_groups) and a held-out accuracy above "the longer answer wins"; otherwise
the version stays a candidate and says why (metrics["promotion"], the training and version pages)."""
from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import Membership
from labeling.services.projects import project_update
from tests.training.conftest import REWARD, fast_params, import_preferences, separable_records
from training import plan
from training.services.reward import reward_model_train
from training.services.runs import run_create


def mixed_length_records(n: int) -> list[dict[str, str]]:
    """The polite answer wins, but it is the longer one only half the time: length alone scores about
    0.5 on these, a model that learned politeness about 1."""
    return [
        {"id": f"m{i}", "prompt": f"question number {i}?", "chosen": f"yes, happy to help with {i}!",
         "rejected": f"no. {i}" + (" no, no, no, not now, not ever, no." if i % 2 else "")}
        for i in range(n)
    ]


def _train(project, tiny_reward_base, **config):
    run = run_create(project=project, kind=REWARD, params=fast_params(tiny_reward_base, **config))
    version = reward_model_train(run_id=run.pk)
    run.refresh_from_db()
    assert version is not None, run.error
    return version


@pytest.mark.django_db
def test_three_judgments_make_a_candidate_with_the_reason(project_factory, tiny_reward_base, models_dir, member, client):
    project = project_factory()
    assert project.reward_promote_min_heldout_groups == 20  # the default
    import_preferences(project, separable_records(3))
    version = _train(project, tiny_reward_base)
    assert not version.promoted
    promotion = version.metrics["promotion"]
    assert promotion["promoted"] is False and "fewer than the project's minimum of 20" in promotion["reason"]

    client.force_login(member(project, Membership.Role.VIEWER))
    page = client.get(reverse("training-runs", kwargs={"slug": project.slug})).content.decode()
    summary = page.split('id="reward-promoted"', 1)[1].split("</p>", 1)[0]
    assert "No reward model promoted yet" in summary and version.name in summary and "minimum of 20" in summary
    detail = client.get(reverse("training-version-detail", args=[project.slug, version.pk])).content.decode()
    assert "A candidate, not promoted" in detail.split('id="version-promotion"', 1)[1].split("</p>", 1)[0]


@pytest.mark.django_db
def test_enough_groups_above_the_length_baseline_promote(project_factory, tiny_reward_base, models_dir, member, client):
    project = project_factory(reward_promote_min_heldout_groups=3)
    import_preferences(project, mixed_length_records(60))
    version = _train(project, tiny_reward_base, epochs=6)
    metrics = version.metrics
    assert metrics["val_groups"] >= 3 and metrics["val_accuracy"] > metrics["val_length_baseline"], metrics
    assert version.promoted and metrics["promotion"]["promoted"] is True
    assert "above the length-only baseline" in metrics["promotion"]["reason"]

    client.force_login(member(project, Membership.Role.VIEWER))
    page = client.get(reverse("training-runs", kwargs={"slug": project.slug})).content.decode()
    summary = page.split('id="reward-promoted"', 1)[1].split("</p>", 1)[0]
    assert "Promoted:" in summary and version.name in summary  # the page names it at once


@pytest.mark.django_db
def test_enough_groups_but_no_better_than_length_stay_a_candidate(project_factory, tiny_reward_base, models_dir):
    # Here the chosen answer is always the longer one: length alone scores 1.0, nothing can beat it.
    project = project_factory(reward_promote_min_heldout_groups=1)
    import_preferences(project, separable_records(60))
    version = _train(project, tiny_reward_base)
    assert version.metrics["val_length_baseline"] == 1.0 and version.metrics["val_groups"] >= 1
    assert not version.promoted and "not above the length-only baseline" in version.metrics["promotion"]["reason"]


@pytest.mark.django_db
def test_the_setting_is_validated_and_zero_turns_the_check_off(project_factory, member, api_client, client):
    project = project_factory()
    admin = member(project, Membership.Role.ADMIN)
    url = reverse("api-project", args=[project.slug])
    assert api_client(admin).patch(url, {"reward_promote_min_heldout_groups": -1}, format="json").status_code == 400
    response = api_client(admin).patch(url, {"reward_promote_min_heldout_groups": 0}, format="json")
    assert response.status_code == 200 and response.json()["reward_promote_min_heldout_groups"] == 0
    project_update(project=project, reward_promote_min_heldout_groups=5)
    client.force_login(admin)
    form = client.get(reverse("console-settings", args=[project.slug])).content.decode()
    assert 'name="reward_promote_min_heldout_groups"' in form and 'value="5"' in form

    assert plan.reward_promotion_evidence(metrics={"val_groups": 0}, min_heldout_groups=0)[0]
    ok, why = plan.reward_promotion_evidence(
        metrics={"val_groups": 30, "val_accuracy": None, "val_length_baseline": None}, min_heldout_groups=20)
    assert not ok and "no held-out accuracy" in why
    ok, why = plan.reward_promotion_evidence(
        metrics={"val_groups": 30, "val_accuracy": 0.71, "val_length_baseline": 0.55}, min_heldout_groups=20)
    assert ok and "0.710" in why and "0.550" in why
