"""What each trainer, evaluation and candidate generation reads from labeling's tables.

Every read here splits prompts with the product's one rule, `labeling.splits` (keyed by the
prompt's external id): trainers get only the train side, evaluation only the held-out side, and
an export with split=test holds exactly those held-out prompts. When every prompt of a project is
held out, trainers get nothing and say so; they never fall back to evaluation data.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Max, Q, QuerySet

from labeling.models import ComparisonTask, Demonstration, Judgment, PreferencePair, Project, Prompt, Response, TaskResponse
from labeling.splits import prompt_is_held_out, split_items
from labeling.transcripts import prompt_transcript
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


def reward_new_judgments_count(*, project: Project) -> int:
    since = reward_last_trained_judgment_id(project=project)
    return judgments_for_training(project=project).filter(pk__gt=since).count()


def judgment_max_id(*, project: Project) -> int:
    return judgments_for_training(project=project).aggregate(m=Max("id"))["m"] or 0


# ----------------------------------------------------------------------------------- reward model


@dataclass
class RewardData:
    groups: list[dict[str, Any]] = field(default_factory=list)  # train prompts
    held_out: list[dict[str, Any]] = field(default_factory=list)  # held-out prompts: validation only
    reference_texts: list[tuple[str, str]] | None = None
    judgments: int = 0
    skipped: int = 0
    until_judgment_id: int = 0
    sha256: str = ""


def _task_slots(task_ids: set[int]) -> dict[int, list[tuple[int, str]]]:
    """(response id, text) per task in slot order, read in chunks."""
    ids, slots = sorted(task_ids), {}
    for start in range(0, len(ids), 5000):
        rows = TaskResponse.objects.filter(task_id__in=ids[start:start + 5000]).order_by("task_id", "position")
        for task_id, response_id, text in rows.values_list("task_id", "response_id", "response__text"):
            slots.setdefault(task_id, []).append((response_id, text))
    return slots


def reward_data_collect(*, project: Project, until_judgment_id: int | None = None) -> RewardData:
    """One group per live judgment (InstructGPT: a judgment is one batch element), responses in slot
    order, ranking as tie groups of indices best first. Groups of held-out prompts (labeling.splits)
    go to `held_out`: the reward model validates on them and never trains on them.
    Reference texts for normalisation: the demonstrations of train prompts."""
    judgments = judgments_for_training(project=project)
    if until_judgment_id is not None:
        judgments = judgments.filter(pk__lte=until_judgment_id)
    judgments = list(judgments)
    slots = _task_slots({j.task_id for j in judgments})
    data = RewardData()
    digest = hashlib.sha256()
    for judgment in judgments:
        task_slots = slots.get(judgment.task_id, [])
        index = {rid: i for i, (rid, _) in enumerate(task_slots)}
        ranking = [[index[r] for r in tie] for tie in (judgment.ranking or []) if all(r in index for r in tie)]
        if sum(len(t) for t in ranking) != len(task_slots) or len(ranking) < 2:
            data.skipped += 1  # fully tied, or a ranking that no longer matches the task: no comparisons
            continue
        prompt = judgment.task.prompt
        group = {"prompt": prompt_rm_text(prompt), "responses": [t for _, t in task_slots], "ranking": ranking}
        (data.held_out if prompt_is_held_out(prompt.external_id) else data.groups).append(group)
        digest.update(json.dumps(group, sort_keys=True).encode())
        data.until_judgment_id = max(data.until_judgment_id, judgment.pk)
    data.judgments = len(judgments)
    data.sha256 = digest.hexdigest()
    demos = Demonstration.objects.filter(project=project).select_related("prompt").order_by("id")[:4096]
    reference = [(prompt_rm_text(d.prompt), d.text) for d in demos if not prompt_is_held_out(d.prompt.external_id)]
    data.reference_texts = reference or None
    return data


# ----------------------------------------------------------------------------------------- policy


def sft_examples_collect(*, project: Project, include_chosen: bool = False, limit: int = 20000) -> list[dict[str, Any]]:
    """Demonstrations as {prompt, response}; with include_chosen also the single best response of each
    live judgment that is not marked both bad. Held-out prompts are left out."""
    demos = list(Demonstration.objects.filter(project=project).select_related("prompt").order_by("id")[:limit])
    examples = [(d.prompt, d.text) for d in demos]
    if include_chosen:
        judgments = list(judgments_for_training(project=project).filter(both_bad=False)[:limit])
        best = {j.pk: j.ranking[0][0] for j in judgments if j.ranking and len(j.ranking) >= 2 and len(j.ranking[0]) == 1}
        texts = dict(Response.objects.filter(pk__in=set(best.values())).values_list("pk", "text"))
        examples += [(j.task.prompt, texts[best[j.pk]]) for j in judgments if j.pk in best and best[j.pk] in texts]
    train, _ = split_items(examples, lambda e: e[0].external_id)
    return [{"prompt": prompt_input(p), "response": text} for p, text in train]


def dpo_pairs_collect(*, project: Project, limit: int = 50000) -> tuple[list[dict[str, Any]], int]:
    """({prompt, chosen, rejected} from the preference pairs of live judgments on train prompts,
    the last judgment id read)."""
    pairs = list(
        PreferencePair.objects.filter(project=project, judgment__superseded_by__isnull=True)
        .select_related("prompt", "chosen", "rejected").order_by("id")[:limit]
    )
    until = max((p.judgment_id for p in pairs), default=0)
    train, _ = split_items(pairs, lambda p: p.prompt.external_id)
    return [{"prompt": prompt_input(p.prompt), "chosen": p.chosen.text, "rejected": p.rejected.text} for p in train], until


def ppo_prompts_collect(*, project: Project, limit: int = 20000) -> list:
    prompts = list(Prompt.objects.filter(project=project).order_by("id")[:limit])
    train, _ = split_items(prompts, lambda p: p.external_id)
    return [prompt_input(p) for p in train]


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
