"""The training panel of the project console's overview (settings.PAIRWISE_OVERVIEW_PANELS)."""
from __future__ import annotations

from typing import Any

from django.urls import reverse

from labeling.models import Project
from training.models import ModelVersion
from training.selectors.data import reward_new_judgments_count
from training.selectors.runs import pipeline_list
from training.selectors.versions import model_version_promoted_get


def _version_row(label: str, version: ModelVersion | None, project: Project, metric: str, value: Any) -> dict[str, Any]:
    if version is None:
        return {"label": label, "value": "none yet", "url": ""}
    shown = f"{version.name}" + (f" · {metric} {value:.3f}" if isinstance(value, (int, float)) else "")
    url = reverse("training-version-detail", args=[project.slug, version.pk]) if version.project_id else ""
    return {"label": label, "value": shown, "url": url}


def project_training_summary(*, project: Project) -> dict[str, Any]:
    """The promoted policy and reward model, the last training round, and whether rounds are scheduled."""
    policy = model_version_promoted_get(project=project, kind=ModelVersion.Kind.POLICY)
    reward = model_version_promoted_get(project=project, kind=ModelVersion.Kind.REWARD)
    rounds = pipeline_list(project=project, limit=1)
    last = rounds[0] if rounds else None
    evaluation = ((policy.metrics or {}).get("evaluation") or {}) if policy else {}
    return {"title": "Training", "url": reverse("training-runs", args=[project.slug]), "rows": [
        _version_row("Promoted policy", policy, project, "win rate vs parent", evaluation.get("win_rate_vs_parent")),
        _version_row("Promoted reward model", reward, project, "val. accuracy", (reward.metrics or {}).get("val_accuracy") if reward else None),
        {"label": "Last round", "url": reverse("training-runs", args=[project.slug]),
         "value": f"{last['status']}, started {last['started_at'][:16].replace('T', ' ')}" if last else "none yet"},
        {"label": "Scheduled rounds", "url": reverse("console-settings", args=[project.slug]),
         "value": "paused" if project.retrain_paused else
         f"on: {reward_new_judgments_count(project=project)} of {project.retrain_min_judgments} new judgments so far"},
    ]}
