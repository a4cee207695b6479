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
through the product's endpoint client (training.services.endpoints.endpoint_samples), under the
operator's limits: netguard's allowed networks, the key prefix, the answer caps.
"""
from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any, Sequence

from bench.loop_common import BenchError

CHANCE_WARNING = ("the judge is not better than chance on its own held-out pairs: its win rate says little; "
                  "read pref_accuracy_* instead")
NO_HELDOUT_WARNING = ("the judge has no held-out pairs to check it on: its win rate says little; "
                      "read pref_accuracy_* instead")

JUDGE_MAX_TOKENS = 16  # a letter, or a short sentence around it; a longer reply is cut, which parse_verdict survives
JUDGE_SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Choose the assistant that follows the user's instructions and answers "
    "the user's question better, considering helpfulness, relevance, accuracy, depth and level of detail. Avoid "
    "any position bias: the order in which the responses are presented must not influence your decision. Do not "
    "let the length of the responses influence you. Be as objective as possible. Reply with one letter and "
    'nothing else: "A" if assistant A is better, "B" if assistant B is better.'
)


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


def judge_messages(question: str, a: str, b: str) -> list[dict[str, str]]:
    """The user turn that asks the judge about one ordered pair (the system turn is JUDGE_SYSTEM_PROMPT);
    MT-Bench's pairwise layout."""
    return [{"role": "user", "content": (
        f"[User Question]\n{question.strip()}\n\n"
        f"[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]"
    )}]


# Verdict forms, strongest first. Except in a reply that is the letter alone, only upper-case letters count:
# "a" is an English word.
_MARKED = re.compile(r"\[\[\s*([AB])\s*\]\]")  # MT-Bench's "[[A]]"
_DECOR = r"[\s\"'`*_()\[\].:!]*"
_BARE = re.compile(rf"^{_DECOR}(?:(?:assistant|response|answer|option)\s+)?([AB]){_DECOR}$", re.I)  # alone: "a" too
_LABEL = r"(?i:(?:assistant|response|answer|option)\s+)?\(?"
_STATED = (
    re.compile(r"\b([AB])\)?(?i:'s\s+(?:answer|response))?\s+(?i:is|was)\s+(?i:the\s+)?"
               r"(?i:better|superior|preferred|more\s+helpful|stronger)"),
    re.compile(rf"(?i:\b(?:verdict|winner|choice|better\s+(?:one|answer|response|assistant))(?:\s+is)?)"
               rf"\s*[:=]?\s*[*\"'`]*{_LABEL}([AB])\b"),
    re.compile(rf"(?i:\b(?:i\s+)?(?:prefer|choose|pick|select))\s+{_LABEL}([AB])\b"),
)
_LEADING = re.compile(r"^[\s\"'`*_(\[]*([AB])(?:[)\].:,!\n]|\s+(?i:is)\b)")


def parse_verdict(reply: str) -> str | None:
    """"A", "B", or None when the reply names neither answer or names both as the winner. Tried in
    order, the first form found decides: MT-Bench's [[A]]; the reply is only the letter ("B", "**a**",
    "Assistant B."); a stated preference ("A is better", "The better response is B", "Verdict: A",
    "I prefer B"); a leading letter ("A. It is more detailed", "B: ..."). A form found with both
    letters ("[[A]] ... [[B]]") gives None rather than a guess."""
    text = reply or ""
    for found in (_MARKED.findall(text), _BARE.findall(text),
                  [m for pattern in _STATED for m in pattern.findall(text)], _LEADING.findall(text)):
        letters = {letter.upper() for letter in found}
        if letters:
            return letters.pop() if len(letters) == 1 else None
    return None


def combine_orders(policy_as_a: str | None, policy_as_b: str | None) -> tuple[float, str]:
    """(the policy's outcome, how the two orders went): the verdict with the policy's answer shown as
    A, then with it shown as B. Agreeing verdicts: 1 (the policy's answer won both) or 0, "consistent";
    disagreeing (the judge went by position): 1/2, "inconsistent"; a verdict missing: 1/2, "unparsed"."""
    if policy_as_a is None or policy_as_b is None:
        return 0.5, "unparsed"
    first, second = float(policy_as_a == "A"), float(policy_as_b == "B")
    return (first, "consistent") if first == second else (0.5, "inconsistent")


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


def _config(version):
    from training.services.endpoints import endpoint_config_of

    config = endpoint_config_of(version=version, temperature=0.0, top_p=1.0, max_tokens=JUDGE_MAX_TOKENS)
    # A verdict, not a sample: greedy whatever sampling the version was registered with.
    return dataclasses.replace(config, temperature=0.0)


def _ask(version, config, questions: Sequence[str], firsts: Sequence[str], seconds: Sequence[str],
         seed: int) -> list[str | None]:
    """One verdict per (question, A, B), through the product's endpoint client; BenchError when the
    endpoint fails for good."""
    from labeling.models import Prompt
    from training.ml.endpoint import EndpointError
    from training.services.endpoints import endpoint_samples

    asked = [Prompt(messages=judge_messages(q, a, b)) for q, a, b in zip(questions, firsts, seconds)]  # never saved
    try:
        replies = endpoint_samples(config, asked, k=1, system_prompt=JUDGE_SYSTEM_PROMPT, seed=seed, progress=None)
    except EndpointError as exc:
        raise BenchError(f"--judge-endpoint {version.pk} ({version.name}): {exc}") from None
    return [parse_verdict(texts[0] if texts else "") for texts in replies]


def endpoint_judge_check(version) -> None:
    """One question before anything trains, so an endpoint that cannot be reached (or that the
    operator's allowed networks refuse) stops the bench at once rather than after training."""
    _ask(version, _config(version), ["Is this a test?"], ["Yes."], ["No."], seed=0)


def endpoint_judge(version, prompts: Sequence[str], ours: Sequence[str], theirs: Sequence[str],
                   seed: int = 0) -> dict[str, Any]:
    """{"outcomes": the policy's outcome per prompt, "judge_inconsistent", "judge_unparsed" (shares of
    prompts), and "judge_warning" when a reply named neither answer}. Every prompt is asked with the
    policy's answer as A, then, in a second pass, as B."""
    config = _config(version)
    as_a = _ask(version, config, prompts, ours, theirs, seed)
    as_b = _ask(version, config, prompts, theirs, ours, seed)
    combined = [combine_orders(a, b) for a, b in zip(as_a, as_b)]
    count = lambda status: sum(s == status for _, s in combined)  # noqa: E731
    report = {"outcomes": [o for o, _ in combined], "judge_inconsistent": count("inconsistent") / max(len(combined), 1),
              "judge_unparsed": count("unparsed") / max(len(combined), 1)}
    if count("unparsed"):
        report["judge_warning"] = (f"the endpoint's reply named neither answer for {count('unparsed')} of "
                                   f"{len(combined)} prompts (counted as ties): read its replies before its win rate")
        print(f"loop_quality: warning: {report['judge_warning']}", file=sys.stderr, flush=True)
    return report
