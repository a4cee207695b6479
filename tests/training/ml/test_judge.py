"""training/ml/judge.py by hand: the template's placeholders, what the judge is sent, two orders combined
into an outcome, K-way pair verdicts into a ranking by Copeland's rule, and the pointwise rating question
(Likert and flags) with hand-made replies."""
from __future__ import annotations

import pytest

from training.ml.judge import (
    DEFAULT_TEMPLATES, PAIR_LAYOUT, Rating, default_template, judge_messages, judge_pairs, judge_text, pair_judgment,
    pairs_ranking, pairs_rationale, parse_rating, parse_verdict, rating_text, template_problems,
)


@pytest.mark.parametrize("mode", ["pairwise", "rank"])
def test_each_mode_has_a_usable_default_template(mode):
    assert template_problems(default_template(mode)) is None
    assert "{instructions}" in default_template(mode)
    with pytest.raises(KeyError):
        default_template("demonstrate")


@pytest.mark.parametrize("template, problem", [
    ("{prompt} {response_a} {response_b}", None),
    ("{instructions}\n{prompt}\n{response_a} {{literal}} {response_b}", None),
    ("", "must be non-empty text"), (None, "must be non-empty text"), ("a\x00 {prompt}", "must be non-empty text"),
    ("{prompt} {response_a}", "missing placeholder {response_b}"),
    ("{prompt} {response_a} {response_b} {secret}", "unknown placeholder {secret}"),
    ("{prompt.__class__} {response_a} {response_b}", "unknown placeholder {prompt.__class__}"),
    ("{prompt!r} {response_a} {response_b}", "unknown placeholder {prompt!r}"),
    ("{prompt:>9} {response_a} {response_b}", "unknown placeholder {prompt:>9}"),
    ("{prompt} {response_a} {response_b} {", "Single '{'"),
])
def test_a_template_names_each_answer_and_nothing_else(template, problem):
    found = template_problems(template)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem)), found


def test_values_are_inserted_as_they_are_and_empty_instructions_say_so():
    text = judge_text("{instructions}|{prompt}|{response_a}|{response_b}", prompt="  q {response_b}\n",
                      a="a {prompt}", b="}{")
    assert text == "(none)|q {response_b}|a {prompt}|}{"
    assert judge_text(DEFAULT_TEMPLATES["pairwise"], prompt="q", a="x", b="y", instructions="Be kind.").count("Be kind.") == 1
    # The bench's user turn is exactly the MT-Bench layout.
    assert judge_messages("q", "x", "y") == [{"role": "user", "content": judge_text(PAIR_LAYOUT, prompt="q", a="x", b="y")}]


@pytest.mark.parametrize("as_a, as_b, outcome, status", [
    ("A", "B", 1.0, "consistent"), ("[[B]]", "A", 0.0, "consistent"),
    ("A", "A", 0.5, "inconsistent"), ("B", "B", 0.5, "inconsistent"),
    ("Both are fine.", "A", 0.5, "unparsed"),
])
def test_a_pair_judged_in_both_orders(as_a, as_b, outcome, status):
    judged = pair_judgment(7, 3, as_a, as_b)
    assert (judged.first, judged.second, judged.outcome, judged.status) == (7, 3, outcome, status)
    assert judged.replies == (as_a, as_b)


def test_pairwise_verdicts_make_a_winner_or_a_tie_with_both_replies_kept():
    assert pairs_ranking([7, 3], [pair_judgment(7, 3, "A", "B")]) == [[7], [3]]
    assert pairs_ranking([7, 3], [pair_judgment(7, 3, "B", "A")]) == [[3], [7]]
    inconsistent = pair_judgment(7, 3, "A", "A")
    assert pairs_ranking([7, 3], [inconsistent]) == [[7, 3]]
    rationale = pairs_rationale([inconsistent])
    assert rationale == "7 vs 3 (inconsistent): 7 shown first: 'A'; 3 shown first: 'A'"


def test_k_way_verdicts_are_ranked_by_copeland():
    shown = [5, 6, 8, 9]
    assert judge_pairs(shown) == [(5, 6), (5, 8), (5, 9), (6, 8), (6, 9), (8, 9)]
    # By hand: 8 beats everyone (3 points); 5 beats 6 and ties 9 (1.5); 9 beats 6, ties 5 (1.5); 6: 0.
    replies = {(5, 6): ("A", "B"), (5, 8): ("B", "A"), (5, 9): ("A", "A"), (6, 8): ("B", "A"), (6, 9): ("B", "A"),
               (8, 9): ("A", "B")}
    judged = [pair_judgment(a, b, *replies[(a, b)]) for a, b in judge_pairs(shown)]
    assert [p.status for p in judged].count("inconsistent") == 1
    assert pairs_ranking(shown, judged) == [[8], [5, 9], [6]]


FLAGS = [("hallucination", "Hallucination"), ("too_long", "Longer than it needs to be")]
KEYS = [key for key, _ in FLAGS]


def test_the_rating_question_asks_only_for_what_the_project_enables_and_lists_its_flags():
    both = rating_text(prompt=" q? ", response="an {answer}", instructions="Be kind.", likert=True, flags=FLAGS)
    assert "[User Question]\nq?\n" in both and "an {answer}" in both and "Be kind." in both
    assert "- hallucination: Hallucination\n- too_long: Longer than it needs to be" in both
    assert both.endswith('{"likert": 5, "flags": ["hallucination"]}') and "from 1 (very bad) to 7" in both
    likert_only = rating_text(prompt="q", response="r", likert=True)
    assert '"flags"' not in likert_only and likert_only.endswith('{"likert": 5}') and "(none)" in likert_only
    flags_only = rating_text(prompt="q", response="r", likert=False, flags=FLAGS)
    assert '"likert"' not in flags_only and flags_only.endswith('{"flags": ["hallucination"]}')
    # One answer, never two: the pairwise parser finds no verdict in the question itself.
    assert parse_verdict(both) is None


@pytest.mark.parametrize("reply, rating", [
    ('{"likert": 5, "flags": ["hallucination"]}', Rating(5, ("hallucination",), True, False, 0)),
    ('Sure! ```json\n{"likert": 7, "flags": []}\n```', Rating(7, (), True, False, 0)),
    ('{"likert": 2, "flags": ["too_long", "made_up", "hallucination", 3]}',
     Rating(2, ("hallucination", "too_long"), True, False, 2)),
    ('{"likert": 0, "flags": ["too_long"]}', Rating(None, ("too_long",), True, True, 0)),
    ('{"likert": 9}', Rating(None, (), True, True, 0)),
    ('{"likert": 4.5, "flags": "hallucination"}', Rating(None, ("hallucination",), True, True, 0)),
    ('{"likert": true}', Rating(None, (), True, True, 0)),
    ('{"likert": "5"}', Rating(None, (), True, True, 0)),
    ("I would rate it a 5.", Rating(None, (), False, True, 0)),
    ('{"likert": 5, "flags": [', Rating(None, (), False, True, 0)),
    ("", Rating(None, (), False, True, 0)),
])
def test_a_rating_reply_keeps_what_is_valid_and_counts_what_it_drops(reply, rating):
    assert parse_rating(reply, likert=True, flag_keys=KEYS) == rating


def test_what_was_not_asked_is_ignored_not_dropped():
    reply = '{"likert": 9, "flags": ["hallucination", "made_up"]}'
    assert parse_rating(reply, likert=False, flag_keys=KEYS) == Rating(None, ("hallucination",), True, False, 1)
    assert parse_rating(reply, likert=False, flag_keys=[]) == Rating(None, (), True, False, 0)
    assert parse_rating('{"likert": 3}', likert=True, flag_keys=[]) == Rating(3, (), True, False, 0)
