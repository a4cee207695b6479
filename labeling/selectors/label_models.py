"""Reads for the label models: the votes of a project's current human judgments, and its latest fit."""
from __future__ import annotations

from typing import Any

from labeling.label_models import MODELS, Vote, gold_outcomes, judgment_votes
from labeling.models import LabelModelFit, Project
from labeling.selectors.annotators import excluded_annotators
from labeling.selectors.console import member_rows
from labeling.selectors.quality import CHUNK, current_judgments

# The model the console shows by default: the best of the benchmark is chosen there; DS is
# the standard one and needs no position data beyond the votes.
DEFAULT_MODEL = "dawid-skene"


def label_model_votes(*, project: Project) -> tuple[list[Vote], dict[tuple[int, int], int], int]:
    """(votes, gold outcomes by response pair, judgments read) over current human judgments.
    Judgments of deleted users (annotator null) have no one to weigh, so they are left out, and so are
    those of annotators an admin excluded (labeling.services.annotators): the fit is the crowd without them."""
    rows = (current_judgments(project=project, human_only=True).filter(annotator__isnull=False)
            .exclude(annotator_id__in=excluded_annotators(project=project)).order_by("id").values_list(
                "annotator_id", "ranking", "shown_order", "task__is_gold", "task__gold_ranking"))
    votes: list[Vote] = []
    gold: dict[tuple[int, int], int] = {}
    judgments = 0
    for annotator, ranking, shown, is_gold, gold_ranking in rows.iterator(CHUNK):
        judgments += 1
        votes.extend(judgment_votes(annotator=annotator, ranking=ranking or [], shown_order=shown or []))
        if is_gold and gold_ranking:
            gold.update(gold_outcomes(gold_ranking))
    return votes, gold, judgments


def label_model_fit_get(*, project: Project) -> LabelModelFit | None:
    return LabelModelFit.objects.filter(project=project).defer("posteriors").first()


def label_model_annotators(*, project: Project, model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """{fit: the fit's summary or None, annotators: {user id: stats}} for the annotators tab."""
    fit = label_model_fit_get(project=project)
    if fit is None or model not in fit.fits:
        return {"fit": None, "annotators": {}}
    summary = {"model": model, "created_at": fit.created_at, "judgments": fit.judgments, "votes": fit.votes}
    return {"fit": summary, "annotators": {int(k): v for k, v in fit.fits[model]["annotators"].items()}}


def annotator_rows(*, project: Project, model: str = DEFAULT_MODEL) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The annotators tab's rows (console.member_rows), each with its `label_model` stats from the latest
    fit of `model` (DEFAULT_MODEL when not a known model), and that fit's summary (None before the first)."""
    label_model = label_model_annotators(project=project, model=model if model in MODELS else DEFAULT_MODEL)
    members = member_rows(project=project)
    for row in members:
        row["label_model"] = label_model["annotators"].get(row["user_id"])
    return members, label_model["fit"]


def label_model_comparison(*, project: Project) -> dict[str, Any] | None:
    """The quality tab's majority-against-label-model table: per label model, the pairs it decides and
    how many flip against majority vote (from the stored fit; None before the first fit)."""
    fit = label_model_fit_get(project=project)
    if fit is None:
        return None
    rows = [{"model": name, **stored["versus_majority"]} for name, stored in fit.fits.items() if "versus_majority" in stored]
    return {"created_at": fit.created_at, "judgments": fit.judgments, "rows": rows}
