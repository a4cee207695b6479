"""Preference accuracy on human pairs (issue 29): the figures against hand-computed values, the
log-probabilities against a hand-written forward pass, prompt-clustered intervals, and a policy that
DPO trained on the pairs scoring above its parent while its parent scores exactly 1/2 against itself."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_models import tiny_llama
from training.ml.dpo import DPOConfig, train_dpo
from training.ml.preference_eval import (bootstrap_interval, evaluate_preferences, outcomes, pair_logprobs,
                                         preference_metrics)
from training.ml.text import encode_example, load_policy

torch.set_num_threads(1)
PAIRS = [{"prompt": f"pick {i}", "chosen": "yes", "rejected": "no!"} for i in range(8)]


def test_outcomes_count_a_tie_as_one_half():
    assert outcomes(torch.tensor([2.0, 0.0, -1.0])).tolist() == [1.0, 0.5, 0.0]


def test_the_metrics_match_hand_computed_values():
    # Three pairs: (chosen, rejected) summed logps under the policy and the parent, and token counts.
    policy = torch.tensor([[-4.0, -6.0], [-3.0, -2.0], [-10.0, -12.0]])
    parent = torch.tensor([[-5.0, -5.0], [-2.0, -3.0], [-11.0, -10.0]])
    tokens = torch.tensor([[2.0, 4.0], [1.0, 1.0], [10.0, 4.0]])
    m = preference_metrics(policy, parent, tokens, beta=0.5, clusters=["a", "b", "c"])
    # Summed: policy prefers chosen on pairs 0 and 2 (-4 > -6, -10 > -12), not 1; parent ties pair 0,
    # prefers chosen on 1, not on 2 -> policy 2/3, parent (0.5 + 1 + 0) / 3 = 1/2.
    assert m["pref_accuracy_policy"] == 2 / 3 and m["pref_accuracy_parent"] == 0.5  # exact: no float32 noise in the JSON
    assert m["pref_accuracy_delta"] == pytest.approx(2 / 3 - 0.5)
    # Per token: policy -2 vs -1.5 (no), -3 vs -2 (no), -1 vs -3 (yes) -> 1/3; parent -2.5 vs -1.25 (no),
    # -2 vs -3 (yes), -1.1 vs -2.5 (yes) -> 2/3: the longer chosen answer is no longer penalised for its length.
    assert m["pref_accuracy_per_token_policy"] == pytest.approx(1 / 3)
    assert m["pref_accuracy_per_token_parent"] == pytest.approx(2 / 3)
    # Implicit margins 0.5 * ((pc - rc) - (pr - rr)): 0.5*(1 - -1) = 1, 0.5*(-1 - 1) = -1, 0.5*(1 - -2) = 1.5.
    assert m["implicit_reward_accuracy"] == pytest.approx(2 / 3)
    assert m["implicit_margin_mean"] == pytest.approx((1 - 1 + 1.5) / 3)
    low, high = m["implicit_reward_accuracy_ci95"]
    assert 0.0 <= low <= 2 / 3 <= high <= 1.0 and m["eval_pairs"] == 3


def test_the_interval_resamples_prompts_not_pairs():
    """Four pairs of one prompt and one of another: a draw takes both, one of them twice or the other twice
    (1/4 of draws take the second prompt twice, mean 0), so the low end is 0, where a pair bootstrap's is not."""
    values, clusters = [1.0, 1.0, 1.0, 1.0, 0.0], ["a", "a", "a", "a", "b"]
    assert bootstrap_interval(values, clusters)[0] == 0.0
    assert bootstrap_interval(values)[0] > 0.0
    assert bootstrap_interval([0.7] * 6, list("aabbcc")) == pytest.approx((0.7, 0.7))
    assert bootstrap_interval([]) is None


def test_pair_logprobs_match_a_hand_written_forward(tmp_path: Path):
    torch.manual_seed(0)
    model, tokenizer = load_policy(tiny_llama(tmp_path / "m"))
    pairs = [{"prompt": "pick one", "chosen": "yes please", "rejected": "no"},
             {"prompt": "a longer question here", "chosen": "ok", "rejected": "not at all, thanks"}]
    logps, tokens = pair_logprobs(model, tokenizer, pairs, max_length=64, batch_size=2)
    for i, pair in enumerate(pairs):
        for j, side in enumerate(("chosen", "rejected")):
            ids, n_prompt = encode_example(tokenizer, pair["prompt"], pair[side], 64)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0].float()
            expected = sum(torch.log_softmax(logits[t - 1], -1)[ids[t]].item() for t in range(n_prompt, len(ids)))
            assert logps[i, j].item() == pytest.approx(expected, abs=1e-4)
            assert tokens[i, j].item() == len(ids) - n_prompt


def test_a_policy_trained_on_the_pairs_beats_its_parent_which_scores_one_half_against_itself(tmp_path: Path):
    torch.manual_seed(0)
    parent = tiny_llama(tmp_path / "parent")
    config = DPOConfig(beta=0.5, epochs=6, lr=5e-3, batch_size=4, micro_batch_size=2, warmup_ratio=0.0)
    train_dpo(parent, PAIRS, tmp_path / "child", config)
    same = evaluate_preferences(parent, parent, PAIRS, beta=0.5, device="cpu")
    assert same["implicit_reward_accuracy"] == 0.5 and same["implicit_margin_mean"] == 0.0
    assert same["pref_accuracy_delta"] == 0.0 and same["pref_accuracy_delta_ci95"] == (0.0, 0.0)
    child = evaluate_preferences(tmp_path / "child", parent, PAIRS, beta=0.5, device="cpu")
    assert child["eval_pairs"] == 8 and child["implicit_reward_accuracy"] == 1.0 and child["implicit_margin_mean"] > 0
    assert child["pref_accuracy_policy"] == 1.0 and child["pref_accuracy_parent"] == same["pref_accuracy_policy"]
