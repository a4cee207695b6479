"""Console pages for a project as a whole: create it, its overview, and its settings."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.module_loading import import_string
from django.views.decorators.http import require_http_methods, require_POST

from labeling.console.common import ADMIN, form_status, project_for, tabs_context
from labeling.console.forms import ProjectCreateForm, ProjectSettingsForm
from labeling.selectors.console import import_last_get, judgments_per_hour, labeling_now, project_counts
from labeling.selectors.queue import markdown_render
from labeling.services.projects import project_create, project_soft_delete, project_update


def _save(form, save) -> bool:
    """Run the service; its ValidationError becomes the form's field errors (nothing was written)."""
    try:
        form.instance = save()
        return True
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return False


@login_required
@require_http_methods(["GET", "POST"])
def project_create_page(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:  # as the API: staff create projects, and become their first admin
        raise PermissionDenied("Only staff users can create projects.")
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        if _save(form, lambda: project_create(created_by=request.user, **data)):
            messages.success(request, "Project created, with its training schedule. Next: upload data.")
            return redirect("console-data", slug=form.instance.slug)
    return render(request, "console/project_create.html", {"form": form}, status=form_status(form))


def _overview_panels(project) -> list[dict]:
    """Panels other apps add to the overview (settings.PAIRWISE_OVERVIEW_PANELS: the training app's
    promoted models and last round), named in settings because labeling does not import them."""
    return [import_string(path)(project=project) for path in getattr(settings, "PAIRWISE_OVERVIEW_PANELS", ())]


@login_required
@require_http_methods(["GET"])
def project_overview(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for(request, slug)
    hours = judgments_per_hour(project=project, hours=48)
    return render(request, "console/overview.html", {
        **tabs_context(project=project, role=role, tab="overview"),
        "counts": project_counts(project=project), "hours_chart": _columns(hours), "hours_total": sum(h["count"] for h in hours),
        "now": labeling_now(project=project), "last_import": import_last_get(project=project),
        "panels": _overview_panels(project),
    })


def _columns(series: list[dict], width: int = 720, height: int = 120) -> dict:
    """Column-chart geometry for judgments per hour; the template draws it (numbers only)."""
    top = max([point["count"] for point in series] + [1])
    step = width / max(1, len(series))
    bars = [{"x": round(i * step, 1), "w": round(max(1.0, step - 2), 1), "h": round(height * p["count"] / top, 1),
             "y": round(height - height * p["count"] / top, 1), "count": p["count"], "hour": p["hour"]}
            for i, p in enumerate(series)]
    return {"bars": bars, "width": width, "height": height, "top": top}


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for(request, slug)
    if request.method == "POST":
        project_for(request, slug, roles=ADMIN)
    form = ProjectSettingsForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        changed = {name: form.cleaned_data[name] for name in form.changed_data}
        if _save(form, lambda: project_update(project=project, **changed)):
            messages.success(request, "Settings saved." if changed else "Nothing changed.")
            return redirect("console-settings", slug=slug)
    if role not in ADMIN:
        for field in form.fields.values():
            field.disabled = True
    return render(request, "console/settings.html", {**tabs_context(project=project, role=role, tab="settings"),
                                                     "form": form}, status=form_status(form))


@login_required
@require_POST
def project_delete(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = project_for(request, slug, roles=ADMIN)
    if request.POST.get("confirm") != project.slug:
        messages.error(request, "Type the project's slug to delete it.")
        return redirect("console-settings", slug=slug)
    project_soft_delete(project=project)
    messages.success(request, f"Project {project.slug} deleted (staff can restore it in the Django admin).")
    return redirect("project-list")


@login_required
@require_POST
def markdown_preview(request: HttpRequest) -> JsonResponse:
    """The instructions as annotators will see them: the labeling page's own sanitising renderer."""
    text = request.POST.get("text", "")
    cap = settings.PAIRWISE_MARKDOWN_PREVIEW_MAX_CHARS
    if len(text) > cap:
        return JsonResponse({"text": [f"The preview renders at most {cap} characters."]}, status=400)
    return JsonResponse({"html": markdown_render(text)})
