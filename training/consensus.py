"""A training snapshot's labels from a label model (labeling.label_models) instead of one record per
judgment. Pure Python: the selector reads the rows, this decides what the snapshot holds.

With label_model "none" (the default) every judgment is its own record, as ever. With a model, the
judgments of one task become one record: the model's posterior P(slot i beats slot j) for every pair
of its responses ("targets", the reward loss's soft labels, training.ml.reward.loss), and the hard
consensus ranking those give (labeling.label_models.targets_ranking), which DPO and SFT read. With
label_targets "hard" the record keeps only the ranking, so the reward model learns the consensus as
if one careful annotator had given it.

Every judgment the filters keep votes, gold tasks' included even when gold is left out of the
snapshot: the gold answers anchor each annotator's reliability (labeling.label_models), which is
the point of a label model. An annotator is a user; imported judgments (no user) vote as one
annotator per import source, a deleted user's judgment as an annotator of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from labeling.label_models import (LABEL_TARGETS, MODELS, gold_outcomes, judgment_votes, label_models_fit, targets_ranking,
                                   versus_majority)
from training.dataset import TrainingDataset, agreement

SOURCE = "label-model"  # the consensus records' judgment source


@dataclass(frozen=True)
class Labelled:
    """One judgment as the label model needs it, beside the snapshot record it would otherwise be."""

    record: dict[str, Any]  # training.dataset's judgment record (slot indices)
    task: int
    response_ids: list[int]  # the task's responses in slot order
    annotator: int  # the label model's key for who judged
    ranking_ids: list[list[int]] | None  # the ranking in response ids; None when it no longer matches the task
    shown_order: list[int]
    gold_ranking: list[list[int]] | None  # a gold task's expected ranking, in response ids


def annotator_key(*, user_id: int | None, source: str, judgment_id: int, sources: dict[str, int]) -> int:
    """Who judged, as the label model counts annotators: the user, else one negative key per import
    source (an imported dataset speaks with one voice), else the judgment alone (a deleted user)."""
    if user_id is not None:
        return user_id
    if source != "human":
        return sources.setdefault(source, -(len(sources) + 1))
    return -(10**12 + judgment_id)


def consensus_records(
    labelled: Sequence[Labelled], *, model: str, targets: str, keep_gold: bool, left_out: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one record per task, in the order of its first judgment; the summary the card shows). left_out:
    judgments of excluded or untrusted annotators the caller already dropped (counted, not voting)."""
    if model not in MODELS or targets not in LABEL_TARGETS:
        raise ValueError(f"label model {model!r} / targets {targets!r}")
    votes, gold = [], {}
    for j in labelled:
        if j.ranking_ids is not None and j.record["ranking"] is not None:
            votes.extend(judgment_votes(annotator=j.annotator, ranking=j.ranking_ids, shown_order=j.shown_order))
        if j.gold_ranking:
            gold.update(gold_outcomes(j.gold_ranking))
    fits = label_models_fit(votes=votes, gold=gold, models=tuple(dict.fromkeys(("majority", model))))
    fit = fits[model]
    by_task: dict[int, list[Labelled]] = {}
    for j in labelled:
        if j.record["ranking"] is not None and (keep_gold or not j.record["gold"]):
            by_task.setdefault(j.task, []).append(j)
    records = [_record(group, fit.targets(group[0].response_ids), model, targets) for group in by_task.values()]
    flagged = {a for a, stats in fit.annotators.items() if stats["flags"]}
    summary = {
        "model": model, "targets": targets, "judgments": len(labelled), "votes": len(votes),
        "tasks": len(records), "annotators": len(fit.annotators), "excluded_judgments": left_out,
        "flagged_annotators": len(flagged), "flagged_judgments": sum(j.annotator in flagged for j in labelled),
        "flips_vs_majority": versus_majority(fits).get(model, {}).get("flips", 0), "fit_seconds": round(fit.seconds, 3),
        # Agreement between the judgments themselves (one record per task has no pairs of judgments left).
        "agreement": agreement(TrainingDataset(judgments=[j.record for j in labelled if keep_gold or not j.record["gold"]])),
    }
    return records, summary


def _record(group: list[Labelled], soft: list[list], model: str, targets: str) -> dict[str, Any]:
    first = group[0].record
    record = {
        "id": max(j.record["id"] for j in group), "prompt_id": first["prompt_id"], "responses": first["responses"],
        "ranking": targets_ranking(len(first["responses"]), soft), "annotator": None, "source": SOURCE,
        "label_model": model, "judgments": len(group), "gold": first["gold"],
        "both_bad": sum(j.record["both_bad"] for j in group) * 2 > len(group),
    }
    if targets == "soft":
        record["targets"] = soft
    return record
