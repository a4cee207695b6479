"""Who may do what: every URL of the site, every method, every role, as one table of expected answers.

The URLs come from Django's resolver, so an endpoint added without a row here fails
test_every_endpoint_is_in_the_table. Policy, as the code has it:
- no credentials: 401 from the API, a redirect to the login page from pages;
- a project you are not a member of (outsiders, annotators of another project) is 404, never 403,
  so project names and ids do not leak between tenants; a member whose role is too low gets 403;
- annotating (next, the labeling page) is for annotators and admins: viewers get 404 there;
- an assignment that is not yours is a 409 "foreign" (the same answer as one that does not exist);
- a judgment is revised by its own annotator: others who label in the project get 409 "foreign", and
  those who do not label there (viewers, outsiders) 404, as for the labeling API;
- exports, imports, members and training actions are for project admins; quality, tasks, responses and
  every training read (runs' params, logs and errors, versions' folders and endpoint URLs, rounds, A/B
  evaluations) for admins and viewers (annotators must not learn gold flags, response sources or which
  side of a blind A/B is which);
- staff superusers act as admins of every project; the Django admin is for staff only;
- the schema, the API docs and the login page are public.

The projects, users and rows are built once per module and committed; each test runs in a
transaction that is rolled back, so writes in one cell never reach the next.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient
from rest_framework.views import APIView

from labeling.models import (
    Assignment, ComparisonTask, DatasetSnapshot, Demonstration, ExportJob, ImportBatch, ImportJob, Judgment, Membership, Project,
    Prompt, Response,
)
from labeling.services.assignment import task_assign_next
from labeling.selectors.exports import ExportFilters
from labeling.services.exports import dataset_snapshot_create
from labeling.services.projects import membership_set, project_create
from tests.labeling.judging import import_rows, judge
from training.models import ModelVersion, TrainingRun
from training.services.machine_annotators import machine_annotator_create
from training.services.schedules import RETRAIN_SCHEDULE_PREFIX

ROLES = ["anonymous", "outsider", "annotator_q", "annotator", "viewer", "admin", "superuser"]
LOGIN, BACK, ADMIN_LOGIN = "login redirect", "redirect back", "admin login redirect"


# --------------------------------------------------------------------------------------- the world

@dataclass
class Side:
    """One project and the rows in it that URLs point at."""
    project: Project
    ids: dict[str, int] = field(default_factory=dict)


@dataclass
class World:
    users: dict[str, Any]
    p: Side
    q: Side
    extra_users: list = field(default_factory=list)


def _seed(project: Project, *, admin, annotators, tmp) -> Side:
    import_rows(
        project,
        {"id": "pair", "prompt": "Which is polite?", "chosen": "Happy to help!", "rejected": "No."},
        {"id": "open1", "prompt": "Compare", "responses": [{"text": "one", "source": "m1"},
                                                           {"text": "two", "source": "m2"}]},
        {"id": "open2", "prompt": "Compare again", "responses": [{"text": "three", "source": "m1"},
                                                                 {"text": "four", "source": "m2"}]},
        {"id": "open3", "prompt": "And again", "responses": ["five", "six"]},
        {"id": "solo", "prompt": "Write the ideal answer"},
    )
    voted = project.tasks.get(prompt__external_id="open1")
    judged = [judge(voted, annotator, [[0], [1]]) for annotator in annotators]
    for annotator in annotators:
        Demonstration.objects.create(project=project, prompt=project.prompts.get(external_id="solo"),
                                     author=annotator, text=f"ideal by {annotator.username}")
    assignment = task_assign_next(annotator=annotators[0], project=project).assignment
    assert assignment is not None
    snapshot = dataset_snapshot_create(project=project, fmt="trl", filters=ExportFilters(), user=admin)
    job = ExportJob.objects.create(project=project, format="trl", status=ExportJob.Status.SUCCEEDED,
                                   path=snapshot.path, rows=snapshot.rows, created_by=admin)
    run = TrainingRun.objects.create(project=project, kind=TrainingRun.Kind.REWARD,
                                     status=TrainingRun.Status.SUCCEEDED, requested_by=admin)
    import_job = ImportJob.objects.create(project=project, filename="big.jsonl", status=ImportJob.Status.SUCCEEDED,
                                          created_by=admin)
    policies = [ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.POLICY, name=f"{project.slug}-p{i}",
                                            base="base", artifact_path=str(tmp / f"{project.slug}-p{i}"))
                for i in (1, 2)]
    # No files behind it: evaluating it gets past the role check and is refused by the service (400).
    reward = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.REWARD, name=f"{project.slug}-r",
                                         base="base", artifact_path=str(tmp / f"{project.slug}-r"))
    endpoint = ModelVersion.objects.create(
        project=project, kind=ModelVersion.Kind.POLICY, name=f"{project.slug}-judge", base="base",
        artifact_path=str(tmp / f"{project.slug}-judge"),
        config={"endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "judge", "api_key_env": ""}})
    machine = machine_annotator_create(project=project, name="seeded", version_id=endpoint.pk, by=admin)
    return Side(project=project, ids={
        "endpoint_id": endpoint.pk, "machine_id": machine.pk,
        "assignment_id": assignment.pk, "judgment_id": judged[0].pk, "job_id": job.pk, "snapshot_id": snapshot.pk, "run_id": run.pk,
        "import_job_id": import_job.pk,
        "prompt_id": voted.prompt_id, "solo_prompt_id": project.prompts.get(external_id="solo").pk,
        "version_id": policies[0].pk, "version_b_id": policies[1].pk, "reward_version_id": reward.pk,
        "member_id": annotators[0].pk,
    })


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("permissions")
    User = get_user_model()
    with override_settings(PAIRWISE_EXPORTS_DIR=tmp), django_db_blocker.unblock():
        with transaction.atomic():
            make = lambda name, **kw: User.objects.create_user(username=f"perm-{name}", password="pw-perm", **kw)  # noqa: E731
            users = {role: make(role) for role in ROLES if role not in ("anonymous", "superuser")}
            users["anonymous"] = None
            users["superuser"] = make("superuser", is_staff=True, is_superuser=True)
            colleague, q_admin = make("colleague"), make("q-admin")
            p = project_create(name="Perm P", slug="perm-p", mode="pairwise", created_by=users["admin"])
            q = project_create(name="Perm Q", slug="perm-q", mode="pairwise", created_by=q_admin)
            for user, project, role in [
                (users["annotator"], p, "annotator"), (colleague, p, "annotator"), (users["viewer"], p, "viewer"),
                (users["annotator_q"], q, "annotator"),
            ]:
                membership_set(project=project, user=user, role=role)
            built = World(users=users, p=_seed(p, admin=users["admin"], annotators=[users["annotator"], colleague], tmp=tmp),
                          q=_seed(q, admin=q_admin, annotators=[users["annotator_q"]], tmp=tmp),
                          extra_users=[colleague, q_admin])
        try:
            yield built
        finally:
            Project.objects.filter(pk__in=[p.pk, q.pk]).delete()
            # Their retraining schedules, made with them (PAIRWISE_PROJECT_CREATED_HOOKS), are not rows of theirs.
            PeriodicTask.objects.filter(name__in=[RETRAIN_SCHEDULE_PREFIX + x.slug for x in (p, q)]).delete()
            User.objects.filter(username__startswith="perm-").delete()
            User.objects.filter(machine_annotator__isnull=True, username__startswith="machine-",
                                memberships__isnull=True).delete()  # the seeded machine annotators' bots


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    """Rows that write files (an endpoint's folder, a snapshot) write them under the test's tmp_path."""
    settings.PAIRWISE_MODELS_DIR = tmp_path / "models"
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"  # the endpoint rows name a loopback server


@pytest.fixture
def client_for(world, db):
    def make(role: str) -> APIClient:
        client = APIClient()
        if world.users[role] is not None:
            client.force_login(world.users[role])
        return client

    return make


# --------------------------------------------------------------------------------------- the table

MEMBERS = frozenset({"annotator", "viewer", "admin", "superuser"})
ADMINS = frozenset({"admin", "superuser"})
OVERSIGHT = frozenset({"viewer", "admin", "superuser"})
WORKERS = frozenset({"annotator", "admin", "superuser"})


def api(ok: int, allowed=MEMBERS, *, members=MEMBERS, refused: int = 403) -> dict[str, Any]:
    """A project-scoped API answer per role: members outside `allowed` get `refused`, non-members 404."""
    return {role: 401 if role == "anonymous" else ok if role in allowed else refused if role in members else 404
            for role in ROLES}


def page(ok: Any, allowed=MEMBERS, *, members=MEMBERS) -> dict[str, Any]:
    return {**api(ok, allowed, members=members), "anonymous": LOGIN}


def everyone(ok: Any) -> dict[str, Any]:
    return {role: ok for role in ROLES}


@dataclass(frozen=True)
class Call:
    expected: dict[str, Any]
    kwargs: Callable[[Side], dict] = lambda side: {"slug": side.project.slug}
    data: Callable[[Side], Any] | None = None
    fmt: str | None = "json"
    query: dict | None = None


def _ids(*names, rename: dict[str, str] | None = None):
    rename = rename or {}
    return lambda side: {"slug": side.project.slug, **{rename.get(n, n): side.ids[n] for n in names}}


def _assignment(side):
    return {"assignment_id": side.ids["assignment_id"]}


def _ranking(side):
    order = Assignment.objects.get(pk=side.ids["assignment_id"]).shown_order
    return {"idempotency_key": "perm", "ranking": [[rid] for rid in order]}


def _correction(side):
    order = Judgment.objects.get(pk=side.ids["judgment_id"]).shown_order
    return {"idempotency_key": "perm-correct", "ranking": [[rid] for rid in reversed(order)]}


def _upload(side):
    upload = io.BytesIO(b'{"prompt": "imported in a test"}\n')
    upload.name = "new.jsonl"
    return {"file": upload}


NO_SLUG = lambda side: {}  # noqa: E731


def _project_form() -> dict:
    """Every required field of the console's project form (labeling.console.forms.ProjectForm)."""
    return {"name": "Perm console", "mode": "pairwise", "responses_per_task": 2, "overlap": 1, "gold_rate": 0,
            "lease_seconds": 900, "retrain_min_judgments": 100, "gen_temperature": 1, "gen_top_p": 0.95,
            "gen_max_new_tokens": 64, "custom_flags": "[]"}
# The annotator holds the assignment: anyone else submitting or skipping it is told it is foreign.
OWN_ASSIGNMENT = {**{role: 409 for role in ROLES}, "anonymous": 401}

TABLE: dict[tuple[str, str], Call] = {
    # Public
    ("schema", "GET"): Call(everyone(200), kwargs=NO_SLUG),
    ("api-docs", "GET"): Call(everyone(200), kwargs=NO_SLUG),
    ("login", "GET"): Call(everyone(200), kwargs=NO_SLUG),
    ("logout", "POST"): Call(everyone(LOGIN), kwargs=NO_SLUG),
    # Projects
    ("api-projects", "GET"): Call({**everyone(200), "anonymous": 401}, kwargs=NO_SLUG),
    ("api-projects", "POST"): Call({**everyone(403), "anonymous": 401, "superuser": 201}, kwargs=NO_SLUG,
                                   data=lambda side: {"name": "New", "slug": "perm-new", "mode": "pairwise"}),
    ("api-project", "GET"): Call(api(200)),
    ("api-project", "PATCH"): Call(api(200, ADMINS), data=lambda side: {"instructions": "Be kind"}),
    ("api-project", "DELETE"): Call(api(204, ADMINS)),
    ("api-members", "GET"): Call(api(200, ADMINS)),
    ("api-members", "POST"): Call(api(201, ADMINS), data=lambda side: {"username": "perm-outsider", "role": "viewer"}),
    ("api-annotator-exclude", "POST"): Call(api(200, ADMINS), kwargs=_ids("member_id", rename={"member_id": "user_id"}),
                                            data=lambda side: {"reason": "perm"}),
    ("api-annotator-include", "POST"): Call(api(200, ADMINS), kwargs=_ids("member_id", rename={"member_id": "user_id"})),
    ("api-annotator-requeue", "POST"): Call(api(200, ADMINS), kwargs=_ids("member_id", rename={"member_id": "user_id"})),
    # Data
    ("api-prompts", "GET"): Call(api(200)),
    ("api-responses", "GET"): Call(api(200, OVERSIGHT)),
    ("api-tasks", "GET"): Call(api(200, OVERSIGHT)),
    ("api-judgments", "GET"): Call(api(200)),
    ("api-demonstrations", "GET"): Call(api(200)),
    ("api-demonstrations", "POST"): Call(api(201, WORKERS),
                                         data=lambda side: {"prompt": side.ids["solo_prompt_id"], "text": "ideal"}),
    ("api-imports", "GET"): Call(api(200, ADMINS)),
    ("api-imports", "POST"): Call(api(201, ADMINS), data=_upload, fmt="multipart"),
    ("api-import-job", "GET"): Call(api(200, ADMINS), kwargs=lambda side: {"slug": side.project.slug,
                                                                            "job_id": side.ids["import_job_id"]}),
    # Annotating
    ("api-next", "POST"): Call(api(200, WORKERS, members=WORKERS)),
    ("api-submit", "POST"): Call({**OWN_ASSIGNMENT, "annotator": 201}, kwargs=_assignment, data=_ranking),
    ("api-skip", "POST"): Call({**OWN_ASSIGNMENT, "annotator": 200}, kwargs=_assignment),
    ("api-judgment-correct", "POST"): Call({**api(409, WORKERS, members=WORKERS), "annotator": 201},
                                           kwargs=lambda side: {"judgment_id": side.ids["judgment_id"]}, data=_correction),
    # Exports
    ("api-export-stream", "GET"): Call(api(200, ADMINS), query={"format": "trl"}),
    ("api-export-jobs", "GET"): Call(api(200, ADMINS)),
    ("api-export-jobs", "POST"): Call(api(202, ADMINS), data=lambda side: {"format": "trl"}),
    ("api-export-job", "GET"): Call(api(200, ADMINS), kwargs=_ids("job_id")),
    ("api-export-job-download", "GET"): Call(api(200, ADMINS), kwargs=_ids("job_id")),
    ("api-snapshots", "GET"): Call(api(200, ADMINS)),
    ("api-snapshots", "POST"): Call(api(201, ADMINS), data=lambda side: {"format": "trl"}),
    ("api-snapshot-download", "GET"): Call(api(200, ADMINS), kwargs=_ids("snapshot_id")),
    # Quality
    ("api-quality", "GET"): Call(api(200, OVERSIGHT), query={"rounds": 0}),
    ("api-consensus", "GET"): Call(api(200, OVERSIGHT)),
    ("api-leaderboard", "GET"): Call(api(200, OVERSIGHT), query={"rounds": 0}),
    ("api-prompt-bradley-terry", "GET"): Call(api(200, OVERSIGHT), kwargs=_ids("prompt_id")),
    # Training API: reads for viewers and admins (runs' params, logs and errors, endpoint URLs), actions for admins
    ("api-training-runs", "GET"): Call(api(200, OVERSIGHT)),
    ("api-training-runs", "POST"): Call(api(201, ADMINS), data=lambda side: {"kind": "reward"}),
    ("api-training-run", "GET"): Call(api(200, OVERSIGHT), kwargs=_ids("run_id")),
    ("api-training-run-cancel", "POST"): Call(api(200, ADMINS), kwargs=_ids("run_id")),
    ("api-training-versions", "GET"): Call(api(200, OVERSIGHT)),
    ("api-training-version-promote", "POST"): Call(api(200, ADMINS), kwargs=_ids("version_id")),
    ("api-training-version-demote", "POST"): Call(api(200, ADMINS), kwargs=_ids("version_id")),
    ("api-training-version-card", "GET"): Call(api(200, OVERSIGHT), kwargs=_ids("version_id")),
    # 400: allowed through, then refused by the service (the seeded policy is not a LoRA adapter).
    ("api-training-version-merge", "POST"): Call(api(400, ADMINS), kwargs=_ids("version_id")),
    # 400: allowed through, then refused by the service (the seeded reward version has no files).
    ("api-training-version-evaluate", "POST"): Call(
        api(400, OVERSIGHT), kwargs=lambda side: {"slug": side.project.slug, "version_id": side.ids["reward_version_id"]},
        data=lambda side: {"records": [{"prompt": "p", "chosen": "a", "rejected": "b"}]}),
    ("api-training-endpoints", "POST"): Call(api(201, ADMINS), data=lambda side: {
        "name": "perm-endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "m"}),
    ("api-training-pipelines", "GET"): Call(api(200, OVERSIGHT)),
    ("api-training-pipelines", "POST"): Call(api(201, ADMINS), data=lambda side: {}),
    ("api-training-ab-evaluations", "GET"): Call(api(200, OVERSIGHT)),
    ("api-training-ab-evaluations", "POST"): Call(api(201, ADMINS), data=lambda side: {
        "version_a": side.ids["version_id"], "version_b": side.ids["version_b_id"], "prompts": 2}),
    ("api-training-leaderboard", "GET"): Call(api(200, OVERSIGHT), query={"rounds": 0}),
    # Machine annotators: their endpoint, prompt and errors are admins' business, reads included.
    ("api-training-machine-annotators", "GET"): Call(api(200, ADMINS)),
    ("api-training-machine-annotators", "POST"): Call(api(201, ADMINS), data=lambda side: {
        "name": "perm-machine", "version": side.ids["endpoint_id"]}),
    ("api-training-machine-annotator", "GET"): Call(api(200, ADMINS), kwargs=_ids("machine_id")),
    ("api-training-machine-annotator", "PATCH"): Call(api(200, ADMINS), kwargs=_ids("machine_id"),
                                                      data=lambda side: {"enabled": False}),
    ("api-training-machine-annotator", "DELETE"): Call(api(204, ADMINS), kwargs=_ids("machine_id")),
    ("api-training-machine-annotator-run", "POST"): Call(api(202, ADMINS), kwargs=_ids("machine_id")),
    # The reward model's pick for a judgment: its annotator and the admins only (a colleague still to judge the
    # task must not see it); 409: the seeded project shows no suggestions.
    ("api-training-judgment-suggestion", "GET"): Call(api(409, WORKERS, refused=404), kwargs=_ids("judgment_id")),
    # Pages
    ("project-list", "GET"): Call({**everyone(200), "anonymous": LOGIN}, kwargs=NO_SLUG),
    ("label", "GET"): Call(page(200, WORKERS, members=WORKERS)),
    ("dashboard-project", "GET"): Call(page(200, OVERSIGHT)),
    ("training-runs", "GET"): Call(page(200, OVERSIGHT)),
    ("training-runs-json", "GET"): Call(page(200, OVERSIGHT)),
    ("training-version-card", "GET"): Call(page(200, OVERSIGHT), kwargs=_ids("version_id")),
    ("training-version-detail", "GET"): Call(page(200, OVERSIGHT), kwargs=_ids("version_id")),
    ("training-run-detail", "GET"): Call(page(200, OVERSIGHT), kwargs=_ids("run_id")),
    # The project console: staff create projects; admins and viewers read; admins change.
    ("console-project-create", "GET"): Call({**everyone(403), "anonymous": LOGIN, "superuser": 200}, kwargs=NO_SLUG),
    ("console-project-create", "POST"): Call({**everyone(403), "anonymous": LOGIN, "superuser": BACK}, kwargs=NO_SLUG,
                                             data=lambda side: {**_project_form(), "slug": "perm-console-new"}, fmt=None),
    ("console-markdown-preview", "POST"): Call({**everyone(200), "anonymous": LOGIN}, kwargs=NO_SLUG,
                                               data=lambda side: {"text": "# hi"}, fmt=None),
    ("console-overview", "GET"): Call(page(200, OVERSIGHT)),
    ("console-data", "GET"): Call(page(200, OVERSIGHT), query={"view": "judgments"}),
    ("console-annotators", "GET"): Call(page(200, OVERSIGHT)),
    ("console-annotators", "POST"): Call(page(BACK, ADMINS), fmt=None,
                                         data=lambda side: {"username": "perm-outsider", "role": "viewer"}),
    ("console-annotator-remove", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {"username": "perm-viewer"}),
    ("console-label-models-refit", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {}),
    ("console-annotator-exclude", "POST"): Call(page(BACK, ADMINS), fmt=None,
                                                data=lambda side: {"user_id": side.ids["member_id"], "reason": "perm"}),
    ("console-annotator-include", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {"user_id": side.ids["member_id"]}),
    ("console-annotator-requeue", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {"user_id": side.ids["member_id"]}),
    ("console-export", "GET"): Call(page(200, ADMINS), query={"preview": "1", "format": "trl"}),
    ("console-export", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {"format": "trl"}),
    ("console-snapshot", "GET"): Call(page(200, ADMINS), kwargs=_ids("snapshot_id")),
    ("console-settings", "GET"): Call(page(200, OVERSIGHT)),
    ("console-settings", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: _project_form()),
    ("console-project-delete", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {"confirm": side.project.slug}),
    ("console-token", "GET"): Call({**everyone(200), "anonymous": LOGIN}, kwargs=NO_SLUG),
    ("console-token", "POST"): Call({**everyone(201), "anonymous": LOGIN}, kwargs=NO_SLUG, data=lambda side: {}, fmt=None),
    # Training dashboard buttons: POST forms that redirect back to the runs page with a message.
    ("training-train", "POST"): Call(page(BACK, ADMINS), fmt=None),
    ("training-run-cancel", "POST"): Call(page(BACK, ADMINS), kwargs=_ids("run_id"), fmt=None),
    ("training-version-promote", "POST"): Call(page(BACK, ADMINS), kwargs=_ids("version_id"), fmt=None),
    ("training-version-demote", "POST"): Call(page(BACK, ADMINS), kwargs=_ids("version_id"), fmt=None),
    ("training-pipeline-start", "POST"): Call(page(BACK, ADMINS), fmt=None),
    ("training-policy-train", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {"kind": "dpo"}),
    ("training-version-evaluate", "POST"): Call(page(BACK, ADMINS), kwargs=_ids("version_id"), fmt=None),
    ("training-version-merge", "POST"): Call(page(BACK, ADMINS), kwargs=_ids("version_id"), fmt=None),
    ("training-version-score-file", "POST"): Call(page(BACK, ADMINS), fmt=None, kwargs=lambda side: {
        "slug": side.project.slug, "version_id": side.ids["reward_version_id"]}),
    ("training-endpoint-create", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {
        "name": "perm-endpoint-page", "base_url": "http://127.0.0.1:9/v1", "model": "m"}),
    ("training-ab-create", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {
        "version_a": side.ids["version_id"], "version_b": side.ids["version_b_id"], "prompts": 2}),
    # Machine annotators' pages: admins only, reads included, as their API.
    ("training-machine-annotators", "GET"): Call(page(200, ADMINS)),
    ("training-machine-annotators", "POST"): Call(page(BACK, ADMINS), fmt=None, data=lambda side: {
        "name": "perm-machine-page", "version": side.ids["endpoint_id"], "judge_prompt": "{prompt} {response_a} {response_b}"}),
    ("training-machine-annotator-edit", "GET"): Call(page(200, ADMINS), kwargs=_ids("machine_id")),
    ("training-machine-annotator-edit", "POST"): Call(page(BACK, ADMINS), kwargs=_ids("machine_id"), fmt=None,
                                                      data=lambda side: {"judge_prompt": "{prompt} {response_a} {response_b}"}),
    ("training-machine-annotator-run", "POST"): Call(page(BACK, ADMINS), kwargs=_ids("machine_id"), fmt=None),
    ("training-machine-annotator-delete", "POST"): Call(page(BACK, ADMINS), kwargs=_ids("machine_id"), fmt=None,
                                                        data=lambda side: {"confirm": "seeded"}),
}

# Named admin URLs beyond the ones every ModelAdmin has: each needs a row here (see ADMIN_PAGES).
ADMIN_CUSTOM = {"labeling_project_import"}
ADMIN_STANDARD = {"index", "login", "logout", "password_change", "password_change_done", "autocomplete", "jsi18n",
                  "view_on_site", "app_list"}
ADMIN_SUFFIXES = ("_changelist", "_add", "_change", "_delete", "_history")


# --------------------------------------------------------------------------------------- enumeration

def _walk(patterns, prefix="", namespace=None):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace)
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), namespace, pattern.name, pattern.callback


def _api_methods(callback) -> set[str] | None:
    """The methods a DRF view implements (None for other views, whose methods the table defines)."""
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view_class is None or not issubclass(view_class, APIView):
        return None
    return {m.upper() for m in view_class.http_method_names if m not in ("options", "head") and hasattr(view_class, m)}


def test_every_endpoint_is_in_the_table():
    site, admin_names = set(), set()
    for route, namespace, name, callback in _walk(get_resolver().url_patterns):
        if namespace == "admin":
            admin_names.add(name)
            continue
        assert name, f"{route} has no URL name, so the permission table cannot name it"
        methods = {m for (n, m) in TABLE if n == name}
        assert methods, f"{name} ({route}) is not in the permission table"
        implemented = _api_methods(callback)
        if implemented is not None:
            assert methods == implemented, f"{name}: table has {sorted(methods)}, the view implements {sorted(implemented)}"
        site.add(name)
    assert site == {name for name, _ in TABLE}, "rows for URLs that no longer exist"
    custom = {n for n in admin_names if n and n not in ADMIN_STANDARD and not n.endswith(ADMIN_SUFFIXES)}
    assert custom == ADMIN_CUSTOM, "a custom admin view needs a place in ADMIN_PAGES"


# --------------------------------------------------------------------------------------- the matrix

def _outcome(response) -> Any:
    if response.status_code != 302:
        return response.status_code
    location = response["Location"]
    if location.startswith(reverse("admin:login")):
        return ADMIN_LOGIN
    if location.startswith(reverse("login")):
        return LOGIN
    return BACK


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name,method", sorted(TABLE))
def test_matrix(world, client_for, name, method, role):
    call = TABLE[(name, method)]
    url = reverse(name, kwargs=call.kwargs(world.p))
    data = call.data(world.p) if call.data else None
    client = client_for(role)
    kwargs = {"format": call.fmt} if call.fmt else {}
    if method == "GET":
        response = client.get(url, call.query or {})
    else:
        response = getattr(client, method.lower())(url, data, **kwargs)
    assert _outcome(response) == call.expected[role], (response.status_code, response.content[:300])


def _admin_pages(world) -> list[str]:
    project = world.p.project
    urls = [reverse("admin:index"), reverse("admin:labeling_project_import", args=[project.pk])]
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        urls += [reverse("admin:{}_{}_changelist".format(*info)), reverse("admin:app_list", args=[info[0]])]
        obj = model._default_manager.first()
        if obj is not None:
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
    return sorted(set(urls))


@pytest.mark.parametrize("role", ROLES)
def test_admin_site_is_for_staff_only(world, client_for, role):
    """Project admins are not staff: the Django admin sends them, and everyone else, to its login."""
    client = client_for(role)
    expected = 200 if role == "superuser" else ADMIN_LOGIN
    pages = _admin_pages(world)
    assert len(pages) > 10
    for url in pages:
        assert _outcome(client.get(url)) == expected, url


# --------------------------------------------------------------------------------------- isolation

def _list(client, url, **query) -> list:
    body = client.get(url, query).json()
    return body["results"] if isinstance(body, dict) and "results" in body else body


@pytest.mark.parametrize("role", ["admin", "superuser"])
def test_lists_never_return_another_projects_rows(world, client_for, role):
    client, p = client_for(role), world.p.project
    api, train = f"/api/projects/{p.slug}", f"/api/training/projects/{p.slug}"
    owned = {
        "prompts": set(Prompt.objects.filter(project=p).values_list("pk", flat=True)),
        "responses": set(Response.objects.filter(prompt__project=p).values_list("pk", flat=True)),
        "tasks": set(ComparisonTask.objects.filter(project=p).values_list("pk", flat=True)),
        "judgments": set(Judgment.objects.filter(project=p).values_list("pk", flat=True)),
        "demonstrations": set(Demonstration.objects.filter(project=p).values_list("pk", flat=True)),
        "imports": set(ImportBatch.objects.filter(project=p).values_list("pk", flat=True)),
        "exports/jobs": set(ExportJob.objects.filter(project=p).values_list("pk", flat=True)),
        "snapshots": set(DatasetSnapshot.objects.filter(project=p).values_list("pk", flat=True)),
    }
    for name, ids in owned.items():
        got = {row["id"] for row in _list(client, f"{api}/{name}/")}
        assert got == ids, name
    members = {row["username"] for row in _list(client, f"{api}/members/")}
    assert members == set(Membership.objects.filter(project=p).values_list("user__username", flat=True))
    pairs = _list(client, f"{api}/quality/consensus/", min_votes=1)
    assert pairs and {r for pair in pairs for r in (pair["a"], pair["b"])} <= owned["responses"]
    report = client.get(f"{api}/quality/", {"rounds": 0}).json()
    assert {a["username"] for a in report["annotators"]} == {"perm-annotator", "perm-colleague"}

    runs = {row["id"] for row in _list(client, f"{train}/runs/")}
    assert runs == set(TrainingRun.objects.filter(project=p).values_list("pk", flat=True))
    versions = _list(client, f"{train}/versions/")
    assert versions and all(v["project"] in (p.slug, None) for v in versions)
    assert not {v["id"] for v in versions} & set(ModelVersion.objects.filter(project=world.q.project).values_list("pk", flat=True))


def test_an_annotator_sees_only_their_own_judgments_and_demonstrations(world, client_for):
    client, p, me = client_for("annotator"), world.p.project, world.users["annotator"]
    judgments = _list(client, f"/api/projects/{p.slug}/judgments/")
    assert judgments and {j["annotator"] for j in judgments} == {me.pk}
    assert Judgment.objects.filter(project=p).exclude(annotator=me).exists()  # a colleague's exist and stay hidden
    demonstrations = _list(client, f"/api/projects/{p.slug}/demonstrations/")
    assert demonstrations and {d["author"] for d in demonstrations} == {me.pk}
    # Viewers see everyone's, imported ones (no annotator) included.
    assert {j["annotator"] for j in _list(client_for("viewer"), f"/api/projects/{p.slug}/judgments/")} == {
        me.pk, world.extra_users[0].pk, None}


@pytest.mark.parametrize("route,kind", [
    ("api-export-job", "job_id"), ("api-export-job-download", "job_id"), ("api-snapshot-download", "snapshot_id"),
    ("api-import-job", "import_job_id"),
    ("api-training-run", "run_id"), ("api-training-run-cancel", "run_id"),
    ("api-training-version-promote", "version_id"), ("api-training-version-demote", "version_id"),
    ("api-training-version-card", "version_id"), ("api-training-version-evaluate", "reward_version_id"), ("api-prompt-bradley-terry", "prompt_id"),
    ("api-training-judgment-suggestion", "judgment_id"),
])
def test_another_projects_ids_are_not_found_through_yours(world, client_for, route, kind):
    """P's admin names a row of Q under P's slug: 404, and Q's row is untouched."""
    url_kind = {"reward_version_id": "version_id", "import_job_id": "job_id"}.get(kind, kind)
    url = reverse(route, kwargs={"slug": world.p.project.slug, url_kind: world.q.ids[kind]})
    client = client_for("admin")
    response = client.get(url) if route in ("api-export-job", "api-export-job-download", "api-snapshot-download", "api-import-job",
                                            "api-training-run", "api-prompt-bradley-terry",
                                            "api-training-version-card", "api-training-judgment-suggestion") else client.post(url)
    assert response.status_code == 404, response.content


@pytest.mark.parametrize("action", ["submit", "skip"])
def test_another_projects_assignment_is_foreign(world, client_for, action):
    url = reverse(f"api-{action}", kwargs={"assignment_id": world.q.ids["assignment_id"]})
    response = client_for("annotator").post(url, {"idempotency_key": "x", "ranking": [[1], [2]]}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "foreign"
    assert Assignment.objects.get(pk=world.q.ids["assignment_id"]).state == Assignment.State.ACTIVE


@pytest.mark.parametrize("role,slugs", [
    ("outsider", []), ("annotator_q", ["perm-q"]), ("annotator", ["perm-p"]), ("viewer", ["perm-p"]),
    ("admin", ["perm-p"]),
])
def test_project_list_shows_only_your_projects(world, client_for, role, slugs):
    assert [p["slug"] for p in _list(client_for(role), "/api/projects/")] == slugs
