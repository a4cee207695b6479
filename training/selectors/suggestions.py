"""Reads of the suggestions the labeling page shows after a judgment (training.services.suggestions):
who may read one, and the deployed reward model's online accuracy, measured on them.

The online accuracy of a reward version is measured on the judgments people made while it was the
promoted one: exactly the stored suggestions, each made against the ranking the person submitted
before seeing the pick. Per version: its agreement with the people (the share of the pairs a person
decided where its higher reward is on the person's side) with a Wilson 95% interval, and its
expected calibration error over those pairs (training.ml.calibration).
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser
from django.http import Http404

from labeling.models import Judgment, Membership, Project
from labeling.selectors.projects import project_access_get
from labeling.stats import wilson_interval
from training.ml.calibration import ECE_BINS, expected_calibration_error, pair_predictions
from training.models import ModelVersion, Suggestion


def suggestion_judgment_get(*, project: Project, judgment_id: int) -> Judgment | None:
    """A judgment of this project (None otherwise: it does not exist yet, or is another project's)."""
    return Judgment.objects.select_related("project", "task__prompt").filter(pk=judgment_id, project=project).first()


def suggestion_judgment_check(*, judgment: Judgment, user: AbstractUser) -> None:
    """Who may see the model's pick for a judgment: the person who made it, and the project's admins.
    Http404 for everyone else, as for a judgment that does not exist, so a pick never reaches someone
    still to judge the same task."""
    _, role = project_access_get(slug=judgment.project.slug, user=user)
    if role != Membership.Role.ADMIN and (judgment.annotator_id is None or judgment.annotator_id != user.pk):
        raise Http404("No such judgment.")


def suggestion_accuracy(*, project: Project) -> dict[int, dict[str, Any]]:
    """{reward version id: {suggestions, pairs, agreement, ci95, ece}} for each version of the project
    with stored suggestions; agreement, ci95 and ece are None without a decided pair."""
    rows: dict[int, list] = {}
    for version_id, scores, ranking in (Suggestion.objects.filter(version__project=project,
                                                                  version__kind=ModelVersion.Kind.REWARD)
                                        .order_by("id").values_list("version_id", "scores", "human_ranking")):
        rows.setdefault(version_id, []).append(({int(rid): float(r) for rid, r in scores}, ranking))
    out = {}
    for version_id, suggestions in rows.items():
        predictions = [p for scores, ranking in suggestions for p in pair_predictions(scores, ranking)]
        hits = sum(hit for _, hit in predictions)
        out[version_id] = {
            "suggestions": len(suggestions), "pairs": len(predictions),
            "agreement": hits / len(predictions) if predictions else None,
            "ci95": wilson_interval(hits, len(predictions)), "ece": expected_calibration_error(predictions),
            "ece_bins": ECE_BINS,
        }
    return out
