"""Server-rendered pages for annotators: the project list and the labeling page.

The labeling page embeds its first task (and the prefetched next one) as JSON, so it is
interactive without a further request; everything after that goes through the annotate API.
"""
from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.forms.forms import NON_FIELD_ERRORS
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

from labeling.console.common import OVERSIGHT
from labeling.forms import THROTTLED, ThrottledAuthenticationForm
from labeling.selectors.projects import WORK_ROLES, project_access_get
from labeling.selectors.queue import (
    annotator_progress, assignment_payloads, judgment_last_payload, markdown_render, projects_for_member,
)
from labeling.services.assignment import task_assign_next


class LoginView(auth_views.LoginView):
    """Django's login page with the throttled form; a refusal for too many failures answers 429."""

    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.has_error(NON_FIELD_ERRORS, code=THROTTLED):
            response.status_code = 429
        return response


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    rows = [
        {"project": project, "role": role, "labels": role in WORK_ROLES, "oversees": role in OVERSIGHT,
         **annotator_progress(annotator=request.user, project=project)}
        for project, role in projects_for_member(user=request.user)
    ]
    for row in rows:
        row["percent"] = round(100 * row["tasks_complete"] / row["tasks_total"]) if row["tasks_total"] else 0
    return render(request, "labeling/project_list.html", {"rows": rows})


@login_required
def label(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = project_access_get(slug=slug, user=request.user, roles=WORK_ROLES, hide=True)
    result = task_assign_next(annotator=request.user, project=project)
    payloads = assignment_payloads(assignments=[a for a in (result.assignment, result.prefetched) if a])
    config = {
        "slug": project.slug,
        "mode": project.mode,
        "likert": project.likert_enabled and project.mode != project.Mode.DEMONSTRATE,
        "flags": [list(f) for f in project.flag_choices] if project.flags_enabled else [],
        "csrf": get_token(request),
        "urls": {
            "next": reverse("api-next", args=[project.slug]),
            "submit": reverse("api-submit", args=[0]),
            "skip": reverse("api-skip", args=[0]),
            "correct": reverse("api-judgment-correct", args=[0]),
            # Where the page asks for the reward model's pick once a judgment is stored: the training
            # app's API, by its URL name (labeling imports nothing of training); null when the project
            # shows no suggestions or no app serves them.
            "suggestion": _suggestion_url(project),
        },
        "progress": annotator_progress(annotator=request.user, project=project),
        "overlap": project.overlap,
        "current": payloads[0] if payloads else None,
        "next": payloads[1] if len(payloads) > 1 else None,
        # The judgment "revise last" reopens (demonstrations are not revised).
        "last": None if project.mode == project.Mode.DEMONSTRATE
        else judgment_last_payload(annotator=request.user, project=project),
    }
    return render(request, "labeling/label.html", {
        "project": project, "config": config, "instructions_html": markdown_render(project.instructions or ""),
    })


def _suggestion_url(project) -> str | None:
    if not project.suggestions_enabled or project.mode == project.Mode.DEMONSTRATE:
        return None
    try:
        return reverse("api-training-judgment-suggestion", args=[project.slug, 0])
    except NoReverseMatch:
        return None
