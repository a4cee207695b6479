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
from labeling.selectors.projects import OVERSIGHT_ROLES, project_access_get
from training.charts import curve_svg
from training.models import TrainingRun
from training.selectors.runs import run_list, run_timing
from training.selectors.versions import model_version_list, version_is_adapter, version_lineage, version_run_get

CURVE_KEYS_MAX = 8

# Human names of the metrics a version's page shows; a key not named here is shown from its own name.
METRIC_LABELS = {
    "val_accuracy": "Held-out accuracy", "val_log_loss": "Held-out log loss", "val_groups": "Held-out groups",
    "val_comparisons": "Held-out comparisons", "val_length_baseline": "Length-only baseline on them",
    "val_length_margin_corr": "Margin's correlation with the length difference",
    "val_accuracy_shorter_chosen": "Held-out accuracy, chosen answer shorter", "val_pairs_shorter_chosen": "Held-out pairs, chosen answer shorter",
    "val_accuracy_longer_chosen": "Held-out accuracy, chosen answer longer", "val_pairs_longer_chosen": "Held-out pairs, chosen answer longer",
    "train_loss": "Training loss (mean)", "final_train_loss": "Training loss (last tenth)",
    "comparisons": "Training comparisons", "groups": "Training groups", "groups_without_comparisons": "Groups without comparisons",
    "sequences": "Sequences", "truncated": "Truncated sequences", "reference_size": "Reference responses",
    "bias": "Score offset", "precision": "Precision", "device": "Device", "train_seconds": "Training time",
    "seconds": "Total time", "comparisons_per_s": "Comparisons per second", "processes": "Processes",
    "win_rate_vs_parent": "Win rate vs parent", "win_rate_vs_parent_ci95": "Win rate vs parent, 95% interval",
    "win_rate_vs_base": "Win rate vs first policy", "win_rate_vs_base_ci95": "Win rate vs first policy, 95% interval",
    "reward_mean": "Mean reward", "parent_reward_mean": "Parent's mean reward", "kl_per_token": "KL per token",
    "kl_per_response": "KL per response", "perplexity": "Perplexity", "bleu": "BLEU", "rouge_l": "ROUGE-L",
    "prompts": "Prompts", "demonstrations": "Demonstrations", "judgments": "Judgments", "annotators": "Annotators",
    "agreement": "Agreement", "snapshot": "Snapshot", "sha256": "sha256", "merged_from": "Merged from version",
}
METRIC_SECTIONS = {"evaluation": "Evaluation against its parent", "data": "Training data", "adaptation": "Adaptation"}
METRICS_LEFT_OUT = {"evaluations", "promotion", "history", "samples"}  # shown elsewhere on the page or too long


def _metric_value(key: str, value: Any) -> str | None:
    """One metric as text: numbers rounded, times in seconds, intervals as ranges; None leaves it out
    of the table (long lists stay in the raw JSON)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if key.endswith("seconds"):
            return f"{value:,.1f} s"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{value[0]:.3f} to {value[1]:.3f}"
    if isinstance(value, str):
        return value[:16] + "…" if key == "sha256" and len(value) > 16 else value[:200]
    return None


def metric_sections(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """A version's metrics as titled tables of {label, key, value} rows: the run's own first, then
    one table per nested dict (its evaluation, its data, its adapters)."""
    order = {key: i for i, key in enumerate(METRIC_LABELS)}  # the named ones in their order (results first), then the rest

    def rows(values: dict[str, Any], prefix: str = "") -> list[dict[str, str]]:
        out = []
        for key, value in sorted(values.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
            text = _metric_value(key, value)
            if text is not None and key not in METRICS_LEFT_OUT:
                out.append({"label": METRIC_LABELS.get(key, key.replace("_", " ").capitalize()), "key": prefix + key,
                            "value": text})
        return out

    metrics = metrics or {}
    top = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    sections = [{"title": "", "rows": rows(top)}]
    for key, value in metrics.items():
        if isinstance(value, dict) and key not in METRICS_LEFT_OUT:
            sections.append({"title": METRIC_SECTIONS.get(key, key.replace("_", " ").capitalize()),
                             "rows": rows(value, f"{key}.")})
    return [s for s in sections if s["rows"]]


@login_required
@require_GET
def version_detail(request: HttpRequest, slug: str, version_id: int) -> HttpResponse:
    project, role = project_access_get(slug=slug, user=request.user, roles=OVERSIGHT_ROLES)  # not annotators
    version = get_object_or_404(model_version_list(project=project), pk=version_id)
    return render(request, "training/version.html", {
        **tabs_context(project=project, role=role, tab="training"), "version": version,
        "lineage": version_lineage(version=version), "run": version_run_get(version=version),
        "adapter": version_is_adapter(version=version),
        "metric_sections": metric_sections(version.metrics or {}),
        "metrics_json": json.dumps(version.metrics or {}, indent=2, sort_keys=True)[:200_000],
        "promotion": (version.metrics or {}).get("promotion"),
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
    project, role = project_access_get(slug=slug, user=request.user, roles=OVERSIGHT_ROLES)  # not annotators
    run = get_object_or_404(run_list(project=project), pk=run_id)
    return render(request, "training/run.html", {
        **tabs_context(project=project, role=role, tab="training"), "run": run, "curves": run_curves(run),
        "params": json.dumps(run.params, indent=2, sort_keys=True)[:20_000], "timing": run_timing(run=run),
        "active": run.status in TrainingRun.ACTIVE_STATUSES,
    })
