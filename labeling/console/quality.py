"""The quality tab (the dashboard): one page per project, plots drawn as server-side SVG (no JS, no CDN).

Geometry is computed here; the template only places it, and Django's autoescaping covers every
annotator and source name that reaches the page.
"""
from __future__ import annotations

from typing import Any, Iterable

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from labeling.console.common import OVERSIGHT, tabs_context
from labeling.selectors.label_models import label_model_comparison
from labeling.selectors.projects import project_access_get
from labeling.selectors.machine_quality import machine_quality_report
from labeling.selectors.quality import PERIODS, quality_report

ROW, LABEL_W, PLOT_W = 22, 170, 360


def hbars(items: Iterable[dict[str, Any]], *, label: str, value: str, scale: float = 1.0,
          reference: float | None = None) -> dict[str, Any]:
    """Horizontal bars: {height, rows: [{y, width, label, text}], ref_x}; a missing value draws no bar."""
    rows = []
    for i, item in enumerate(items):
        v = item.get(value)
        rows.append({"y": i * ROW, "text_y": i * ROW + 15, "label": str(item.get(label, ""))[:40],
                     "width": 0 if v is None else max(0.0, min(1.0, v / scale)) * PLOT_W,
                     "text": "–" if v is None else (f"{v:.1%}" if scale == 1.0 else f"{v:.0f}")})
    return {"height": max(1, len(rows)) * ROW + 6, "rows": rows, "label_w": LABEL_W, "plot_w": PLOT_W,
            "ref_x": None if reference is None else LABEL_W + reference / scale * PLOT_W}


def intervals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Leaderboard dots with 95% whiskers on a shared rating axis."""
    if not rows:
        return {"height": ROW, "rows": [], "label_w": LABEL_W, "plot_w": PLOT_W}
    low = min(r["ci_low"] for r in rows) - 10
    high = max(r["ci_high"] for r in rows) + 10
    x = lambda v: LABEL_W + (v - low) / (high - low) * PLOT_W  # noqa: E731
    return {
        "height": len(rows) * ROW + 6, "label_w": LABEL_W, "plot_w": PLOT_W,
        "rows": [{"y": i * ROW + 11, "text_y": i * ROW + 15, "label": str(r["source"])[:40], "x": x(r["rating"]),
                  "x1": x(r["ci_low"]), "x2": x(r["ci_high"]), "text": f"{r['rating']:.0f}"}
                 for i, r in enumerate(rows)],
    }


def _charts(report: dict[str, Any]) -> dict[str, Any]:
    agreement = report["agreement"]
    return {
        "agreement_time": hbars(agreement["over_time"], label="period", value="agreement", reference=0.726),
        "agreement_annotators": hbars(agreement["annotators"], label="username", value="agreement", reference=0.726),
        "position": hbars(report["position_bias"]["annotators"], label="username", value="rate", reference=0.5),
        "gold": hbars(report["annotators"], label="username", value="gold_accuracy"),
        "reference": hbars(report["reference"]["annotators"], label="username", value="agreement"),
        "safety": hbars(report["safety"], label="source", value="any_flag_rate"),
        "leaderboard": intervals(report["leaderboard"]),
    }


@login_required
def project_dashboard(request, slug: str):
    project, role = project_access_get(slug=slug, user=request.user, roles=OVERSIGHT,
                                    denied="Only project admins and viewers see the quality dashboard.")
    period = request.GET.get("period", "week")
    report = quality_report(project=project, period=period if period in PERIODS else "week", rounds=100)
    context = {**tabs_context(project=project, role=role, tab="quality"), "report": report, "charts": _charts(report), "periods": PERIODS, "period": period,
               "label_model_comparison": label_model_comparison(project=project),
               "machines": machine_quality_report(project=project)}
    return render(request, "dashboard/project.html", context)
