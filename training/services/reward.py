"""The reward model's run task body (collect ranked groups, train, register and maybe promote the
version) and its evaluation on a preference file. Heavy imports (torch, training.ml) are done
inside functions, so web and beat processes never load them."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from typing import Any, Callable, Sequence

from django.core.exceptions import ValidationError

from django.conf import settings

from config.tasks_send import task_send_on_commit
from labeling.models import Project, TaskResponse
from training import plan
from training.runspec import trainer_config
from training.dataset import reward_groups
from training.ml.preference_file import PAIR_FIELDS
from training.models import ModelVersion, TrainingRun
from training.selectors.data import prompt_rm_text
from training.selectors.versions import model_version_promoted_get, prompt_key, reward_base_get, version_trained_prompts
from training.services.execution import RunReporter, run_execute, threads_set
from training.services.groups import group_size, group_train
from training.services.runs import run_output_dir, run_params_update, run_succeed_with_version
from training.services.snapshots import run_snapshot_use, snapshot_facts, snapshot_mix_check, snapshot_read
from training.services.versions import model_version_evaluation_record


def reward_model_train(
    *, run_id: int, worker: str = "", echo: Callable[[float, dict[str, Any]], None] | None = None,
) -> ModelVersion | None:
    """The body of the `reward_model_train` task: start the run, collect groups from the judgments,
    train, then register the version and finish the run in one transaction.

    Returns the new version, or None when the run was not QUEUED (duplicate delivery), failed, or was
    cancelled/reaped meanwhile. Errors are recorded on the run, never raised (nothing to retry).
    """
    return run_execute(run_id=run_id, worker=worker, what="reward", body=lambda run: _reward_model_train(run, echo))


def _reward_base(run: TrainingRun) -> tuple[str, ModelVersion | None]:
    """The backbone: --base / params["base"], else the run's base version, else a registered reward base, else MiniLM."""
    params = run.params or {}
    if params.get("base"):
        return str(params["base"]), None
    if run.base_version is not None:
        return run.base_version.artifact_path, run.base_version
    base = reward_base_get()
    if base is not None:
        return base.artifact_path, base
    from training.ml.reward.config import default_reward_base

    return str(default_reward_base()), None


def _reward_model_train(run: TrainingRun, echo) -> ModelVersion | None:
    from training.ml.reward.config import RewardConfig
    from training.ml.reward.loop import train_reward_model

    output_dir = run_output_dir(run=run)
    reporter = RunReporter(run_id=run.pk, echo=echo)
    params = run.params or {}
    threads_set()
    snapshot, dataset = run_snapshot_use(run=run)
    data = reward_groups(dataset)
    mixed, mixed_facts = _mixed_groups(run, params.get("mix_snapshots") or ())
    train = data.train + mixed
    if not train:
        raise ValueError(f"no judgments with comparisons on train prompts in project {run.project.slug} "
                         f"({data.skipped} without comparisons, {len(data.held_out)} on held-out prompts)")
    base, base_version = _reward_base(run)
    overrides = {k: v for k, v in (params.get("config") or {}).items() if k != "base_model"}  # the backbone is chosen above
    config = trainer_config(RewardConfig, {"config": overrides}, base_model=base, device=settings.PAIRWISE_DEVICE)
    until = dataset.last_judgment_id
    run_params_update(
        run_id=run.pk, output_dir=str(output_dir), base=base, data_until_judgment_id=until,
        groups=len(train) + len(data.held_out), held_out_groups=len(data.held_out), mixed=mixed_facts,
        judgments=len(dataset.judgments), skipped_judgments=data.skipped, snapshot=snapshot.pk, data_sha256=snapshot.sha256,
        reference="demonstrations" if data.reference_texts else "chosen responses", processes=group_size(params=params),
    )
    reporter.log(f"{len(data.train)} groups from {len(dataset.judgments)} judgments of snapshot {snapshot.pk} "
                 f"({data.skipped} without comparisons)"
                 + "".join(f", {m['groups']} from {m['project']}'s snapshot {m['snapshot']}" for m in mixed_facts)
                 + f"; base {base}")
    processes = group_size(params=params)
    if processes == 1:
        metrics = train_reward_model(train, config, output_dir, progress=reporter,
                                     reference_texts=data.reference_texts, val_groups=data.held_out)
    else:
        job = {"out_dir": str(output_dir), "config": dataclasses.asdict(config), "val_groups": list(data.held_out),
               "reference_texts": [list(pair) for pair in data.reference_texts or []]}
        metrics = group_train(trainer="reward", job=job, rows=list(train), processes=processes, reporter=reporter,
                              scratch=output_dir.with_name(f".group-{output_dir.name}"))
    metrics["data"] = snapshot_facts(snapshot=snapshot, dataset=dataset) | ({"mixed": mixed_facts} if mixed_facts else {})
    reporter.flush()
    parent = model_version_promoted_get(project=run.project, kind=ModelVersion.Kind.REWARD)
    promoted, metrics["promotion"] = _promotion(run, metrics, parent)
    fields = {
        "project": run.project, "kind": ModelVersion.Kind.REWARD, "name": f"{run.project.slug}-reward-run{run.pk}",
        "base": base, "artifact_path": output_dir, "metrics": metrics,
        "config": {**dataclasses.asdict(config), "data_sha256": snapshot.sha256, "data_until_judgment_id": until},
        "parent": parent if parent is not None and parent.project_id == run.project_id else base_version,
        "snapshot": snapshot,
    }
    version = run_succeed_with_version(run_id=run.pk, output_dir=output_dir, version_fields=fields, promote=promoted)
    if version is not None and run.project.queue_order != Project.QueueOrder.STARTED_FIRST:
        # A reward round ends: the queue's acquisition scores follow the (maybe new) promoted model and
        # the labels it saw. Its own task, so the run is done (and the training slot free) meanwhile.
        task_send_on_commit("training.tasks.acquisition_scores_update", project_id=run.project_id)
    return version


def _promotion(run: TrainingRun, metrics: dict[str, Any], parent: ModelVersion | None) -> tuple[bool, dict[str, Any]]:
    """Whether the run promotes its version, and why (kept as metrics["promotion"], shown on the
    training and version pages): the run's promote param asks, the held-out evidence decides."""
    promote = (run.params or {}).get("promote", plan.DEFAULT_PROMOTE[plan.REWARD])
    if promote == "never" or (promote == "if_none" and parent is not None):
        reason = "the run was asked not to promote" if promote == "never" else "a reward model was promoted already"
        return False, {"promoted": False, "reason": reason}
    ok, reason = plan.reward_promotion_evidence(
        metrics=metrics, min_heldout_groups=run.project.reward_promote_min_heldout_groups)
    return ok, {"promoted": ok, "reason": reason}


def _mixed_groups(run: TrainingRun, snapshot_ids: Sequence[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Other projects' frozen training data, mixed into a reward run's (params["mix_snapshots"]),
    checked again here against whoever asked for the run (a round's params come from elsewhere
    than run_request): the train side of each, so no model trains on any project's held-out
    prompts. Returns (groups, facts per snapshot for the version's metrics)."""
    groups, facts = [], []
    for snapshot_id in snapshot_ids:
        try:
            snapshot = snapshot_mix_check(project=run.project, snapshot_id=int(snapshot_id), user=run.requested_by)
        except ValidationError as exc:
            raise ValueError("; ".join(exc.messages)) from None
        more = reward_groups(snapshot_read(snapshot=snapshot)).train
        groups += more
        facts.append({"snapshot": snapshot.pk, "project": snapshot.project.slug, "sha256": snapshot.sha256, "groups": len(more)})
    return groups, facts


# The reward models a process scores with (a web process's suggestions, a worker's reward-model machine
# annotators): loading one costs seconds, a score milliseconds, and a project has one promoted version at
# a time, so the few in use stay loaded. Keyed by the version and its folder, so a re-registered folder is
# loaded afresh.
_LOADED: dict[tuple[int, str], tuple[Any, Any, Any]] = {}
_LOADED_LOCK = threading.Lock()
LOADED_MAX = 2


def reward_model_loaded(*, version: ModelVersion) -> tuple[Any, Any, Any]:
    """(model, tokenizer, config) of a reward version, loaded once per process (the LOADED_MAX most
    recently used stay). ValidationError when its files are gone."""
    from training.ml.reward.artifact import load_reward_model, reward_config_path

    key = (version.pk, str(version.artifact_path))
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED[key] = _LOADED.pop(key)  # most recently used last
            return _LOADED[key]
        if reward_config_path(version.artifact_path) is None:
            raise ValidationError(f"The files of version {version.pk} are gone from {version.artifact_path}.")
        loaded = load_reward_model(version.artifact_path)
        _LOADED[key] = loaded
        while len(_LOADED) > LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        return loaded


def reward_task_scores(*, version: ModelVersion, task) -> list[tuple[int, float]]:
    """(response id, reward) of a task's responses in its slot order, on the reward model's own view of
    the prompt: what a suggestion and a reward-model machine annotator both judge by."""
    from training.ml.reward.artifact import score

    slots = list(TaskResponse.objects.filter(task_id=task.pk).order_by("position")
                 .values_list("response_id", "response__text"))
    model, tokenizer, config = reward_model_loaded(version=version)
    rewards = score(model, tokenizer, [prompt_rm_text(task.prompt)] * len(slots), [text for _, text in slots],
                    max_length=config.max_length)
    return [(rid, float(r)) for (rid, _), r in zip(slots, rewards)]


EVALUATION_NAME_MAX = 64
SYNC_EVALUATION_MAX_RECORDS = 20000  # what a web request scores (API, console); the command takes any number


def reward_model_evaluate(
    *, version: ModelVersion, records: list[dict[str, Any]], max_length: int | None = None, with_margins: bool = False,
    record_as: str = "", source: str = "",
) -> dict[str, Any]:
    """Accuracy of r(chosen) > r(rejected) on {prompt, chosen, rejected} records: {pairs, accuracy,
    ci95 (bootstrap over pairs), mean_margin, log_loss, length_baseline, by_length} (training.ml.reward.evaluate.
    length_report: the longer-answer-wins baseline, and both accuracies by how much longer the chosen
    answer is; length_dependence: length_margin_corr, accuracy_shorter_chosen, accuracy_longer_chosen
    and their pair counts), and trained_prompts: how many records' prompts the version trained on (None when it
    has no snapshot to check), so "on data it never saw" can be checked rather than assumed.
    with_margins adds the per-record margins r(chosen) - r(rejected). record_as stores the result
    under that name on the version (model_version_evaluation_record: the training page and the
    model card show it), with source, the file it came from."""
    name = record_as.strip()
    if record_as and not 0 < len(name) <= EVALUATION_NAME_MAX:
        raise ValidationError(f"An evaluation name has 1 to {EVALUATION_NAME_MAX} characters.")
    if version.kind != ModelVersion.Kind.REWARD or (version.config or {}).get("role") == "base":
        raise ValidationError("Only a trained reward model can be evaluated.")
    from training.ml.evaluate import win_rate_interval
    from training.ml.reward.evaluate import margin_outcomes, margin_report, pair_margins
    from training.ml.reward.artifact import load_reward_model, reward_config_path

    for i, record in enumerate(records):
        missing = [k for k in PAIR_FIELDS if not isinstance(record.get(k), str)]
        if missing:
            raise ValidationError(f"record {i + 1}: missing or non-string {', '.join(missing)}")
    if reward_config_path(version.artifact_path) is None:
        raise ValidationError(f"The files of version {version.pk} are gone from {version.artifact_path}.")
    model, tokenizer, config = load_reward_model(version.artifact_path)
    margins = pair_margins(model, tokenizer, records, max_length=max_length or config.max_length) if records else []
    result = margin_report(margins, [r["chosen"] for r in records], [r["rejected"] for r in records])
    result["ci95"] = list(win_rate_interval(margin_outcomes(margins))) if margins else None
    trained = version_trained_prompts(version=version)
    result["trained_prompts"] = None if trained is None else sum(prompt_key(r["prompt"]) in trained for r in records)
    if name:
        model_version_evaluation_record(version=version, name=name, result=result, source=source,
                                        records_sha256=_records_digest(records))
    return result | ({"margins": margins} if with_margins else {})


def _records_digest(records: list[dict[str, Any]]) -> str:
    """sha256 of the pairs themselves (prompt, chosen, rejected, in order): which data an evaluation saw."""
    digest = hashlib.sha256()
    for r in records:
        digest.update((json.dumps([r["prompt"], r["chosen"], r["rejected"]], ensure_ascii=False) + "\n").encode("utf-8"))
    return digest.hexdigest()
