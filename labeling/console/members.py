"""The annotators tab (members, roles, throughput, gold accuracy, agreement, the label models'
reliability estimates and flags; excluding, re-including and re-queuing a member) and each user's
API token."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.http import require_http_methods, require_POST

from labeling.console.common import ADMIN, OVERSIGHT, form_status, project_for, tabs_context
from labeling.console.forms import AnnotatorExcludeForm, AnnotatorForm, MemberForm, MemberRemoveForm
from labeling.label_models import MODELS
from labeling.models import Project
from labeling.selectors.annotators import member_user_get
from labeling.selectors.console import api_token_get, user_get_by_username
from labeling.selectors.label_models import DEFAULT_MODEL, annotator_rows
from labeling.services.annotators import (
    EXCLUSION_REASON_MAX_CHARS, annotator_exclude, annotator_include, annotator_tasks_requeue,
)
from labeling.services.label_models import label_model_fit_request
from labeling.services.projects import membership_remove, membership_set
from labeling.services.tokens import api_token_create, api_token_revoke


@login_required
@require_http_methods(["GET", "POST"])
def project_annotators(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the table. POST (admins): add a member or change a role, by username."""
    project, role = project_for(request, slug, roles=ADMIN if request.method == "POST" else OVERSIGHT)
    form = MemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = user_get_by_username(username=form.cleaned_data["username"])
        if user is None:
            form.add_error("username", "No active user has this username.")
        else:
            membership_set(project=project, user=user, role=form.cleaned_data["role"])
            messages.success(request, f"{user.username} is now {form.cleaned_data['role']} in this project.")
            return redirect("console-annotators", slug=slug)
    members, fit = annotator_rows(project=project, model=request.GET.get("model", DEFAULT_MODEL))
    return render(request, "console/annotators.html", {
        **tabs_context(project=project, role=role, tab="annotators"), "form": form,
        "members": members, "label_model": fit, "label_models": MODELS,
        "exclusion_reason_max": EXCLUSION_REASON_MAX_CHARS,
    }, status=form_status(form))


@login_required
@require_POST
def project_label_models_refit(request: HttpRequest, slug: str) -> HttpResponse:
    """Admins: queue a refit of the label models now (it also runs after each batch of judgments)."""
    project, _ = project_for(request, slug, roles=ADMIN)
    label_model_fit_request(project=project)
    messages.success(request, "Refitting the label models; reload this page in a minute.")
    return redirect("console-annotators", slug=slug)


@login_required
@require_POST
def project_annotator_remove(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = project_for(request, slug, roles=ADMIN)
    form = MemberRemoveForm(request.POST)
    if form.is_valid():
        if form.cleaned_data["username"] == request.user.username:
            messages.error(request, "You cannot remove yourself; ask another admin.")
        else:
            user = user_get_by_username(username=form.cleaned_data["username"])
            if user is not None:
                membership_remove(project=project, user=user)
                messages.success(request, f"{user.username} removed from the project (their judgments stay).")
    return redirect("console-annotators", slug=slug)


def _member_from(request: HttpRequest, form: AnnotatorForm, project: Project) -> AbstractUser | None:
    """The member a valid form names; otherwise None, with the reason as an error message."""
    user = member_user_get(project=project, user_id=form.cleaned_data["user_id"]) if form.is_valid() else None
    if user is None:
        messages.error(request, "; ".join(form.errors.get("reason", [])) or "No such member in this project.")
    return user


@login_required
@require_POST
def project_annotator_exclude(request: HttpRequest, slug: str) -> HttpResponse:
    """Admins: exclude a member from the queue (their leases go back to the pool; their judgments stay)."""
    project, _ = project_for(request, slug, roles=ADMIN)
    form = AnnotatorExcludeForm(request.POST)
    user = _member_from(request, form, project)
    if user is not None:
        annotator_exclude(project=project, user=user, by=request.user, reason=form.cleaned_data["reason"])
        messages.success(request, f"{user.username} is excluded: no new tasks, and left out of the label models "
                                  "(their judgments stay).")
    return redirect("console-annotators", slug=slug)


@login_required
@require_POST
def project_annotator_include(request: HttpRequest, slug: str) -> HttpResponse:
    """Admins: let an excluded member take tasks again."""
    project, _ = project_for(request, slug, roles=ADMIN)
    user = _member_from(request, AnnotatorForm(request.POST), project)
    if user is not None:
        annotator_include(project=project, user=user, by=request.user)
        messages.success(request, f"{user.username} is re-included and can take tasks again.")
    return redirect("console-annotators", slug=slug)


@login_required
@require_POST
def project_annotator_requeue(request: HttpRequest, slug: str) -> HttpResponse:
    """Admins: give the seats a member's judgments hold back to the queue, for others to judge again."""
    project, _ = project_for(request, slug, roles=ADMIN)
    user = _member_from(request, AnnotatorForm(request.POST), project)
    if user is not None:
        reopened = annotator_tasks_requeue(project=project, user=user, by=request.user)
        messages.success(request, f"Re-queued {user.username}'s tasks: {reopened} task{pluralize(reopened)} reopened "
                                  "(their judgments stay stored).")
    return redirect("console-annotators", slug=slug)


@login_required
@require_http_methods(["GET", "POST"])
def account_token(request: HttpRequest) -> HttpResponse:
    """A user's own API token: create (or replace), revoke. The key is shown in full once, when made."""
    created = None
    if request.method == "POST":
        if request.POST.get("action") == "revoke":
            revoked = api_token_revoke(user=request.user)
            messages.success(request, "Token revoked." if revoked else "You had no token.")
            return redirect("console-token")
        created = api_token_create(user=request.user)
    token = api_token_get(user=request.user)
    return render(request, "console/token.html", {
        "created": created, "token": token, "hint": token.key[:4] + "…" if token else "",
    }, status=201 if created else 200)
