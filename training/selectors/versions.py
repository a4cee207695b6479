"""Reads of the model registry: versions of a project (and the shared base models), the promoted
version of a kind, the parent a policy run trains from, the reward backbone, and human flag rates."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db.models import QuerySet

from labeling.models import DatasetSnapshot, Judgment, Project, TaskResponse
from training.ml.card import CARD_FILE, ModelCardFacts, model_card
from training.models import ModelVersion, TrainingRun

# training.ml.lora's marker files, without importing torch into web processes.
ADAPTER_FILES = ("adapter_config.json", "pairwise_adapter.json")
# training.ml.reward.artifact.reward_config_path's test, without importing torch into web processes: a
# trained reward model's folder holds all the files of one of these sets (the shared config name beside the
# modeling file now, the old config name before), a bare backbone or a policy none.
REWARD_FOLDER_FILES = (("pairwise_config.json", "modeling_pairwise_reward.py"), ("reward_config.json",))


def model_version_list(*, project: Project | None = None, kind: str | None = None, include_base: bool = True) -> QuerySet[ModelVersion]:
    versions = ModelVersion.objects.select_related("project", "parent").order_by("-created_at", "-id")
    if project is not None:
        versions = versions.filter(project=project) | (versions.filter(project__isnull=True) if include_base else versions.none())
    if kind:
        versions = versions.filter(kind=kind)
    return versions


def model_version_get(*, version_id: int) -> ModelVersion | None:
    return ModelVersion.objects.select_related("project").filter(pk=version_id).first()


def model_version_promoted_get(*, project: Project | None, kind: str) -> ModelVersion | None:
    """The project's promoted version of a kind, else the promoted shared base model of that kind."""
    found = None
    if project is not None:
        found = ModelVersion.objects.filter(project=project, kind=kind, promoted=True, status=ModelVersion.Status.READY).first()
    if found is None:
        found = (
            ModelVersion.objects.filter(project__isnull=True, kind=kind, promoted=True, status=ModelVersion.Status.READY)
            .order_by("-created_at").first()
        )
    return found


def base_version_get(*, kind: str, artifact_path: str) -> ModelVersion | None:
    """A shared (project-less) version registered for this folder."""
    return ModelVersion.objects.filter(project__isnull=True, kind=kind, artifact_path=artifact_path).first()


def base_policy_promoted_exists() -> bool:
    return ModelVersion.objects.filter(project__isnull=True, kind=ModelVersion.Kind.POLICY, promoted=True).exists()


def reward_base_get() -> ModelVersion | None:
    """The newest registered shared reward backbone (install_base_models), if any."""
    return ModelVersion.objects.filter(
        project__isnull=True, kind=ModelVersion.Kind.REWARD, config__role="base", status=ModelVersion.Status.READY,
    ).order_by("-created_at").first()


def trained_reward_get(*, project: Project) -> ModelVersion | None:
    """The promoted reward model, if it is a trained one (a bare backbone has no head to score with)."""
    rm = model_version_promoted_get(project=project, kind=ModelVersion.Kind.REWARD)
    if rm is None or not any(all((Path(rm.artifact_path) / n).is_file() for n in files) for files in REWARD_FOLDER_FILES):
        return None
    return rm


def policy_parent_get(*, run: TrainingRun) -> ModelVersion:
    """The version a policy run starts from: its base version, else the promoted policy."""
    parent = run.base_version or model_version_promoted_get(project=run.project, kind=ModelVersion.Kind.POLICY)
    if parent is None or parent.kind != ModelVersion.Kind.POLICY:
        raise ValueError("no promoted policy version (run manage.py install_base_models)")
    return parent


REWARD_EVALUATION = ("Pairwise accuracy and log loss of r(chosen) > r(rejected) on the judgments of held-out prompts "
                     "(labeling/splits.py), which it never trained on.")
POLICY_EVALUATION = ("Against its parent on held-out prompts (training/ml/evaluate.py): win rate and mean score by the "
                     "project's reward model, KL to the parent, perplexity, BLEU and ROUGE-L on held-out demonstrations; "
                     "preference accuracy on the held-out prompts' human pairs (the share where it gives the chosen answer "
                     "the higher log-probability; training/ml/preference_eval.py), which needs no learned judge, and DPO's "
                     "implicit reward accuracy against the parent; flag rates from human judgments of its responses.")


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# What a card's model-index holds: a version's results on its held-out prompts, never statistics
# of the run that made it (seconds, comparisons_per_s, processes go to the card's body).
REWARD_RESULTS = ("val_accuracy", "val_log_loss")
REWARD_CONTEXT = ("val_groups", "val_comparisons", "val_length_baseline")
POLICY_RESULTS = ("win_rate_vs_parent", "win_rate_vs_base", "reward_mean", "kl_per_token", "kl_per_response",
                  "perplexity", "bleu", "rouge_l", "pref_accuracy_policy", "pref_accuracy_delta", "implicit_reward_accuracy",
                  "implicit_margin_mean")
POLICY_CONTEXT = ("prompts", "demonstrations", "parent_reward_mean", "eval_pairs", "pref_accuracy_parent",
                  "pref_accuracy_delta_ci95")
TRAINING_RESULTS = ("train_loss", "final_train_loss", "comparisons", "groups", "train_seconds", "seconds",
                    "comparisons_per_s", "processes", "precision", "device")


def _pick(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: values[k] for k in keys if values.get(k) is not None}


def base_model_name(*, version: ModelVersion) -> str | None:
    """What a card's base_model says: the Hub id recorded when the shared base was installed
    (config["model_id"]), else that base's name, else the last part of a folder path; never a local
    absolute path (it means nothing off this machine and tells where the files are)."""
    base = version.base or ""
    shared = version if version.project_id is None else (
        ModelVersion.objects.filter(project__isnull=True, artifact_path=base).order_by("-created_at").first() if base else None)
    if shared is not None:
        return (shared.config or {}).get("model_id") or shared.name or None
    if base.startswith(("/", "./", "../", "~")) or "\\" in base or Path(base).is_absolute():
        return Path(base).name or None
    return base or None


def model_card_facts(*, version: ModelVersion) -> ModelCardFacts:
    """What a version's model card says, from the registry: lineage, the data snapshot's facts
    (metrics["data"]), the config, the metrics (its evaluation's, once it has one) and flag rates."""
    metrics, config = version.metrics or {}, version.config or {}
    data = metrics.get("data") or {}
    flags = version_flag_rates(version_ids=[version.pk]).get(version.pk) or {}
    flag_rates = dict(flags.get("flag_rates") or {})
    if flags.get("any_flag_rate") is not None:
        flag_rates["any flag"] = flags["any_flag_rate"]
    reward = version.kind == ModelVersion.Kind.REWARD
    results = metrics if reward else (metrics.get("evaluation") or {})
    base_model = base_model_name(version=version)
    if config.get("base_model"):  # the trainer's config names the backbone by its folder: the card names the model
        config = {**config, "base_model": base_model}
    return ModelCardFacts(
        name=version.name, kind=version.kind, method="reward" if reward else config.get("trainer"),
        base_model=base_model, parent=version.parent.name if version.parent_id else None,
        installed_base=version.project_id is None and config.get("role") in ("base", "policy-base"),
        project=version.project.slug if version.project_id else None,
        snapshot_sha256=data.get("sha256") or (version.snapshot.sha256 if version.snapshot_id else None),
        datasets=[f"pairwise-snapshot-{i}" for i in [data.get("snapshot")] + [m.get("snapshot") for m in data.get("mixed") or []] if i],
        prompts=data.get("prompts"), judgments=data.get("judgments"), annotators=data.get("annotators"),
        agreement=data.get("agreement"), label_model=data.get("label_model"), sources=data.get("sources"), training_config=config or None,
        metrics=_numbers(_pick(results, REWARD_RESULTS if reward else POLICY_RESULTS)) or None,
        evaluation_context=_pick(results, REWARD_CONTEXT if reward else POLICY_CONTEXT) or None,
        training_results=_pick(metrics, TRAINING_RESULTS) or None, flag_rates=flag_rates or None,
        evaluation=REWARD_EVALUATION if reward else POLICY_EVALUATION,
        other_evaluations=metrics.get("evaluations") or None,
    )


def model_card_text(*, version: ModelVersion) -> str:
    """The card in the version's folder, else the card its registry facts make now (base models, old versions)."""
    path = Path(version.artifact_path) / CARD_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else model_card(model_card_facts(version=version))


def policy_root_get(*, version: ModelVersion) -> ModelVersion:
    """The first policy of a version's lineage (its parent's parent's ...): the common scale that
    versions of several rounds are compared on."""
    root, seen = version, {version.pk}
    while root.parent_id is not None and root.parent_id not in seen:
        root = root.parent
        seen.add(root.pk)
    return root


def policy_win_rate_series(*, project: Project) -> list[dict[str, Any]]:
    """Evaluated policy versions in creation order, each with its win rate against the lineage's first
    policy (against its parent when that is the first policy) and the interval, for the runs page."""
    out = []
    versions = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.POLICY).order_by("created_at", "id")
    for version in versions:
        evaluation = (version.metrics or {}).get("evaluation") or {}
        if evaluation.get("win_rate_vs_base") is not None:
            rate, interval = evaluation["win_rate_vs_base"], evaluation.get("win_rate_vs_base_ci95")
        else:
            rate, interval = evaluation.get("win_rate_vs_parent"), evaluation.get("win_rate_vs_parent_ci95")
        if rate is not None:
            out.append({"step": len(out) + 1, "version": version.pk, "name": version.name, "win_rate": rate,
                        "ci95": interval})
    return out


def reward_accuracy_series(*, project: Project) -> list[dict[str, Any]]:
    """Trained reward versions in creation order with their held-out accuracy, for the runs page's plot."""
    versions = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD).order_by("created_at", "id")
    accuracies = [(v, (v.metrics or {}).get("val_accuracy")) for v in versions]
    return [{"step": i + 1, "version": v.pk, "name": v.name, "val_accuracy": a}
            for i, (v, a) in enumerate((v, a) for v, a in accuracies if isinstance(a, (int, float)))]


def version_flag_rates(*, version_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per model version, over live human judgments of tasks showing its responses (in any project,
    A/B evaluations included): responses judged, the share flagged at all, and each flag's share."""
    ids = sorted({int(v) for v in version_ids if v is not None})
    if not ids:
        return {}
    by_task: dict[int, list[tuple[int, int]]] = {}
    for task_id, response_id, version_id in TaskResponse.objects.filter(
        response__model_version_id__in=ids
    ).values_list("task_id", "response_id", "response__model_version_id").iterator(2000):
        by_task.setdefault(task_id, []).append((response_id, version_id))
    seen: dict[int, int] = {v: 0 for v in ids}
    flagged: dict[int, int] = {v: 0 for v in ids}
    per_flag: dict[int, dict[str, int]] = {v: {} for v in ids}
    tasks = list(by_task)
    for start in range(0, len(tasks), 2000):
        judgments = Judgment.objects.filter(
            task_id__in=tasks[start:start + 2000], superseded_by__isnull=True, source="human",
        ).values_list("task_id", "flags")
        for task_id, flags in judgments.iterator(2000):
            for response_id, version_id in by_task[task_id]:
                keys = set((flags or {}).get(str(response_id)) or [])
                seen[version_id] += 1
                flagged[version_id] += bool(keys)
                for key in keys:
                    per_flag[version_id][key] = per_flag[version_id].get(key, 0) + 1
    return {
        v: {"responses_judged": seen[v], "any_flag_rate": flagged[v] / seen[v] if seen[v] else None,
            "flag_rates": {k: c / seen[v] for k, c in sorted(per_flag[v].items())}}
        for v in ids
    }


def version_lineage(*, version: ModelVersion) -> list[ModelVersion]:
    """The version's ancestors, parent first, up to the first policy or base model."""
    chain, seen, current = [], {version.pk}, version
    while current.parent_id is not None and current.parent_id not in seen:
        current = current.parent
        seen.add(current.pk)
        chain.append(current)
    return chain


def version_run_get(*, version: ModelVersion) -> TrainingRun | None:
    """The training run that made the version (None for base models and imports)."""
    return TrainingRun.objects.filter(result_version=version).order_by("-id").first()


def version_is_adapter(*, version: ModelVersion) -> bool:
    """A LoRA version: its folder holds adapters on its parent's folder, not full weights."""
    return all((Path(version.artifact_path) / name).is_file() for name in ADAPTER_FILES)


def prompt_key(text: str) -> str:
    """How prompts are matched across files and snapshots: whitespace folded, case ignored (another
    file of the same conversations may break, pad or capitalise them differently)."""
    return " ".join(str(text).split()).casefold()


def version_trained_prompts(*, version: ModelVersion) -> set[str] | None:
    """prompt_key of every prompt a version trained on: those of its snapshot, and of the snapshots
    mixed into its run (metrics["data"]["mixed"]), on the training side of the split, with a judgment
    or a demonstration. None when one of them cannot be read (shared bases, versions older than
    snapshots, a file deleted since): then nobody can tell."""
    from training.dataset import dataset_read, training_prompt_ids

    if version.snapshot_id is None:
        return None
    mixed = [m.get("snapshot") for m in ((version.metrics or {}).get("data") or {}).get("mixed") or []]
    paths = [version.snapshot.path] + list(DatasetSnapshot.objects.filter(pk__in=mixed).values_list("path", flat=True))
    if len(paths) != 1 + len(set(mixed)) or not all(Path(p).is_file() for p in paths):
        return None
    keys: set[str] = set()
    for path in paths:
        dataset = dataset_read(path)
        keys |= {prompt_key(dataset.rm_prompt(pid)) for pid in training_prompt_ids(dataset)}
    return keys
