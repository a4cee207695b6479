"""The data tab: upload with a preview (static/console/console.js drives the import API's dry run and
then the import, with a progress bar; a file over PAIRWISE_IMPORT_BACKGROUND_BYTES is imported by a
background job, whose progress the page polls), past imports and import jobs, and a browser over prompts, tasks, responses and
judgments with filters and keyset pagination."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from labeling.console.common import form_status, project_for, tabs_context
from labeling.console.forms import BrowseForm
from labeling.models import ComparisonTask
from labeling.selectors.console import BROWSE_VIEWS, BrowseFilters, browse_page, browse_sources, import_list
from labeling.selectors.import_jobs import import_jobs_recent_list
from labeling.services.imports import FORMATS

IMPORTS_SHOWN = 10


@login_required
@require_GET
def project_data(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for(request, slug)
    form = BrowseForm(request.GET or None)
    view, rows, next_before = "prompts", [], None
    if not form.is_bound or form.is_valid():
        data = form.cleaned_data if form.is_bound else {}
        view = data.get("view") or "prompts"
        filters = BrowseFilters(source=data.get("source") or "", annotator=data.get("annotator") or "",
                                status=data.get("status") or "", since=data.get("since"), until=data.get("until"))
        rows, next_before = browse_page(project=project, view=view, filters=filters, before=data.get("before"))
    query = request.GET.copy()
    query.pop("before", None)
    return render(request, "console/data.html", {
        **tabs_context(project=project, role=role, tab="data"),
        "form": form, "view": view, "views": BROWSE_VIEWS, "rows": rows,
        "next_url": f"?{query.urlencode()}&before={next_before}" if next_before else "",
        "first_url": f"?{query.urlencode()}" if form.is_bound and form.data.get("before") else "",
        "sources": browse_sources(project=project),
        "task_statuses": ComparisonTask.Status.values, "judgment_statuses": ["current", "superseded"],
        "imports": import_list(project=project, limit=IMPORTS_SHOWN),
        "import_jobs": import_jobs_recent_list(project=project, limit=IMPORTS_SHOWN),
        "import_url": reverse("api-imports", args=[project.slug]), "formats": FORMATS,
    }, status=form_status(form))
