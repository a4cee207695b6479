"""The export tab: a form of format, filters and split; a preview of the first rows and the row count;
then a streamed download (the export API's URL with the same query), a background job with a progress
bar (static/console/console.js on the jobs API), or a frozen snapshot, opened on its own page."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from labeling import export_records, splits
from labeling.console.common import ADMIN, project_for, tabs_context
from labeling.label_models import LABEL_MODEL_CHOICES
from labeling.selectors.console import snapshot_list
from labeling.selectors.exports import CONSENSUS, ExportFilters, export_count
from labeling.services.exports import dataset_snapshot_create, export_preview, manifest_path

FILTER_KEYS = ("date_from", "date_to", "annotator", "sources", "judgment_source", "min_agreement", "consensus",
               "exclude_gold", "split", "pseudonymous", "label_model")
SNAPSHOT_PREVIEW_LINES = 20
SNAPSHOTS_SHOWN = 10


def _parse(data) -> tuple[str, ExportFilters]:
    """(format, filters) from the form's fields; ValidationError names the field."""
    fmt = data.get("format") or "trl"
    if fmt not in export_records.FORMATS:
        raise ValidationError({"format": f"must be one of {', '.join(export_records.FORMATS)}"})
    values = {key: data.get(key) for key in FILTER_KEYS if data.get(key) not in (None, "")}
    # An unticked checkbox sends nothing: the form's hidden "checkboxes" field says it was shown, so
    # only a form where the box was really unticked exports usernames; anything else stays pseudonymous.
    values["pseudonymous"] = "pseudonymous" in data or "checkboxes" not in data
    values["exclude_gold"] = "exclude_gold" in data
    return fmt, ExportFilters.from_dict(values)


def _api_params(fmt: str, filters: ExportFilters) -> dict[str, Any]:
    """The export API's parameters for exactly these filters: the preview, the download and the job
    then export the same rows (blank form fields left out; booleans written either way)."""
    params: dict[str, Any] = {"format": fmt}
    for key, value in filters.as_dict().items():
        if key in ("test_fraction", "split_seed", "model_versions") or value in (None, [], ""):
            continue
        params[key] = value
    return params


@login_required
@require_http_methods(["GET", "POST"])
def project_export(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the form (with ?preview=1, the preview and count). POST: freeze a snapshot of it."""
    project, role = project_for(request, slug, roles=ADMIN)
    data = request.POST if request.method == "POST" else request.GET
    context = {**tabs_context(project=project, role=role, tab="export"), "formats": export_records.FORMATS,
               "consensus": CONSENSUS, "splits": (splits.TRAIN, splits.TEST), "label_models": LABEL_MODEL_CHOICES,
               "values": data, "errors": {}}
    try:
        fmt, filters = _parse(data)
        if request.method == "POST":
            snapshot = dataset_snapshot_create(project=project, fmt=fmt, filters=filters, user=request.user)
            messages.success(request, f"Snapshot {snapshot.pk} frozen: {snapshot.rows} rows.")
            return redirect("console-snapshot", slug=slug, snapshot_id=snapshot.pk)
        if data.get("preview"):
            shape, lines = export_preview(project=project, fmt=fmt, filters=filters)
            chosen = _api_params(fmt, filters)
            context.update(count=export_count(project=project, fmt=fmt, filters=filters), shape=shape, lines=lines,
                           download_url=f"{reverse('api-export-stream', args=[slug])}?{urlencode(chosen, doseq=True)}",
                           job_body=json.dumps(chosen))
    except ValidationError as exc:
        context["errors"] = exc.message_dict
        return render(request, "console/export.html", context, status=400)
    context["snapshots"] = snapshot_list(project=project, limit=SNAPSHOTS_SHOWN)
    return render(request, "console/export.html", context)


@login_required
@require_GET
def project_snapshot(request: HttpRequest, slug: str, snapshot_id: int) -> HttpResponse:
    """A frozen snapshot: its manifest (filters, rows, sha256) and its first lines (text formats)."""
    project, role = project_for(request, slug, roles=ADMIN)
    snapshot = get_object_or_404(project.snapshots, pk=snapshot_id)
    path, lines = Path(snapshot.path), []
    if snapshot.format not in export_records.FILE_FORMATS and path.exists():
        with path.open(encoding="utf-8", errors="replace") as handle:
            lines = [line.rstrip("\n") for _, line in zip(range(SNAPSHOT_PREVIEW_LINES), handle)]
    manifest = manifest_path(snapshot=snapshot)
    return render(request, "console/snapshot.html", {
        **tabs_context(project=project, role=role, tab="export"), "snapshot": snapshot, "lines": lines,
        "manifest": manifest.read_text() if manifest.exists() else "", "missing": not path.exists(),
        "download_url": reverse("api-snapshot-download", args=[slug, snapshot.pk]),
    })
