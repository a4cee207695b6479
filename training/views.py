"""The training tab: the runs page (training rounds and runs with live progress bars polled by
static/training/runs.js, loss and accuracy curves drawn as SVG on the server, the versions table with
evaluation metrics and human flag rates, the blind A/B leaderboard), a version's page and model card,
a run's page, and the promote / demote / train-now / train-policy / evaluate / run-round / A/B / cancel
buttons (POST forms with CSRF, admin role only); the machine annotators' pages (admins only, as their
API: their endpoint, prompt and errors are the admins' business). What the pages show is read by
training.selectors.pages."""
from __future__ import annotations

import functools
from typing import Any, Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from labeling.models import Membership, Project
from labeling.console.common import form_status, tabs_context
from labeling.selectors.projects import OVERSIGHT_ROLES, project_access_get
from training import plan
from training.models import ModelVersion, TrainingRun
from training.selectors.pages import (
    Curve, run_page_get, runs_live_get, runs_page_get, version_card_get, version_page_get,
)
from training.selectors.machine_annotators import machine_annotator_get, machine_annotator_rows, machine_annotator_versions
from training.selectors.runs import pipeline_spec, run_list
from training.selectors.versions import model_version_list
from training.charts import curve_svg
from training.forms import MachineAnnotatorCreateForm, MachineAnnotatorUpdateForm
from training.ml.preference_file import parse_preference_upload
from training.services import ab, endpoints, machine_annotators, rounds, runs, versions
from training.services.runspec import ab_spec_check, spec_error_text
from training.services.reward import EVALUATION_NAME_MAX, SYNC_EVALUATION_MAX_RECORDS, reward_model_evaluate


def _project(request: HttpRequest, slug: str, *, admin: bool = False) -> tuple[Project, str]:
    """Admins act; viewers and admins read (runs' params, logs and errors, endpoint URLs: not annotators')."""
    if admin:
        return project_access_get(slug=slug, user=request.user, roles=[Membership.Role.ADMIN],
                                  denied="Only project admins can do this.")
    return project_access_get(slug=slug, user=request.user, roles=OVERSIGHT_ROLES,
                              denied="Training is for the project's viewers and admins.")


def _svg(curve: Curve) -> SafeString:
    return curve_svg(curve.points, curve.key, curve.title)


def page(template: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., HttpResponse]]:
    """A page of the training tab: GET only, the project's viewers and admins. The body reads one
    selector and returns the template's context; the tab bar's is added here."""
    def decorate(view: Callable[..., dict[str, Any]]) -> Callable[..., HttpResponse]:
        @login_required
        @require_GET
        @functools.wraps(view)
        def wrapper(request: HttpRequest, slug: str, **kwargs) -> HttpResponse:
            project, role = _project(request, slug)
            return render(request, template, {**tabs_context(project=project, role=role, tab="training"),
                                              **view(project, **kwargs)})

        return wrapper

    return decorate


@page("training/runs.html")
def runs_page(project: Project) -> dict[str, Any]:
    shown = runs_page_get(project=project)
    return {**shown, "charts": [_svg(c) for c in shown["curves"]], "win_chart": _svg(shown["win_curve"]),
            "reward_chart": _svg(shown["reward_curve"]), "active_statuses": list(TrainingRun.ACTIVE_STATUSES),
            "policy_kinds": list(plan.POLICY_KINDS)}


@page("training/card.html")
def version_card(project: Project, version_id: int) -> dict[str, Any]:
    return version_card_get(version=get_object_or_404(model_version_list(project=project), pk=version_id))


@page("training/version.html")
def version_detail(project: Project, version_id: int) -> dict[str, Any]:
    return version_page_get(version=get_object_or_404(model_version_list(project=project), pk=version_id))


@page("training/run.html")
def run_detail(project: Project, run_id: int) -> dict[str, Any]:
    shown = run_page_get(run=get_object_or_404(run_list(project=project), pk=run_id))
    return {**shown, "curves": [_svg(c) for c in shown["curves"]]}


@login_required
@require_GET
def runs_json(request: HttpRequest, slug: str) -> JsonResponse:
    project, _ = _project(request, slug)
    return JsonResponse(runs_live_get(project=project))


def admin_action(view: Callable[..., str | None]) -> Callable[..., HttpResponse]:
    """A dashboard button: POST only, project admins only. The body calls one service and returns
    the success message; a ValidationError becomes an error message; both go back to the runs page."""
    @login_required
    @require_POST
    @functools.wraps(view)
    def wrapper(request: HttpRequest, slug: str, **kwargs) -> HttpResponse:
        project, _ = _project(request, slug, admin=True)
        try:
            text = view(request, project, **kwargs)
            if text:
                messages.success(request, text)
        except ValidationError as exc:
            messages.error(request, spec_error_text(exc))  # each message after its field
        return redirect("training-runs", slug=project.slug)

    return wrapper


def _form(request: HttpRequest, *fields: str) -> dict[str, str]:
    """The form's fields, refusing any other (a hand-made POST gets what the API answers, not a
    silently ignored key); blank ones are left out. The values are parsed by training.runspec."""
    unknown = sorted(set(request.POST) - set(fields) - {"csrfmiddlewaretoken"})
    if unknown:
        raise ValidationError({key: f"unknown field; allowed: {', '.join(fields)}" for key in unknown})
    return {k: request.POST[k].strip() for k in fields if (request.POST.get(k) or "").strip()}


def _number(value: str | None, cast: Callable = int):
    """A form's number, or the text itself when it is none, so the run spec refuses it naming the field."""
    try:
        return None if value is None else cast(value)
    except ValueError:
        return value


def _lora_config(form: dict[str, str]) -> dict | None:
    """The form's LoRA rank as a trainer config override: blank keeps the trainer's default (reward
    models 16, policies 0), 0 trains every weight."""
    if "lora_r" not in form:
        return None
    rank = _number(form["lora_r"])
    if not isinstance(rank, int) or not 0 <= rank <= 1024:
        raise ValidationError({"lora_r": "The LoRA rank must be a whole number between 0 and 1024."})
    return {"lora_r": rank, "lora_alpha": 2 * rank} if rank else {"lora_r": 0}


@admin_action
def train_now(request: HttpRequest, project: Project) -> str:
    form = _form(request, "lora_r", "length_debias")
    # length_debias is passed as given: the run spec refuses a value it does not know, naming the field.
    config = (_lora_config(form) or {}) | ({"length_debias": form["length_debias"]} if "length_debias" in form else {})
    run = runs.run_request(project=project, kind=plan.REWARD, trigger="dashboard", requested_by=request.user,
                           config=config or None)
    return f"Queued reward run {run.pk}."


@admin_action
def run_cancel(request: HttpRequest, project: Project, run_id: int) -> str | None:
    run = get_object_or_404(run_list(project=project), pk=run_id)
    if not runs.run_cancel(run=run):
        return None
    if run.kind == TrainingRun.Kind.REWARD:  # training.selectors.data.reward_retrain_mark
        return (f"Cancelled run {run.pk}. The schedule starts no new round until "
                f"{project.retrain_min_judgments} new judgments arrive beyond its data; a round can still be started by hand.")
    return f"Cancelled run {run.pk}."


@admin_action
def version_promote(request: HttpRequest, project: Project, version_id: int) -> str:
    version = get_object_or_404(model_version_list(project=project, include_base=False), pk=version_id)
    versions.model_version_promote(version=version)
    return f"Promoted {version.name}."


@admin_action
def version_demote(request: HttpRequest, project: Project, version_id: int) -> str:
    version = get_object_or_404(model_version_list(project=project, include_base=False), pk=version_id)
    versions.model_version_demote(version=version)
    return f"Demoted {version.name}."


@admin_action
def version_merge(request: HttpRequest, project: Project, version_id: int) -> str:
    version = get_object_or_404(model_version_list(project=project, include_base=False), pk=version_id)
    merged = versions.model_version_merge(version=version)
    return f"Merged {version.name} into the plain version {merged.name} (id {merged.pk})."


@admin_action
def endpoint_create(request: HttpRequest, project: Project) -> str:
    """Register an OpenAI-compatible server as a policy version (the API's form, for the page)."""
    def number(name: str, cast):
        value = (request.POST.get(name) or "").strip()
        try:
            return cast(value) if value else None
        except ValueError:
            raise ValidationError(f"{name} must be a number.") from None

    version = endpoints.endpoint_version_register(
        project=project, name=request.POST.get("name", ""), base_url=request.POST.get("base_url", "").strip(),
        model=request.POST.get("model", "").strip(), api_key_env=request.POST.get("api_key_env", "").strip(),
        temperature=number("temperature", float), max_tokens=number("max_tokens", int),
        concurrency=number("concurrency", int) or 4,
    )
    return f"Registered the endpoint {version.name} (version {version.pk}); pick it for candidates or a blind A/B."


@admin_action
def pipeline_start(request: HttpRequest, project: Project) -> str:
    """Run a training round now: reward -> policy -> evaluation -> optional auto-promotion -> candidates."""
    form = _form(request, "policy_kind", "auto_promote_margin")
    spec = pipeline_spec(policy_kind=form.get("policy_kind", ""),
                         auto_promote_margin=_number(form.get("auto_promote_margin"), float))
    run = rounds.pipeline_start(project=project, spec=spec, trigger="dashboard", requested_by=request.user)
    return f"Started a training round (reward run {run.pk})."


@admin_action
def policy_train(request: HttpRequest, project: Project) -> str:
    form = _form(request, "kind", "include_chosen", "lora_r")
    kind = form.get("kind", "")
    if kind not in plan.POLICY_KINDS:
        raise ValidationError({"kind": f"Unknown policy run kind {kind!r}; one of {', '.join(plan.POLICY_KINDS)}."})
    # The checkbox is SFT's; the page shows it for every kind, so it is sent only with an SFT run.
    chosen = {"include_chosen": form["include_chosen"] == "on"} if kind == plan.SFT and "include_chosen" in form else {}
    spec = {"config": _lora_config(form), **chosen}
    run = runs.run_request(project=project, kind=kind, trigger="dashboard", requested_by=request.user, spec=spec)
    return f"Queued {kind} run {run.pk}."


@admin_action
def version_evaluate(request: HttpRequest, project: Project, version_id: int) -> str:
    version = get_object_or_404(model_version_list(project=project, kind=ModelVersion.Kind.POLICY), pk=version_id)
    form = _form(request, "auto_promote_margin")
    run = runs.run_request(project=project, kind=plan.EVALUATE, trigger="dashboard", version=version.pk,
                           requested_by=request.user, auto_promote_margin=_number(form.get("auto_promote_margin"), float))
    return f"Queued evaluation run {run.pk} of {version.name}."


@login_required
@require_POST
def version_score_file(request: HttpRequest, slug: str, version_id: int) -> HttpResponse:
    """The reward version page's form (project admins): score the version on an uploaded preference
    file and keep the result under a name, as `evaluate_reward_model --record` does; back to its page."""
    project, _ = _project(request, slug, admin=True)
    version = get_object_or_404(model_version_list(project=project, kind=ModelVersion.Kind.REWARD, include_base=False), pk=version_id)
    upload, name = request.FILES.get("file"), request.POST.get("name", "")
    try:
        if upload is None:
            raise ValidationError("Choose a file of {prompt, chosen, rejected} lines.")
        if not name.strip():
            raise ValidationError(f"Name the evaluation (1 to {EVALUATION_NAME_MAX} characters): the result is kept under it.")
        try:
            records = parse_preference_upload(upload, upload.name, limit=settings.PAIRWISE_MAX_EVAL_UPLOAD_BYTES,
                                              max_records=SYNC_EVALUATION_MAX_RECORDS)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if not records or len(records) > SYNC_EVALUATION_MAX_RECORDS:
            raise ValidationError(f"The file has {len(records)} pairs; give 1 to {SYNC_EVALUATION_MAX_RECORDS} "
                                  f"(evaluate_reward_model takes any number).")
        result = reward_model_evaluate(version=version, records=records, record_as=name, source=upload.name)
        messages.success(request, f"Kept \u201c{name.strip()}\u201d: accuracy {result['accuracy']:.3f} on {result['pairs']} pairs "
                                  f"(the longer answer wins: {result['length_baseline']:.3f}).")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("training-version-detail", slug=project.slug, version_id=version.pk)


@admin_action
def ab_create(request: HttpRequest, project: Project) -> str:
    """One click: a blind pairwise A/B project between two versions, and its generation run."""
    form = _form(request, "version_a", "version_b", "prompts")
    a, b, prompts = ab_spec_check(project=project, spec={k: _number(v) for k, v in form.items()})
    run = ab.ab_evaluation_create(project=project, version_a=a, version_b=b, prompts=prompts, created_by=request.user)
    return f"Created the blind A/B project {run.project.slug}; generating its tasks (run {run.pk})."


# ----------------------------------------------------------------------------- machine annotators

def _version_choices(project: Project) -> list[tuple[str, list[ModelVersion]]]:
    """The versions the add form offers, grouped: exactly those the service accepts (one selector). The
    service still decides: a hand-posted id is its to refuse."""
    allowed = machine_annotator_versions(project=project)
    groups = [("Chat model endpoints (judge with the prompt)", allowed["endpoint"]),
              ("Reward models (rank by reward)", allowed["reward"])]
    return [(label, versions) for label, versions in groups if versions]


def _service_errors(form, call: Callable[[], Any]) -> bool:
    """Run the service; its ValidationError becomes the form's field errors (nothing was written)."""
    try:
        call()
        return True
    except ValidationError as exc:
        for field, errors in (exc.message_dict.items() if hasattr(exc, "error_dict") else [(None, exc.messages)]):
            form.add_error(field if field in form.fields else None, errors)
        return False


def _machine(project: Project, machine_id: int):
    machine = machine_annotator_get(project=project, machine_id=machine_id)
    if machine is None:  # another project's is the same as none
        raise Http404
    return machine


@login_required
@require_http_methods(["GET", "POST"])
def machine_annotators_page(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the project's machine annotators and the add form. POST: add one."""
    from training.ml.judge import DEFAULT_TEMPLATES

    project, role = _project(request, slug, admin=True)
    versions = _version_choices(project)
    default = DEFAULT_TEMPLATES.get(project.mode)  # None: the mode collects no rankings, so nothing to judge
    form = MachineAnnotatorCreateForm(request.POST or None, versions=versions, initial={"judge_prompt": default})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if _service_errors(form, lambda: machine_annotators.machine_annotator_create(
                project=project, name=data["name"], version_id=data["version"], judge_prompt=data["judge_prompt"],
                takes_overlap_seats=data["takes_overlap_seats"], by=request.user)):
            messages.success(request, f"Added the machine annotator {data['name'].strip()}; Run now to start its work.")
            return redirect("training-machine-annotators", slug=project.slug)
    return render(request, "training/machine_annotators.html", {
        **tabs_context(project=project, role=role, tab="training"), "form": form, "versions": versions,
        "judges": default is not None, "machines": machine_annotator_rows(project=project),
    }, status=form_status(form))


@login_required
@require_http_methods(["GET", "POST"])
def machine_annotator_edit(request: HttpRequest, slug: str, machine_id: int) -> HttpResponse:
    project, role = _project(request, slug, admin=True)
    machine = _machine(project, machine_id)
    stored = {"enabled": machine.enabled, "judge_prompt": machine.judge_prompt, "takes_overlap_seats": machine.takes_overlap_seats}
    form = MachineAnnotatorUpdateForm(request.POST or None, initial=stored)
    if request.method == "POST" and form.is_valid():
        # Only what changed: the service releases its leases when enabled or takes_overlap_seats changes,
        # and clears last_error when enabled is set, so an unchanged box must not be sent.
        changed = {name: value for name, value in form.cleaned_data.items() if value != stored[name]}
        if _service_errors(form, lambda: machine_annotators.machine_annotator_update(machine=machine, **changed)):
            messages.success(request, f"Saved {machine.name}." if changed else "Nothing changed.")
            return redirect("training-machine-annotators", slug=project.slug)
    return render(request, "training/machine_annotator.html", {
        **tabs_context(project=project, role=role, tab="training"), "form": form, "machine": machine,
    }, status=form_status(form))


@login_required
@require_POST
def machine_annotator_delete(request: HttpRequest, slug: str, machine_id: int) -> HttpResponse:
    project, _ = _project(request, slug, admin=True)
    machine = _machine(project, machine_id)
    if request.POST.get("confirm", "").strip() != machine.name:
        messages.error(request, f"Type {machine.name} to remove it.")
        return redirect("training-machine-annotator-edit", slug=project.slug, machine_id=machine.pk)
    machine_annotators.machine_annotator_delete(machine=machine)
    messages.success(request, f"Removed the machine annotator {machine.name}; its judgments stay.")
    return redirect("training-machine-annotators", slug=project.slug)


@login_required
@require_POST
def machine_annotator_run(request: HttpRequest, slug: str, machine_id: int) -> HttpResponse:
    project, _ = _project(request, slug, admin=True)
    machine = _machine(project, machine_id)
    try:
        machine_annotators.machine_annotator_run(machine=machine)
        messages.success(request, f"Queued {machine.name}'s work: it judges tasks in batches until none is left.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("training-machine-annotators", slug=project.slug)
