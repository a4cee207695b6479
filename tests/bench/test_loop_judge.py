"""bench/loop_judge.py: the judge's held-out warning, the endpoint judge's prompt, verdict parsing and
the two orders combined, by hand; and the endpoint judge over real HTTP on loopback (a scripted judge
that reads the answers, so the order swap is checked on what was sent)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.loop_judge import (
    CHANCE_WARNING, JUDGE_SYSTEM_PROMPT, NO_HELDOUT_WARNING, combine_orders, endpoint_judge, judge_messages,
    judge_warning, parse_verdict,
)


@pytest.mark.parametrize("interval, warning", [
    ([0.62, 0.81], None), ([0.5001, 0.7], None),  # above chance
    ([0.45, 0.66], CHANCE_WARNING), ([0.5, 0.6], CHANCE_WARNING),  # includes 1/2
    ([0.0, 0.2], CHANCE_WARNING),  # below: wrong more often than right is no better
    (None, NO_HELDOUT_WARNING),  # nothing held out: unchecked
])
def test_a_judge_not_above_chance_on_its_held_out_pairs_is_warned_about(interval, warning):
    assert judge_warning(interval) == warning


def test_the_judge_sees_the_question_and_both_answers_under_their_labels():
    [message] = judge_messages("  What is 2+2?\n", "Four.", "5")
    assert message["role"] == "user"
    assert message["content"] == ("[User Question]\nWhat is 2+2?\n\n[The Start of Assistant A's Answer]\nFour.\n"
                                  "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n5\n"
                                  "[The End of Assistant B's Answer]")
    assert '"A" if assistant A is better' in JUDGE_SYSTEM_PROMPT


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), ("B\n", "B"), ("**b**", "B"), ("(A)", "A"), ("Assistant B.", "B"), ("a", "A"),  # the letter alone
    ("[[A]]", "A"), ("After careful thought: [[B]]", "B"), ("Verdict: [[A]]. B was close.", "A"),  # MT-Bench's
    ("Assistant A is better than Assistant B.", "A"), ("Assistant B's answer is better.", "B"),  # stated
    ("Response B is the better one", "B"), ("The better response is A.", "A"), ("Verdict: **B**", "B"),
    ("My choice is A", "A"), ("I prefer B; A rambles.", "B"),
    ("A. It is more detailed.", "A"), ("B: the first one is wrong", "B"),  # a leading letter
    # Neither named, or both named as the winner: None, never a guess.
    ("", None), ("Both are equally good.", None), ("A good answer would mention B12.", None),
    ("[[A]] or [[B]], hard to say", None), ("A is better, B is better", None), ("I prefer a shorter answer", None),
])
def test_a_verdict_is_read_from_the_reply_or_none(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize("as_a, as_b, combined", [
    ("A", "B", (1.0, "consistent")),  # the policy's answer won in both orders
    ("B", "A", (0.0, "consistent")),  # the parent's did
    ("A", "A", (0.5, "inconsistent")), ("B", "B", (0.5, "inconsistent")),  # the position won: a tie
    (None, "B", (0.5, "unparsed")), ("A", None, (0.5, "unparsed")), (None, None, (0.5, "unparsed")),
])
def test_two_orders_make_a_win_a_loss_or_a_tie(as_a, as_b, combined):
    assert combine_orders(as_a, as_b) == combined


def _endpoint(base_url: str) -> SimpleNamespace:
    """What endpoint_judge reads of a registered endpoint version (training.services.endpoints)."""
    return SimpleNamespace(pk=7, name="judge", config={"endpoint": {
        "base_url": base_url, "model": "judge", "temperature": 0.8, "max_tokens": None, "retries": 0, "timeout_s": 20}})


def test_an_endpoint_judge_asks_both_orders_with_the_answers_swapped(settings, scripted_judge, capsys):
    """A judge that prefers the answer saying "good" (wherever it is shown) gives the policy prompts 0
    and 2 in both orders; one that always says "A" ties prompt 1; prompt 3's reply names neither."""
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"  # the operator's allow-list opens loopback
    prompts, ours, theirs = ["q0?", "q1?", "q2?", "q3?"], ["good one", "so-so", "good two", "x"], ["bad", "meh", "bad", "y"]
    shown: dict[str, list[tuple[str, str]]] = {}

    def judge(question: str, turn: int, a: str, b: str) -> str:
        shown.setdefault(question, []).append((a, b))
        return {"q1?": "A", "q3?": "Hmm, hard to say."}.get(question, "[[A]]" if "good" in a else "Assistant B is better.")

    state, base_url = scripted_judge(judge)
    report = endpoint_judge(_endpoint(base_url), prompts, ours, theirs, seed=3)

    assert report["outcomes"] == [1.0, 0.5, 1.0, 0.5]
    assert report["judge_inconsistent"] == 0.25 and report["judge_unparsed"] == 0.25
    assert "1 of 4 prompts" in report["judge_warning"] and report["judge_warning"] in capsys.readouterr().err
    for question, a, b in zip(prompts, ours, theirs):  # the policy's answer first as A, then as B
        assert shown[question] == [(a, b), (b, a)]
    bodies = [r["body"] for r in state.seen]
    assert {b["temperature"] for b in bodies} == {0.0} and {b["max_tokens"] for b in bodies} == {16}  # greedy, short
