"""The data tab makes the admin choose what imported preference pairs become, and shows the effect
in the preview before anything is written; the settings show the training schedule with its
threshold and its off switch. A real browser against a live server, under the CSP."""
from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from labeling.models import ComparisonTask, Judgment, Project
from labeling.services.projects import membership_set, project_create
from tests.e2e.pages import watch_csp

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

PAIRS = [{"id": f"hh/{i}", "prompt": f"\n\nHuman: question {i}\n\nAssistant:", "chosen": f" good {i}",
          "rejected": f" bad {i}", "source": "hh-rlhf/helpful-base"} for i in range(3)]


def test_the_admin_chooses_what_imported_pairs_become(page_for, live_server, make_user, tmp_path):
    admin = make_user("erin")
    project = project_create(name="Pairs", slug="pairs", mode="pairwise", overlap=1, retrain_min_judgments=50)
    membership_set(project=project, user=admin, role="admin")
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    page = page_for(admin)
    violations = watch_csp(page)
    page.goto(f"{live_server.url}/projects/pairs/data/")
    page.wait_for_selector("body[data-console-ready]", state="attached")

    # No choice made: the preview shows what "judgments" would do, and Import waits for a choice.
    page.set_input_files("#upload-file", str(path))
    page.click("#upload-preview")
    page.wait_for_selector("#upload[data-state=previewed]")
    effect = page.locator("#upload-result .upload-effect")
    expect(effect).to_contain_text("3 preference records are kept as judgments")
    expect(effect).to_contain_text("the project has 0 tasks open for annotators")
    expect(effect).to_contain_text("do not count toward the training threshold (50 new judgments")
    expect(page.locator("#upload-status")).to_contain_text("choose what they become")
    assert page.locator("#upload-commit").is_disabled()

    # Open them for annotators: the preview says so, then the import leaves three open tasks.
    page.check("input[name=upload-preferences][value=open]")
    expect(page.locator("#upload-status")).to_contain_text("Preview again")
    page.click("#upload-preview")
    page.wait_for_selector("#upload[data-state=previewed]")
    expect(effect).to_contain_text("3 preference records become tasks open for annotators")
    expect(effect).to_contain_text("the project has 3 tasks open for annotators (3 of them from this file)")
    assert not ComparisonTask.objects.exists()  # still nothing written
    page.click("#upload-commit")
    page.wait_for_selector("#upload[data-state=imported]")
    assert ComparisonTask.objects.filter(project=project, status="open", is_gold=False).count() == 3
    assert not Judgment.objects.exists()
    expect(page.locator("table.imports tbody")).to_contain_text("3 opened for annotators")

    # The settings show the schedule: on, its threshold, and the off switch.
    page.goto(f"{live_server.url}/projects/pairs/settings/")
    schedule = page.locator("fieldset#schedule")
    expect(schedule.locator("legend")).to_have_text("Scheduled training")
    expect(schedule.get_by_label("Start a round after this many new judgments")).to_have_value("50")
    switch = schedule.get_by_label("Pause scheduled training rounds")
    assert not switch.is_checked()
    switch.check()
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_load_state("load")
    assert Project.objects.get(pk=project.pk).retrain_paused
    assert violations == [], violations
