"""Reward model: the grouped loss by hand, truncation, tiny-model training, normalisation, save/load,
atomic output. Pure torch, no DB."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from labeling.ranking import ranking_pairs
from tests.tiny_models import tiny_bert, tiny_llama
from training.ml.reward import (
    PairEncoder,
    RewardConfig,
    RewardModel,
    default_reward_base,
    evaluate_pairs,
    groups_from_pairs,
    grouped_ranking_loss,
    load_reward_model,
    pool,
    read_preference_file,
    save_reward_model,
    score,
    split_by_prompt,
    train_reward_model,
)

torch.set_num_threads(1)


def neg_log_sigmoid(x: float) -> float:
    return -math.log(1.0 / (1.0 + math.exp(-x)))


# ------------------------------------------------------------------------------------- the loss


def test_loss_k2_by_hand():
    rewards = torch.tensor([1.0, 0.2, 0.5, 0.9])
    loss = grouped_ranking_loss(
        rewards, winners=torch.tensor([0, 2]), losers=torch.tensor([1, 3]),
        group_index=torch.tensor([0, 1]), num_groups=2,
    )
    expected = (neg_log_sigmoid(1.0 - 0.2) + neg_log_sigmoid(0.5 - 0.9)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_k4_with_tie_and_a_k2_group_by_hand():
    # Group 0: K=4 ranked [[2], [0, 3], [1]] -> 5 comparisons (0 and 3 tied). Group 1: K=2.
    r = [0.3, -0.4, 1.2, 0.1, 0.7, 0.0]
    ranking = [[2], [0, 3], [1]]
    pairs = ranking_pairs(ranking)
    winners = [w for w, _ in pairs] + [4]
    losers = [l for _, l in pairs] + [5]
    loss = grouped_ranking_loss(
        torch.tensor(r), torch.tensor(winners), torch.tensor(losers),
        torch.tensor([0] * 5 + [1]), num_groups=2,
    )
    group0 = (
        neg_log_sigmoid(1.2 - 0.3) + neg_log_sigmoid(1.2 - 0.1) + neg_log_sigmoid(1.2 + 0.4)
        + neg_log_sigmoid(0.3 + 0.4) + neg_log_sigmoid(0.1 + 0.4)
    ) / 5  # normaliser = 5 non-tied comparisons, not C(4,2) = 6
    group1 = neg_log_sigmoid(0.7 - 0.0)
    assert loss.item() == pytest.approx((group0 + group1) / 2, rel=1e-6)


def test_loss_gradient_flows_to_every_response():
    rewards = torch.tensor([0.1, 0.5, 0.3], requires_grad=True)
    grouped_ranking_loss(rewards, torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]),
                         torch.tensor([0, 0, 0]), 1).backward()
    assert torch.all(rewards.grad != 0)


def test_comparisons_of_skips_ties():
    assert ranking_pairs([[0], [1]]) == [(0, 1)]
    assert sorted(ranking_pairs([[2], [0, 3], [1]])) == sorted([(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)])
    assert ranking_pairs([[0, 1, 2]]) == []
    assert len(ranking_pairs([[0], [1], [2], [3]])) == 6


def test_groups_from_pairs_and_read_file(tmp_path):
    import gzip
    import json

    rec = {"id": "x/1", "prompt": "P", "chosen": "A", "rejected": "B", "source": "x"}
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    assert read_preference_file(path) == [rec]
    assert groups_from_pairs([rec]) == [{"prompt": "P", "responses": ["A", "B"], "ranking": [[0], [1]]}]


def test_a_bad_preference_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"d.jsonl:3: not an object"):
        read_preference_file(path)
    path.write_text('{"prompt": "p", "chosen": 1}\n')
    assert read_preference_file(path) == [{"prompt": "p", "chosen": 1}]  # no fields asked for: any object
    with pytest.raises(ValueError, match=r"d.jsonl:1: missing or non-string chosen, rejected"):
        read_preference_file(path, ("prompt", "chosen", "rejected"))
    broken = tmp_path / "d.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"d.jsonl.gz: cannot read"):
        read_preference_file(broken)


def test_split_keeps_a_prompt_on_one_side():
    groups = [{"prompt": f"p{i % 40}", "responses": ["a", "b"], "ranking": [[0], [1]]} for i in range(400)]
    train, val = split_by_prompt(groups, 0.25, seed=0)
    assert train and val
    assert not {g["prompt"] for g in train} & {g["prompt"] for g in val}
    assert split_by_prompt(groups, 0.25, seed=0) == (train, val)


# ----------------------------------------------------------------------------------- truncation


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("llama"))


def test_left_truncation_keeps_response(bert_dir):
    tok = AutoTokenizer.from_pretrained(bert_dir)  # character-level: one token per character
    enc = PairEncoder(tok, max_length=10, add_eos=False)
    short, cut, huge = enc.encode(["ab", "0123456789", "0123"], ["xyz", "RESP", "ABCDEFGHIJKLMN"])
    assert tok.decode(short.input_ids) == "abxyz" and not short.truncated
    assert tok.decode(cut.input_ids) == "456789RESP" and cut.truncated  # prompt cut from the LEFT
    assert tok.decode(huge.input_ids) == "ABCDEFGHIJ" and huge.truncated  # response alone: from the right


def test_left_truncation_with_pair_template():
    tok = AutoTokenizer.from_pretrained(default_reward_base())  # [CLS] prompt [SEP] response [SEP]
    enc = PairEncoder(tok, max_length=12, add_eos=False)
    (e,) = enc.encode(["one two three four five six seven eight nine ten"], ["the answer is here"])
    assert len(e.input_ids) == 12 and e.truncated
    assert tok.decode(e.input_ids) == "[CLS] six seven eight nine ten [SEP] the answer is here [SEP]"
    assert e.token_type_ids[-5:] == [1] * 5


def test_decoder_gets_eos_for_last_token_pooling(llama_dir):
    tok = AutoTokenizer.from_pretrained(llama_dir)
    (e,) = PairEncoder(tok, max_length=6, add_eos=True).encode(["abcdef"], ["xy"])
    assert e.input_ids[-1] == tok.eos_token_id and tok.decode(e.input_ids[:-1]) == "defxy"


def test_pooling_ignores_padding(bert_dir):
    model = RewardModel.from_backbone_path(bert_dir).eval()
    tok = AutoTokenizer.from_pretrained(bert_dir)
    alone = score(model, tok, ["hi"], ["short"], batch_size=1)
    padded = score(model, tok, ["hi", "a much longer prompt here"], ["short", "and a long response"], batch_size=2)
    assert padded[0] == pytest.approx(alone[0], abs=1e-5)


def test_response_pooling_averages_segment_one_only():
    hidden = torch.tensor([[[1.0], [3.0], [10.0], [20.0], [99.0]],   # prompt 1, 3; response 10, 20; pad
                           [[2.0], [4.0], [6.0], [0.0], [0.0]]])     # no segment-1 tokens: every token
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    types = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert pool(hidden, mask, "response", types).squeeze(-1).tolist() == [15.0, 4.0]
    assert pool(hidden, mask, "mean", types).squeeze(-1).tolist() == [8.5, 4.0]
    with pytest.raises(ValueError, match="pooling must be one of"):
        RewardModel(torch.nn.Linear(1, 1), "max")


def test_response_pooling_trains_and_reloads(bert_dir, tmp_path):
    train_reward_model(separable_groups(32), tiny_config(bert_dir, pooling="response", epochs=2), tmp_path / "rm")
    model, tok, config = load_reward_model(tmp_path / "rm")
    assert config.pooling == model.pooling == "response"
    rewards = score(model, tok, ["q?", "q?"], ["good good good", "bad bad"])
    assert rewards[0] > rewards[1]


# ------------------------------------------------------------------------------------- training


def separable_groups(n: int) -> list[dict]:
    return [
        {"prompt": f"question {i}?", "responses": ["good good good", "bad bad"], "ranking": [[0], [1]]}
        for i in range(n)
    ]


def tiny_config(base: Path, **kw) -> RewardConfig:
    defaults = dict(base_model=str(base), max_length=48, batch_size=8, lr=3e-3, epochs=3, warmup_fraction=0.0,
                    precision="fp32", val_fraction=0.25, seed=0)
    return RewardConfig(**(defaults | kw))


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_tiny_model_learns_separable_set(which, bert_dir, llama_dir, tmp_path):
    base = bert_dir if which == "bert" else llama_dir
    pairs = [{"prompt": f"q {i}?", "chosen": "good good good", "rejected": "bad bad"} for i in range(16)]
    before_model = RewardModel.from_backbone_path(base)
    tok = AutoTokenizer.from_pretrained(base)
    before = evaluate_pairs(before_model, tok, pairs)
    calls = []
    metrics = train_reward_model(separable_groups(64), tiny_config(base), tmp_path / "rm",
                                 progress=lambda f, m: calls.append((f, m)))
    model, tok, config = load_reward_model(tmp_path / "rm")
    after = evaluate_pairs(model, tok, pairs)

    assert config.pooling == ("mean" if which == "bert" else "last")
    assert after["accuracy"] == 1.0 and after["mean_margin"] > before["mean_margin"] + 0.5
    assert metrics["val_accuracy"] == 1.0 and metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    changed = [
        not torch.equal(p, model.backbone.state_dict()[k])
        for k, p in before_model.backbone.state_dict().items() if p.is_floating_point()
    ]
    assert any(changed)
    assert calls and calls[-1][0] == 1.0 and all("loss" in m for _, m in calls[:-1])
    assert metrics["comparisons"] + metrics["val_comparisons"] == 64
    for key in ["train_loss", "val_log_loss", "groups", "truncated", "precision", "device", "seconds"]:
        assert key in metrics


def test_k4_groups_with_ties_train_and_count_comparisons(bert_dir, tmp_path):
    groups = [
        {"prompt": f"q{i}", "responses": ["best one", "ok", "ok too", "no"], "ranking": [[0], [1, 2], [3]]}
        for i in range(24)
    ] + [{"prompt": "all tied", "responses": ["a", "b"], "ranking": [[0, 1]]}]
    metrics = train_reward_model(groups, tiny_config(bert_dir, epochs=1, val_fraction=0.0), tmp_path / "rm")
    assert metrics["comparisons"] == 24 * 5  # C(4,2) = 6 minus the tie
    assert metrics["groups"] == 24 and metrics["groups_without_comparisons"] == 1


def test_normalisation_centres_reference_and_round_trip(bert_dir, tmp_path):
    reference = [(f"q {i}?", "good good good") for i in range(10)] + [("other", "bad bad")]
    train_reward_model(separable_groups(32), tiny_config(bert_dir, epochs=1, val_fraction=0.0),
                       tmp_path / "rm", reference_texts=reference)
    model, tok, config = load_reward_model(tmp_path / "rm")
    ref_scores = score(model, tok, [p for p, _ in reference], [r for _, r in reference], max_length=config.max_length)
    assert abs(sum(ref_scores) / len(ref_scores)) < 1e-4
    assert float(model.bias) != 0.0

    save_reward_model(tmp_path / "copy", model, tok, config)
    again, tok2, config2 = load_reward_model(tmp_path / "copy")
    assert config2 == config
    assert score(again, tok2, ["q 1?", "x"], ["good", "bad"]) == pytest.approx(score(model, tok, ["q 1?", "x"], ["good", "bad"]), abs=1e-6)


def test_truncation_is_counted_not_dropped(bert_dir, tmp_path):
    groups = [{"prompt": "long prompt " * 10 + str(i), "responses": ["yes", "no"], "ranking": [[0], [1]]}
              for i in range(8)]
    metrics = train_reward_model(groups, tiny_config(bert_dir, max_length=20, epochs=1, val_fraction=0.0), tmp_path / "rm")
    assert metrics["truncated"] == 16 and metrics["comparisons"] == 8


def test_failure_leaves_no_output_dir(bert_dir, tmp_path):
    def explode(fraction, metrics):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train_reward_model(separable_groups(16), tiny_config(bert_dir, epochs=1), tmp_path / "rm", progress=explode)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_dir_is_refused(bert_dir, tmp_path):
    (tmp_path / "rm").mkdir()
    with pytest.raises(FileExistsError):
        train_reward_model(separable_groups(8), tiny_config(bert_dir, epochs=1), tmp_path / "rm")


def test_config_fields_all_have_help():
    for f in dataclasses.fields(RewardConfig):
        assert f.metadata.get("help"), f.name
    assert RewardConfig().max_length == 256 and RewardConfig().epochs == 1 and RewardConfig().dropout == 0.0
