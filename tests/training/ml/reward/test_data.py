"""What the reward model reads: groups from pairs, the prompt split, and truncation (the prompt cut
from the left, the response kept, the response's token count). Tiny tokenizers, offline, no DB."""
from __future__ import annotations

import torch
from transformers import AutoTokenizer

from tests.tiny_models import tiny_bert
from training.ml.preference_file import read_preference_file
from training.ml.reward.config import default_reward_base
from training.ml.reward.data import PairEncoder, groups_from_pairs, split_by_prompt

torch.set_num_threads(1)


def test_groups_from_pairs_and_read_file(tmp_path):
    import gzip
    import json

    rec = {"id": "x/1", "prompt": "P", "chosen": "A", "rejected": "B", "source": "x"}
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    assert read_preference_file(path) == [rec]
    assert groups_from_pairs([rec]) == [{"prompt": "P", "responses": ["A", "B"], "ranking": [[0], [1]]}]


def test_split_keeps_a_prompt_on_one_side():
    groups = [{"prompt": f"p{i % 40}", "responses": ["a", "b"], "ranking": [[0], [1]]} for i in range(400)]
    train, val = split_by_prompt(groups, 0.25, seed=0)
    assert train and val
    assert not {g["prompt"] for g in train} & {g["prompt"] for g in val}
    assert split_by_prompt(groups, 0.25, seed=0) == (train, val)


# ----------------------------------------------------------------------------------------------
# Truncation


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


def test_the_response_token_count_is_what_the_model_sees(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert(tmp_path / "bert"))
    encoder = PairEncoder(tokenizer, max_length=16, add_eos=False)
    short, long = encoder.encode(["a prompt", "p"], ["abc", "x" * 40])
    assert short.response_tokens == 3 and not short.truncated  # one token a character; the prompt not counted
    assert long.response_tokens == 16 - encoder.specials and len(long.input_ids) == 16  # cut as the model sees it


# ----------------------------------------------------------------------------------------------
# Soft targets (a label model's consensus)


def test_group_comparisons_turn_soft_targets_toward_the_favoured_side_and_drop_coin_flips():
    from training.ml.reward.data import group_comparisons

    hard = {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [[2], [0, 1]]}
    assert group_comparisons(hard) == [(2, 0, 1.0), (2, 1, 1.0)]
    soft = {**hard, "targets": [[0, 1, 0.8], [0, 2, 0.25], [1, 2, 0.5]]}
    assert group_comparisons(soft) == [(0, 1, 0.8), (2, 0, 0.75)]


def test_a_batch_carries_the_targets_and_none_for_rankings_alone(bert_dir):
    from training.ml.reward.data import make_batch, tokenize_groups

    encoder = PairEncoder(AutoTokenizer.from_pretrained(bert_dir), 32, add_eos=False)
    ranked = {"prompt": "p", "responses": ["a", "b"], "ranking": [[0], [1]]}
    soft = {"prompt": "q", "responses": ["c", "d"], "ranking": [[1], [0]], "targets": [[0, 1, 0.3]]}
    assert make_batch(tokenize_groups([ranked], encoder), 0, torch.device("cpu"))["targets"] is None
    batch = make_batch(tokenize_groups([ranked, soft], encoder), 0, torch.device("cpu"))
    assert batch["winners"].tolist() == [0, 3] and batch["losers"].tolist() == [1, 2]
    assert batch["targets"].tolist() == [1.0, 0.699999988079071]


def test_a_batch_carries_group_weights_and_none_when_all_are_one(bert_dir):
    from training.ml.reward.data import make_batch, tokenize_groups

    encoder = PairEncoder(AutoTokenizer.from_pretrained(bert_dir), 32, add_eos=False)
    human = {"prompt": "p", "responses": ["a", "b"], "ranking": [[0], [1]]}
    machine = {"prompt": "q", "responses": ["c", "d"], "ranking": [[1], [0]], "weight": 0.5}
    assert make_batch(tokenize_groups([human, dict(machine, weight=1.0)], encoder), 0, torch.device("cpu"))["weights"] is None
    batch = make_batch(tokenize_groups([human, machine], encoder), 0, torch.device("cpu"))
    assert batch["weights"].tolist() == [1.0, 0.5] and batch["num_groups"] == 2
