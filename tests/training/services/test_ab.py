"""training.services.ab and training.selectors.ab: blind A/B evaluations and their leaderboard."""
from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import ComparisonTask, Project
from tests.training.conftest import SFT_FAST, judge_all, policy_run
from training.models import TrainingRun
from training.selectors.ab import ab_leaderboard
from training.selectors.versions import version_flag_rates
from training.services.candidates import candidates_generate


@pytest.mark.django_db
def test_blind_ab_evaluation_feeds_a_bradley_terry_leaderboard(setup, make_user, member, api_client):
    project, base = setup
    _, sft = policy_run(project, TrainingRun.Kind.SFT, SFT_FAST)
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
    judged = judge_all(ab, annotator, prefer=lambda r: r.model_version_id == sft.pk)
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

    # Viewers and admins read them; the annotator, who labels the blind A/B, may not learn the sides.
    board_url = reverse("api-training-leaderboard", kwargs={"slug": project.slug})
    assert api_client(annotator).get(board_url).status_code == api_client(annotator).get(url).status_code == 403
    viewer = member(project, "viewer")
    body = api_client(viewer).get(board_url).json()
    assert body["leaderboard"][0]["version_id"] == sft.pk and body["flag_rates"][str(base.pk)]["any_flag_rate"] == 1.0
    listed = api_client(viewer).get(url).json()["evaluations"]
    assert listed[0]["project"] == ab.slug and listed[0]["judgments"] == judged

    page = api_client(admin, token=False).get(reverse("training-runs", kwargs={"slug": project.slug}))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Create blind A/B" in html and "Bradley-Terry" in html and sft.name in html

