"""The labeling page in a real browser (Debian chromium via Playwright) against a live server."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, Judgment, PreferencePair, Prompt, Response
from labeling.services.assignment import task_assign_next
from tests.e2e.pages import open_label, wait_saved
from tests.labeling.judging import make_tasks

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def test_login_and_rank_k4_with_keyboard_only(browser, live_server, project_factory, member):
    project = project_factory(mode="rank", responses_per_task=4, instructions="Rank **helpfulness**.")
    make_tasks(project, 2)
    user = member(project, "annotator")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{live_server.url}/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "pw-" + user.username)
    page.keyboard.press("Enter")
    page.click(f"text={project.name}")
    page.wait_for_selector("body[data-ready]")
    for key in "6j3j6j2":  # step 1: a Likert per response; J moves on (a digit keeps the highlight)
        page.keyboard.press(key)
    page.keyboard.press("Enter")  # to the ranking, ordered by the ratings: 1 and 3 tied, then 2, then 4
    page.keyboard.press("3")  # pick response 3, untie it from 1 and move it to the top
    page.keyboard.press("t")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("2")  # pick 2, tie it with the one above... then untie: no tie in the end
    page.keyboard.press("t")
    page.keyboard.press("t")
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    judgment = Judgment.objects.get()
    order = Assignment.objects.get(pk=judgment.assignment_id).shown_order
    assert judgment.ranking == [[order[2]], [order[0]], [order[1]], [order[3]]]
    assert judgment.likert == {str(order[0]): 6, str(order[1]): 3, str(order[2]): 6, str(order[3]): 2}
    assert judgment.shown_order == order and judgment.time_spent_ms > 0
    assert PreferencePair.objects.filter(judgment=judgment).count() == 6
    context.close()


def test_rank_tie_with_keyboard(page_for, live_server, project_factory, member):
    project = project_factory(mode="rank", responses_per_task=3, likert_enabled=False, flags_enabled=False)
    make_tasks(project, 1)
    page = page_for(member(project, "annotator"))
    open_label(page, live_server, project)
    page.keyboard.press("2")
    page.keyboard.press("t")  # 2 tied with 1
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    judgment = Judgment.objects.get()
    o = judgment.shown_order
    assert judgment.ranking == [[o[0], o[1]], [o[2]]]
    assert PreferencePair.objects.count() == 2


def test_pairwise_tie_then_both_bad(page_for, live_server, project_factory, member):
    project = project_factory(mode="pairwise", likert_enabled=False, flags_enabled=False)
    make_tasks(project, 2)
    page = page_for(member(project, "annotator"))
    open_label(page, live_server, project)
    first = page.evaluate("JSON.parse(document.getElementById('pairwise-config').textContent).current.assignment")
    page.keyboard.press("=")
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    page.keyboard.press("x")
    page.keyboard.press("Enter")
    wait_saved(page, 2)
    tie, bad = Judgment.objects.order_by("id")
    assert tie.assignment_id == first
    assert (len(tie.ranking), tie.both_bad, len(bad.ranking), bad.both_bad) == (1, False, 1, True)
    assert PreferencePair.objects.count() == 0


def test_pairwise_a_better_gives_one_pair(page_for, live_server, project_factory, member):
    project = project_factory(mode="pairwise")
    make_tasks(project, 1)
    page = page_for(member(project, "annotator"), width=420, height=800)  # narrow screen
    open_label(page, live_server, project)
    page.keyboard.press("5")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    judgment = Judgment.objects.get()
    a, b = judgment.shown_order
    assert judgment.ranking == [[b], [a]] and judgment.likert == {str(a): 5}
    assert list(PreferencePair.objects.values_list("chosen_id", "rejected_id")) == [(b, a)]


def test_hostile_responses_stay_inert(page_for, live_server, project_factory, member):
    project = project_factory(mode="rank", responses_per_task=4, likert_enabled=False)
    prompt = Prompt.objects.create(project=project, external_id="evil", text="<script>window.__pwned=1</script> hi")
    texts = [
        "<script>window.__pwned = 1; alert('script')</script>",
        "<img src=/hostile-img onerror=\"alert('img')\"> ![x](/hostile-md-img)",
        "[click me](javascript:alert('link')) <a href=\"javascript:alert(1)\">raw</a>",
        "big " * 250_000,
    ]
    task = ComparisonTask.objects.create(project=project, prompt=prompt)
    for pos, text in enumerate(texts):
        task.slots.create(response=Response.objects.create(prompt=prompt, text=text, source="m"), position=pos)
    page = page_for(member(project, "annotator"))
    dialogs, requests = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    open_label(page, live_server, project)
    page.click("text=click me")
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.evaluate("window.__pwned") is None
    assert page.locator("a[href^='javascript']").count() == 0
    assert page.locator(".response script, .response img[src], .prompt script").count() == 0
    assert not [u for u in requests if "hostile" in u], requests
    # Still usable: past the flags step, rank with the keyboard and submit.
    page.keyboard.press("Enter")
    page.keyboard.press("3")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    assert Judgment.objects.count() == 1 and PreferencePair.objects.count() == 6


def test_skip_returns_task_to_pool(page_for, live_server, project_factory, member):
    project = project_factory(mode="pairwise")
    make_tasks(project, 3)
    user, other = member(project, "annotator"), member(project, "annotator")
    page = page_for(user)
    open_label(page, live_server, project)
    skipped = page.evaluate("JSON.parse(document.getElementById('pairwise-config').textContent).current")
    page.keyboard.press("s")
    page.wait_for_selector("#status:has-text('Skipped')")
    assert Assignment.objects.get(pk=skipped["assignment"]).state == "skipped"
    assert ComparisonTask.objects.get(pk=skipped["task"]).active_assignments == 0
    page.wait_for_function("() => document.querySelectorAll('.response').length === 2")
    assert task_assign_next(annotator=other, project=project).assignment.task_id == skipped["task"]


def test_lease_expiry_returns_task_and_page_says_so(page_for, live_server, project_factory, member):
    project = project_factory(mode="pairwise")
    make_tasks(project, 3)
    user, other = member(project, "annotator"), member(project, "annotator")
    page = page_for(user)
    open_label(page, live_server, project)
    current = page.evaluate("JSON.parse(document.getElementById('pairwise-config').textContent).current")
    Assignment.objects.filter(pk=current["assignment"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    page.keyboard.press("a")
    page.keyboard.press("Enter")
    page.wait_for_selector("#status:has-text('expired')")
    assert Judgment.objects.count() == 0
    assert task_assign_next(annotator=other, project=project).assignment.task_id == current["task"]
    page.wait_for_function("() => document.querySelectorAll('.response').length === 2")


def test_double_click_submit_stores_one_judgment(page_for, live_server, project_factory, member):
    project = project_factory(mode="pairwise", likert_enabled=False)
    make_tasks(project, 3)
    page = page_for(member(project, "annotator"))
    open_label(page, live_server, project)
    page.keyboard.press("a")
    page.dblclick("#submit")
    wait_saved(page, 1)
    page.wait_for_timeout(500)
    assert Judgment.objects.count() == 1
    assert ComparisonTask.objects.filter(judgments_count=1).count() == 1


def test_submit_retries_with_the_same_key_until_stored_once(page_for, live_server, project_factory, member):
    """The first submit reaches the server but its answer is lost (connection reset), the second
    meets a 503 from a restarting database; the page retries by itself with the same key."""
    project = project_factory(mode="pairwise", likert_enabled=False, flags_enabled=False)
    make_tasks(project, 3)
    page = page_for(member(project, "annotator"))
    sent = []

    def flaky(route, request):
        sent.append(request.post_data_json)
        if len(sent) == 1:
            route.fetch()  # stored on the server...
            route.abort("connectionreset")  # ...but the page never hears back
        elif len(sent) == 2:
            route.fulfill(status=503, headers={"Retry-After": "1"}, content_type="application/json",
                          body='{"detail": "The database is unavailable", "code": "db_unavailable"}')
        else:
            route.continue_()

    page.route("**/api/assignments/*/submit/", flaky)
    open_label(page, live_server, project)
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    assert len(sent) == 3 and sent[0] == sent[1] == sent[2]
    judgment = Judgment.objects.get()
    assert judgment.idempotency_key == sent[0]["idempotency_key"]
    assert ComparisonTask.objects.filter(judgments_count=1).count() == 1
    assert page.locator("#status").text_content() == "Saved."


def test_page_weight_and_time_to_interactive(page_for, live_server, project_factory, member):
    project = project_factory(mode="rank", responses_per_task=4, instructions="Rank by *helpfulness*.")
    make_tasks(project, 3)
    page = page_for(member(project, "annotator"))
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    transferred = []
    cdp.on("Network.loadingFinished", lambda e: transferred.append(e["encodedDataLength"]))
    open_label(page, live_server, project)
    page.wait_for_load_state("load")
    ready_ms = int(page.evaluate("document.body.dataset.ready"))
    resources = page.evaluate("performance.getEntriesByType('resource').map(r => r.name)")
    print(f"\nlabeling page: {sum(transferred)} bytes transferred in {len(transferred)} responses "
          f"({len(resources)} subresources); interactive at {ready_ms} ms after navigation start")
    assert sum(transferred) > 0 and ready_ms > 0
    assert all(live_server.url in url for url in resources)  # nothing from a CDN
