"""The model card and version pages in a real browser: the card's long metadata lines wrap, so the
page is exactly as wide as the viewport (it was 10,736 px); the metrics are a readable table; a
run's cancel button asks first. No CSP violation on the way."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from labeling.models import Membership
from tests.e2e.pages import watch_csp
from training.models import TrainingRun
from training.services.runs import run_create
from training.services.versions import model_version_card_write, model_version_register
from training.selectors.versions import model_card_text

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

METRICS = {"val_accuracy": 0.7312345678, "val_log_loss": 0.5512345, "val_length_baseline": 0.5123, "val_groups": 25,
           "val_comparisons": 75, "seconds": 12.3456, "comparisons_per_s": 3.21, "processes": 1, "train_loss": 0.41,
           "evaluations": {f"other data set number {i} with a long name": {"pairs": 100, "accuracy": 0.61,
                                                                        "length_baseline": 0.52, "ci95": [0.5, 0.7]}
                           for i in range(12)}}


def _document_width(page) -> tuple[int, int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


@pytest.mark.parametrize("width", [1280, 390])
def test_the_card_and_version_pages_are_as_wide_as_the_viewport(page_for, live_server, make_user, project_factory,
                                                                 tmp_path, width):
    project = project_factory()
    admin = make_user(f"card-admin-{width}")
    Membership.objects.create(project=project, user=admin, role=Membership.Role.ADMIN)
    (tmp_path / "rm").mkdir()
    version = model_version_register(project=project, kind="reward", name=f"{project.slug}-reward-run1",
                                     base="/somewhere/local/minilm", artifact_path=tmp_path / "rm", metrics=METRICS)
    model_version_card_write(version=version)
    front = model_card_text(version=version).split("---\n")[1]
    assert max(len(line) for line in front.splitlines()) > 1000  # the model-index line that widened the page

    page = page_for(admin, width=width)
    violations = watch_csp(page)
    page.goto(f"{live_server.url}/training/{project.slug}/versions/{version.pk}/card/")
    expect(page.locator("#model-card pre.front-matter")).to_contain_text("model-index")
    scroll, viewport = _document_width(page)
    assert scroll == viewport, (scroll, viewport)

    page.goto(f"{live_server.url}/training/{project.slug}/versions/{version.pk}/")
    row = page.locator("table.metrics tr", has_text="Held-out accuracy")
    expect(row.locator("td")).to_have_text("0.731")
    expect(page.locator("#metrics-json pre")).to_be_hidden()
    page.locator("#metrics-json summary").click()
    expect(page.locator("#metrics-json pre")).to_contain_text("0.7312345678")
    scroll, viewport = _document_width(page)
    assert scroll == viewport, (scroll, viewport)
    assert violations == [], violations


def test_cancelling_a_run_asks_first(page_for, live_server, make_user, project_factory):
    project = project_factory()
    admin = make_user("cancel-admin")
    Membership.objects.create(project=project, user=admin, role=Membership.Role.ADMIN)
    run = run_create(project=project, kind=TrainingRun.Kind.REWARD, params={})
    page = page_for(admin)
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.goto(f"{live_server.url}/training/{project.slug}/")
    page.locator(f'tr[data-run-id="{run.pk}"]').get_by_role("button", name="Cancel").click()
    page.wait_for_timeout(500)
    assert asked and f"run {run.pk}" in asked[0]
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED  # dismissed: nothing was posted
    page.once("dialog", lambda d: d.accept())
    page.locator(f'tr[data-run-id="{run.pk}"]').get_by_role("button", name="Cancel").click()
    expect(page.locator(".messages")).to_contain_text(f"Cancelled run {run.pk}")
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
