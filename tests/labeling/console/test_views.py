"""The project console's pages through Django's test client on Postgres: what each page shows, what its
forms write, and that bad input answers 400 with the field named and writes nothing. Who may open
which page is in tests/test_permissions.py; the whole flow in a browser is tests/e2e/test_console.py."""
from __future__ import annotations

import io
import json
import re

import pytest
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import PeriodicTask
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import ComparisonTask, DatasetSnapshot, Membership, PreferencePair, Project
from labeling.selectors.exports import ExportFilters, export_count
from labeling.services.exports import export_chunks
from labeling.services.projects import membership_set
from tests.labeling.judging import import_rows, judge, tasks_with_responses
from training.services.schedules import RETRAIN_SCHEDULE_PREFIX

pytestmark = pytest.mark.django_db

FORM = {"name": "Console", "mode": "rank", "responses_per_task": 3, "overlap": 1, "gold_rate": 0,
        "lease_seconds": 900, "retrain_min_judgments": 100, "gen_temperature": 1, "gen_top_p": 0.95,
        "gen_max_new_tokens": 64, "custom_flags": "[]", "instructions": "# Be careful", "likert_enabled": "on"}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff(make_user):
    return make_user(is_staff=True)


@pytest.fixture
def admin_project(project_factory, make_user):
    admin = make_user()
    project = project_factory(mode="rank", responses_per_task=3, created_by=admin)
    return admin, project


# --- create and settings -------------------------------------------------------------------------

def test_staff_creates_a_project_with_its_schedule_and_becomes_its_admin(staff):
    response = client_for(staff).post(reverse("console-project-create"), {**FORM, "slug": "made-here"})
    assert response.status_code == 302 and response["Location"] == reverse("console-data", args=["made-here"])
    project = Project.objects.get(slug="made-here")
    assert (project.mode, project.responses_per_task, project.instructions) == ("rank", 3, "# Be careful")
    assert Membership.objects.get(project=project, user=staff).role == Membership.Role.ADMIN
    schedule = PeriodicTask.objects.get(name=RETRAIN_SCHEDULE_PREFIX + "made-here")
    assert json.loads(schedule.kwargs) == {"project_id": project.pk} and schedule.enabled


@pytest.mark.parametrize("field,value,message", [
    ("responses_per_task", 12, "less than or equal to 9"),
    ("gold_rate", 1.5, "less than or equal to 1"),
    ("custom_flags", '[["hallucination", "again"]]', "built-in"),
    ("custom_flags", '{"not": "a list"}', "pairs"),
    ("slug", "has spaces", "slug"),
    ("slug", "new", "reserved"),  # /projects/new/ is the create page
])
def test_bad_project_form_answers_400_naming_the_field_and_writes_nothing(staff, field, value, message):
    slug = value if field == "slug" else "bad-one"
    response = client_for(staff).post(reverse("console-project-create"), {**FORM, "slug": "bad-one", field: value})
    assert response.status_code == 400
    errors = re.findall(rf'data-field="{field}">([^<]*)<', response.content.decode())
    assert errors and message in " ".join(errors).replace("&#x27;", "'").lower()
    assert not Project.objects.filter(slug=slug).exists()
    assert not PeriodicTask.objects.filter(name=RETRAIN_SCHEDULE_PREFIX + slug).exists()


def test_settings_save_changed_fields_and_pause_the_schedule(admin_project):
    admin, project = admin_project
    client = client_for(admin)
    form = {**FORM, "name": project.name, "responses_per_task": 3, "overlap": 2, "retrain_paused": "on"}
    response = client.post(reverse("console-settings", args=[project.slug]), form)
    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.overlap, project.retrain_paused, project.instructions) == (2, True, "# Be careful")

    response = client.post(reverse("console-settings", args=[project.slug]), {**form, "overlap": 0})
    assert response.status_code == 400 and 'data-field="overlap"' in response.content.decode()
    project.refresh_from_db()
    assert project.overlap == 2


def test_viewers_see_the_settings_but_every_field_is_disabled(admin_project, member):
    _, project = admin_project
    page = client_for(member(project, "viewer")).get(reverse("console-settings", args=[project.slug])).content.decode()
    assert 'name="overlap"' in page and re.search(r'<input[^>]*name="overlap"[^>]*disabled', page)
    assert "Save settings" not in page


def test_delete_needs_the_slug_typed(admin_project):
    admin, project = admin_project
    client = client_for(admin)
    client.post(reverse("console-project-delete", args=[project.slug]), {"confirm": "nope"})
    project.refresh_from_db()
    assert project.deleted_at is None
    client.post(reverse("console-project-delete", args=[project.slug]), {"confirm": project.slug})
    project.refresh_from_db()
    assert project.deleted_at is not None


def test_markdown_preview_is_the_sanitised_renderer(make_user):
    body = client_for(make_user()).post(reverse("console-markdown-preview"),
                                        {"text": "# Title\n<script>x()</script> [a](javascript:alert(1))"}).json()
    assert "<h1>Title</h1>" in body["html"] and "<script>" not in body["html"] and "href=\"javascript" not in body["html"]


# --- overview ------------------------------------------------------------------------------------

def test_overview_counts_judgments_per_hour_and_who_is_labeling(admin_project, member):
    admin, project = admin_project
    annotator = member(project, "annotator")
    tasks = tasks_with_responses(project, {f"q{i}": ["a", "b", "c"] for i in range(3)})
    for task in tasks[:2]:
        judge(task, annotator, [[0], [1, 2]])
    page = client_for(admin).get(reverse("console-overview", args=[project.slug])).content.decode()
    assert re.search(r'id="stat-judgments">2<', page) and re.search(r'id="stat-prompts">3<', page)
    assert "Judgments per hour, last 48 hours (2)" in page
    assert f"<bdi>{annotator.username}</bdi>: 2 in the last 15 min" in page
    assert "Promoted policy" in page and "Scheduled rounds" in page  # the training app's panel


# --- data ----------------------------------------------------------------------------------------

def _upload(client, project, text: bytes, **query):
    upload = io.BytesIO(text)
    upload.name = "data.jsonl"
    url = reverse("api-imports", args=[project.slug]) + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    return client.post(url, {"file": upload}, format="multipart")


def test_import_dry_run_counts_exactly_what_the_import_writes_and_keeps_nothing(admin_project):
    admin, project = admin_project
    import_rows(project, {"id": "old", "prompt": "already here", "responses": ["x", "y", "z"]})
    client = APIClient()
    client.force_authenticate(admin)
    rows = [{"id": "old", "prompt": "already here", "responses": ["x", "y", "z"]}] + [
        {"id": f"n{i}", "prompt": f"new {i}", "responses": ["a", "b", "c"]} for i in range(12)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    before = (project.prompts.count(), project.tasks.count(), project.imports.count())

    dry = _upload(client, project, data, dry_run="true")
    assert dry.status_code == 200, dry.content
    body = dry.json()
    assert body["dry_run"] is True and body["batch_id"] is None
    assert (body["tasks"], body["skipped_duplicates"]) == (12, 1)
    assert len(body["preview"]) == 10 and body["preview"][1]["prompt"] == "new 0"
    assert [r["text"] for r in body["preview"][1]["responses"]] == ["a", "b", "c"]
    assert (project.prompts.count(), project.tasks.count(), project.imports.count()) == before

    real = _upload(client, project, data)
    assert real.status_code == 201
    assert {k: v for k, v in real.json().items() if k not in ("batch_id", "dry_run", "preview")} == \
           {k: v for k, v in body.items() if k not in ("batch_id", "dry_run", "preview")}
    assert project.tasks.count() == before[1] + 12


def test_import_dry_run_reports_line_numbered_errors(admin_project):
    admin, project = admin_project
    client = APIClient()
    client.force_authenticate(admin)
    response = _upload(client, project, b'{"prompt": "fine", "responses": ["a", "b", "c"]}\n{"prompt": 3}\n', dry_run="true")
    assert response.status_code == 400
    assert [e["line"] for e in response.json()["errors"]] == [2]
    assert project.prompts.count() == 0


def test_browse_pages_by_keyset_and_filters(admin_project, member):
    admin, project = admin_project
    annotator = member(project, "annotator")
    tasks = tasks_with_responses(project, {f"q{i}": [{"text": "a", "source": "m1"}, {"text": "b", "source": "m2"},
                                                     {"text": "c", "source": "m1"}] for i in range(7)})
    for task in tasks[:3]:
        judge(task, annotator, [[0], [1], [2]])
    ComparisonTask.objects.filter(pk=tasks[0].pk).update(status=ComparisonTask.Status.COMPLETE)
    client = client_for(admin)

    from labeling.selectors import console
    seen, before = [], None
    while True:
        rows, before = console.browse_page(project=project, view="prompts", filters=console.BrowseFilters(), before=before, limit=3)
        seen += [r["id"] for r in rows]
        if before is None:
            break
    assert seen == sorted(project.prompts.values_list("id", flat=True), reverse=True)

    def ids(**query):
        page = client.get(reverse("console-data", args=[project.slug]), query).content.decode()
        table = page.split('<table class="browse"', 1)[1].split("</table>", 1)[0]
        return [int(i) for i in re.findall(r"<tr><td>(\d+)</td>", table)]

    assert len(ids(view="responses", source="m2")) == 7
    assert len(ids(view="judgments", annotator=annotator.username)) == 3
    assert ids(view="judgments", annotator="nobody") == []
    assert ids(view="tasks", status="complete") == [tasks[0].pk]
    assert ids(view="prompts", since="2999-01-01") == []
    response = client.get(reverse("console-data", args=[project.slug]), {"since": "not-a-date"})
    assert response.status_code == 400 and "since" in response.content.decode()


# --- annotators and tokens -----------------------------------------------------------------------

def test_annotators_add_change_and_remove_members(admin_project, make_user):
    admin, project = admin_project
    newcomer = make_user()
    client = client_for(admin)
    url = reverse("console-annotators", args=[project.slug])
    response = client.post(url, {"username": "no-such-user", "role": "annotator"})
    assert response.status_code == 400 and "No active user" in response.content.decode()
    client.post(url, {"username": newcomer.username, "role": "annotator"})
    client.post(url, {"username": newcomer.username, "role": "viewer"})
    assert Membership.objects.get(project=project, user=newcomer).role == "viewer"
    assert f'data-username="{newcomer.username}"' in client.get(url).content.decode()
    client.post(reverse("console-annotator-remove", args=[project.slug]), {"username": newcomer.username})
    client.post(reverse("console-annotator-remove", args=[project.slug]), {"username": admin.username})
    assert set(project.memberships.values_list("user__username", flat=True)) == {admin.username}


def test_annotators_table_shows_throughput_gold_accuracy_and_agreement(admin_project, member):
    admin, project = admin_project
    a, b = member(project, "annotator"), member(project, "annotator")
    for task in tasks_with_responses(project, {f"q{i}": ["x", "y", "z"] for i in range(2)}):
        judge(task, a, [[0], [1], [2]])
        judge(task, b, [[0], [2], [1]])  # agrees on 2 of the 3 pairs
    rows = {row["username"]: row for row in __import__("labeling.selectors.console", fromlist=["x"]).member_rows(project=project)}
    assert rows[a.username]["judgments"] == rows[a.username]["last_day"] == 2
    assert rows[a.username]["agreement"] == pytest.approx(2 / 3)
    page = client_for(admin).get(reverse("console-annotators", args=[project.slug])).content.decode()
    assert "0.667" in page


def test_each_user_creates_replaces_and_revokes_their_own_token(make_user, project_factory):
    user = make_user()
    project_factory(created_by=user)
    client = client_for(user)
    response = client.post(reverse("console-token"), {"action": "create"})
    first = Token.objects.get(user=user).key
    assert response.status_code == 201 and first in response.content.decode()
    assert first not in client.get(reverse("console-token")).content.decode()  # shown once

    api = APIClient(HTTP_AUTHORIZATION=f"Token {first}")
    assert api.get(reverse("api-projects")).status_code == 200
    client.post(reverse("console-token"), {"action": "create"})
    second = Token.objects.get(user=user).key
    assert second != first and api.get(reverse("api-projects")).status_code == 401
    client.post(reverse("console-token"), {"action": "revoke"})
    assert not Token.objects.filter(user=user).exists()
    assert APIClient(HTTP_AUTHORIZATION=f"Token {second}").get(reverse("api-projects")).status_code == 401


# --- export --------------------------------------------------------------------------------------

def test_export_preview_count_download_and_snapshot(admin_project, member, settings, tmp_path):
    settings.PAIRWISE_EXPORTS_DIR = tmp_path
    admin, project = admin_project
    annotator = member(project, "annotator")
    for task in tasks_with_responses(project, {f"q{i}": ["x", "y", "z"] for i in range(4)}):
        judge(task, annotator, [[0], [1, 2]])
    client = client_for(admin)
    url = reverse("console-export", args=[project.slug])
    page = client.get(url, {"preview": "1", "format": "trl", "checkboxes": "1", "pseudonymous": "on"}).content.decode()
    pairs = PreferencePair.objects.filter(project=project).count()
    assert pairs == 8 and re.search(rf'id="export-count">{pairs}<', page)
    first = export_chunks(project=project, fmt="trl", filters=ExportFilters())
    first_line = next(first)[0].decode().splitlines()[0]
    assert json.loads(first_line)["prompt"] in page.replace("&quot;", '"')
    download = re.search(r'id="export-download" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    streamed = b"".join(client.get(download).streaming_content).decode().splitlines()
    assert len(streamed) == pairs

    # The link carries exactly the previewed filters: no blank fields (the API refuses `split=`), and an
    # unticked "pseudonymous" box as an explicit False, so the file matches the preview.
    page = client.get(url, {"preview": "1", "format": "trl", "checkboxes": "1", "split": "", "date_from": ""}).content.decode()
    download = re.search(r'id="export-download" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert "pseudonymous=False" in download and "split=" not in download and "date_from" not in download
    assert client.get(download).status_code == 200

    test_only = client.get(url, {"preview": "1", "format": "trl", "split": "test"}).content.decode()
    count = export_count(project=project, fmt="trl", filters=ExportFilters(split="test"))
    assert re.search(rf'id="export-count">{count}<', test_only)

    bad = client.get(url, {"preview": "1", "format": "trl", "date_from": "yesterday"})
    assert bad.status_code == 400 and 'data-field="filters"' in bad.content.decode()
    bad = client.get(url, {"preview": "1", "format": "xml"})
    assert bad.status_code == 400 and 'data-field="format"' in bad.content.decode()

    response = client.post(url, {"format": "ranked", "checkboxes": "1"})
    snapshot = DatasetSnapshot.objects.get(project=project)
    assert response["Location"] == reverse("console-snapshot", args=[project.slug, snapshot.pk])
    assert snapshot.rows == 4 and snapshot.filters["pseudonymous"] is False  # the box was shown and left unticked
    page = client.get(response["Location"]).content.decode()
    assert snapshot.sha256 in page and re.search(r'id="snapshot-rows">4<', page)


# --- hostile text --------------------------------------------------------------------------------

HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)>"\u202e'


def test_hostile_text_is_escaped_on_every_console_page(project_factory, make_user, settings, tmp_path):
    settings.PAIRWISE_EXPORTS_DIR = tmp_path
    admin = make_user(username="adm<script>")
    project = project_factory(name=HOSTILE, instructions=HOSTILE, created_by=admin, mode="rank", responses_per_task=3)
    evil = make_user(username="evil<img>")
    membership_set(project=project, user=evil, role="annotator")
    task, = tasks_with_responses(project, {HOSTILE: [{"text": HOSTILE, "source": HOSTILE}, "b", "c"]})
    judge(task, evil, [[0], [1], [2]])
    client = client_for(admin)
    client.post(reverse("console-export", args=[project.slug]), {"format": "trl"})
    snapshot = DatasetSnapshot.objects.get(project=project)
    slug = project.slug
    urls = [reverse(name, args=[slug]) for name in ("console-overview", "console-annotators", "console-settings",
                                                     "dashboard-project", "training-runs")]
    urls += [reverse("console-data", args=[slug]) + f"?view={v}" for v in ("prompts", "tasks", "responses", "judgments")]
    urls += [reverse("console-export", args=[slug]) + "?preview=1&format=trl",
             reverse("console-snapshot", args=[slug, snapshot.pk]), reverse("console-token"), reverse("project-list")]
    for url in urls:
        response = client.get(url)
        page = response.content.decode()
        assert response.status_code == 200, url
        assert "<script>alert" not in page and "<img src=x" not in page and "evil<img>" not in page, url


def test_raising_k_over_existing_tasks_asks_for_confirmation(admin_project):
    from tests.labeling.judging import make_tasks

    admin, project = admin_project
    Project.objects.filter(pk=project.pk).update(mode="pairwise", responses_per_task=2)
    make_tasks(project, 3, k=2)
    client = client_for(admin)
    url = reverse("console-settings", args=[project.slug])
    form = {**FORM, "name": project.name, "mode": "rank", "responses_per_task": 4}
    refused = client.post(url, form)
    page = refused.content.decode()
    assert refused.status_code == 400 and 'data-field="confirm_k_change"' in page
    assert "3 existing tasks show fewer than 4 responses" in page and 'name="confirm_k_change"' in page
    project.refresh_from_db()
    assert (project.mode, project.responses_per_task) == ("pairwise", 2)  # nothing saved
    # Other edits that leave K alone save without the question.
    assert client.post(url, {**FORM, "name": "Renamed", "mode": "pairwise", "responses_per_task": 2}).status_code == 302
    assert client.post(url, {**form, "confirm_k_change": "on"}).status_code == 302
    project.refresh_from_db()
    assert (project.mode, project.responses_per_task) == ("rank", 4)
