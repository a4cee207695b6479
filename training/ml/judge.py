"""An LLM judge over chat-model endpoints (pure: no Django): the judge prompt, reading a verdict from a
reply, the two orders of one pair combined, and the pair verdicts of a K-way task turned into a ranking.

LLM judges favour a position (Zheng et al. 2023, "Judging LLM-as-a-judge", section 3.3), so every pair
is asked in both orders: two verdicts that agree decide the pair, two that disagree (the judge went by
position) or a reply that names neither answer make it a tie. A K-way task is judged pair by pair and the
pair outcomes ranked by Copeland's rule (labeling.label_models.targets_ranking, the rule the label models'
consensus uses). Used by the product's machine annotators (training.services.machine_annotators) and by
bench/loop_judge.py.

Where the project asks for Likert ratings and flags, each response is also asked about alone, once (a
rating is pointwise: no order to swap): rating_text builds the question, parse_rating reads the one-line
JSON reply, keeping only a Likert from 1 to 7 and the project's own flag keys and counting what it drops.

A judge template is text with the placeholders {instructions} (the project's annotator instructions),
{prompt}, {response_a} and {response_b}; a literal brace is written twice ({{ or }}).
"""
from __future__ import annotations

import json
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


RATING_MAX_TOKENS = 64  # {"likert": 5, "flags": [...]} with a few flag keys; a reply cut short is unparsable, not wrong
LIKERT_MIN, LIKERT_MAX = 1, 7  # the range labeling's verdict_validate accepts from people
# The rating question's layout: one answer, so the pairwise letter parser never reads it as a verdict.
RATING_LAYOUT = (
    "[User Question]\n{prompt}\n\n"
    "[The Start of the Assistant's Answer]\n{response}\n[The End of the Assistant's Answer]"
)


def rating_text(*, prompt: str, response: str, instructions: str = "", likert: bool,
                flags: Sequence[tuple[str, str]] = ()) -> str:
    """The pointwise question about one response: its Likert rating (when likert) and which of `flags`
    ((key, label) pairs: the project's flag_choices; empty when the project has flags off) apply, answered
    as one line of JSON. Values are inserted as they are (no template is filled)."""
    asks, shape = [], {}
    if likert:
        asks.append(f'"likert": the overall quality of the answer, an integer from {LIKERT_MIN} (very bad) to '
                    f"{LIKERT_MAX} (excellent)")
        shape["likert"] = 5
    if flags:
        asks.append('"flags": the keys of the statements below that are true of the answer (an empty list if '
                    "none is)\n" + "\n".join(f"- {key}: {label}" for key, label in flags))
        shape["flags"] = [flags[0][0]]
    return (
        "Please act as an impartial judge and evaluate the response of an AI assistant to the user question "
        "displayed below.\n\n" + _INSTRUCTIONS_BLOCK.format(instructions=instructions.strip() or NO_INSTRUCTIONS)
        + RATING_LAYOUT.replace("{prompt}", prompt.strip()).replace("{response}", response) + "\n\n"
        + "Give:\n" + "\n".join(asks) + "\n\nReply with one line of JSON and nothing else, for example: "
        + json.dumps(shape)
    )


@dataclass(frozen=True)
class Rating:
    """What one rating reply gave: likert None when it gave no usable one (or none was asked)."""

    likert: int | None
    flags: tuple[str, ...]
    parsed: bool  # the reply held a JSON object
    likert_dropped: bool  # a Likert was asked and the reply gave none in range
    flags_dropped: int  # entries of its flag list that are not one of the project's flag keys


_OBJECT = re.compile(r"\{.*\}", re.S)  # the outermost braces: a reply may wrap its JSON in prose or a code fence


def parse_rating(reply: str, *, likert: bool, flag_keys: Sequence[str]) -> Rating:
    """The Likert (an int from 1 to 7, only when asked) and the known flag keys (only when flag_keys)
    of a rating reply. What the reply gets wrong is left out and counted, never guessed: a Likert out of
    range, fractional or not a number; an unknown flag; a reply with no JSON object (nothing kept)."""
    found = _OBJECT.search(reply or "")
    try:
        data = json.loads(found.group(0)) if found else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Rating(None, (), parsed=False, likert_dropped=likert, flags_dropped=0)
    value = data.get("likert")
    ok = isinstance(value, int) and not isinstance(value, bool) and LIKERT_MIN <= value <= LIKERT_MAX
    raw = data.get("flags") if flag_keys else None
    named = [] if raw is None else raw if isinstance(raw, list) else [raw]  # a lone key, or junk: entry by entry
    known = set(flag_keys)
    kept = tuple(sorted({f for f in named if isinstance(f, str) and f in known}))
    return Rating(value if likert and ok else None, kept, parsed=True, likert_dropped=likert and not ok,
                  flags_dropped=sum(1 for f in named if not (isinstance(f, str) and f in known)))
