"""The policy's run task body: SFT, DPO or PPO (training.ml) from the run's parent version on the
project's train-side data (training.selectors.data), registered as a new policy version."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from labeling.models import Project
from django.conf import settings

from training import plan
from training.runspec import trainer_config
from training.models import ModelVersion, TrainingRun
from training.dataset import TrainingDataset, dpo_pairs, held_out_pairs, ppo_prompts, sft_examples
from training.selectors.data import system_prompt_of
from training.selectors.versions import policy_parent_get, trained_reward_get
from training.services.endpoints import is_endpoint_version
from training.services.execution import RunReporter, run_execute, threads_set
from training.services.groups import group_size, group_train
from training.services.runs import run_output_dir, run_params_update, run_succeed_with_version
from training.services.snapshots import run_snapshot_use, snapshot_facts


def policy_train(*, run_id: int, worker: str = "", echo: Callable | None = None) -> ModelVersion | None:
    """The body of the `policy_train` task. The run's kind picks the trainer (sft, dpo, ppo); its
    params["config"] overrides the trainer's config; the parent is the run's base version, else the
    promoted policy. The new version (kind policy, parent = that version) is registered in the same
    transaction that marks the run succeeded; params["promote"] == "always" promotes it there too."""
    return run_execute(run_id=run_id, worker=worker, what="policy", body=lambda run: _policy_train(run, echo))


DPO_EVAL_PAIRS = 256  # held-out pairs a DPO run measures itself on (forward passes only: cheap beside training)

@dataclass
class _Job:
    """One trainer's part of a policy run: its config, what it reports about its data, and the call."""

    config: Any
    stats: dict[str, Any]
    log: str
    train: Callable[[RunReporter], dict[str, Any]]


def _trainer_job(trainer: str, fit: Callable[..., dict[str, Any]], *, rows: list[dict[str, Any]], config: Any,
                 parent: ModelVersion, params: dict[str, Any], output_dir: Path, stats: dict[str, Any], log: str,
                 extra: dict[str, Any] | None = None) -> _Job:
    """An SFT or DPO job: `fit(parent_dir, rows, out_dir, config, progress=, **extra)` in this process, else
    the trainer of that name (training.ml.launch, which reads `extra` from the job) on a group of the run's
    processes, supervised by training.services.groups."""
    processes = group_size(params=params)
    extra = extra or {}

    def train(progress: RunReporter) -> dict[str, Any]:
        if processes == 1:
            return fit(parent.artifact_path, rows, output_dir, config, progress=progress, **extra)
        job = {"parent_dir": parent.artifact_path, "out_dir": str(output_dir), "config": dataclasses.asdict(config),
               **extra}
        return group_train(trainer=trainer, job=job, rows=rows, processes=processes, reporter=progress,
                           scratch=output_dir.with_name(f".group-{output_dir.name}"))

    return _Job(config, {**stats, "processes": processes}, log, train)


def _sft_job(project: Project, dataset: TrainingDataset, parent: ModelVersion, params: dict[str, Any], output_dir: Path,
             defaults: dict) -> _Job:
    from training.ml.sft import SFTConfig, train_sft

    include_chosen = bool(params.get("include_chosen"))
    examples = sft_examples(dataset, include_chosen=include_chosen)
    if not examples:
        raise ValueError(f"no demonstrations{' or chosen responses' if include_chosen else ''} in project {project.slug}")
    return _trainer_job("sft", train_sft, rows=list(examples), config=trainer_config(SFTConfig, params, **defaults),
                        parent=parent, params=params, output_dir=output_dir,
                        stats={"examples": len(examples), "include_chosen": include_chosen},
                        log=f"SFT on {len(examples)} examples from {parent.name}")


def _dpo_job(project: Project, dataset: TrainingDataset, parent: ModelVersion, params: dict[str, Any], output_dir: Path,
             defaults: dict) -> _Job:
    from training.ml.dpo import DPOConfig, train_dpo

    pairs, until = dpo_pairs(dataset), dataset.last_judgment_id
    if not pairs:
        raise ValueError(f"no preference pairs in project {project.slug}")
    config = trainer_config(DPOConfig, params, **defaults)
    held = held_out_pairs(dataset)[:DPO_EVAL_PAIRS]  # the one split's held-out side: never a training pair
    return _trainer_job("dpo", train_dpo, rows=list(pairs), config=config, parent=parent, params=params,
                        output_dir=output_dir, stats={"pairs": len(pairs), "data_until_judgment_id": until},
                        log=f"DPO on {len(pairs)} pairs, reference = parent {parent.name}, beta {config.beta}; "
                            f"{len(held)} held-out pairs measure it", extra={"eval_pairs": held})


def _ppo_job(project: Project, dataset: TrainingDataset, parent: ModelVersion, params: dict[str, Any], output_dir: Path,
             defaults: dict) -> _Job:
    from training.ml.ppo import PPOConfig, train_ppo

    rm = trained_reward_get(project=project)
    if rm is None:
        raise ValueError("PPO needs a promoted, trained reward model")
    prompts = ppo_prompts(dataset)
    if not prompts:
        raise ValueError(f"no prompts in project {project.slug}")
    config = trainer_config(PPOConfig, params, **defaults)
    demos = sft_examples(dataset) if config.ptx_coef > 0 else []
    return _Job(config, {"prompts": len(prompts), "ptx_demonstrations": len(demos), "reward_version": rm.pk},
                f"PPO on {len(prompts)} prompts against reward model {rm.name}, KL beta {config.beta} vs {parent.name}",
                lambda progress: train_ppo(parent.artifact_path, rm.artifact_path, prompts, output_dir, config,
                                           progress=progress, demonstrations=demos))


JOBS = {plan.SFT: _sft_job, plan.DPO: _dpo_job, plan.PPO: _ppo_job}


def _policy_train(run: TrainingRun, echo) -> ModelVersion | None:
    if run.kind not in JOBS:
        raise ValueError(f"a {run.kind} run is not a policy run")
    params, project = run.params or {}, run.project
    threads_set()
    parent = policy_parent_get(run=run)
    if is_endpoint_version(parent):
        raise ValueError(f"{parent.name} is a model endpoint, not weights: promote a trained policy to train from, "
                         "or pick one as the run's parent")
    output_dir = run_output_dir(run=run)
    reporter = RunReporter(run_id=run.pk, echo=echo)
    snapshot, dataset = run_snapshot_use(run=run)
    fixed = {"system_prompt": system_prompt_of(project), "device": settings.PAIRWISE_DEVICE}  # the product's and the operator's
    job = JOBS[run.kind](project, dataset, parent, params, output_dir, fixed)
    run_params_update(run_id=run.pk, output_dir=str(output_dir), parent_version=parent.pk, snapshot=snapshot.pk,
                      **job.stats)
    reporter.log(f"{job.log}; data: snapshot {snapshot.pk}")
    metrics = job.train(reporter)
    metrics["data"] = snapshot_facts(snapshot=snapshot, dataset=dataset)
    reporter.flush()

    fields = {
        "project": project, "kind": ModelVersion.Kind.POLICY, "name": f"{project.slug}-{run.kind}-run{run.pk}",
        "base": parent.base or parent.artifact_path, "artifact_path": output_dir, "metrics": metrics,
        "config": {"trainer": run.kind, "values": dataclasses.asdict(job.config), **job.stats}, "parent": parent,
        "snapshot": snapshot,
    }
    return run_succeed_with_version(run_id=run.pk, output_dir=output_dir, version_fields=fields,
                                    promote=params.get("promote") == "always")
