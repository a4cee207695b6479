"""An LLM judge over chat-model endpoints (pure: no Django): the judge prompt, reading a verdict from a
reply, the two orders of one pair combined, and the pair verdicts of a K-way task turned into a ranking.

LLM judges favour a position (Zheng et al. 2023, "Judging LLM-as-a-judge", section 3.3), so every pair
is asked in both orders: two verdicts that agree decide the pair, two that disagree (the judge went by
position) or a reply that names neither answer make it a tie. A K-way task is judged pair by pair and the
pair outcomes ranked by Copeland's rule (labeling.label_models.targets_ranking, the rule the label models'
consensus uses). Used by the product's machine annotators (training.services.machine_annotators) and by
bench/loop_judge.py.

A judge template is text with the placeholders {instructions} (the project's annotator instructions),
{prompt}, {response_a} and {response_b}; a literal brace is written twice ({{ or }}).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

from labeling.label_models import targets_ranking

JUDGE_MAX_TOKENS = 16  # a letter, or a short sentence around it; a longer reply is cut, which parse_verdict survives
JUDGE_SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Choose the assistant that follows the user's instructions and answers "
    "the user's question better, considering helpfulness, relevance, accuracy, depth and level of detail. Avoid "
    "any position bias: the order in which the responses are presented must not influence your decision. Do not "
    "let the length of the responses influence you. Be as objective as possible. Reply with one letter and "
    'nothing else: "A" if assistant A is better, "B" if assistant B is better.'
)
# MT-Bench's pairwise layout of one ordered pair.
PAIR_LAYOUT = (
    "[User Question]\n{prompt}\n\n"
    "[The Start of Assistant A's Answer]\n{response_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{response_b}\n[The End of Assistant B's Answer]"
)
REQUIRED_PLACEHOLDERS = ("prompt", "response_a", "response_b")
PLACEHOLDERS = ("instructions",) + REQUIRED_PLACEHOLDERS
MAX_TEMPLATE_CHARS = 20_000
NO_INSTRUCTIONS = "(none)"

_INSTRUCTIONS_BLOCK = "The annotators of this project follow these instructions:\n{instructions}\n\n"
# A K-way task is judged two responses at a time; the judge is told so, so it does not look for the others.
_RANK_NOTE = ("The two responses are two of several answers to the same question that are being ranked; judge "
              "only these two against each other. ")
DEFAULT_TEMPLATES = {
    "pairwise": JUDGE_SYSTEM_PROMPT + "\n\n" + _INSTRUCTIONS_BLOCK + PAIR_LAYOUT,
    "rank": _RANK_NOTE + JUDGE_SYSTEM_PROMPT + "\n\n" + _INSTRUCTIONS_BLOCK + PAIR_LAYOUT,
}


def default_template(mode: str) -> str:
    """The judge template a new machine annotator starts from in a project of this mode (a mode without
    one, such as demonstrate, has none: KeyError)."""
    return DEFAULT_TEMPLATES[mode]


def template_problems(template: object) -> str | None:
    """Why the template cannot be used (a message), or None: it must be text, name each of
    REQUIRED_PLACEHOLDERS, and name nothing but PLACEHOLDERS (no attribute, index, format or conversion:
    the template must not reach into the values)."""
    if not isinstance(template, str) or not template.strip() or "\x00" in template:
        return "must be non-empty text"
    if len(template) > MAX_TEMPLATE_CHARS:
        return f"at most {MAX_TEMPLATE_CHARS} characters"
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        return f"{exc} (write a literal brace twice: {{{{ or }}}})"
    for name, spec, conversion in fields:
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            return f"unknown placeholder {shown}: use only " + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    missing = [p for p in REQUIRED_PLACEHOLDERS if p not in {name for name, _, _ in fields}]
    if missing:
        return "missing placeholder " + ", ".join("{" + p + "}" for p in missing)
    return None


def judge_text(template: str, *, prompt: str, a: str, b: str, instructions: str = "") -> str:
    """The template filled for one ordered pair (a shown as A). The values are inserted as they are: a
    brace inside an answer is never read as a placeholder."""
    return template.format(instructions=instructions.strip() or NO_INSTRUCTIONS, prompt=prompt.strip(),
                           response_a=a, response_b=b)


def judge_messages(question: str, a: str, b: str) -> list[dict[str, str]]:
    """The user turn that asks the judge about one ordered pair in MT-Bench's layout (the system turn is
    JUDGE_SYSTEM_PROMPT), as the bench's endpoint judge sends it."""
    return [{"role": "user", "content": judge_text(PAIR_LAYOUT, prompt=question, a=a, b=b)}]


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


def combine_orders(first_as_a: str | None, first_as_b: str | None) -> tuple[float, str]:
    """(the first answer's outcome, how the two orders went): the verdict with the first answer shown as
    A, then with it shown as B. Agreeing verdicts: 1 (the first answer won both) or 0, "consistent";
    disagreeing (the judge went by position): 1/2, "inconsistent"; a verdict missing: 1/2, "unparsed"."""
    if first_as_a is None or first_as_b is None:
        return 0.5, "unparsed"
    first, second = float(first_as_a == "A"), float(first_as_b == "B")
    return (first, "consistent") if first == second else (0.5, "inconsistent")


@dataclass(frozen=True)
class PairJudgment:
    """One response pair judged in both orders: `first` shown as A in the first ask, as B in the second."""

    first: int
    second: int
    replies: tuple[str, str]  # (first shown as A, first shown as B)
    outcome: float  # the first response's: 1 won, 0 lost, 0.5 a tie
    status: str  # combine_orders': consistent, inconsistent, unparsed

    def as_dict(self) -> dict:
        return {"first": self.first, "second": self.second, "replies": list(self.replies),
                "outcome": self.outcome, "status": self.status}


def judge_pairs(shown_order: Sequence[int]) -> list[tuple[int, int]]:
    """Every pair of the task's responses, each as (the one shown earlier, the later one)."""
    return list(combinations(shown_order, 2))


def pair_judgment(first: int, second: int, reply_first_as_a: str, reply_first_as_b: str) -> PairJudgment:
    outcome, status = combine_orders(parse_verdict(reply_first_as_a), parse_verdict(reply_first_as_b))
    return PairJudgment(first, second, (reply_first_as_a, reply_first_as_b), outcome, status)


def pairs_ranking(shown_order: Sequence[int], pairs: Sequence[PairJudgment]) -> list[list[int]]:
    """Tie groups of response ids, best first, from the pair outcomes by Copeland's rule (for two
    responses: the winner first, or one tie group)."""
    slot = {rid: i for i, rid in enumerate(shown_order)}
    targets = [(slot[p.first], slot[p.second], p.outcome) for p in pairs]
    return [[shown_order[i] for i in group] for group in targets_ranking(len(shown_order), targets)]


def pairs_rationale(pairs: Sequence[PairJudgment]) -> str:
    """What the judge said about each pair in both orders, kept with its judgment: an inconsistent pair
    is stored as a tie, and this says why."""
    lines = []
    for p in pairs:
        said = "; ".join(f"{shown} shown first: {reply.strip()[:400]!r}"
                         for shown, reply in ((p.first, p.replies[0]), (p.second, p.replies[1])))
        lines.append(f"{p.first} vs {p.second} ({p.status}): {said}")
    return "\n".join(lines)
