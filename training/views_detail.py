"""Detail pages of the training tab: one version (metrics, lineage, snapshot, the run that made it, and
its model card one click on) and one run (params, status, log tail, and every curve it recorded)."""
from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from labeling.console.common import tabs_context
from labeling.selectors.projects import project_access_get
from training.charts import curve_svg
from training.models import TrainingRun
from training.selectors.runs import run_list
from training.selectors.versions import model_version_list, version_is_adapter, version_lineage, version_run_get

CURVE_KEYS_MAX = 8


def _numbers(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Flat (name, value) rows of a metrics dict: numbers and short strings, nested dicts dotted."""
    rows = []
    for key, value in sorted((metrics or {}).items()):
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _numbers(value, f"{name}.")
        elif isinstance(value, (int, float, str, bool)) or value is None:
            rows.append((name, value))
        else:
            rows.append((name, json.dumps(value)[:200]))
    return rows


@login_required
@require_GET
def version_detail(request: HttpRequest, slug: str, version_id: int) -> HttpResponse:
    project, role = project_access_get(slug=slug, user=request.user)
    version = get_object_or_404(model_version_list(project=project), pk=version_id)
    return render(request, "training/version.html", {
        **tabs_context(project=project, role=role, tab="training"), "version": version,
        "lineage": version_lineage(version=version), "run": version_run_get(version=version),
        "adapter": version_is_adapter(version=version),
        "metrics": _numbers({k: v for k, v in (version.metrics or {}).items() if k != "evaluations"}),
        "evaluations": [{"name": name, **e} for name, e in sorted(((version.metrics or {}).get("evaluations") or {}).items())],
        "config": json.dumps(version.config, indent=2, sort_keys=True)[:20_000],
    })


FIRST_CURVES = ("loss", "accuracy", "reward", "score", "kl", "val_accuracy")


def run_curves(run: TrainingRun) -> list:
    """One chart per metric the run recorded at two steps or more (PPO: iterations), the usual ones first."""
    x = "iteration" if run.kind == TrainingRun.Kind.PPO else "step"
    points = [{**p, "step": p.get(x)} for p in run.metrics_history or [] if x in p]
    seen: dict[str, int] = {}
    for point in points:
        for key, value in point.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in (x, "step"):
                seen[key] = seen.get(key, 0) + 1
    keys = sorted((k for k, n in seen.items() if n >= 2),
                  key=lambda k: (FIRST_CURVES.index(k) if k in FIRST_CURVES else len(FIRST_CURVES), k))
    return [curve_svg(points, key, f"run {run.pk} {key}") for key in keys[:CURVE_KEYS_MAX]]


@login_required
@require_GET
def run_detail(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    project, role = project_access_get(slug=slug, user=request.user)
    run = get_object_or_404(run_list(project=project), pk=run_id)
    return render(request, "training/run.html", {
        **tabs_context(project=project, role=role, tab="training"), "run": run, "curves": run_curves(run),
        "params": json.dumps(run.params, indent=2, sort_keys=True)[:20_000],
    })
