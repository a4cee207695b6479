"""Every mode from the labeling page, in a real browser (Debian chromium via Playwright) against a
live server: demonstrations for a prompts-only import, ranking K=2..9 by mouse (drag and drop, ties),
and revising the last judgment. Each page runs under the CSP with no violation."""
from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from labeling.models import Demonstration, Judgment, PreferencePair
from tests.e2e.pages import open_label, wait_saved, watch_csp
from tests.e2e.test_hostile_browser import HOSTILE, hostile_project
from tests.labeling.judging import export, import_rows, make_tasks

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def _config(page) -> dict:
    return page.evaluate("JSON.parse(document.getElementById('pairwise-config').textContent)")


def _order(page) -> list[int]:
    return [int(i) for i in page.locator("#ranking li").evaluate_all("items => items.map(li => li.dataset.id)")]


def test_demonstrate_project_from_a_prompts_only_import(page_for, live_server, project_factory, member):
    project = project_factory(mode="demonstrate", instructions="Write the **ideal** answer.")
    assert import_rows(project, {"id": "q1", "prompt": "How do tides work?"},
                       {"id": "q2", "messages": [{"role": "user", "content": "Name a *prime*."}]}).tasks == 2
    user = member(project, "annotator")
    page = page_for(user)
    violations = watch_csp(page)
    open_label(page, live_server, project)
    assert page.locator("#revise").is_hidden()  # demonstrations are not revised
    seen = [page.locator("#prompt").inner_text()]
    page.fill("#demonstration", "The Moon's pull raises the sea.")
    page.keyboard.press("Control+Enter")
    wait_saved(page, 1)
    seen.append(page.locator("#prompt").inner_text())
    page.fill("#demonstration", "7 is prime.")
    page.click("#submit")
    wait_saved(page, 2)
    page.wait_for_selector("#empty", state="visible")
    rows = list(Demonstration.objects.filter(project=project, author=user).order_by("id")
                .values_list("prompt__external_id", "text"))
    assert {r[0] for r in rows} == {"q1", "q2"}
    assert [t for _, t in rows] == ["The Moon's pull raises the sea.", "7 is prime."]
    assert "tides" in " ".join(seen) and "prime" in " ".join(seen)
    call_command("check_integrity", "--project", project.slug)
    assert violations == []


@pytest.mark.parametrize("k", [2, 5, 9])
def test_rank_k_by_mouse_drag_and_tie(page_for, live_server, project_factory, member, k):
    project = project_factory(mode="rank", responses_per_task=k, likert_enabled=False, flags_enabled=False)
    make_tasks(project, 2)
    page = page_for(member(project, "annotator"))
    violations = watch_csp(page)
    open_label(page, live_server, project)
    shown = _order(page)
    assert len(shown) == k and page.locator(".response").count() == k
    # Drag the last response onto the first: it takes first place.
    page.locator(f"#ranking li[data-id='{shown[-1]}']").drag_to(page.locator(f"#ranking li[data-id='{shown[0]}']"))
    assert _order(page) == [shown[-1], *shown[:-1]]
    # Tie the second with the first by its = button, then untie and tie again (the same toggle as T).
    tie = page.locator(f"#ranking li[data-id='{shown[0]}'] button.tie")
    tie.click()
    page.locator(f"#ranking li[data-id='{shown[0]}'] button.tie").click()
    page.locator(f"#ranking li[data-id='{shown[0]}'] button.tie").click()
    assert page.locator(f"#ranking li[data-id='{shown[0]}'] button.tie").get_attribute("aria-pressed") == "true"
    page.click("#submit")
    wait_saved(page, 1)
    judgment = Judgment.objects.get()
    assert judgment.ranking == [[shown[-1], shown[0]], *[[rid] for rid in shown[1:-1]]]
    assert PreferencePair.objects.count() == k * (k - 1) // 2 - 1
    # The keyboard still works on the next task: the last response to the top with its digit and arrows.
    second = _order(page)
    page.keyboard.press(str(k))
    for _ in range(k - 1):
        page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    wait_saved(page, 2)
    assert Judgment.objects.order_by("id").last().ranking == [[second[-1]], *[[rid] for rid in second[:-1]]]
    assert violations == []


def test_revise_last_judgment_from_the_page(page_for, live_server, project_factory, member):
    project = project_factory(mode="pairwise", likert_enabled=False, flags_enabled=False)
    make_tasks(project, 3)
    user = member(project, "annotator")
    page = page_for(user)
    violations = watch_csp(page)
    open_label(page, live_server, project)
    assert page.locator("#revise").is_hidden()  # nothing to revise yet
    first = _config(page)["current"]
    page.keyboard.press("a")
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    second = _config(page)["next"]["assignment"]
    old = Judgment.objects.get()
    a, b = old.shown_order
    assert old.ranking == [[a], [b]]
    # E reopens the first task with its verdict; B then Enter saves the revision and brings the current task back.
    page.keyboard.press("e")
    page.wait_for_selector("#task.revising")
    assert page.locator("[data-verdict='A']").get_attribute("aria-pressed") == "true"
    assert [int(i) for i in page.locator(".response").evaluate_all("cs => cs.map(c => c.id.slice(5))")] == [a, b]
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.wait_for_selector("#status:has-text('Revised.')")
    page.wait_for_selector("#task:not(.revising)")
    new = Judgment.objects.get(supersedes=old)
    assert new.ranking == [[b], [a]] and new.annotator == user and new.task_id == first["task"]
    assert list(PreferencePair.objects.values_list("judgment_id", "chosen_id", "rejected_id")) == [(new.pk, b, a)]
    rows = [json.loads(line) for line in export(project, "ranked").splitlines()]
    assert [row["id"] for row in rows] == [new.pk]
    call_command("check_integrity", "--project", project.slug)
    # The task set aside is on screen again and still takes a verdict.
    page.keyboard.press("=")
    page.keyboard.press("Enter")
    wait_saved(page, 2)
    assert Judgment.objects.get(assignment_id=second).ranking and Judgment.objects.count() == 3
    # After a reload the page knows the newest judgment; the button reopens it and Esc cancels.
    open_label(page, live_server, project)
    assert _config(page)["last"]["judgment"] == Judgment.objects.get(assignment_id=second).pk
    page.click("#revise")
    page.wait_for_selector("#task.revising")
    assert page.locator("[data-verdict='=']").get_attribute("aria-pressed") == "true"
    page.keyboard.press("Escape")
    page.wait_for_selector("#status:has-text('Revision cancelled.')")
    assert Judgment.objects.count() == 3
    call_command("check_integrity", "--project", project.slug)
    assert violations == []


def test_revise_shows_hostile_text_inert(page_for, live_server, project_factory, member):
    project, tasks, _, _ = hostile_project(project_factory, member)
    user = member(project, "annotator")
    page = page_for(user)
    violations = watch_csp(page)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    open_label(page, live_server, project)
    page.fill("#rationale", HOSTILE)
    page.locator("#rationale").press("Control+Enter")  # from step 1 (flags): shows the ranking, saves nothing
    page.wait_for_selector("#status:has-text('Check the ranking')")
    assert Judgment.objects.filter(annotator=user).count() == 0
    page.locator("#rationale").press("Control+Enter")  # the ranking as shown, now seen: saved
    wait_saved(page, 1)
    open_label(page, live_server, project)  # the revision comes from the server's payload
    page.keyboard.press("e")
    page.wait_for_selector("#task.revising")
    assert page.locator("#rationale").input_value() == HOSTILE.replace("\r", "")
    assert "&lt;script&gt;window.__pwned=1" in page.content()
    assert page.locator("a[href^='javascript'], .md img[src], .md script, .md svg, [onerror], [onload]").count() == 0
    page.keyboard.press("Enter")
    page.wait_for_selector("#status:has-text('Revised.')")
    assert Judgment.objects.filter(annotator=user, supersedes__isnull=False).count() == 1
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.__pwned") is None and dialogs == [] and violations == []
