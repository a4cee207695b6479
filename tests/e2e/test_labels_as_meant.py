"""Labels are what the annotator did (issue 25): in a K-way project with Likert ratings, Submit on
step 1 shows the ranking the ratings give (ties where they tie) before anything is saved, never the
display order; 7 J 6 J … rates every response once; an unrated response is named and focused; a
ranking that contradicts the ratings is refused. Each stored judgment is checked against what the
page showed, through the assignment's shuffled display order. Debian chromium via Playwright."""
from __future__ import annotations

import re

import pytest

from labeling.models import Assignment, Judgment
from tests.e2e.pages import open_label, ranking_on_screen, shown_ids, wait_saved, watch_csp
from tests.labeling.judging import make_tasks

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def _click_rating(page, response_id: int, value: int):
    page.click(f"#resp-{response_id} .likert button[data-value='{value}']")


def _stored(page, count: int) -> Judgment:
    """The newest judgment, after checking that it records the order this page showed."""
    wait_saved(page, count)
    judgment = Judgment.objects.order_by("id").last()
    assert judgment.shown_order == Assignment.objects.get(pk=judgment.assignment_id).shown_order
    return judgment


def _agrees(ranking: list[list[int]], likert: dict) -> bool:
    """No response is ranked above one rated strictly higher."""
    flat = [(g, likert[str(rid)]) for g, group in enumerate(ranking) for rid in group]
    return all(ra >= rb for ga, ra in flat for gb, rb in flat if ga < gb)


def test_mouse_ratings_then_submit_on_step_1_shows_the_ranking_first(page_for, live_server, project_factory, member):
    project = project_factory(mode="rank", responses_per_task=4, overlap=2)
    make_tasks(project, 2)
    page = page_for(member(project, "annotator"))
    violations = watch_csp(page)
    open_label(page, live_server, project)
    shown = shown_ids(page)
    for rid, value in zip(shown, [2, 7, 3, 5]):
        _click_rating(page, rid, value)
    page.click("#submit")  # still on step 1: the ranking from the ratings is shown, nothing is saved
    page.wait_for_selector("#status:has-text('Check the ranking from your ratings')")
    assert page.locator("#phase").inner_text().startswith("Step 2")
    assert ranking_on_screen(page) == [[shown[1]], [shown[3]], [shown[2]], [shown[0]]]
    assert Judgment.objects.count() == 0
    page.click("#submit")
    judgment = _stored(page, 1)
    assert judgment.shown_order == shown
    assert judgment.likert == {str(shown[0]): 2, str(shown[1]): 7, str(shown[2]): 3, str(shown[3]): 5}
    assert judgment.ranking == [[shown[1]], [shown[3]], [shown[2]], [shown[0]]]
    assert _agrees(judgment.ranking, judgment.likert)
    # Whole numbers of tasks in the header (it read "project 0.5/2" with overlap 2).
    assert re.fullmatch(r"You: 1 done · project: 0 of 2 tasks complete", page.locator("#progress-text").inner_text())

    # Equal ratings are tied in the ranking shown, and stored so.
    page.wait_for_function("() => document.querySelectorAll('.response .likert button[aria-pressed=true]').length === 0")
    second = shown_ids(page)
    for rid, value in zip(second, [5, 5, 3, 6]):
        _click_rating(page, rid, value)
    page.click("#submit")
    page.wait_for_selector("#status:has-text('Check the ranking')")
    assert ranking_on_screen(page) == [[second[3]], [second[0], second[1]], [second[2]]]
    assert page.locator(f"#ranking li[data-id='{second[1]}'] .tie-mark").inner_text() == "= tied with above"
    page.click("#submit")
    judgment = _stored(page, 2)
    assert judgment.shown_order == second
    assert judgment.ranking == [[second[3]], [second[0], second[1]], [second[2]]]
    assert _agrees(judgment.ranking, judgment.likert)
    assert violations == []


def test_keys_7_j_6_j_rate_every_response_once(page_for, live_server, project_factory, member):
    project = project_factory(mode="rank", responses_per_task=4)
    make_tasks(project, 1)
    page = page_for(member(project, "annotator"))
    violations = watch_csp(page)
    open_label(page, live_server, project)
    shown = shown_ids(page)
    for key in ["7", "J", "6", "j", "3", "ArrowDown", "5"]:  # a digit keeps the highlight, J moves it
        page.keyboard.press(key)
    assert page.locator(".response.current").get_attribute("id") == f"resp-{shown[3]}"
    pressed = page.locator(".response").evaluate_all(
        "cs => cs.map(c => [...c.querySelectorAll('.likert button[aria-pressed=true]')].map(b => Number(b.dataset.value)))")
    assert pressed == [[7], [6], [3], [5]]
    page.keyboard.press("?")  # the help states the rule
    help_text = page.locator("#help").inner_text()
    assert "rate the highlighted response; the highlight stays" in help_text and "highlight the next response" in help_text
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")  # to step 2: the ranking from the ratings
    assert ranking_on_screen(page) == [[shown[0]], [shown[1]], [shown[3]], [shown[2]]]
    page.keyboard.press("Enter")
    judgment = _stored(page, 1)
    assert judgment.shown_order == shown
    assert judgment.likert == {str(shown[0]): 7, str(shown[1]): 6, str(shown[2]): 3, str(shown[3]): 5}
    assert judgment.ranking == [[shown[0]], [shown[1]], [shown[3]], [shown[2]]]
    assert violations == []


def test_mixed_mouse_and_keys_unrated_and_contradicting_are_refused(page_for, live_server, project_factory, member):
    project = project_factory(mode="rank", responses_per_task=4)
    make_tasks(project, 1)
    page = page_for(member(project, "annotator"))
    violations = watch_csp(page)
    open_label(page, live_server, project)
    shown = shown_ids(page)
    _click_rating(page, shown[0], 4)  # the mouse highlights response 1
    for key in ["J", "6", "J", "J", "5"]:  # response 3 is passed over
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    page.wait_for_selector("#status:has-text('Rate response 3 first')")
    assert page.locator(".response.current").get_attribute("id") == f"resp-{shown[2]}"
    assert page.evaluate("() => document.activeElement.id") == f"resp-{shown[2]}"
    page.click("#submit")  # the button says the same
    page.wait_for_selector("#status:has-text('Rate response 3 first')")
    assert Judgment.objects.count() == 0
    page.keyboard.press("2")  # rates the highlighted response 3
    page.click("#submit")
    page.wait_for_selector("#status:has-text('Check the ranking')")
    assert ranking_on_screen(page) == [[shown[1]], [shown[3]], [shown[0]], [shown[2]]]
    page.keyboard.press("3")  # response 3 (rated 2) to the top contradicts the ratings: refused
    for _ in range(3):
        page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    page.wait_for_selector("#status:has-text('Response 3 (rated 2) is ranked above response 2 (rated 6)')")
    assert Judgment.objects.count() == 0
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    judgment = _stored(page, 1)
    assert judgment.shown_order == shown
    assert judgment.likert == {str(shown[0]): 4, str(shown[1]): 6, str(shown[2]): 2, str(shown[3]): 5}
    assert judgment.ranking == [[shown[1]], [shown[3]], [shown[0]], [shown[2]]]
    assert violations == []
