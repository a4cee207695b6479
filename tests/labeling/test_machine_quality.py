"""Machine judgments (source "machine:<name>") measured against people, by hand
(labeling.selectors.machine_quality), and kept out of every human measure: agreement, gold accuracy,
the label models' votes, the source leaderboard and the default export."""
from __future__ import annotations

import pytest

from labeling.models import ComparisonTask
from labeling.selectors.label_models import label_model_votes
from labeling.selectors.machine_quality import machine_quality_report
from labeling.selectors.quality import quality_report
from tests.labeling.judging import export, judge, tasks_with_responses

pytestmark = pytest.mark.django_db

LONG, SHORT = "a long and careful answer", "short"


def _machine(task, bot, ranking, consistent=True, version=None):
    meta = {"consistent": consistent, "pairs": []} | ({"version": version} if version is not None else {})
    return judge(task, bot, ranking, source="machine:m", counts_for_overlap=False, counts_for_retrain=False, machine=meta)


@pytest.fixture
def judged(project_factory, member):
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=3)
    t1, t2, t3, t4, t5 = tasks_with_responses(project, {
        "t1": [LONG, SHORT], "t2": [LONG, SHORT], "t3": [SHORT, LONG], "t4": [LONG, SHORT], "t5": [LONG, SHORT]})
    h1, h2, h3, bot = (member(project, "annotator") for _ in range(4))
    first, second = [[0], [1]], [[1], [0]]  # slot 0 wins: outcome +1 for (slot 0, slot 1); slot 1 wins: -1
    for who, ranking in ((h1, first), (h2, first), (h3, second)):
        judge(t1, who, ranking)  # majority +1; people agree on 1 of 3 pairs
    judge(t2, h1, second), judge(t2, h2, second)  # majority -1; 1 of 1
    judge(t3, h1, first), judge(t3, h2, second)  # no majority: a tie; 0 of 1
    judge(t4, h1, first)  # one person: a majority, no human pair
    # Version 12 judged t1 and t2, then version 11 (an admin switched back) t3 and t4; t5 names no version.
    _machine(t1, bot, first, version=12), _machine(t2, bot, first, version=12)
    _machine(t3, bot, [[0, 1]], consistent=False, version=11)  # its two orders disagreed: a tie
    _machine(t4, bot, first, version=11), _machine(t5, bot, second)  # t5: no person judged it, not shared
    return project


def test_a_machine_against_the_human_majority_by_hand(judged):
    [row] = machine_quality_report(project=judged)
    assert row["source"] == "machine:m" and row["judgments"] == 5
    assert row["items"] == 4  # t1..t4
    assert row["agreement_with_ties"] == pytest.approx(3 / 4)  # t1, t3 (tie = tie), t4
    assert (row["agreement_without_ties"], row["decided_items"]) == (pytest.approx(2 / 3), 3)  # t1, t4 of t1, t2, t4
    # machine [1, 1, 0, 1] against majority [1, -1, 0, 1]: p_o = 3/4, p_e = (3*2 + 1*1)/16 = 7/16.
    assert row["kappa"] == pytest.approx((3 / 4 - 7 / 16) / (1 - 7 / 16))
    assert (row["human_agreement"], row["human_pairs_compared"]) == (pytest.approx(2 / 5), 5)
    assert row["order_consistency"] == pytest.approx(4 / 5)
    # The longer answer: the machine picked it on t1, t2, t4 (t3 a tie); people on 4 of their 8 decided votes.
    assert (row["longer_wins"], row["longer_decided"]) == (1.0, 3)
    assert (row["human_longer_wins"], row["human_longer_decided"]) == (0.5, 8)


def test_each_version_of_a_machine_by_hand(judged):
    [row] = machine_quality_report(project=judged)
    v11, v12, none = row["versions"]
    assert (v11["version"], v12["version"], none["version"]) == (11, 12, None)  # by id, none last
    assert [v["judgments"] for v in row["versions"]] == [2, 2, 1]
    # Version 12 on t1 (majority +1, it +1) and t2 (majority -1, it +1); the people agree on 2 of 4 pairs there.
    assert (v12["items"], v12["agreement_with_ties"], v12["agreement_without_ties"], v12["order_consistency"]) == (
        2, 0.5, 0.5, 1.0)
    assert (v12["human_agreement"], v12["human_pairs_compared"]) == (0.5, 4)
    # machine [1, 1] against majority [1, -1]: p_o = 1/2, p_e = (2*1 + 0*1)/4 = 1/2: no agreement beyond chance.
    assert v12["kappa"] == pytest.approx(0.0)
    # Version 11 on t3 (a tie against no majority: they match) and t4 (both +1); only t4 is decided.
    assert (v11["items"], v11["agreement_with_ties"], v11["decided_items"], v11["agreement_without_ties"]) == (2, 1.0, 1, 1.0)
    assert (v11["order_consistency"], v11["human_agreement"], v11["human_pairs_compared"]) == (0.5, 0.0, 1)
    assert (none["items"], none["agreement_with_ties"], none["order_consistency"]) == (0, None, 1.0)


def test_machine_judgments_count_in_no_human_measure(judged):
    report = quality_report(project=judged, rounds=0, min_overlap=1)
    assert report["judgments"] == 8  # the people's only
    assert report["agreement"]["project"]["compared"] == 5  # with the machine, t4 would add a pair, t1..t3 more
    assert {a["annotator_id"] for a in report["annotators"]} == {
        j.annotator_id for j in judged.judgments.filter(source="human")}
    assert all(b["battles"] == 0 for b in report["leaderboard"]) or not report["leaderboard"]
    votes, _, read = label_model_votes(project=judged)
    assert read == 8 and len(votes) == 8
    rows = export(judged, fmt="judgments").decode().strip().splitlines()
    assert len(rows) == 8  # unnamed, an export is the people's data
    assert len(export(judged, fmt="judgments", judgment_source="machine:m").decode().strip().splitlines()) == 5


def test_a_machine_judging_a_gold_task_has_no_gold_accuracy(project_factory, member):
    project = project_factory(mode="pairwise", responses_per_task=2)
    [task] = tasks_with_responses(project, {"g": [LONG, SHORT]})
    ComparisonTask.objects.filter(pk=task.pk).update(is_gold=True, gold_ranking=[[r] for r in
                                                                                 task.slots.values_list("response_id", flat=True)])
    task.refresh_from_db()
    person, bot = member(project, "annotator"), member(project, "annotator")
    judge(task, person, [[0], [1]])
    _machine(task, bot, [[1], [0]])
    annotators = quality_report(project=project, rounds=0)["annotators"]
    assert [(a["annotator_id"], a["gold_accuracy"]) for a in annotators] == [(person.pk, 1.0)]
