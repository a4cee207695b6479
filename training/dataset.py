"""The frozen training dataset: what a training run reads, as one JSONL file, and what each trainer
takes from it. Pure Python (no Django): the services write the file once at a run's start (or
the user picks an earlier one), the run and the version it makes point at that snapshot, and the
trainers read only the file. So a model always knows the exact data it came from, and training
from the same snapshot with the same seed gives the same model.

One record a line, in this order: every prompt, then demonstrations, then judgments.

    {"type": "prompt", "prompt_id": ..., "prompt": text or chat messages, "rm_prompt": transcript}
    {"type": "demonstration", "id": ..., "prompt_id": ..., "response": ..., "author": pseudonym}
    {"type": "judgment", "id": ..., "prompt_id": ..., "responses": [K texts in slot order],
     "ranking": [[slot indices], ...] best first (null when it no longer matches the task),
     "annotator": pseudonym, "source": "human", a dataset name or "machine:<name>", "gold": bool, "both_bad": bool,
     "weight": w (only on machine records of a snapshot with sources "both": machine_weight)}
    {"type": "label_model", "model": ..., "targets": "soft" or "hard", "judgments": ..., ...}

With a label model (training.consensus) the judgment records are one per task: "source" is
"label-model", "judgments" says how many it stands for, "ranking" is the consensus and, with soft
targets, "targets": [[i, j, P(slot i beats slot j)], ...] is what the reward loss reads; the
label_model record (at most one, last) says what the fit did, for the model card.

Which judgments it holds (the run's `sources`): "human", today's data (people's and imported
datasets', no machine annotator's); "machine", only the machine annotators'; "both", the two, each
machine record with "weight": machine_weight, which the reward loss weighs its group by
(training.ml.reward.loss). With a label model the consensus is over the human judgments only (a
machine's labels are not a crowd member's vote) and, with "both", the machine records follow as
they are, weighted. DPO and SFT take the machine pairs as they take people's, unweighted.

Every prompt's side of the product's one split (labeling.splits, keyed by prompt_id) decides where
its data goes: trainers get the train side only; the held-out side is for validation and evaluation.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from labeling.ranking import ranking_pairs
from labeling.splits import prompt_is_held_out

FORMAT = "training"  # DatasetSnapshot.format of these files
HUMAN_SOURCES, MACHINE_SOURCES, BOTH_SOURCES = "human", "machine", "both"
DATA_SOURCES = (HUMAN_SOURCES, MACHINE_SOURCES, BOTH_SOURCES)  # a training run's `sources`
MACHINE_SOURCE_PREFIX = "machine:"  # labeling.models.MACHINE_SOURCE_PREFIX (tests/training/test_dataset.py checks they match)


def is_machine(judgment: dict[str, Any]) -> bool:
    """A machine annotator's judgment record (its source is "machine:<name>")."""
    return str(judgment.get("source") or "").startswith(MACHINE_SOURCE_PREFIX)
MAX_REFERENCE_TEXTS = 4096


@dataclass
class TrainingDataset:
    prompts: dict[str, dict[str, Any]] = field(default_factory=dict)  # prompt_id -> record, file order
    demonstrations: list[dict[str, Any]] = field(default_factory=list)
    judgments: list[dict[str, Any]] = field(default_factory=list)
    label_model: dict[str, Any] | None = None  # training.consensus's summary, when a label model made the records

    def prompt(self, prompt_id: str) -> Any:
        return self.prompts[prompt_id]["prompt"]

    def rm_prompt(self, prompt_id: str) -> str:
        return self.prompts[prompt_id]["rm_prompt"]

    @property
    def last_judgment_id(self) -> int:
        """The newest judgment in the snapshot (0 without any): how far a retrain check counts as trained."""
        return max((j["id"] for j in self.judgments), default=0)

    def counts(self) -> dict[str, Any]:
        """Sizes for the card. With a label model, judgments and annotators are those it fitted, and
        consensus_tasks the records it made of them."""
        annotators = {j["annotator"] for j in self.judgments if j.get("annotator")}
        annotators |= {d["author"] for d in self.demonstrations if d.get("author")}
        counts = {"prompts": len(self.prompts), "demonstrations": len(self.demonstrations),
                  "judgments": len(self.judgments), "annotators": len(annotators),
                  "held_out_prompts": sum(prompt_is_held_out(p) for p in self.prompts)}
        machine = sum(map(is_machine, self.judgments))
        human = len(self.judgments) - machine
        if self.label_model is not None:
            human = self.label_model["judgments"]
            counts.update(judgments=human + machine, consensus_tasks=len(self.judgments) - machine,
                          annotators=max(len(annotators), self.label_model["annotators"]))
        weights = {j["weight"] for j in self.judgments if is_machine(j) and "weight" in j}
        counts["sources"] = {"human": human, "machine": machine, **({"machine_weight": weights.pop()} if len(weights) == 1 else {})}
        return counts


# ---------------------------------------------------------------------------------------- the file


def dataset_records(dataset: TrainingDataset) -> Iterator[dict[str, Any]]:
    yield from ({"type": "prompt", **p} for p in dataset.prompts.values())
    yield from ({"type": "demonstration", **d} for d in dataset.demonstrations)
    yield from ({"type": "judgment", **j} for j in dataset.judgments)
    if dataset.label_model is not None:
        yield {"type": "label_model", **dataset.label_model}


def dataset_write(path: str | Path, dataset: TrainingDataset) -> tuple[int, str]:
    """Write next to the target and rename (a reader never sees half a file). (rows, sha256)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial, digest, rows = path.with_name(path.name + ".part"), hashlib.sha256(), 0
    with open(partial, "wb") as out:
        for record in dataset_records(dataset):
            line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
            out.write(line)
            digest.update(line)
            rows += 1
    os.replace(partial, path)
    return rows, digest.hexdigest()


def dataset_read(path: str | Path) -> TrainingDataset:
    """Read a snapshot file; a line that is not a known record is an error naming its number."""
    dataset = TrainingDataset()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                kind = record.pop("type")
            except (ValueError, KeyError, AttributeError) as exc:
                raise ValueError(f"{path}: line {number}: not a training snapshot record ({exc})") from None
            if kind == "prompt":
                dataset.prompts[record["prompt_id"]] = record
            elif kind == "demonstration":
                dataset.demonstrations.append(record)
            elif kind == "judgment":
                dataset.judgments.append(record)
            elif kind == "label_model":
                dataset.label_model = record
            else:
                raise ValueError(f"{path}: line {number}: unknown record type {kind!r}")
    return dataset


# ------------------------------------------------------------------------ what each trainer takes


def _train(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if not prompt_is_held_out(i["prompt_id"])]


def _comparable(judgment: dict[str, Any]) -> bool:
    """A ranking that still covers the task's responses and is not one big tie."""
    ranking = judgment.get("ranking")
    return bool(ranking) and len(ranking) >= 2 and sum(len(t) for t in ranking) == len(judgment["responses"])


def training_prompt_ids(dataset: TrainingDataset) -> set[str]:
    """The prompts a trainer learns from: on the train side, with a judgment or a demonstration."""
    return {i["prompt_id"] for i in _train([*dataset.judgments, *dataset.demonstrations])}


@dataclass
class RewardGroups:
    train: list[dict[str, Any]]
    held_out: list[dict[str, Any]]
    skipped: int  # judgments without comparisons (fully tied, or no longer matching their task)
    reference_texts: list[tuple[str, str]] | None  # demonstrations of train prompts, to set the RM's zero


def reward_groups(dataset: TrainingDataset) -> RewardGroups:
    """One group per judgment (InstructGPT: a judgment is one batch element): the RM's view of the
    prompt, the K responses, the ranking as tie groups of indices."""
    train, held, skipped = [], [], 0
    for j in dataset.judgments:
        if not _comparable(j):
            skipped += 1
            continue
        group = {"prompt": dataset.rm_prompt(j["prompt_id"]), "responses": j["responses"], "ranking": j["ranking"]}
        if j.get("targets") is not None:
            group["targets"] = j["targets"]  # a label model's soft labels (training.ml.reward.data.group_comparisons)
        if j.get("weight") is not None:
            group["weight"] = j["weight"]  # a machine record's machine_weight (training.ml.reward.loss)
        (held if prompt_is_held_out(j["prompt_id"]) else train).append(group)
    reference = [(dataset.rm_prompt(d["prompt_id"]), d["response"]) for d in _train(dataset.demonstrations)]
    return RewardGroups(train, held, skipped, reference[:MAX_REFERENCE_TEXTS] or None)


def sft_examples(dataset: TrainingDataset, *, include_chosen: bool = False) -> list[dict[str, Any]]:
    """Demonstrations of train prompts as {prompt, response}; with include_chosen also the single best
    response of each judgment that is not marked both bad."""
    examples = [{"prompt": dataset.prompt(d["prompt_id"]), "response": d["response"]} for d in _train(dataset.demonstrations)]
    if include_chosen:
        examples += [
            {"prompt": dataset.prompt(j["prompt_id"]), "response": j["responses"][j["ranking"][0][0]]}
            for j in _train(dataset.judgments)
            if not j.get("both_bad") and _comparable(j) and len(j["ranking"][0]) == 1
        ]
    return examples


def dpo_pairs(dataset: TrainingDataset) -> list[dict[str, Any]]:
    """{prompt, chosen, rejected} for every comparison of every judgment on a train prompt, by the
    product's one ranking-to-pairs rule (labeling.ranking.ranking_pairs: ties give no pair). Machine
    records are in it when the snapshot's sources hold them, unweighted: DPO does not read "weight"."""
    return _pairs(dataset, _train(dataset.judgments))


def held_out_pairs(dataset: TrainingDataset) -> list[dict[str, Any]]:
    """The same pairs from the judgments on held-out prompts, which no trainer sees: what a policy's
    preference accuracy is measured on (training.ml.preference_eval)."""
    return _pairs(dataset, [j for j in dataset.judgments if prompt_is_held_out(j["prompt_id"])])


def _pairs(dataset: TrainingDataset, judgments: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"prompt": dataset.prompt(j["prompt_id"]), "chosen": j["responses"][w], "rejected": j["responses"][loser]}
        for j in judgments if _comparable(j)
        for w, loser in ranking_pairs(j["ranking"])
    ]


def agreement(dataset: TrainingDataset) -> float | None:
    """How often two judgments of the same task order a pair of its responses the same way (a tie is
    an order too): agreeing (judgment pair, response pair) cases / all such cases. None when no task
    was judged twice. A label model's records are one per task: its summary kept the judgments' figure."""
    if dataset.label_model is not None:
        return dataset.label_model.get("agreement")
    by_task: dict[tuple, list[dict[int, int]]] = {}
    for j in dataset.judgments:
        if _comparable(j):
            rank = {i: level for level, tie in enumerate(j["ranking"]) for i in tie}
            by_task.setdefault((j["prompt_id"], tuple(j["responses"])), []).append(rank)
    agree = cases = 0
    for ranks in by_task.values():
        for x, y in ((a, b) for n, a in enumerate(ranks) for b in ranks[n + 1:]):
            for i, k in ((i, k) for i in x for k in x if i < k):
                cases += 1
                agree += (x[i] > x[k]) - (x[i] < x[k]) == (y[i] > y[k]) - (y[i] < y[k])
    return agree / cases if cases else None


def ppo_prompts(dataset: TrainingDataset) -> list[Any]:
    return [p["prompt"] for p in _train(dataset.prompts.values())]
