"""The machine annotators' console page in a real browser (Debian chromium via Playwright), by keyboard
only: from the training page to the page, add a machine annotator with the prefilled judge prompt and a
chosen endpoint version, and see it listed; no CSP violation."""
from __future__ import annotations

import pytest

from labeling.models import Membership
from tests.e2e.pages import watch_csp
from training.models import MachineAnnotator
from training.services.endpoints import endpoint_version_register

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def test_an_admin_adds_a_machine_annotator_by_keyboard(page_for, live_server, project_factory, member, settings, tmp_path):
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"  # the servers below are loopback; none is asked
    settings.PAIRWISE_MODELS_DIR = tmp_path / "models"
    project = project_factory(mode="pairwise")
    admin = member(project, Membership.Role.ADMIN)
    first = endpoint_version_register(project=project, name="judge-a", base_url="http://127.0.0.1:9/v1", model="a")
    endpoint_version_register(project=project, name="judge-b", base_url="http://127.0.0.1:9/v1", model="b")

    page = page_for(admin)
    violations = watch_csp(page)
    page.goto(f"{live_server.url}/training/{project.slug}/")
    page.focus("#machine-annotators-link")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/training/{project.slug}/machine-annotators/")
    assert "judge prompt" in page.locator("#machine-form").inner_text().lower()
    assert "{response_b}" in page.locator("textarea[name=judge_prompt]").input_value()  # the mode's default

    page.focus("input[name=name]")
    page.keyboard.type("kbd-judge")
    page.keyboard.press("Tab")  # the version select: newest first, so one step down is judge-a
    assert page.evaluate("() => document.activeElement.name") == "version"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Tab")  # the judge prompt, kept as prefilled
    assert page.evaluate("() => document.activeElement.name") == "judge_prompt"
    page.keyboard.press("Tab")  # takes overlap seats: left off
    assert page.evaluate("() => document.activeElement.name") == "takes_overlap_seats"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.type") == "submit"
    page.keyboard.press("Enter")

    row = page.locator("tr[data-machine='kbd-judge']")
    row.wait_for()
    assert "judge-a" in row.inner_text() and "Run now" in row.inner_text()
    assert "Added the machine annotator kbd-judge" in page.locator(".messages").inner_text()
    machine = MachineAnnotator.objects.get(project=project)
    assert (machine.name, machine.version_id, machine.takes_overlap_seats) == ("kbd-judge", first.pk, False)
    assert "\r" not in machine.judge_prompt and "{response_b}" in machine.judge_prompt
    assert violations == []
