"""A file over PAIRWISE_IMPORT_BACKGROUND_BYTES, imported from the data tab: the upload answers with a
job, the imports list shows "Importing <file>: N% (rows)" and then the outcome, from the REAL worker's
progress, under the CSP (a real browser against a live server)."""
from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from labeling.models import ImportJob, Judgment
from labeling.services.projects import membership_set, project_create
from tests.e2e.pages import watch_csp

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

ROWS = 200


def test_a_large_file_is_imported_in_the_background(page_for, live_server, make_user, tmp_path, settings, celery_worker):
    settings.PAIRWISE_IMPORT_BACKGROUND_BYTES = 1024
    settings.PAIRWISE_IMPORTS_DIR = tmp_path / "imports"
    admin = make_user("bea")
    project = project_create(name="Big", slug="big", mode="pairwise")
    membership_set(project=project, user=admin, role="admin")
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"x{i}"}) + "\n"
                            for i in range(ROWS)))
    page = page_for(admin)
    violations = watch_csp(page)
    page.goto(f"{live_server.url}/projects/big/data/")
    page.wait_for_selector("body[data-console-ready]", state="attached")
    page.set_input_files("#upload-file", str(path))
    page.check("input[name=upload-preferences][value=judgments]")
    page.click("#upload-preview")
    page.wait_for_selector("#upload[data-state=previewed]")
    page.click("#upload-commit")
    page.wait_for_selector("#upload[data-state=queued]")
    expect(page.locator("#upload-status")).to_contain_text("importing in the background")
    item = page.locator("#import-jobs li").first
    expect(item).to_contain_text("big.jsonl")
    expect(item).to_have_attribute("data-status", "succeeded", timeout=90_000)
    expect(item).to_have_text(f"Imported big.jsonl: {ROWS} rows ({ROWS} prompts, {ROWS} tasks, {ROWS} judgments; "
                              "0 duplicates skipped)")
    expect(page.locator("table.imports tbody")).to_contain_text(f"{ROWS} judgments")  # the history was refreshed
    assert ImportJob.objects.get().progress == 1.0 and Judgment.objects.filter(project=project).count() == ROWS
    assert violations == [], violations
