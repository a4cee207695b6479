"""Model cards: README.md with Hugging Face model-card YAML front matter, written into a version folder.

Pure (no Django, no torch). The caller (a training service, after `train_reward_model` or a policy
trainer has renamed its atomic folder into place) gathers the facts and calls
`write_model_card(folder, facts)`; a fact that is None is written as "not recorded".
Risks follow InstructGPT (section 5.3-5.4, ../shared/reference/instructgpt.md): aligned to these
labelers and instructions, not to everyone; it can still make up facts, show bias, and follow
harmful instructions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

CARD_FILE = "README.md"
NOT_RECORDED = "not recorded"


@dataclass
class ModelCardFacts:
    name: str = field(default="", metadata={"help": "Version name shown as the card's title."})
    kind: str = field(default="", metadata={"help": "'reward' or 'policy' (sft, dpo, ppo in method)."})
    method: str | None = field(default=None, metadata={"help": "Training method: reward, sft, dpo, ppo."})
    license: str | None = field(default=None, metadata={"help": "SPDX id of the weights' license (the base's)."})
    base_model: str | None = field(default=None, metadata={"help": "Hub id or name of the base model (never a local path)."})
    installed_base: bool = field(default=False, metadata={"help": (
        "A shared base model installed for every project (not trained by Pairwise): it gets its own card text.")})
    parent: str | None = field(default=None, metadata={"help": "The version this one was trained from."})
    project: str | None = field(default=None, metadata={"help": "Project whose judgments trained it."})
    snapshot_sha256: str | None = field(default=None, metadata={"help": "sha256 of the frozen data snapshot."})
    datasets: list[str] = field(default_factory=list, metadata={"help": "Dataset ids or snapshot names for the YAML."})
    prompts: int | None = field(default=None, metadata={"help": "Distinct prompts in the training data."})
    judgments: int | None = field(default=None, metadata={"help": "Judgments in the training data."})
    annotators: int | None = field(default=None, metadata={"help": "Distinct (pseudonymous) annotators."})
    agreement: float | None = field(default=None, metadata={"help": "Inter-annotator agreement of that data, 0..1."})
    label_model: Mapping[str, Any] | None = field(default=None, metadata={"help": (
        "The label model whose consensus the data was (training.consensus's summary), None for every judgment as given.")})
    sources: Mapping[str, Any] | None = field(default=None, metadata={"help": (
        "Whose judgments trained it: {human: count, machine: count, machine_weight} (training.dataset counts).")})
    training_config: Mapping[str, Any] | None = field(default=None, metadata={"help": "The trainer's config."})
    metrics: Mapping[str, float] | None = field(default=None, metadata={"help": (
        "Evaluation results by name: the model-index's metrics, so no run statistics (seconds, throughput).")})
    evaluation_context: Mapping[str, Any] | None = field(default=None, metadata={"help": (
        "Shown beside the results in the body, not in the model-index: the measured data's size, baselines.")})
    training_results: Mapping[str, Any] | None = field(default=None, metadata={"help": (
        "Statistics of the training run (loss, seconds, throughput, processes), in the body only.")})
    flag_rates: Mapping[str, float] | None = field(default=None, metadata={"help": "Safety flag rates by flag."})
    evaluation: str | None = field(default=None, metadata={"help": "How the metrics were measured."})
    other_evaluations: Mapping[str, Mapping[str, Any]] | None = field(default=None, metadata={
        "help": ("Evaluations on other data by name: {pairs, accuracy, ci95, length_baseline, length_margin_corr, "
                 "accuracy_shorter_chosen, accuracy_longer_chosen, trained_prompts, source}.")})


def _yaml(value: Any) -> str:
    """JSON is YAML: every string is quoted and escaped, so no text can end the front matter."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _text(value: Any) -> str:
    """One line of markdown body: newlines folded, HTML and markdown control characters escaped."""
    if value is None or value == "":
        return NOT_RECORDED
    text = " ".join(str(value).split())
    for char in "\\`*_[]<>|#":
        text = text.replace(char, "\\" + char)
    return text


def _number(value: Any) -> Any:
    """Floats to 4 significant digits for reading; the metadata keeps them whole."""
    return f"{value:.4g}" if isinstance(value, float) else value


def _table(values: Mapping[str, Any] | None) -> str:
    if not values:
        return NOT_RECORDED
    return "| name | value |\n|---|---|\n" + "\n".join(
        f"| {_text(k)} | {_text(_number(v))} |" for k, v in sorted(values.items()))


def front_matter(facts: ModelCardFacts) -> dict[str, Any]:
    """The YAML metadata: license, base_model, tags, datasets, and model-index when there are metrics."""
    meta: dict[str, Any] = {
        "license": facts.license or "other",
        "tags": ["pairwise", "rlhf", facts.method or facts.kind or "model"]
                + (["reward-model", "text-classification"] if facts.kind == "reward" else ["text-generation"]),
        "library_name": "transformers",
    }
    if facts.base_model:
        meta["base_model"] = facts.base_model
    if facts.datasets:
        meta["datasets"] = list(facts.datasets)
    numeric = {k: v for k, v in (facts.metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numeric:
        held_out = f"{facts.project} held-out prompts" if facts.project else "held-out prompts"
        meta["model-index"] = [{"name": facts.name or "model", "results": [{
            "task": {"type": "text-classification" if facts.kind == "reward" else "text-generation"},
            "dataset": {"name": held_out, "type": facts.datasets[0] if facts.datasets else "held-out", "split": "held-out"},
            "metrics": [{"type": k, "name": k, "value": v} for k, v in sorted(numeric.items())],
        }]}]
    for name, result in sorted((facts.other_evaluations or {}).items()):
        if isinstance(result.get("accuracy"), (int, float)):
            meta.setdefault("model-index", [{"name": facts.name or "model", "results": []}])[0]["results"].append({
                "task": {"type": "text-classification"}, "dataset": {"name": name, "type": "preference-pairs"},
                "metrics": [{"type": "accuracy", "name": "pairwise accuracy", "value": result["accuracy"]}],
            })
    return meta


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else NOT_RECORDED


def _other_data(evaluations: Mapping[str, Mapping[str, Any]] | None) -> str:
    """One row per evaluation on other data, next to "the longer answer wins" on the same pairs."""
    if not evaluations:
        return "None recorded (`manage.py evaluate_reward_model --record NAME`)."
    rows = []
    for name, e in sorted(evaluations.items()):
        low, high = e.get("ci95") or (None, None)
        interval = f"{_percent(low)} to {_percent(high)}" if low is not None else NOT_RECORDED
        rows.append(f"| {_text(name)} | {_text(e.get('pairs'))} | {_percent(e.get('accuracy'))} | {interval} | "
                    f"{_percent(e.get('length_baseline'))} | {_by_length(e)} | {_text(e.get('trained_prompts'))} | "
                    f"{_text(e.get('source'))} |")
    return ("| data | pairs | accuracy | 95% interval | longer answer wins | shorter / longer chosen, margin-length r "
            "| prompts it trained on | file |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def _by_length(e: Mapping[str, Any]) -> str:
    """Whether the model only learned length: accuracy where the chosen answer is the shorter and where it is
    the longer one, and the margin's correlation with the length difference (near 0: length is not the signal)."""
    corr = e.get("length_margin_corr")
    if e.get("pairs_shorter_chosen") is None and corr is None:
        return NOT_RECORDED
    r = f"{corr:.2f}" if isinstance(corr, (int, float)) else NOT_RECORDED
    return f"{_percent(e.get('accuracy_shorter_chosen'))} / {_percent(e.get('accuracy_longer_chosen'))}, r = {r}"


def _labels(summary: Mapping[str, Any] | None) -> str:
    """How the judgments became labels, on one line: as given, or a label model's consensus and what
    it left out or weighed down."""
    if not summary:
        return "every judgment as its annotator gave it"
    return _text(
        f"{summary.get('model')} consensus ({summary.get('targets')} targets) of {summary.get('judgments')} judgments "
        f"on {summary.get('tasks')} tasks; {summary.get('excluded_judgments', 0)} judgments of excluded or untrusted "
        f"annotators left out; {summary.get('flagged_annotators', 0)} annotators flagged, their "
        f"{summary.get('flagged_judgments', 0)} judgments down-weighted by the model; "
        f"{summary.get('flips_vs_majority', 0)} response pairs decided against majority vote")


def _sources(sources: Mapping[str, Any] | None) -> str:
    """Whose judgments trained it, on one line: people's, machine annotators', or both and how much
    a machine label weighed against a person's."""
    if not sources:
        return NOT_RECORDED
    human, machine = int(sources.get("human") or 0), int(sources.get("machine") or 0)
    if not machine:
        return _text(f"human ({human} judgments)")
    if not human:
        return _text(f"machine ({machine} judgments)")
    weight = sources.get("machine_weight")
    return _text(f"human and machine ({human} human, {machine} machine judgments"
                 + (f"; machine weight {weight:g}" if isinstance(weight, (int, float)) else "") + ")")


def model_card(facts: ModelCardFacts | Mapping[str, Any]) -> str:
    """The card's text. Shape: facts -> README.md content (front matter + markdown)."""
    if not isinstance(facts, ModelCardFacts):
        known = set(ModelCardFacts.__dataclass_fields__)
        facts = ModelCardFacts(**{k: v for k, v in dict(facts).items() if k in known})
    meta = front_matter(facts)
    front = "\n".join(f"{key}: {_yaml(value)}" for key, value in meta.items())
    if facts.installed_base:
        return f"---\n{front}\n---\n\n" + _base_body(facts)
    agreement = None if facts.agreement is None else f"{facts.agreement:.3f}"
    config = NOT_RECORDED if facts.training_config is None else "```json\n" + json.dumps(
        dict(facts.training_config), indent=2, sort_keys=True, default=str).replace("```", "'''") + "\n```"
    return f"""---
{front}
---

# {_text(facts.name or "Model")}

A {_text(facts.kind)} model trained by Pairwise ({_text(facts.method)}).

## Lineage

- Base model: {_text(facts.base_model)}
- Parent version: {_text(facts.parent)}
- Project: {_text(facts.project)}
- Data snapshot sha256: {_text(facts.snapshot_sha256)}

## Training data

- Prompts: {_text(facts.prompts)}
- Judgments: {_text(facts.judgments)}
- Annotators (pseudonymous): {_text(facts.annotators)}
- Agreement: {_text(agreement)}
- Labels: {_labels(facts.label_model)}
- Sources: {_sources(facts.sources)}

## Training config

{config}

## Evaluation

Method: {_text(facts.evaluation)}

{_table({**(facts.evaluation_context or {}), **(facts.metrics or {})})}

### Training run

{_table(facts.training_results)}

### On other data

{_other_data(facts.other_evaluations)}

### Safety flag rates

{_table(facts.flag_rates)}

## Intended use

Research and product iteration on the project named above: ranking or generating responses for
prompts like those its annotators judged. A reward model scores (prompt, response) pairs; its
scores are relative (normalised so reference responses average 0), not calibrated probabilities.

## Limitations

It learned the preferences of a small group of annotators under this project's instructions, not
of everyone its outputs may affect. Held-out metrics come from the same distribution as the
training prompts and say little about other domains or languages.

## Risks

- Misinformation: a policy can state made-up facts fluently; a reward model can prefer confident,
  long or agreeable answers over correct ones.
- Bias: annotators' and prompts' biases are learned and can be amplified by optimisation.
- Transparency: who labeled, with which instructions and data, is recorded above; facts marked
  "{NOT_RECORDED}" were not available when this card was written.
"""


def _base_body(facts: ModelCardFacts) -> str:
    """A shared base model's card: what it is and what Pairwise does with it. Pairwise did not train
    it, so there is no training data, config or evaluation of its own to report."""
    role = ("the reward backbone: project reward models are trained on it (it has no reward head, so it "
            "scores nothing by itself)" if facts.kind == "reward" else
            "the first policy: project policies are trained from it and it writes the first candidate responses")
    return f"""# {_text(facts.name or "Base model")}

A shared base model installed for every project ({_text(facts.base_model)}); Pairwise did not train it.
It is {role}.

## Source

- Model: {_text(facts.base_model)}
- License: {_text(facts.license)}

Its training data, evaluation and limitations are described by its authors' own model card.

## Risks

It was not aligned to any project's annotators: like any pretrained model it can state made-up facts
fluently, reflect the biases of its training data, and follow harmful instructions.
"""


def write_model_card(folder: str | Path, facts: ModelCardFacts | Mapping[str, Any]) -> Path:
    """Write README.md into a version folder (after the trainer's atomic rename; the trainers leave
    README.md free for it) and return its path. Overwrites an older card."""
    path = Path(folder) / CARD_FILE
    partial = path.with_name(CARD_FILE + ".part")
    partial.write_text(model_card(facts), encoding="utf-8")
    partial.replace(path)
    return path


__all__ = ["ModelCardFacts", "model_card", "front_matter", "write_model_card", "CARD_FILE", "NOT_RECORDED"]
