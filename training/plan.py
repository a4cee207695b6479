"""The shape of the training loop, as plain data and pure functions (no Django, no torch): which
step of a round follows which, which task runs each kind of run, what a run's params default to,
and whether an evaluated policy is promoted. Services, APIs, views and commands all ask here, so
a default is decided once; what a request may ask for is parsed in training.runspec.

A round is a chain of runs sharing a pipeline_id:

    reward retrain -> policy retrain (sft | dpo | ppo) -> evaluation (+ optional auto-promotion)
    -> candidate generation from the promoted policy

Each step is its own single-flight run and task. When a step succeeds, the next one is queued in
the same transaction (training.services.rounds.round_advance), so a step that fails or is
cancelled ends the round and a rolled-back success queues nothing.
"""
from __future__ import annotations

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
# A new reward model replaces the old one as soon as its held-out groups show it learned more than
# length (reward_promotion_evidence; nothing else can judge it); a new policy waits for its
# evaluation, because it is what annotators see next.
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


# The largest process group (training.ml.launch); a request's is capped lower by settings.PAIRWISE_MAX_PROCESSES.
MAX_PROCESSES = 64
# Other projects' frozen training data a reward run may add to its own (public preference sets
# imported as projects, say): the reward model then transfers further (bench/reward_transfer.py
# --leave-one-out; README, Benchmarks).
MAX_MIXED_SNAPSHOTS = 16


# ---------------------------------------------------------------------------------------- rounds


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


def promotion_decide(*, evaluation: dict[str, Any], margin: float, metric: str = DEFAULT_PROMOTE_METRIC,
                     requires_preference_gain: bool = False) -> tuple[bool, str]:
    """Does the new version beat its parent by `margin`?

    metric "win_rate": the RM-judged win rate against the parent is at least 0.5 + margin;
    metric "reward":   mean RM score minus the parent's is at least margin.
    requires_preference_gain: also the 95% interval of its per-token preference-accuracy gain over the parent
    on held-out human pairs (training.ml.preference_eval) is not below zero, evidence no learned judge gives.
    Per token, not summed: a summed log-probability favours the shorter answer, and DPO's few nats rarely flip
    a pair whose answers differ by tens, so the summed gain stayed within noise of zero in every measured
    recipe while the per-token one rose with more pairs (README, Benchmarks: bench/dpo_recipe.py).
    """
    if metric not in PROMOTE_METRICS:
        raise PlanError("promote_metric", f"one of {', '.join(PROMOTE_METRICS)}")
    if requires_preference_gain:
        interval = evaluation.get("pref_accuracy_per_token_delta_ci95")
        if not interval:
            return False, "no preference accuracy on held-out human pairs (the rule requires its gain)"
        if interval[0] < 0:
            return False, (f"per-token preference-accuracy gain {evaluation['pref_accuracy_per_token_delta']:+.3f}, "
                           f"interval [{interval[0]:+.3f}, {interval[1]:+.3f}] reaches below zero")
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


def reward_promotion_evidence(*, metrics: dict[str, Any], min_heldout_groups: int) -> tuple[bool, str]:
    """May a trained reward model be promoted by its run? Only when at least `min_heldout_groups`
    held-out groups measured it (the project's reward_promote_min_heldout_groups) and its accuracy on
    them beats "the longer answer wins" on the same pairs: a model that was not measured, or learned
    no more than length, stays a candidate. min_heldout_groups 0 turns the check off."""
    if min_heldout_groups <= 0:
        return True, "the project promotes without held-out evidence (minimum held-out groups 0)"
    groups = metrics.get("val_groups") or 0
    if groups < min_heldout_groups:
        return False, (f"{groups} held-out group{'s' if groups != 1 else ''}, fewer than the project's minimum of "
                       f"{min_heldout_groups} to measure it")
    accuracy, baseline = metrics.get("val_accuracy"), metrics.get("val_length_baseline")
    if accuracy is None:
        return False, f"no held-out accuracy ({groups} held-out groups without comparisons)"
    if baseline is not None and accuracy <= baseline:
        return False, (f"held-out accuracy {accuracy:.3f} is not above the length-only baseline {baseline:.3f} "
                       f"on {groups} groups")
    against = "" if baseline is None else f" above the length-only baseline {baseline:.3f}"
    return True, f"held-out accuracy {accuracy:.3f}{against} on {groups} groups"
