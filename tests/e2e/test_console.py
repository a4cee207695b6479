"""The project console as a new staff user meets it, in a real browser (Debian chromium via Playwright)
against a live server, with no visit to /admin/: create a ranking project, upload data (preview, then
import; a broken file shows its line numbers), add an annotator who labels three tasks (a tie by mouse),
watch the numbers move, then export (preview, download, background job on a real Celery worker, frozen
snapshot). A second test shows hostile text inert on every console page. Every page runs under the
CSP with no violation."""
from __future__ import annotations

import hashlib
import io
import json
import re
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from labeling.models import ComparisonTask, DatasetSnapshot, ImportBatch, Judgment, Membership, PreferencePair, Project, Prompt
from labeling.selectors.exports import ExportFilters
from labeling.services.assignment import Verdict, judgment_submit, task_assign_next
from labeling.services.exports import dataset_snapshot_create
from labeling.services.imports import project_data_import
from labeling.services.projects import membership_set, project_create
from tests.e2e.pages import open_label, wait_saved, watch_csp
from training.models import ModelVersion

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=/pwned-img onerror="window.__pwned=1">'
SVG = '"><svg onload=window.__pwned=1>'
RLO = "\u202e"
HOSTILE = f"{SCRIPT} {IMG} {SVG} {RLO}live"
# Elements the hostile text would have made had it been parsed as HTML (the labeling page's
# application/json config block is the only script without src any page has on purpose).
INJECTED = "script:not([src]):not([type='application/json']), [onerror], [onload], img[src*=pwned], svg[onload]"


# --- helpers ---------------------------------------------------------------------------------

def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def console_ready(page) -> None:
    """console.js ran (it marks the body last), so its handlers are attached before we click."""
    page.wait_for_selector("body[data-console-ready]", state="attached")


def open_tab(page, name: str) -> None:
    """Move between console pages the way a user does: by the shared tab bar."""
    link = page.locator("nav.tabs").get_by_role("link", name=name, exact=True)
    href = link.evaluate("a => a.href")
    link.click()
    page.wait_for_url(href)  # the new page, not the one we left (which is console-ready too)
    console_ready(page)


def int_text(locator) -> int:
    return int(locator.inner_text().strip())


def download_lines(page, selector: str) -> tuple[list[str], bytes]:
    # First ask for the link's URL directly, so a refusal fails with the server's words rather than
    # as a download that never starts (the browser shows the error page instead).
    answer = page.request.get(page.locator(selector).evaluate("a => a.href"))
    assert answer.ok, (selector, answer.status, answer.text()[:500])
    with page.expect_download() as info:
        page.click(selector)
    body = open(info.value.path(), "rb").read()
    return body.decode().splitlines(), body


# --- 1. the new user's whole journey ------------------------------------------------------------

PROMPTS = [
    {"id": f"q{i}", "prompt": f"Question {i}: how do I reset my password?",
     "responses": [f"Open settings, choose Security ({i}).", f"Ask an admin ({i}).", f"I cannot help ({i})."]}
    for i in range(4)
]


def test_new_staff_user_runs_a_project_from_the_console(page_for, live_server, make_user, settings, tmp_path,
                                                        celery_worker_factory):
    # The export job runs on a real worker (a subprocess): it must write where this process reads.
    exports_dir = tmp_path / "exports"
    settings.PAIRWISE_EXPORTS_DIR = exports_dir
    worker = celery_worker_factory(PAIRWISE_EXPORTS_DIR=str(exports_dir))
    staff = make_user("carol", is_staff=True)  # staff, not superuser: enough to create projects
    annotator = make_user("dana")  # exists already, in no project yet
    page = page_for(staff)
    violations = watch_csp(page)

    # 1. Create the project from the project list, with a live markdown preview of the instructions.
    page.goto(f"{live_server.url}/")
    page.click("#new-project")
    console_ready(page)
    page.fill("#id_slug", "support-answers")
    page.fill("#id_name", "Support answers")
    page.select_option("#id_mode", "rank")
    page.fill("#id_responses_per_task", "3")
    page.fill("#id_overlap", "1")
    page.uncheck("#id_likert_enabled")
    page.uncheck("#id_flags_enabled")
    for name in ("Likert enabled", "Flags enabled", "Pause scheduled training rounds"):  # each box on the line of its label
        box, label = page.get_by_label(name).bounding_box(), page.locator("label", has_text=name).bounding_box()
        assert label["y"] <= box["y"] + box["height"] / 2 <= label["y"] + label["height"], name
    page.fill("#id_instructions", "# Rank by helpfulness\n\nPrefer **correct**, short answers.")
    preview = page.locator(".md-preview[data-preview-for=id_instructions]")
    expect(preview.locator("h1")).to_have_text("Rank by helpfulness")
    expect(preview.locator("strong")).to_have_text("correct")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(f"{live_server.url}/projects/support-answers/data/")
    console_ready(page)
    project = Project.objects.get(slug="support-answers")
    assert (project.mode, project.responses_per_task, project.overlap, project.likert_enabled) == ("rank", 3, 1, False)
    assert project.instructions.startswith("# Rank by helpfulness")
    assert Membership.objects.get(project=project, user=staff).role == "admin"
    expect(page.locator(".messages")).to_contain_text("Project created")

    # 2a. A broken file: the errors name their lines, and nothing is written.
    bad = write_jsonl(tmp_path / "broken.jsonl", PROMPTS[:1])
    with open(bad, "a") as f:
        f.write('{"id": "q9", "prompt": "cut short", "responses": [\n')
    page.set_input_files("#upload-file", bad)
    page.click("#upload-preview")
    page.wait_for_selector("#upload[data-state=error]")
    expect(page.locator("#upload-result")).to_contain_text("line 2")
    expect(page.locator("#upload-status")).to_have_text("Nothing was written.")
    assert page.locator("#upload-commit").is_disabled()
    assert not Prompt.objects.filter(project=project).exists() and not ImportBatch.objects.exists()

    # 2b. The good file: preview first (still nothing written), then import.
    page.set_input_files("#upload-file", write_jsonl(tmp_path / "support.jsonl", PROMPTS))
    page.click("#upload-preview")
    page.wait_for_selector("#upload[data-state=previewed]")
    counts = page.locator("#upload-result .upload-counts")
    expect(counts).to_contain_text("Would create 4 prompts, 12 responses, 4 tasks")
    rows = page.locator("#upload-result table.preview-rows tr")
    expect(rows).to_have_count(1 + 4)  # the header and one row per record
    expect(rows.nth(1)).to_contain_text(PROMPTS[0]["prompt"])
    expect(rows.nth(1)).to_contain_text(PROMPTS[0]["responses"][2])
    assert not Prompt.objects.filter(project=project).exists() and not ImportBatch.objects.exists()
    page.click("#upload-commit")
    page.wait_for_selector("#upload[data-state=imported]")
    expect(counts).to_contain_text("Created 4 prompts, 12 responses, 4 tasks")
    tasks = ComparisonTask.objects.filter(project=project)
    assert tasks.count() == 4 and all(t.slots.count() == 3 for t in tasks)
    assert ImportBatch.objects.get(project=project).filename == "support.jsonl"
    # The browser and the import history below show it without a reload.
    expect(page.locator("table.browse[data-view=prompts] tbody tr")).to_have_count(4)
    expect(page.locator("table.imports tbody")).to_contain_text("support.jsonl")
    page.select_option("#browse-form select[name=view]", "tasks")
    page.locator("#browse-form").get_by_role("button", name="Filter").click()
    expect(page.locator("table.browse[data-view=tasks] tbody tr")).to_have_count(4)

    # 3. Add the annotator by username.
    open_tab(page, "Annotators")
    page.fill("#member-form input[name=username]", annotator.username)
    page.select_option("#member-form select[name=role]", "annotator")
    page.locator("#member-form").get_by_role("button").click()
    row = page.locator(f"table.members tr[data-username={annotator.username}]")
    expect(row.locator("td.role")).to_have_text("annotator")
    expect(row.locator("td.judgments")).to_have_text("0")
    assert Membership.objects.get(project=project, user=annotator).role == "annotator"

    # 4. The annotator labels three tasks by mouse: a drag, a tie, and the order as shown.
    worker_page = page_for(annotator)
    annotator_violations = watch_csp(worker_page)
    open_label(worker_page, live_server, project)
    expect(worker_page.locator("#ranking li")).to_have_count(3)
    items = worker_page.locator("#ranking li")
    items.nth(2).drag_to(items.nth(0))
    worker_page.click("#submit")
    wait_saved(worker_page, 1)
    worker_page.locator("#ranking li").nth(1).locator("button.tie").click()  # ties the second with the first
    expect(worker_page.locator("#ranking li").nth(1).locator("button.tie")).to_have_attribute("aria-pressed", "true")
    worker_page.click("#submit")
    wait_saved(worker_page, 2)
    worker_page.click("#submit")
    wait_saved(worker_page, 3)
    judgments = list(Judgment.objects.filter(project=project, annotator=annotator).order_by("id"))
    assert len(judgments) == 3
    assert judgments[0].ranking[0] == [judgments[0].shown_order[2]]  # the dragged response came first
    assert [len(g) for g in judgments[1].ranking] == [2, 1]  # the tie
    pairs = PreferencePair.objects.filter(project=project).count()
    assert pairs == 3 + 2 + 3  # a tied pair is no preference

    # 5. The admin sees the numbers move.
    open_tab(page, "Overview")
    expect(page.locator("#stat-judgments")).to_have_text("3")
    expect(page.locator("#stat-prompts")).to_have_text("4")
    expect(page.locator("#stat-tasks")).to_have_text("3 / 4")
    expect(page.locator("ul.now")).to_contain_text(annotator.username)
    open_tab(page, "Quality")
    expect(page.locator(".dashboard")).to_contain_text("3 current human judgments")
    open_tab(page, "Annotators")
    expect(page.locator(f"table.members tr[data-username={annotator.username}] td.judgments")).to_have_text("3")

    # 6. Export: preview and count, download, background job, frozen snapshot.
    open_tab(page, "Export")
    page.select_option("#export-form select[name=format]", "trl")
    page.locator("#export-form").get_by_role("button", name="Preview").click()
    page.wait_for_selector("#export-preview")
    console_ready(page)
    count = int_text(page.locator("#export-count"))
    assert count == pairs
    lines, streamed = download_lines(page, "#export-download")
    assert len(lines) == count
    assert all({"prompt", "chosen", "rejected"} <= set(json.loads(line)) for line in lines)

    page.click("#export-job")
    # The status line says "failed: <error>" if the worker's run fails, so this shows why.
    expect(page.locator("#export-job-status span")).to_contain_text(f"succeeded, {count} rows", timeout=60_000)
    job_lines, job_file = download_lines(page, "#export-job-download")
    assert len(job_lines) == count, worker.log()[-2000:]
    # A second run replaces the first one's link rather than adding another with the same id.
    first_job = page.locator("#export-job-status span").inner_text()
    page.click("#export-job")
    expect(page.locator("#export-job-status span")).not_to_have_text(first_job)
    expect(page.locator("#export-job-status span")).to_contain_text(f"succeeded, {count} rows", timeout=60_000)
    expect(page.locator("#export-job-download")).to_have_count(1)

    page.click("#export-snapshot")
    page.wait_for_url(re.compile(rf"{re.escape(live_server.url)}/projects/support-answers/snapshots/\d+/$"))
    console_ready(page)
    snapshot = DatasetSnapshot.objects.get(project=project)
    assert int_text(page.locator("#snapshot-rows")) == count == snapshot.rows
    sha = page.locator("#snapshot-sha").inner_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", sha) and sha == snapshot.sha256
    # The frozen file holds the very bytes the download streamed and the job wrote.
    assert sha == hashlib.sha256(streamed).hexdigest() == hashlib.sha256(job_file).hexdigest()

    # 7. No page needed anything the CSP forbids.
    assert violations == [] and annotator_violations == [], (violations, annotator_violations)


# --- 2. hostile text stays inert on every console page -----------------------------------------

def _hostile_project(admin, annotator) -> Project:
    """Everything a user or a model can write: project name and instructions, prompts, responses and
    their sources, a judgment's source, usernames, a model version's name; judged by the hostile annotator."""
    project = project_create(name=HOSTILE, slug="hostile", created_by=admin, mode="rank", responses_per_task=3,
                             likert_enabled=False, instructions=f"# {HOSTILE}\n\n{HOSTILE} [x](javascript:window.__pwned=1)")
    responses = [{"text": f"{HOSTILE} answer {n}", "source": f"{HOSTILE} model"} for n in range(3)]
    records = [{"id": f"h{i}", "prompt": f"{HOSTILE} prompt {i}", "responses": responses} for i in range(3)]
    records.append({"id": "h-ranked", "prompt": f"{HOSTILE} ranked", "responses": responses,
                    "ranking": [[0], [1, 2]], "source": f"{HOSTILE} judge"})
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    result = project_data_import(project=project, stream=io.BytesIO(body), filename=f"{SCRIPT}.jsonl", user=admin)
    assert result.tasks == 4 and result.judgments == 1  # the ranked record is a task too
    membership_set(project=project, user=annotator, role="annotator")
    assignment = task_assign_next(annotator=annotator, project=project).assignment
    judgment_submit(assignment=assignment, annotator=annotator,
                    verdict=Verdict(ranking=[[r] for r in assignment.shown_order], rationale=HOSTILE),
                    idempotency_key="hostile-1")
    ModelVersion.objects.create(project=project, kind="policy", name=f"{HOSTILE} policy", base="b", artifact_path="/x",
                                promoted=True)
    return project


def test_hostile_text_is_inert_on_every_console_page(page_for, live_server, make_user, settings, tmp_path):
    settings.PAIRWISE_EXPORTS_DIR = tmp_path / "exports"
    admin = make_user(f"{SVG}adm{RLO}in", is_staff=True)
    annotator = make_user(f"{SCRIPT}ann")
    project = _hostile_project(admin, annotator)
    snapshot = dataset_snapshot_create(project=project, fmt="trl", filters=ExportFilters(pseudonymous=False), user=admin)
    page = page_for(admin)
    violations = watch_csp(page)
    dialogs, requests = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    # An <img src=/pwned-img> that became an element would fetch it.
    page.on("request", lambda r: requests.append(r.url) if "/pwned-img" in r.url else None)

    base = f"/projects/{project.slug}"
    ann = annotator.username
    # (path, where on the page, a hostile text that page must show as text)
    pages = [
        (f"{base}/", "main", ann),  # labeling now
        (f"{base}/", "main", f"{HOSTILE} policy"),  # the training panel's promoted policy
        (f"{base}/data/?view=prompts", "main", f"{HOSTILE} prompt 0"),
        (f"{base}/data/?view=tasks", "main", f"{HOSTILE} prompt 0"),
        (f"{base}/data/?view=responses", "main", f"{HOSTILE} answer 0"),
        (f"{base}/data/?view=responses", "main", f"{HOSTILE} model"[:39]),  # the source, clipped to 40
        (f"{base}/data/?view=judgments", "main", ann),
        (f"{base}/data/?view=judgments", "main", f"{HOSTILE} judge"[:39]),  # the imported judgment's source
        (f"{base}/data/?{urlencode({'view': 'judgments', 'annotator': ann})}", "main", ann),  # filtered by it
        (f"{base}/data/", "main", f"{SCRIPT}.jsonl"),  # the import's file name
        (f"{base}/annotators/", "main", ann),
        (f"/dashboard/{project.slug}/", "main", HOSTILE),
        (f"/dashboard/{project.slug}/", "main", ann),
        (f"{base}/export/?preview=1&format=trl", "main", SCRIPT),
        (f"{base}/settings/", "main", SCRIPT),  # the instructions' markdown preview
        (f"/training/{project.slug}/", "main", f"{HOSTILE} policy"),
        (f"{base}/snapshots/{snapshot.pk}/", "main", SCRIPT),
        ("/account/token/", "header", admin.username),
        ("/", "main", HOSTILE),
    ]
    for path, where, needle in pages:
        assert page.goto(f"{live_server.url}{path}").status == 200, path
        page.wait_for_load_state("load")
        # Shown as text; expect() waits, as console.js fills the markdown preview after the load.
        expect(page.locator(where)).to_contain_text(needle, use_inner_text=True)
        assert page.evaluate("() => window.__pwned") is None, path
        assert page.locator(INJECTED).count() == 0, path
    # The settings page renders the instructions' preview from the server's sanitised HTML.
    page.goto(f"{live_server.url}{base}/settings/")
    preview = page.locator(".md-preview")
    expect(preview.locator("h1")).to_contain_text(SCRIPT)
    assert preview.locator("a[href^=javascript], img[src], script, svg").count() == 0

    # The upload preview (built by console.js) keeps a hostile file's texts as text, rejects included.
    data_page = f"{live_server.url}{base}/data/"
    page.goto(data_page)
    console_ready(page)
    hostile_file = write_jsonl(tmp_path / "hostile.jsonl", [
        {"id": "n1", "prompt": f"{HOSTILE} new", "responses": [f"{SVG} a", f"{IMG} b", "c"]},
        {"id": "n2", SCRIPT: HOSTILE},  # no prompt: a reject, reported
    ])
    page.set_input_files("#upload-file", hostile_file)
    page.check("#upload-skip")
    page.click("#upload-preview")
    page.wait_for_selector("#upload[data-state=previewed]")
    expect(page.locator("#upload-result table.preview-rows")).to_contain_text(f"{HOSTILE} new")
    expect(page.locator("#upload-result table.preview-rows")).to_contain_text(f"{IMG} b")
    expect(page.locator("#upload-result ul.rejects li")).to_have_count(1)
    assert page.locator(INJECTED).count() == 0 and page.evaluate("() => window.__pwned") is None
    assert not Prompt.objects.filter(project=project, external_id="n1").exists()  # a preview writes nothing

    page.wait_for_timeout(300)
    assert dialogs == [] and requests == [] and violations == [], (dialogs, requests, violations)
