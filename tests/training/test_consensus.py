"""training.consensus: a label model's consensus records on hand-made crowds with a known answer (pure)."""
from __future__ import annotations

import pytest

from labeling.label_models import ModelFit, targets_ranking
from training.consensus import Labelled, annotator_key, consensus_records
from training.dataset import TrainingDataset, dataset_read, dataset_write, dpo_pairs, reward_groups

import numpy as np


def _labelled(pk, task, responses, annotator, ranking_ids, *, shown=None, gold=False, gold_ranking=None, both_bad=False):
    index = {rid: i for i, rid in enumerate(responses)}
    record = {"id": pk, "prompt_id": f"p{task}", "responses": [f"r{r}" for r in responses],
              "ranking": [[index[r] for r in tie] for tie in ranking_ids], "annotator": f"a{annotator}",
              "source": "human", "gold": gold, "both_bad": both_bad}
    return Labelled(record, task, list(responses), annotator, ranking_ids, shown or list(responses),
                    gold_ranking if gold else None)


def _crowd():
    """Six two-response tasks (responses 10t+1, 10t+2; the first is always right). Annotators 1 and 2
    are right everywhere; 3 is wrong everywhere and outvotes nobody alone, but on tasks 4 and 5 only
    3 and 1 voted. Task 6 is gold, which 3 also got wrong."""
    out, pk = [], 0
    for task in range(1, 7):
        a, b = 10 * task + 1, 10 * task + 2
        voters = (1, 3) if task in (4, 5) else (1, 2, 3)
        for who in voters:
            pk += 1
            right = who != 3
            out.append(_labelled(pk, task, [a, b], who, [[a], [b]] if right else [[b], [a]], gold=task == 6,
                                 gold_ranking=[[a], [b]]))
    return out


def test_one_record_per_task_with_the_posterior_as_targets_and_the_gold_left_out():
    labelled = _crowd()
    records, summary = consensus_records(labelled, model="dawid-skene", targets="soft", keep_gold=False, left_out=2)
    assert [r["prompt_id"] for r in records] == ["p1", "p2", "p3", "p4", "p5"]  # gold task 6 votes, trains nothing
    by_task = {r["prompt_id"]: r for r in records}
    assert by_task["p1"]["judgments"] == 3 and by_task["p4"]["judgments"] == 2
    assert by_task["p1"]["id"] == 3 and by_task["p1"]["source"] == "label-model" and by_task["p1"]["annotator"] is None
    for record in records:
        # Annotator 3 is wrong on the gold task and against 1 and 2 everywhere: the model trusts 1 over 3
        # on the 1-against-1 tasks, where majority vote could only say 50/50.
        (i, j, p), = record["targets"]
        assert (i, j) == (0, 1) and p > 0.9
        assert record["ranking"] == [[0], [1]]
    assert summary == {**summary, "model": "dawid-skene", "targets": "soft", "judgments": 16, "votes": 16, "tasks": 5,
                       "annotators": 3, "excluded_judgments": 2, "flips_vs_majority": 0}
    majority, _ = consensus_records(labelled, model="majority", targets="soft", keep_gold=False)
    assert {r["prompt_id"]: r["targets"][0][2] for r in majority}["p4"] == 0.5
    assert {r["prompt_id"]: r["ranking"] for r in majority}["p4"] == [[0, 1]]  # a coin flip: no comparison


def test_hard_targets_keep_only_the_consensus_ranking_and_gold_stays_when_asked():
    records, summary = consensus_records(_crowd(), model="position-em", targets="hard", keep_gold=True)
    assert len(records) == 6 and all("targets" not in r for r in records)
    assert all(r["ranking"] == [[0], [1]] for r in records) and summary["targets"] == "hard"


def test_the_snapshot_file_keeps_the_summary_and_trainers_read_the_consensus(tmp_path):
    labelled = _crowd()
    records, summary = consensus_records(labelled, model="dawid-skene", targets="soft", keep_gold=False)
    dataset = TrainingDataset(prompts={f"p{t}": {"prompt_id": f"p{t}", "prompt": f"q{t}", "rm_prompt": f"q{t}"}
                                       for t in range(1, 7)}, judgments=records, label_model=summary)
    dataset_write(tmp_path / "s.jsonl", dataset)
    again = dataset_read(tmp_path / "s.jsonl")
    assert again.label_model == summary and again.judgments == records
    counts = again.counts()
    assert counts["judgments"] == 16 and counts["consensus_tasks"] == 5 and counts["annotators"] == 3
    groups = reward_groups(again)
    assert all(g["targets"] == [[0, 1, g["targets"][0][2]]] for g in groups.train + groups.held_out)
    assert len(groups.train) + len(groups.held_out) == 5
    assert {(p["chosen"], p["rejected"]) for p in dpo_pairs(again)} <= {(f"r{10 * t + 1}", f"r{10 * t + 2}") for t in range(1, 6)}


def test_a_stale_ranking_does_not_vote_and_an_unknown_model_is_refused():
    stale = _labelled(1, 1, [11, 12], 1, [[11], [12]])
    stale = Labelled({**stale.record, "ranking": None}, 1, [11, 12], 1, None, [11, 12], None)
    fresh = _labelled(2, 1, [11, 12], 2, [[12], [11]])
    records, summary = consensus_records([stale, fresh], model="majority", targets="soft", keep_gold=False)
    assert summary["votes"] == 1 and records[0]["targets"] == [[0, 1, 0.0]] and records[0]["judgments"] == 1
    with pytest.raises(ValueError):
        consensus_records([fresh], model="glad", targets="soft", keep_gold=False)
    with pytest.raises(ValueError):
        consensus_records([fresh], model="majority", targets="fuzzy", keep_gold=False)


def test_annotator_keys_one_voice_per_import_source():
    sources: dict[str, int] = {}
    assert annotator_key(user_id=7, source="human", judgment_id=1, sources=sources) == 7
    hh = annotator_key(user_id=None, source="hh-rlhf", judgment_id=2, sources=sources)
    assert annotator_key(user_id=None, source="hh-rlhf", judgment_id=3, sources=sources) == hh < 0
    assert annotator_key(user_id=None, source="pandalm", judgment_id=4, sources=sources) not in (hh, 7)
    deleted = {annotator_key(user_id=None, source="human", judgment_id=k, sources=sources) for k in (5, 6)}
    assert len(deleted) == 2 and not deleted & {hh, 7}


def test_targets_are_turned_to_slot_order_whichever_response_id_is_smaller():
    fit = ModelFit("majority", [(3, 8), (3, 5)], np.array([[0.8, 0.2, 0.0], [0.4, 0.4, 0.2]]))
    assert fit.targets([8, 3, 5]) == [[0, 1, 0.2], [1, 2, 0.5]]  # (8, 3): 1 - P(3 beats 8); (8, 5) unseen


def test_targets_ranking_is_copeland_with_ties():
    assert targets_ranking(2, [[0, 1, 0.3]]) == [[1], [0]]
    assert targets_ranking(2, [[0, 1, 0.5]]) == [[0, 1]]
    assert targets_ranking(3, [[0, 1, 0.9], [0, 2, 0.8], [1, 2, 0.5]]) == [[0], [1, 2]]
    assert targets_ranking(3, [[0, 1, 0.7], [1, 2, 0.7], [0, 2, 0.3]]) == [[0, 1, 2]]  # a cycle: no consensus
