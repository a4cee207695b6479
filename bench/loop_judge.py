"""The judges of bench/loop_quality.py: how far a reward-model judge can be trusted, and an
OpenAI-compatible endpoint as the judge instead.

A reward-model judge's win rate is only as good as the judge: its accuracy on its own held-out pairs
gets a bootstrap interval (the held-out side of the snapshot it trained from, scored again by the
product's reward_model_evaluate), and an interval that does not lie above 1/2 (it includes 1/2, or
lies below: a judge wrong more often than right is no better) is a warning: such a judge is not
better than chance, and its win rate says little.

An endpoint judge (--judge-endpoint, a registered endpoint version) is asked, for each prompt, which
of two answers is better in both orders (the policy's answer first as A, then as B), because LLM
judges favour a position (Zheng et al. 2023, "Judging LLM-as-a-judge", section 3.3). Two verdicts
that agree are a win or a loss; two that disagree are a tie (1/2); a reply that names neither answer
(see parse_verdict) also makes the prompt a tie, counted apart in judge_unparsed. The requests go
through the product's endpoint client (training.services.endpoints.endpoint_judge_replies), under the
operator's limits: netguard's allowed networks, the key prefix, the answer caps.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from bench.loop_common import BenchError
# The judging itself is the product's (its machine annotators judge the same way); re-exported for the bench.
from training.ml.judge import (  # noqa: F401
    JUDGE_MAX_TOKENS, JUDGE_SYSTEM_PROMPT, combine_orders, judge_messages, parse_verdict,
)

CHANCE_WARNING = ("the judge is not better than chance on its own held-out pairs: its win rate says little; "
                  "read pref_accuracy_* instead")
NO_HELDOUT_WARNING = ("the judge has no held-out pairs to check it on: its win rate says little; "
                      "read pref_accuracy_* instead")

# ------------------------------------------------------------------------------ a reward-model judge


def judge_heldout_interval(judge, seed: int = 0) -> dict[str, Any]:
    """{"judge_val_accuracy_ci95": [low, high] or None, "judge_val_pairs": n}: the judge's held-out
    pairs (the held-out side of the snapshot it trained from, exactly what its val_accuracy was
    measured on) scored again, bootstrapped over prompts. None when the snapshot or the model files
    are gone, or nothing was held out."""
    from django.core.exceptions import ValidationError

    from labeling.ranking import ranking_pairs
    from training.dataset import reward_groups
    from training.ml.preference_eval import bootstrap_interval
    from training.ml.reward.evaluate import margin_outcomes
    from training.services.reward import reward_model_evaluate
    from training.services.snapshots import snapshot_read

    none = {"judge_val_accuracy_ci95": None, "judge_val_pairs": 0}
    if judge.snapshot is None:
        return none
    try:
        # The reward model's own view of each prompt (rm_prompt), as its validation scored it.
        pairs = [{"prompt": g["prompt"], "chosen": g["responses"][w], "rejected": g["responses"][lo]}
                 for g in reward_groups(snapshot_read(snapshot=judge.snapshot)).held_out
                 for w, lo in ranking_pairs(g["ranking"])]
        if not pairs:
            return none
        margins = reward_model_evaluate(version=judge, records=pairs, with_margins=True)["margins"]
    except (ValueError, ValidationError) as exc:
        print(f"loop_quality: the judge's held-out pairs cannot be scored again ({exc}); no interval", file=sys.stderr)
        return none
    interval = bootstrap_interval(margin_outcomes(margins), [p["prompt"] for p in pairs], seed=seed)
    return {"judge_val_accuracy_ci95": list(interval), "judge_val_pairs": len(pairs)}


def judge_warning(interval: Sequence[float] | None) -> str | None:
    """The warning for a judge whose held-out accuracy interval does not lie above 1/2 (it includes
    1/2, or lies below it), or that has none; None for a judge better than chance."""
    if interval is None:
        return NO_HELDOUT_WARNING
    low, _ = interval
    return CHANCE_WARNING if low <= 0.5 else None


# ---------------------------------------------------------------------------------- an endpoint judge


def endpoint_judge_get(version_id: int):
    """The endpoint version --judge-endpoint names (BenchError when there is none)."""
    from training.models import ModelVersion
    from training.services.endpoints import is_endpoint_version

    version = ModelVersion.objects.filter(pk=version_id).first()
    if not is_endpoint_version(version):
        raise BenchError(f"--judge-endpoint {version_id}: no registered endpoint with that id (register an "
                         "OpenAI-compatible server on the project page, or POST "
                         "/api/training/projects/<slug>/endpoints/)")
    return version


def _ask(version, questions: Sequence[str], firsts: Sequence[str], seconds: Sequence[str],
         seed: int) -> list[str | None]:
    """One verdict per (question, A, B), through the product's judge client; BenchError when the
    endpoint fails for good."""
    from training.ml.endpoint import EndpointError
    from training.services.endpoints import endpoint_judge_replies

    asked = [judge_messages(q, a, b) for q, a, b in zip(questions, firsts, seconds)]
    try:
        replies = endpoint_judge_replies(version=version, prompts=asked, system_prompt=JUDGE_SYSTEM_PROMPT, seed=seed)
    except EndpointError as exc:
        raise BenchError(f"--judge-endpoint {version.pk} ({version.name}): {exc}") from None
    return [parse_verdict(text) for text in replies]


def endpoint_judge_check(version) -> None:
    """One question before anything trains, so an endpoint that cannot be reached (or that the
    operator's allowed networks refuse) stops the bench at once rather than after training."""
    _ask(version, ["Is this a test?"], ["Yes."], ["No."], seed=0)


def endpoint_judge(version, prompts: Sequence[str], ours: Sequence[str], theirs: Sequence[str],
                   seed: int = 0) -> dict[str, Any]:
    """{"outcomes": the policy's outcome per prompt, "judge_inconsistent", "judge_unparsed" (shares of
    prompts), and "judge_warning" when a reply named neither answer}. Every prompt is asked with the
    policy's answer as A, then, in a second pass, as B."""
    as_a = _ask(version, prompts, ours, theirs, seed)
    as_b = _ask(version, prompts, theirs, ours, seed)
    combined = [combine_orders(a, b) for a, b in zip(as_a, as_b)]
    count = lambda status: sum(s == status for _, s in combined)  # noqa: E731
    report = {"outcomes": [o for o, _ in combined], "judge_inconsistent": count("inconsistent") / max(len(combined), 1),
              "judge_unparsed": count("unparsed") / max(len(combined), 1)}
    if count("unparsed"):
        report["judge_warning"] = (f"the endpoint's reply named neither answer for {count('unparsed')} of "
                                   f"{len(combined)} prompts (counted as ties): read its replies before its win rate")
        print(f"loop_quality: warning: {report['judge_warning']}", file=sys.stderr, flush=True)
    return report
