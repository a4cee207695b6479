"""The shape of the training loop, as plain data and pure functions (no Django, no torch): which
step of a round follows which, which task runs each kind of run, what a run's params default to,
and whether an evaluated policy is promoted. Services, APIs, views and commands all ask here, so
a default is decided once.

A round is a chain of runs sharing a pipeline_id:

    reward retrain -> policy retrain (sft | dpo | ppo) -> evaluation (+ optional auto-promotion)
    -> candidate generation from the promoted policy

Each step is its own single-flight run and task. When a step succeeds, the next one is queued in
the same transaction (training.services.rounds.round_advance), so a step that fails or is
cancelled ends the round and a rolled-back success queues nothing.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

REWARD, SFT, DPO, PPO, EVALUATE, CANDIDATES = "reward", "sft", "dpo", "ppo", "evaluate", "candidates"
RUN_KINDS = (REWARD, SFT, DPO, PPO, EVALUATE, CANDIDATES)
POLICY_KINDS = (SFT, DPO, PPO)
TRAINING_KINDS = (REWARD, *POLICY_KINDS)

# Tasks are sent by name, so services never import the task module (which imports services).
TASK_OF_KIND = {
    REWARD: "training.tasks.reward_model_train",
    SFT: "training.tasks.policy_train",
    DPO: "training.tasks.policy_train",
    PPO: "training.tasks.policy_train",
    EVALUATE: "training.tasks.policy_evaluate",
    CANDIDATES: "training.tasks.candidates_generate",
}

DEFAULT_POLICY_KIND = DPO
DEFAULT_PROMOTE_METRIC = "win_rate"
PROMOTE_METRICS = ("win_rate", "reward")
PROMOTE_CHOICES = ("always", "if_none", "never")
# A new reward model replaces the old one at once (nothing else can judge it); a new policy waits
# for its evaluation, because it is what annotators see next.
DEFAULT_PROMOTE = {REWARD: "always", SFT: "never", DPO: "never", PPO: "never"}


class PlanError(ValueError):
    """A bad round or run option; `field` names the input it came from."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


# ------------------------------------------------------------------------------------ run params


def jsonable(value: Any) -> Any:
    """A JSON-safe copy (params and metrics go into JSON columns; dates and paths become strings)."""
    return json.loads(json.dumps(value, default=str))


def trainer_config(cls: type, params: dict[str, Any], **fixed: Any) -> Any:
    """A trainer's config dataclass: `fixed` values (chosen by the product, e.g. the backbone or the
    project's system prompt), overridden by the run's params["config"] where it names a field."""
    known = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in (params.get("config") or {}).items() if k in known}
    return cls(**{**fixed, **overrides})



# The trainers that run on a group of processes (training.ml.launch), and the largest group.
GROUP_KINDS = frozenset({SFT, DPO, REWARD})
MAX_PROCESSES = 64
# Other projects' frozen training data a reward run may add to its own (public preference sets
# imported as projects, say): the reward model then transfers further (bench/reward_transfer.py
# --leave-one-out; README, Benchmarks).
MAX_MIXED_SNAPSHOTS = 16


def run_params(
    *, kind: str, trigger: str, config: dict[str, Any] | None = None, promote: str | None = None, base: str = "",
    include_chosen: bool = False, auto_promote_margin: float | None = None, promote_metric: str = "",
    max_prompts: int | None = None, snapshot: int | None = None, include_gold: bool = False,
    filters: dict[str, Any] | None = None, min_gold_accuracy: float | None = None, processes: int | None = None,
    accelerate_config: str = "", mix_snapshots: list[int] | None = None,
) -> dict[str, Any]:
    """The params of a run started by hand (API, dashboard, command), with the per-kind defaults:
    training runs say whether they promote and which data they read (a frozen snapshot by id, else
    one made at their start with the export filters, gold judgments left out unless asked), a
    reward run may name its backbone and mix in other projects' frozen training snapshots, SFT may
    add each judgment's best response, an evaluation may promote by a margin."""
    if kind not in RUN_KINDS:
        raise PlanError("kind", f"One of {', '.join(RUN_KINDS)}.")
    if promote is not None and promote not in PROMOTE_CHOICES:
        raise PlanError("promote", f"One of {', '.join(PROMOTE_CHOICES)}.")
    params: dict[str, Any] = {"trigger": trigger}
    if config:
        params["config"] = dict(config)
    if kind in TRAINING_KINDS:
        params["promote"] = promote or DEFAULT_PROMOTE[kind]
        if snapshot:
            params["snapshot"] = int(snapshot)
        if include_gold:
            params["include_gold"] = True
        if filters:
            params["filters"] = dict(filters)
        if min_gold_accuracy is not None:
            params["min_gold_accuracy"] = float(min_gold_accuracy)
    if processes is not None or accelerate_config:
        if kind not in GROUP_KINDS:
            raise PlanError("processes", f"Only {', '.join(sorted(GROUP_KINDS))} runs train on several processes.")
        if processes is not None and not 1 <= int(processes) <= MAX_PROCESSES:
            raise PlanError("processes", f"From 1 to {MAX_PROCESSES}.")
        if processes is not None:
            params["processes"] = int(processes)
        if accelerate_config:
            params["accelerate_config"] = str(accelerate_config)
    if kind == REWARD and base:
        params["base"] = base
    if mix_snapshots:
        if kind != REWARD:
            raise PlanError("mix_snapshots", "Only reward runs mix in other projects' snapshots.")
        ids = list(dict.fromkeys(int(i) for i in mix_snapshots))
        if len(ids) > MAX_MIXED_SNAPSHOTS or min(ids) < 1:
            raise PlanError("mix_snapshots", f"Up to {MAX_MIXED_SNAPSHOTS} snapshot ids.")
        params["mix_snapshots"] = ids
    if kind == SFT:
        params["include_chosen"] = bool(include_chosen)
    if kind == EVALUATE and auto_promote_margin is not None:
        params["auto_promote_margin"] = float(auto_promote_margin)
        params["promote_metric"] = promote_metric or DEFAULT_PROMOTE_METRIC
    if max_prompts:
        params["max_prompts"] = int(max_prompts)
    return params


# ---------------------------------------------------------------------------------------- rounds


def round_spec(
    *, policy_kind: str = "", auto_promote_margin: float | None = None, promote_metric: str = DEFAULT_PROMOTE_METRIC,
    step_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The steps of a round and their settings, validated. The caller fills in the deployment's
    defaults (settings) before asking; an empty policy_kind means DPO."""
    policy_kind = policy_kind or DEFAULT_POLICY_KIND
    if policy_kind not in POLICY_KINDS:
        raise PlanError("policy_kind", f"one of {', '.join(POLICY_KINDS)}")
    if promote_metric not in PROMOTE_METRICS:
        raise PlanError("promote_metric", f"one of {', '.join(PROMOTE_METRICS)}")
    steps = [REWARD, policy_kind, EVALUATE, CANDIDATES]
    step_params = step_params or {}
    unknown = set(step_params) - set(steps)
    if unknown or not all(isinstance(v, dict) for v in step_params.values()):
        raise PlanError("step_params", f"a dict of step kind -> params dict; unknown steps {sorted(unknown)}")
    mixed = (step_params.get(REWARD) or {}).get("mix_snapshots", [])
    if not isinstance(mixed, list) or len(mixed) > MAX_MIXED_SNAPSHOTS or not all(
            isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in mixed):
        raise PlanError("step_params", f"reward.mix_snapshots: a list of up to {MAX_MIXED_SNAPSHOTS} snapshot ids")
    return {
        "steps": steps,
        "auto_promote_margin": None if auto_promote_margin is None else float(auto_promote_margin),
        "promote_metric": promote_metric, "params": jsonable(step_params),
    }


def round_next_kind(*, spec: dict[str, Any], kind: str) -> str | None:
    """The step after `kind` in the round, or None when it was the last (or not a step of it)."""
    steps = spec["steps"]
    if kind not in steps or steps.index(kind) + 1 >= len(steps):
        return None
    return steps[steps.index(kind) + 1]


def round_step_params(*, spec: dict[str, Any], kind: str) -> dict[str, Any]:
    """A step's own params; the evaluation step carries the round's promotion rule."""
    params = dict((spec.get("params") or {}).get(kind) or {})
    if kind == EVALUATE and spec.get("auto_promote_margin") is not None:
        params.setdefault("auto_promote_margin", spec["auto_promote_margin"])
        params.setdefault("promote_metric", spec.get("promote_metric", DEFAULT_PROMOTE_METRIC))
    return params


# ------------------------------------------------------------------------------------- promotion


def promotion_decide(*, evaluation: dict[str, Any], margin: float, metric: str = DEFAULT_PROMOTE_METRIC) -> tuple[bool, str]:
    """Does the new version beat its parent by `margin`?

    metric "win_rate": the RM-judged win rate against the parent is at least 0.5 + margin;
    metric "reward":   mean RM score minus the parent's is at least margin.
    """
    if metric not in PROMOTE_METRICS:
        raise PlanError("promote_metric", f"one of {', '.join(PROMOTE_METRICS)}")
    if metric == "win_rate":
        value = evaluation.get("win_rate_vs_parent")
        if value is None:
            return False, "no reward-model win rate (no trained reward model)"
        ok = value >= 0.5 + margin
        return ok, f"win rate {value:.3f} {'>=' if ok else '<'} 0.5 + margin {margin:g}"
    mine, theirs = evaluation.get("reward_mean"), evaluation.get("parent_reward_mean")
    if mine is None or theirs is None:
        return False, "no reward-model scores (no trained reward model)"
    ok = mine - theirs >= margin
    return ok, f"reward gain {mine - theirs:.4f} {'>=' if ok else '<'} margin {margin:g}"
