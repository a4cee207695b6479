"""Every HTML form that posts refuses a request without the CSRF token (403) and accepts it with one.

The list of endpoints is checked against the templates: a new `method="post"` form fails
test_every_template_form_is_covered until it has a case here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from labeling.models import Judgment, Membership, Project, Prompt
from labeling.services.assignment import task_assign_next
from tests.labeling.judging import make_tasks, submit
from training.models import MachineAnnotator, ModelVersion, TrainingRun
from training.services.machine_annotators import machine_annotator_create

pytestmark = pytest.mark.django_db

# Forms with no action post to the page they are on; the template decides which URL that is.
SELF_POSTING = {"admin/labeling/project/import.html": "admin:labeling_project_import",
                "console/project_create.html": "console-project-create", "console/settings.html": "console-settings",
                "console/annotators.html": "console-annotators", "console/export.html": "console-export",
                "console/token.html": "console-token"}


@dataclass
class World:
    project: Project
    admin: Any
    reward: ModelVersion
    policies: list[ModelVersion]
    run: TrainingRun


SENT: list[tuple] = []  # tasks a form's service sent: the label-model refit's only effect


@pytest.fixture(autouse=True)
def _tasks_recorded(monkeypatch):
    SENT.clear()
    monkeypatch.setattr("labeling.services.label_models.task_send_on_commit",
                        lambda name, *args, **kwargs: SENT.append((name, *args)))
    monkeypatch.setattr("training.services.machine_annotators.task_send_on_commit",
                        lambda name, *args, **kwargs: SENT.append((name, kwargs.get("machine_id"))))


@pytest.fixture
def world(project_factory, member, settings, tmp_path) -> World:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.PAIRWISE_EXPORTS_DIR = tmp_path
    settings.PAIRWISE_MODELS_DIR = tmp_path / "models"
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"  # the endpoint form names a loopback server
    project = project_factory()
    Prompt.objects.create(project=project, external_id="p1", text="hello")
    admin = member(project, Membership.Role.ADMIN)
    admin.is_staff = admin.is_superuser = True
    admin.save()
    version = lambda kind, name: ModelVersion.objects.create(  # noqa: E731
        project=project, kind=kind, name=name, base="b", artifact_path="/x")
    reward, policies = version("reward", "rm"), [version("policy", "p1"), version("policy", "p2")]
    run = TrainingRun.objects.create(project=project, kind="sft", status="running")
    return World(project, admin, reward, policies, run)


@dataclass
class Case:
    url: Callable[[World], str]
    data: Callable[[World], dict[str, Any]]
    done: Callable[[World], bool]  # the post had its effect
    logged_in: bool = True
    status: int = 302  # with the token


def scoped(name: str, **kwargs: Callable[[World], Any]) -> Callable[[World], str]:
    return lambda w: reverse(name, kwargs={"slug": w.project.slug, **{k: f(w) for k, f in kwargs.items()}})


def queued(kind: str) -> Callable[[World], bool]:
    return lambda w: TrainingRun.objects.filter(project=w.project, kind=kind, status="queued").exists()


no_data: Callable[[World], dict] = lambda w: {}  # noqa: E731
PROJECT_FORM = {"mode": "pairwise", "responses_per_task": 2, "overlap": 1, "gold_rate": 0, "lease_seconds": 900,
                "retrain_min_judgments": 100, "gen_temperature": 1, "gen_top_p": 0.95, "gen_max_new_tokens": 64,
                "custom_flags": "[]"}


def lora_version(w: World) -> ModelVersion:
    """A real LoRA adapter version (on a tiny random Llama), made once per test, for the merge button."""
    if getattr(w, "lora", None) is None:
        from tests.tiny_models import tiny_llama
        from training.ml.lora import LoraSettings, lora_apply, save_adapter
        from training.ml.text import load_policy

        root = Path(settings.PAIRWISE_EXPORTS_DIR)
        base = tiny_llama(root / "base")
        model, tokenizer = load_policy(base)
        (root / "lora").mkdir()
        save_adapter(lora_apply(model, LoraSettings(lora_r=2)), tokenizer, root / "lora", base)
        w.lora = ModelVersion.objects.create(project=w.project, kind="policy", name="lora", base=str(base),
                                             artifact_path=str(root / "lora"))
    return w.lora


def scored_reward_version(w: World) -> ModelVersion:
    """A real reward folder (an untrained head on a tiny random BERT), for the version page's file form."""
    if getattr(w, "scored", None) is None:
        from tests.tiny_models import tiny_bert
        from training.ml.reward.artifact import save_reward_model
        from training.ml.reward.config import RewardConfig
        from training.ml.reward.model import RewardModel
        from transformers import AutoTokenizer

        root = Path(settings.PAIRWISE_EXPORTS_DIR)
        base = tiny_bert(root / "bert")
        save_reward_model(root / "reward", RewardModel.from_backbone_path(base), AutoTokenizer.from_pretrained(base),
                          RewardConfig(base_model=str(base), max_length=32))
        w.scored = ModelVersion.objects.create(project=w.project, kind="reward", name="scored", base=str(base),
                                               artifact_path=str(root / "reward"))
    return w.scored


def other_member(w: World, username: str) -> dict[str, Any]:
    """A second user, made a member so that removing them has an effect to check."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=username)
    Membership.objects.create(project=w.project, user=user, role=Membership.Role.ANNOTATOR)
    return {"username": username}
def member_id(w: World, username: str, *, excluded: bool = False, judged: bool = False) -> dict[str, Any]:
    """A second member, by id as the annotator forms send it: excluded already (for Re-include), or with a
    judgment that holds a task's seat (for Re-queue)."""
    other_member(w, username)
    user = Membership.objects.get(project=w.project, user__username=username).user
    if excluded:
        Membership.objects.filter(project=w.project, user=user).update(excluded_at=timezone.now())
    if judged:
        make_tasks(w.project, 1)
        submit(task_assign_next(annotator=user, project=w.project).assignment, user)
    return {"user_id": user.pk}


def endpoint_version(w: World) -> ModelVersion:
    """An endpoint version of the project, for the machine annotators' forms (no server behind it: none is asked)."""
    if getattr(w, "endpoint", None) is None:
        w.endpoint = ModelVersion.objects.create(
            project=w.project, kind="policy", name="csrf-judge-endpoint", base="b", artifact_path="/x",
            config={"endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}})
    return w.endpoint


def machine(w: World) -> MachineAnnotator:
    """A machine annotator, made once per test, for its edit, run and delete forms."""
    if getattr(w, "machine", None) is None:
        w.machine = machine_annotator_create(project=w.project, name="csrf-judge", version_id=endpoint_version(w).pk)
    return w.machine


def excluded(w: World, username: str) -> bool:
    return Membership.objects.get(project=w.project, user__username=username).excluded_at is not None


CASES: dict[str, Case] = {
    "login": Case(lambda w: reverse("login"), lambda w: {"username": w.admin.username, "password": f"pw-{w.admin.username}"},
                  lambda w: True, logged_in=False),
    "logout": Case(lambda w: reverse("logout"), no_data, lambda w: True),
    "training-train": Case(scoped("training-train"), no_data, queued("reward")),
    "training-policy-train": Case(scoped("training-policy-train"), lambda w: {"kind": "dpo"}, queued("dpo")),
    "training-pipeline-start": Case(scoped("training-pipeline-start"), lambda w: {"policy_kind": "dpo"}, queued("reward")),
    "training-run-cancel": Case(scoped("training-run-cancel", run_id=lambda w: w.run.pk), no_data,
                                lambda w: TrainingRun.objects.get(pk=w.run.pk).status == "cancelled"),
    "training-version-promote": Case(scoped("training-version-promote", version_id=lambda w: w.reward.pk), no_data,
                                     lambda w: ModelVersion.objects.get(pk=w.reward.pk).promoted),
    "training-version-demote": Case(scoped("training-version-demote", version_id=lambda w: w.reward.pk), no_data,
                                    lambda w: not ModelVersion.objects.get(pk=w.reward.pk).promoted),
    "training-version-evaluate": Case(scoped("training-version-evaluate", version_id=lambda w: w.policies[0].pk),
                                      no_data, queued("evaluate")),
    "training-version-score-file": Case(
        scoped("training-version-score-file", version_id=lambda w: scored_reward_version(w).pk),
        lambda w: {"name": "csrf", "file": SimpleUploadedFile("p.jsonl", b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n')},
        lambda w: "csrf" in ModelVersion.objects.get(name="scored").metrics.get("evaluations", {})),
    "training-ab-create": Case(scoped("training-ab-create"),
                               lambda w: {"version_a": w.policies[0].pk, "version_b": w.policies[1].pk, "prompts": 1},
                               lambda w: Project.objects.filter(slug__startswith=f"{w.project.slug}-ab-").exists()),
    "training-endpoint-create": Case(scoped("training-endpoint-create"),
                                     lambda w: {"name": "csrf-endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
                                     lambda w: ModelVersion.objects.filter(name="csrf-endpoint").exists()),
    "training-machine-annotators": Case(scoped("training-machine-annotators"),
                                        lambda w: {"name": "csrf-made", "version": endpoint_version(w).pk,
                                                   "judge_prompt": "{prompt} {response_a} {response_b}"},
                                        lambda w: MachineAnnotator.objects.filter(name="csrf-made").exists()),
    "training-machine-annotator-edit": Case(
        scoped("training-machine-annotator-edit", machine_id=lambda w: machine(w).pk),
        lambda w: {"enabled": "on", "judge_prompt": "Edited {prompt} {response_a} {response_b}"},
        lambda w: MachineAnnotator.objects.get(pk=w.machine.pk).judge_prompt.startswith("Edited")),
    "training-machine-annotator-run": Case(scoped("training-machine-annotator-run", machine_id=lambda w: machine(w).pk),
                                           no_data, lambda w: ("training.tasks.machine_annotator_work", w.machine.pk) in SENT),
    "training-machine-annotator-delete": Case(
        scoped("training-machine-annotator-delete", machine_id=lambda w: machine(w).pk), lambda w: {"confirm": "csrf-judge"},
        lambda w: not MachineAnnotator.objects.filter(pk=w.machine.pk).exists()),
    "training-version-merge": Case(scoped("training-version-merge", version_id=lambda w: lora_version(w).pk), no_data,
                                   lambda w: ModelVersion.objects.filter(name="lora-merged").exists()),
    "console-project-create": Case(lambda w: reverse("console-project-create"),
                                   lambda w: {**PROJECT_FORM, "name": "Made", "slug": "csrf-made"},
                                   lambda w: Project.objects.filter(slug="csrf-made").exists()),
    "console-settings": Case(scoped("console-settings"), lambda w: {**PROJECT_FORM, "name": "Renamed"},
                             lambda w: Project.objects.get(pk=w.project.pk).name == "Renamed"),
    "console-project-delete": Case(scoped("console-project-delete"), lambda w: {"confirm": w.project.slug},
                                   lambda w: Project.objects.get(pk=w.project.pk).deleted_at is not None),
    "console-annotators": Case(scoped("console-annotators"), lambda w: other_member(w, "csrf-viewer") | {"role": "viewer"},
                               lambda w: w.project.memberships.filter(user__username="csrf-viewer", role="viewer").exists()),
    "console-annotator-remove": Case(scoped("console-annotator-remove"), lambda w: other_member(w, "csrf-gone"),
                                     lambda w: not w.project.memberships.filter(user__username="csrf-gone").exists()),
    "console-annotator-exclude": Case(scoped("console-annotator-exclude"), lambda w: member_id(w, "csrf-excluded"),
                                      lambda w: excluded(w, "csrf-excluded")),
    "console-annotator-include": Case(scoped("console-annotator-include"),
                                      lambda w: member_id(w, "csrf-included", excluded=True),
                                      lambda w: not excluded(w, "csrf-included")),
    "console-annotator-requeue": Case(scoped("console-annotator-requeue"), lambda w: member_id(w, "csrf-requeued", judged=True),
                                      lambda w: Judgment.objects.filter(annotator__username="csrf-requeued",
                                                                        counts_for_overlap=False).exists()),
    "console-label-models-refit": Case(scoped("console-label-models-refit"), no_data,
                                       lambda w: ("labeling.tasks.label_model_fit", w.project.pk) in SENT),
    "console-export": Case(scoped("console-export"), lambda w: {"format": "trl"},
                           lambda w: w.project.snapshots.exists()),
    "console-token": Case(lambda w: reverse("console-token"), lambda w: {"action": "create"},
                          lambda w: Token.objects.filter(user=w.admin).exists(), status=201),
    "admin:login": Case(lambda w: reverse("admin:login"),
                        lambda w: {"username": w.admin.username, "password": f"pw-{w.admin.username}"},
                        lambda w: True, logged_in=False),
    "admin:labeling_project_import": Case(
        lambda w: reverse("admin:labeling_project_import", args=[w.project.pk]),
        lambda w: {"file": SimpleUploadedFile("more.jsonl", b'{"id": "p2", "prompt": "more"}\n')},
        lambda w: Prompt.objects.filter(project=w.project, external_id="p2").exists()),
    "admin:labeling_project_changelist": Case(
        lambda w: reverse("admin:labeling_project_changelist"),
        lambda w: {"action": "soft_delete", "_selected_action": [w.project.pk]},
        lambda w: Project.objects.get(pk=w.project.pk).deleted_at is not None),
}


def template_form_targets() -> set[str]:
    targets, root = set(), Path(settings.BASE_DIR, "templates")
    for path in root.rglob("*.html"):
        text = path.read_text()
        for form in re.findall(r"<form\b[^>]*>", text):
            if 'method="post"' not in form.lower():
                continue
            name = re.search(r"action=\"\{% url '([^']+)'", form)
            targets.add(name.group(1) if name else SELF_POSTING[path.relative_to(root).as_posix()])
    return targets


def test_every_template_form_is_covered():
    targets = template_form_targets()
    assert {"login", "logout", "training-train", "admin:labeling_project_import"} <= targets
    assert targets - set(CASES) == set()


def prepared(world: World, name: str) -> tuple[Case, Client]:
    """The case and a CSRF-enforcing client, with the state its post acts on."""
    case = CASES[name]
    if name == "training-version-demote":
        ModelVersion.objects.filter(pk=world.reward.pk).update(promoted=True)
    client = Client(enforce_csrf_checks=True)
    if case.logged_in:
        client.force_login(world.admin)
    return case, client


@pytest.mark.parametrize("name", sorted(CASES))
def test_post_without_token_is_refused(world, name):
    case, client = prepared(world, name)
    response = client.post(case.url(world), case.data(world))
    assert response.status_code == 403
    assert name in {"login", "admin:login", "logout"} or not case.done(world)
    assert "_auth_user_id" in client.session if case.logged_in else "_auth_user_id" not in client.session


@pytest.mark.parametrize("name", sorted(CASES))
def test_post_with_token_succeeds(world, name):
    case, client = prepared(world, name)
    assert client.get(reverse("login")).status_code in (200, 302)  # sets the csrftoken cookie
    data = {**case.data(world), "csrfmiddlewaretoken": client.cookies["csrftoken"].value}
    response = client.post(case.url(world), data)
    assert response.status_code == case.status, response.content.decode()[:2000]
    assert case.done(world)
    assert ("_auth_user_id" in client.session) == (name != "logout")
