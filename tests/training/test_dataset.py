"""training.dataset: the snapshot file round-trips, and each trainer takes only train-side data."""
from __future__ import annotations

import hashlib

import pytest

from labeling.splits import prompt_is_held_out
from training import dataset as ds

HELD = next(f"p{i}" for i in range(100) if prompt_is_held_out(f"p{i}"))
TRAIN = next(f"p{i}" for i in range(100) if not prompt_is_held_out(f"p{i}"))


def _dataset() -> ds.TrainingDataset:
    data = ds.TrainingDataset()
    for pid in (TRAIN, HELD):
        data.prompts[pid] = {"prompt_id": pid, "prompt": [{"role": "user", "content": pid}], "rm_prompt": f"RM {pid}"}
    data.demonstrations = [{"id": 1, "prompt_id": TRAIN, "response": "demo", "author": "a_1"},
                           {"id": 2, "prompt_id": HELD, "response": "held demo", "author": "a_2"}]
    data.judgments = [
        {"id": 10, "prompt_id": TRAIN, "responses": ["a", "b", "c"], "ranking": [[2], [0, 1]], "annotator": "a_1",
         "source": "human", "gold": False, "both_bad": False},
        {"id": 11, "prompt_id": TRAIN, "responses": ["a", "b"], "ranking": [[0, 1]], "annotator": "a_3",
         "source": "human", "gold": False, "both_bad": False},  # all tied: no comparison
        {"id": 12, "prompt_id": HELD, "responses": ["x", "y"], "ranking": [[1], [0]], "annotator": "a_1",
         "source": "human", "gold": False, "both_bad": False},
        {"id": 13, "prompt_id": TRAIN, "responses": ["u", "v"], "ranking": None, "annotator": None,
         "source": "import", "gold": False, "both_bad": True},  # no longer matches its task
    ]
    return data


def test_the_file_round_trips_and_its_hash_is_the_file_s(tmp_path):
    data = _dataset()
    rows, sha = ds.dataset_write(tmp_path / "snap.jsonl", data)
    assert rows == 2 + 2 + 4 and sha == hashlib.sha256((tmp_path / "snap.jsonl").read_bytes()).hexdigest()
    assert ds.dataset_read(tmp_path / "snap.jsonl") == data
    assert not (tmp_path / "snap.jsonl.part").exists()
    assert data.counts() == {"prompts": 2, "demonstrations": 2, "judgments": 4, "annotators": 3, "held_out_prompts": 1,
                             "sources": {"human": 4, "machine": 0}}


def test_a_bad_line_is_refused_with_its_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"type": "prompt", "prompt_id": "a", "prompt": "q", "rm_prompt": "q"}\n{"type": "vote"}\n')
    with pytest.raises(ValueError, match="line 2: unknown record type 'vote'"):
        ds.dataset_read(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1: not a training snapshot record"):
        ds.dataset_read(path)


def test_reward_groups_validate_on_held_out_prompts_and_skip_what_has_no_comparison():
    groups = ds.reward_groups(_dataset())
    assert groups.train == [{"prompt": f"RM {TRAIN}", "responses": ["a", "b", "c"], "ranking": [[2], [0, 1]]}]
    assert groups.held_out == [{"prompt": f"RM {HELD}", "responses": ["x", "y"], "ranking": [[1], [0]]}]
    assert groups.skipped == 2 and groups.reference_texts == [(f"RM {TRAIN}", "demo")]


def test_policy_data_comes_from_train_prompts_only_and_pairs_follow_the_one_ranking_rule():
    data = _dataset()
    train_prompt = data.prompt(TRAIN)
    assert ds.dpo_pairs(data) == [  # c beats the tied a and b; the tie itself gives no pair
        {"prompt": train_prompt, "chosen": "c", "rejected": "a"}, {"prompt": train_prompt, "chosen": "c", "rejected": "b"}]
    assert ds.sft_examples(data) == [{"prompt": train_prompt, "response": "demo"}]
    assert ds.sft_examples(data, include_chosen=True) == [
        {"prompt": train_prompt, "response": "demo"}, {"prompt": train_prompt, "response": "c"}]
    assert ds.ppo_prompts(data) == [train_prompt]


def test_held_out_pairs_are_the_held_out_prompts_judgments_by_the_same_rule():
    """What a policy's preference accuracy is measured on: only held-out prompts, never a trainer's."""
    data = _dataset()
    assert ds.held_out_pairs(data) == [{"prompt": data.prompt(HELD), "chosen": "y", "rejected": "x"}]
    assert not {p["prompt"][0]["content"] for p in ds.held_out_pairs(data)} & {p["prompt"][0]["content"] for p in ds.dpo_pairs(data)}


def test_machine_records_are_told_by_the_product_s_one_prefix_and_carry_their_weight_to_the_reward_groups():
    from labeling.models import MACHINE_SOURCE_PREFIX

    assert ds.MACHINE_SOURCE_PREFIX == MACHINE_SOURCE_PREFIX
    data = _dataset()
    data.judgments.append({"id": 14, "prompt_id": TRAIN, "responses": ["m", "n"], "ranking": [[0], [1]], "annotator": "a_9",
                           "source": "machine:judge", "gold": False, "both_bad": False, "weight": 0.5})
    groups = ds.reward_groups(data).train
    assert [g.get("weight") for g in groups] == [None, 0.5]
    assert data.counts()["sources"] == {"human": 4, "machine": 1, "machine_weight": 0.5}
    assert {"prompt": data.prompt(TRAIN), "chosen": "m", "rejected": "n"} in ds.dpo_pairs(data)  # DPO takes it, unweighted
