"""What training runs, evaluation and candidate generation read from labeling's tables.

A training run reads a frozen snapshot (training.dataset) that training_dataset_collect gathers
with the exports' own filters; what each trainer takes from it, and the split of prompts by the
product's one rule (labeling.splits, keyed by the prompt's external id), is training.dataset's.
Evaluation reads the held-out prompts by the same rule, so an export with split=test holds
exactly the prompts evaluation answers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, Max, Q, QuerySet

from labeling.models import ComparisonTask, DatasetSnapshot, Demonstration, Judgment, Project, Prompt, TaskResponse
from labeling.selectors.exports import ExportFilters, annotator_pseudonym, judgment_queryset
from labeling.selectors.annotators import excluded_annotator_ids
from labeling.selectors.quality import annotators_below_gold_accuracy
from labeling.splits import prompt_is_held_out, split_items
from labeling.transcripts import prompt_transcript
from training.consensus import Labelled, annotator_key, consensus_records
from training.dataset import BOTH_SOURCES, FORMAT, HUMAN_SOURCES, MACHINE_SOURCES, TrainingDataset, is_machine
from training.runspec import data_sources_errors
from training.models import TrainingRun


def prompt_input(prompt: Prompt) -> str | list[dict[str, str]]:
    """What a policy is asked: the chat messages when the prompt has them, else its text."""
    return prompt.messages if prompt.messages else prompt.text


def system_prompt_of(project: Project) -> str:
    """The system message every policy prompt of the project gets (training.ml.text's default when blank)."""
    from training.ml.text import DEFAULT_SYSTEM_PROMPT  # inside: training.ml.text loads torch

    return project.system_prompt or DEFAULT_SYSTEM_PROMPT


def prompt_rm_text(prompt: Prompt) -> str:
    """What a reward model is shown as the prompt (an HH transcript for chat prompts)."""
    return prompt_transcript("", prompt.messages) if prompt.messages else prompt.text


# -------------------------------------------------------------------------------------- judgments


def judgments_for_training(*, project: Project) -> QuerySet[Judgment]:
    """Live judgments: a correction supersedes the row it replaces, so only chain heads count."""
    return (
        Judgment.objects.filter(project=project, superseded_by__isnull=True)
        .select_related("task__prompt")
        .order_by("id")
    )


def reward_last_trained_judgment_id(*, project: Project) -> int:
    """The highest judgment id a succeeded reward run has trained on (0 when none has)."""
    runs = TrainingRun.objects.filter(project=project, kind=TrainingRun.Kind.REWARD, status=TrainingRun.Status.SUCCEEDED)
    best = 0
    for params in runs.values_list("params", flat=True):
        best = max(best, int((params or {}).get("data_until_judgment_id") or 0))
    return best


def reward_retrain_mark(*, project: Project) -> int:
    """The judgment id the schedule counts new judgments from: what the last succeeded reward run
    trained on or, when a reward run was cancelled since, the data that run had (its snapshot's last
    judgment; queued, the newest judgment when it was cancelled). So a cancelled round is not started
    again until enough judgments arrive beyond it (or someone starts one by hand)."""
    mark = reward_last_trained_judgment_id(project=project)
    cancelled = (TrainingRun.objects.filter(project=project, kind=TrainingRun.Kind.REWARD, status=TrainingRun.Status.CANCELLED)
                 .order_by("-finished_at", "-id").first())
    if cancelled is not None:
        had = int((cancelled.params or {}).get("data_until_judgment_id") or 0)
        if not had and cancelled.finished_at is not None:
            had = Judgment.objects.filter(project=project, created_at__lte=cancelled.finished_at).aggregate(
                last=Max("pk"))["last"] or 0
        mark = max(mark, had)
    return mark


def reward_new_judgments_count(*, project: Project) -> int:
    """Judgments beyond reward_retrain_mark that count toward retrain_min_judgments: human ones, and
    imported ones only where their import asked (Judgment.counts_for_retrain)."""
    since = reward_retrain_mark(project=project)
    return judgments_for_training(project=project).filter(pk__gt=since, counts_for_retrain=True).count()



# ------------------------------------------------------------------------------ training dataset

# What a training run reads unless its params say otherwise: gold judgments never train a model
# (they measure annotators; a model trained on them would be scored on its own answers).
TRAINING_FILTERS = {"exclude_gold": True}


@dataclass(frozen=True)
class TrainingFilters(ExportFilters):
    """The export filters, plus who is trusted: the judgments and demonstrations of annotators whose
    gold accuracy is under min_gold_accuracy are left out."""

    min_gold_accuracy: float | None = None
    judgment_sources: str = HUMAN_SOURCES  # training.dataset.DATA_SOURCES: the run's `sources`
    machine_weight: float | None = None  # with "both": each machine record's weight in the reward loss (None: 1)


def training_filters(*, params: dict[str, Any], project: Project | None = None) -> TrainingFilters:
    """The run's data filters: the export filters (dates, annotator, judgment source, response
    sources, model versions), gold judgments left out unless params["include_gold"], and
    params["min_gold_accuracy"] (else the project's training_min_gold_accuracy), the label model
    (params["label_model"] and ["label_targets"], or the same filters), and whose judgments
    (params["sources"]: human, machine or both, and "machine_weight" with both; training.dataset).
    Consensus and agreement filters select pairs, not judgments, so a training snapshot refuses them."""
    given = dict(params.get("filters") or {})
    given.setdefault("exclude_gold", not params.get("include_gold", False))
    for key in ("label_model", "label_targets"):
        if key in params:
            given.setdefault(key, params[key])
    filters = ExportFilters.from_dict(given)
    if filters.consensus != "all" or filters.min_agreement > 0 or filters.split:
        raise ValidationError({"filters": "consensus, min_agreement and split select pairs of an export; a training "
                                          "snapshot holds whole judgments and keeps the product's own split"})
    threshold = params.get("min_gold_accuracy", project.training_min_gold_accuracy if project else None)
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValidationError({"min_gold_accuracy": "must be between 0 and 1"})
    errors = data_sources_errors({**params, "label_model": filters.label_model})  # a label model named in filters too
    if errors:
        raise ValidationError(errors)
    sources = params.get("sources") or HUMAN_SOURCES
    weight = params.get("machine_weight")
    if weight is not None and not 0.0 <= float(weight) <= 1.0:
        raise ValidationError({"machine_weight": "must be between 0 and 1"})
    return TrainingFilters(**asdict(filters), min_gold_accuracy=None if threshold is None else float(threshold),
                           judgment_sources=sources, machine_weight=None if weight is None else float(weight))


def _task_slots(task_ids: set[int]) -> dict[int, list[tuple[int, str]]]:
    """(response id, text) per task in slot order, read in chunks."""
    ids, slots = sorted(task_ids), {}
    for start in range(0, len(ids), 5000):
        rows = TaskResponse.objects.filter(task_id__in=ids[start:start + 5000]).order_by("task_id", "position")
        for task_id, response_id, text in rows.values_list("task_id", "response_id", "response__text"):
            slots.setdefault(task_id, []).append((response_id, text))
    return slots


_JUDGMENT_FIELDS = ("pk", "task_id", "task__prompt__external_id", "ranking", "annotator_id", "source", "task__is_gold",
                    "both_bad", "shown_order", "task__gold_ranking")


def _labelled(project: Project, filters: ExportFilters, untrusted: set[int], machine: str = "exclude",
              ) -> tuple[list[Labelled], int]:
    """The judgments the filters keep, each with its snapshot record, and how many of them were left
    out for their annotator (untrusted or excluded). machine: labeling.selectors.exports.judgment_queryset's."""
    rows = list(judgment_queryset(project=project, filters=filters, with_excluded=True, machine=machine)
                .values_list(*_JUDGMENT_FIELDS))
    slots = _task_slots({row[1] for row in rows})
    out, sources = [], {}
    for pk, task_id, prompt_id, ranking, annotator_id, source, gold, both_bad, shown, gold_ranking in rows:
        if annotator_id in untrusted:
            continue
        task_slots = slots.get(task_id, [])
        index = {rid: i for i, (rid, _) in enumerate(task_slots)}
        covered = bool(ranking) and all(r in index for tie in ranking for r in tie)
        record = {
            "id": pk, "prompt_id": prompt_id, "responses": [t for _, t in task_slots],
            "ranking": [[index[r] for r in tie] for tie in ranking] if covered else None,
            "annotator": annotator_pseudonym(annotator_id), "source": source, "gold": gold, "both_bad": both_bad,
        }
        key = annotator_key(user_id=annotator_id, source=source, judgment_id=pk, sources=sources)
        out.append(Labelled(record, task_id, [rid for rid, _ in task_slots], key, ranking if covered else None,
                            list(shown or []), gold_ranking if gold else None))
    return out, len(rows) - len(out)


def training_dataset_collect(*, project: Project, filters: ExportFilters) -> TrainingDataset:
    """The project's training data as it is now (training.dataset's records): every prompt, the
    demonstrations and live judgments the filters keep, in id order; with filters.label_model, one
    consensus record per task instead (training.consensus). Annotators under the gold-accuracy
    threshold and those an admin excluded are left out."""
    threshold = getattr(filters, "min_gold_accuracy", None)
    untrusted = set() if threshold is None else annotators_below_gold_accuracy(project=project, threshold=threshold)
    untrusted |= excluded_annotator_ids(project=project)
    dataset = TrainingDataset()
    for prompt in Prompt.objects.filter(project=project).order_by("id"):
        dataset.prompts[prompt.external_id] = {"prompt_id": prompt.external_id, "prompt": prompt_input(prompt),
                                               "rm_prompt": prompt_rm_text(prompt)}
    demos = Demonstration.objects.filter(project=project).order_by("id").values_list(
        "pk", "prompt__external_id", "text", "author_id")
    dataset.demonstrations = [{"id": pk, "prompt_id": prompt_id, "response": text, "author": annotator_pseudonym(author)}
                              for pk, prompt_id, text, author in demos if author not in untrusted]
    sources = getattr(filters, "judgment_sources", HUMAN_SOURCES)
    weight = getattr(filters, "machine_weight", None)
    if filters.label_model == "none":
        machine = {HUMAN_SOURCES: "exclude", MACHINE_SOURCES: "only", BOTH_SOURCES: "include"}[sources]
        records = [j.record for j in _labelled(project, filters, untrusted, machine)[0]]
    else:
        # Gold judgments vote even when the snapshot leaves them out: they anchor the fit. The crowd is
        # the people: machine records follow the consensus as they are (training.dataset).
        labelled, left_out = _labelled(project, replace(filters, exclude_gold=False), untrusted)
        records, dataset.label_model = consensus_records(
            labelled, model=filters.label_model, targets=filters.label_targets, keep_gold=not filters.exclude_gold,
            left_out=left_out)
        if sources == BOTH_SOURCES:
            records += [j.record for j in _labelled(project, filters, untrusted, "only")[0]]
    if sources == BOTH_SOURCES:
        records = [dict(r, weight=1.0 if weight is None else weight) if is_machine(r) else r for r in records]
    dataset.judgments = records
    return dataset


def training_snapshot_find(*, snapshot_id: int) -> DatasetSnapshot | None:
    """A frozen training dataset of any live project, with its project (who may read it, the caller decides)."""
    return (DatasetSnapshot.objects.select_related("project")
            .filter(pk=snapshot_id, format=FORMAT, project__deleted_at__isnull=True).first())


def training_snapshot_get(*, project: Project, snapshot_id: int) -> DatasetSnapshot | None:
    """A frozen training dataset of this project (not an export snapshot: those hold pairs, not judgments)."""
    return DatasetSnapshot.objects.filter(project=project, pk=snapshot_id, format=FORMAT).first()


# ------------------------------------------------------------------------------------- evaluation


def held_out_collect(*, project: Project, max_prompts: int, max_demonstrations: int) -> tuple[list, list[dict[str, Any]], bool]:
    """(held-out prompts, their demonstrations, whether they really are held out). A project with no
    held-out prompt is evaluated on all its prompts, and the result says held_out=False."""
    prompts = list(Prompt.objects.filter(project=project).order_by("id"))
    _, held = split_items(prompts, lambda p: p.external_id)
    really = bool(held)
    held = held or prompts
    held_ids = {p.pk for p in held}
    demos = [d for d in Demonstration.objects.filter(project=project).select_related("prompt").order_by("id")
             if d.prompt_id in held_ids][:max_demonstrations]
    return [prompt_input(p) for p in held[:max_prompts]], [{"prompt": prompt_input(d.prompt), "response": d.text} for d in demos], really


# ------------------------------------------------------------------------------------- candidates


def candidate_prompts_select(*, project: Project, limit: int) -> list[Prompt]:
    """Prompts with no open task, those with the fewest tasks so far first."""
    open_prompts = ComparisonTask.objects.filter(project=project, status=ComparisonTask.Status.OPEN).values("prompt_id")
    return list(
        Prompt.objects.filter(project=project).exclude(pk__in=open_prompts)
        .annotate(n_tasks=Count("tasks", filter=Q(tasks__is_gold=False))).order_by("n_tasks", "id")[:limit]
    )


def prompts_without_tasks(*, project: Project, limit: int) -> list[Prompt]:
    return list(Prompt.objects.filter(project=project).exclude(tasks__isnull=False).order_by("id")[:limit])


def ab_source_prompts(*, project: Project, limit: int) -> list[Prompt]:
    """The prompts a blind A/B evaluation copies: held-out ones first (no version trained on them)."""
    prompts = list(Prompt.objects.filter(project=project).order_by("id"))
    prompts.sort(key=lambda p: not prompt_is_held_out(p.external_id))
    return prompts[:limit]
