"""The first hour of a new admin and a new annotator, walked in a real browser (Debian chromium via
Playwright) against a live server, a real Celery worker and Postgres (issue 25):

1. a staff admin creates a pairwise project in the console and imports the real shared hh-rlhf
   helpful-base test file (all 2,343 pairs) through the data tab, choosing "open for annotators"
   after reading what the preview says each choice does; then a slice of the other shared hh-rlhf
   file, kept as judgments (training data), more of them than the schedule's threshold;
2. adds an annotator, who logs in and labels with keys and with the mouse, there and in a second,
   K-way (rank, K=4) project;
3. looks at the quality tab, exports (every source, then the human judgments), trains a reward
   model with "Train now", and opens its version page and model card by their links.

It checks what a user would: the stored rankings are the ones done on screen (through each
judgment's recorded display order), the import left tasks open and no import started training
(not even the schedule's own check), the export holds exactly the annotator's choices, the weak
reward model stays a candidate, the card is as wide as the viewport, and no page broke the
Content-Security-Policy.
"""
from __future__ import annotations

import gzip
import json
import re

import pytest
from playwright.sync_api import expect

from labeling.models import Assignment, ComparisonTask, Judgment, Membership, PreferencePair, Project, Response
from tests.e2e.pages import ranking_on_screen, shown_ids, wait_saved, watch_csp
from tests.e2e.test_console import console_ready, download_lines, open_tab, write_jsonl
from tests.paths import SHARED_DATASETS
from tests.training.conftest import wait_for
from training.models import ModelVersion, TrainingRun
from training.services.rounds import reward_retrain_check
from training.services.versions import base_models_install

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

HH_FILE = SHARED_DATASETS / "hh-rlhf" / "helpful-base-test.jsonl.gz"
HH_SAMPLED = SHARED_DATASETS / "hh-rlhf" / "helpful-rejection-sampled-test.jsonl.gz"
KEPT = 120  # preference records kept as training data: over the default threshold of 100 new judgments


def hh_records(n: int | None = None, path=HH_FILE) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f if n is None else (line for _, line in zip(range(n), f))
        return [json.loads(line) for line in lines]


# --- what the page shows -----------------------------------------------------------------------


def stored(project, annotator, count: int, shown: list[int]) -> Judgment:
    """The annotator's newest judgment in the project, after checking it records the order the page showed."""
    judgment = Judgment.objects.filter(project=project, annotator=annotator).order_by("id").last()
    assert Judgment.objects.filter(project=project, annotator=annotator).count() == count
    assert judgment.shown_order == shown == Assignment.objects.get(pk=judgment.assignment_id).shown_order
    return judgment


def next_task(page, previous: list[int]) -> list[int]:
    """The next task's display order, once the page has replaced the one just saved."""
    page.wait_for_function(
        "prev => { const ids = [...document.querySelectorAll('.response')].map(c => Number(c.id.slice(5)));"
        " return ids.length && ids.join() !== prev.join(); }", arg=previous)
    return shown_ids(page)


def document_width(page) -> tuple[int, int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


# --- the walk, in steps -----------------------------------------------------------------------

def create_project(page, live_server, *, slug: str, name: str, mode: str, k: int) -> Project:
    page.goto(f"{live_server.url}/")
    page.click("#new-project")
    console_ready(page)
    page.fill("#id_slug", slug)
    page.fill("#id_name", name)
    page.select_option("#id_mode", mode)
    page.fill("#id_responses_per_task", str(k))
    page.fill("#id_overlap", "1")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(f"{live_server.url}/projects/{slug}/data/")
    console_ready(page)
    return Project.objects.get(slug=slug)


def preview_then_import(page, path: str, *, preferences: str | None = None) -> None:
    page.set_input_files("#upload-file", path)
    if preferences:
        page.check(f"input[name=upload-preferences][value={preferences}]")
    page.click("#upload-preview")
    page.wait_for_selector("#upload[data-state=previewed]", timeout=120_000)


def login(browser, live_server, user):
    """The annotator's own browser: the login form, as a person meets it."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    violations = watch_csp(page)
    page.goto(f"{live_server.url}/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "pw-" + user.username)
    page.keyboard.press("Enter")
    page.wait_for_load_state("load")
    return context, page, violations


def open_project(page, project) -> None:
    """From the annotator's project list, by the project's name."""
    page.get_by_role("link", name=project.name, exact=True).first.click()
    page.wait_for_selector("body[data-ready]")


def label_pairwise(page, project, annotator) -> list[tuple[int, int]]:
    """Four tasks: keys (A, then a rating and B), then the mouse (B, then A). Returns each judgment's
    (chosen, rejected) response ids as done on screen."""
    done: list[tuple[int, int]] = []
    shown = shown_ids(page)
    # The file's original choice stays on the server: the page gets the task, not its reference.
    current = json.loads(page.locator("#pairwise-config").text_content())["current"]
    assert current["responses"] and not {"ranking", "gold_ranking", "reference", "is_gold"} & set(current), current
    steps = [("keys", "A"), ("keys", "B"), ("mouse", "B"), ("mouse", "A")]
    for count, (how, verdict) in enumerate(steps, start=1):
        if how == "keys":
            if verdict == "B":
                page.keyboard.press("6")  # a rating of A on the way: ratings are optional in pairwise
            page.keyboard.press(verdict.lower())
            page.keyboard.press("Enter")
        else:
            page.click(f"#ranking-panel button[data-verdict={verdict}]")
            expect(page.locator(f"#ranking-panel button[data-verdict={verdict}]")).to_have_attribute("aria-pressed", "true")
            page.click("#submit")
        wait_saved(page, count)
        a, b = shown
        chosen, rejected = (a, b) if verdict == "A" else (b, a)
        judgment = stored(project, annotator, count, shown)
        assert judgment.ranking == [[chosen], [rejected]], (how, verdict, judgment.ranking, shown)
        assert not judgment.both_bad
        if how == "keys" and verdict == "B":
            assert judgment.likert == {str(a): 6}
        done.append((chosen, rejected))
        if count == len(steps):  # whole tasks in the header (it read "project 4.5/2343")
            total = ComparisonTask.objects.filter(project=project, is_gold=False)
            expect(page.locator("#progress-text")).to_have_text(
                f"You: {count} done · project: {total.filter(status='complete').count():,} of {total.count():,} tasks complete")
        else:
            shown = next_task(page, shown)
    return done


def label_kway(page, project, annotator) -> None:
    """Two K=4 tasks: keys (7 J 6 J 3 J 5, Enter shows the ranking, Enter saves), then the mouse
    (ratings 2 7 3 5 clicked, Submit shows the ranking the ratings give, Submit saves)."""
    shown = shown_ids(page)
    assert len(shown) == 4
    for key in ["7", "J", "6", "J", "3", "J", "5", "Enter"]:
        page.keyboard.press(key)
    page.wait_for_selector("#phase:has-text('Step 2')")
    assert ranking_on_screen(page) == [[shown[0]], [shown[1]], [shown[3]], [shown[2]]]
    assert not Judgment.objects.filter(project=project).exists()  # shown for confirmation, not saved
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    judgment = stored(project, annotator, 1, shown)
    assert judgment.likert == {str(shown[0]): 7, str(shown[1]): 6, str(shown[2]): 3, str(shown[3]): 5}
    assert judgment.ranking == [[shown[0]], [shown[1]], [shown[3]], [shown[2]]]

    shown = next_task(page, shown)
    for rid, value in zip(shown, [2, 7, 3, 5]):
        page.click(f"#resp-{rid} .likert button[data-value='{value}']")
    page.click("#submit")  # still step 1: the ranking from the ratings is shown, never the display order
    page.wait_for_selector("#status:has-text('Check the ranking from your ratings')")
    assert ranking_on_screen(page) == [[shown[1]], [shown[3]], [shown[2]], [shown[0]]]
    assert Judgment.objects.filter(project=project).count() == 1
    page.click("#submit")
    wait_saved(page, 2)
    judgment = stored(project, annotator, 2, shown)
    assert judgment.likert == {str(shown[0]): 2, str(shown[1]): 7, str(shown[2]): 3, str(shown[3]): 5}
    assert judgment.ranking == [[shown[1]], [shown[3]], [shown[2]], [shown[0]]]


def kway_records(n: int) -> list[dict]:
    """Prompts with four responses each: the shared file's chosen and rejected answers and two made up."""
    return [{"id": f"k4/{i}", "prompt": r["prompt"],
             "responses": [r["chosen"], r["rejected"], " I am not sure I can help with that.", " Could you tell me more?"]}
            for i, r in enumerate(hh_records(n))]


def no_training_started(project) -> None:
    assert not TrainingRun.objects.filter(project=project).exists()
    assert reward_retrain_check(project_id=project.pk) is None  # the beat schedule's own check, run once
    assert not TrainingRun.objects.filter(project=project).exists()


# --- the test ---------------------------------------------------------------------------------

def test_the_first_hour_of_a_new_admin_and_annotator(browser, page_for, live_server, make_user, settings, tmp_path,
                                                     celery_worker_factory, models_dir, tiny_policy, tiny_reward_base):
    settings.PAIRWISE_EXPORTS_DIR = tmp_path / "exports"
    # The shared bases, as `make demo` installs them (install_base_models), but tiny, so Train now is quick.
    base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)
    worker = celery_worker_factory(PAIRWISE_EXPORTS_DIR=str(settings.PAIRWISE_EXPORTS_DIR), PAIRWISE_DEVICE="cpu")
    staff = make_user("ada", is_staff=True)
    annotator = make_user("bo")
    admin_page = page_for(staff)
    admin_violations = watch_csp(admin_page)

    # 1. A pairwise project, the whole shared file, opened for annotators.
    project = create_project(admin_page, live_server, slug="helpful", name="Helpful answers", mode="pairwise", k=2)
    records = hh_records()
    preview_then_import(admin_page, str(HH_FILE))
    effect = admin_page.locator("#upload-result .upload-effect")
    # Undecided, the preview says what keeping them as judgments would do, and Import waits for a choice.
    expect(effect).to_contain_text(f"{len(records)} preference records are kept as judgments")
    expect(effect).to_contain_text("so annotators get none of these tasks. They do not count toward the training threshold")
    expect(effect).to_contain_text("the project has 0 tasks open for annotators")
    expect(admin_page.locator("#upload-status")).to_contain_text("choose what they become")
    assert admin_page.locator("#upload-commit").is_disabled()
    admin_page.check("input[name=upload-preferences][value=open]")
    expect(admin_page.locator("#upload-status")).to_contain_text("Preview again")
    admin_page.click("#upload-preview")
    expect(admin_page.locator("#upload-status")).to_have_text("Nothing written yet: check the preview, then Import.",
                                                               timeout=120_000)
    expect(effect).to_contain_text(f"{len(records)} preference records become tasks open for annotators")
    expect(effect).to_contain_text(f"After this import the project has {len(records)} tasks open for annotators "
                                   f"({len(records)} of them from this file).")
    assert not ComparisonTask.objects.filter(project=project).exists()  # a preview writes nothing
    admin_page.click("#upload-commit")
    admin_page.wait_for_selector("#upload[data-state=imported]", timeout=120_000)
    expect(admin_page.locator("table.imports tbody")).to_contain_text(f"{len(records)} opened for annotators")
    tasks = ComparisonTask.objects.filter(project=project)
    assert tasks.filter(status="open", is_gold=False, gold_ranking__isnull=False).count() == len(records)
    assert not Judgment.objects.filter(project=project).exists()
    no_training_started(project)

    # The other shared file kept as training data: its judgments fill their tasks' seats and, unless the
    # import asks, do not count toward the schedule's threshold, so even over it no round starts.
    # A slice of it (the first KEPT records, as they are), to keep the training below quick.
    kept = tmp_path / "helpful-rejection-sampled-slice.jsonl.gz"
    with gzip.open(kept, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in hh_records(KEPT, HH_SAMPLED))
    preview_then_import(admin_page, str(kept), preferences="judgments")
    expect(effect).to_contain_text(f"{KEPT} preference records are kept as judgments: each fills its task's seat, so "
                                   f"annotators get none of these tasks. They do not count toward the training threshold "
                                   f"({project.retrain_min_judgments} new judgments start a scheduled round). After this "
                                   f"import the project has {len(records)} tasks open for annotators.")
    assert KEPT > project.retrain_min_judgments
    admin_page.click("#upload-commit")
    admin_page.wait_for_selector("#upload[data-state=imported]", timeout=120_000)
    assert Judgment.objects.filter(project=project, counts_for_retrain=False).count() == KEPT
    assert tasks.filter(status="open").count() == len(records)
    no_training_started(project)

    # 2. The annotator is added by name, logs in, and labels: keys and mouse.
    open_tab(admin_page, "Annotators")
    admin_page.fill("#member-form input[name=username]", annotator.username)
    admin_page.select_option("#member-form select[name=role]", "annotator")
    admin_page.locator("#member-form").get_by_role("button").click()
    expect(admin_page.locator(f"table.members tr[data-username={annotator.username}] td.role")).to_have_text("annotator")
    assert Membership.objects.get(project=project, user=annotator).role == "annotator"

    context, worker_page, annotator_violations = login(browser, live_server, annotator)
    try:
        open_project(worker_page, project)
        expect(worker_page.locator("#empty")).to_be_hidden()  # not "No tasks left"
        decided = label_pairwise(worker_page, project, annotator)
        human = Judgment.objects.filter(project=project, source="human")
        assert human.count() == 4
        pairs = PreferencePair.objects.filter(project=project, judgment__source="human")
        assert sorted(pairs.values_list("chosen_id", "rejected_id")) == sorted(decided)
        no_training_started(project)  # four human judgments are far under the threshold

        # The K-way project, created and filled the same way, labeled the same two ways.
        kway = create_project(admin_page, live_server, slug="helpful-k4", name="Helpful, four answers", mode="rank", k=4)
        preview_then_import(admin_page, write_jsonl(tmp_path / "k4.jsonl", kway_records(6)))
        expect(admin_page.locator("#upload-result .upload-counts")).to_contain_text("Would create 6 prompts, 24 responses, 6 tasks")
        admin_page.click("#upload-commit")
        admin_page.wait_for_selector("#upload[data-state=imported]")
        open_tab(admin_page, "Annotators")
        admin_page.fill("#member-form input[name=username]", annotator.username)
        admin_page.locator("#member-form").get_by_role("button").click()
        expect(admin_page.locator(f"table.members tr[data-username={annotator.username}] td.role")).to_have_text("annotator")
        worker_page.goto(f"{live_server.url}/")
        open_project(worker_page, kway)
        label_kway(worker_page, kway, annotator)
        no_training_started(kway)
    finally:
        context.close()

    # The quality tab compares the annotator's verdicts with the file's hidden original choices.
    admin_page.goto(f"{live_server.url}/projects/{project.slug}/")
    console_ready(admin_page)
    open_tab(admin_page, "Quality")
    hits = sum(ComparisonTask.objects.get(pk=j.task_id).gold_ranking[0] == j.ranking[0] for j in human)
    expect(admin_page.locator("#reference-agreement")).to_contain_text(f"{hits / 4:.3f} of 4 decided pairs")

    # 3a. Export: every source, then the human judgments only: exactly the annotator's four choices
    # (the hidden references are never exported).
    open_tab(admin_page, "Export")
    admin_page.select_option("#export-form select[name=format]", "trl")
    admin_page.locator("#export-form").get_by_role("button", name="Preview").click()
    admin_page.wait_for_selector("#export-preview")
    expect(admin_page.locator("#export-count")).to_have_text(str(KEPT + 4))
    admin_page.fill("#export-form input[name=judgment_source]", "human")
    admin_page.locator("#export-form").get_by_role("button", name="Preview").click()
    expect(admin_page.locator("#export-count")).to_have_text("4")
    console_ready(admin_page)
    lines, _ = download_lines(admin_page, "#export-download")
    texts = dict(Response.objects.filter(prompt__project=project).values_list("pk", "text"))
    exported = sorted((row["chosen"], row["rejected"]) for row in map(json.loads, lines))
    assert exported == sorted((texts[c], texts[r]) for c, r in decided)

    # 3b. Train now: a reward model on the project's judgments, on the worker.
    open_tab(admin_page, "Training")
    admin_page.get_by_role("button", name="Train now").click()
    expect(admin_page.locator(".messages")).to_contain_text("Queued reward run")
    run = TrainingRun.objects.get(project=project)
    assert run.kind == "reward" and run.params["trigger"] == "dashboard"
    done = wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, status__in=["succeeded", "failed"]).first(),
                    timeout=150, interval=0.5, worker=worker, what="the reward run")
    assert done.status == "succeeded", done.error[-2000:]
    version = ModelVersion.objects.get(pk=done.result_version_id)
    assert done.params["judgments"] == KEPT + 4  # the kept judgments are training data; the references are not
    # Too few held-out groups to measure it: the version stays a candidate, and the page says why.
    assert done.params["held_out_groups"] < project.reward_promote_min_heldout_groups
    assert not version.promoted
    # The training page follows the run by itself (runs.js reloads it when the run ends).
    expect(admin_page.locator("#reward-promoted")).to_contain_text("No reward model promoted yet", timeout=30_000)
    expect(admin_page.locator("#reward-promoted")).to_contain_text(version.metrics["promotion"]["reason"])

    # 3c. The version page, then its card, each reached by its link.
    admin_page.locator("table.versions").get_by_role("link", name=str(version.pk), exact=True).click()
    admin_page.wait_for_url(re.compile(rf".*/training/{project.slug}/versions/{version.pk}/$"))
    expect(admin_page.locator("#version-promotion")).to_contain_text("A candidate, not promoted")
    expect(admin_page.locator("table.metrics").first).to_be_visible()  # a table, the raw JSON behind its link
    expect(admin_page.locator("#metrics-json pre")).to_be_hidden()
    scroll, viewport = document_width(admin_page)
    assert scroll <= viewport, (scroll, viewport)
    admin_page.click("#version-card-link")
    admin_page.wait_for_url(re.compile(rf".*/training/{project.slug}/versions/{version.pk}/card/$"))
    expect(admin_page.locator("#model-card > h1")).to_contain_text(version.name)
    front = admin_page.locator("#model-card pre.front-matter").inner_text()
    assert "base_model:" in front and not re.search(r"^base_model: *['\"]?/", front, re.M), front  # a name, not a path
    scroll, viewport = document_width(admin_page)
    assert scroll <= viewport, (scroll, viewport)

    # Back to the version, and on to the run that made it: how long it took, at what speed.
    admin_page.get_by_role("link", name=f"← Version {version.pk}").click()
    admin_page.get_by_role("link", name=f"run {run.pk}", exact=True).click()
    admin_page.wait_for_url(re.compile(rf".*/training/{project.slug}/runs/{run.pk}/$"))
    expect(admin_page.locator("#run-timing")).to_have_text(re.compile(r"^\d+ (min \d\d )?s in all · [\d.e+-]+ steps/s$"))

    admin_page.wait_for_timeout(300)
    assert admin_violations == [] and annotator_violations == [], (admin_violations, annotator_violations)
