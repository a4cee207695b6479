"""Reward accuracy by length: the length-only baseline, the buckets and the length dependence
(margin-length correlation, accuracy on shorter- and longer-chosen pairs) on hand-computed values, the
validation figures train_reward_model stores, and ODIN's length-disentangled training (length_debias):
its losses by hand, a toy set where length alone separates the pairs, and the saved folder. Pure torch, no DB."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.tiny_models import tiny_bert
from training.ml.reward import (
    LENGTH_DEBIAS, LENGTH_HEAD_FILE, PairEncoder, RewardConfig, collate, length_dependence, length_outcomes,
    length_report, load_reward_model, margin_report, odin_decorrelation_loss, odin_length_loss,
    odin_orthogonality_loss, odin_regulariser, pearson, score, train_reward_model,
)

torch.set_num_threads(1)


def test_the_longer_answer_wins_and_a_tie_is_half():
    assert length_outcomes(["aaaa", "a", "abc", ""], ["a", "aaaa", "xyz", ""]) == [1.0, 0.0, 0.5, 0.5]


def test_length_report_by_hand():
    margins = [1.0, -1.0, 0.0, 2.0]
    chosen = ["aaaa", "a", "aaaaaaaaaa", "abc"]
    rejected = ["a", "aaaa", "aaaaaaaaaa", "abcd"]
    # (len c - len r) / max: +0.75, -0.75, 0, -0.25. Model outcomes 1, 0, 1/2, 1; length's 1, 0, 1/2, 0.
    assert length_report(margins, chosen, rejected) == {
        "length_baseline": 0.375,
        "by_length": [
            {"bucket": "chosen shorter by >50%", "pairs": 1, "accuracy": 0.0, "length_baseline": 0.0},
            {"bucket": "chosen shorter by 10-50%", "pairs": 1, "accuracy": 1.0, "length_baseline": 0.0},
            {"bucket": "within 10%", "pairs": 1, "accuracy": 0.5, "length_baseline": 0.5},
            {"bucket": "chosen longer by >50%", "pairs": 1, "accuracy": 1.0, "length_baseline": 1.0},
        ],
    }


@pytest.mark.parametrize("chosen, rejected, bucket", [
    (10, 9, "within 10%"), (9, 10, "within 10%"),  # exactly 10%: still within
    (2, 1, "chosen longer by 10-50%"), (1, 2, "chosen shorter by 10-50%"),  # exactly 50%: the nearer bucket
    (3, 1, "chosen longer by >50%"), (1, 3, "chosen shorter by >50%"), (0, 0, "within 10%"),
])
def test_bucket_edges(chosen, rejected, bucket):
    report = length_report([1.0], ["x" * chosen], ["x" * rejected])
    assert [b["bucket"] for b in report["by_length"]] == [bucket]


def test_margin_report_and_its_refusals():
    report = margin_report([2.0, -2.0], ["long answer", "s"], ["s", "long answer"])
    assert report["pairs"] == 2 and report["accuracy"] == 0.5 and report["mean_margin"] == 0.0
    assert report["length_baseline"] == 0.5 and len(report["by_length"]) == 2
    assert margin_report([], [], []) == {"pairs": 0, "accuracy": None, "log_loss": None, "mean_margin": None,
                                         "length_baseline": None, "by_length": [], "length_margin_corr": None,
                                         "accuracy_shorter_chosen": None, "pairs_shorter_chosen": 0,
                                         "accuracy_longer_chosen": None, "pairs_longer_chosen": 0}
    with pytest.raises(ValueError, match="differ in length"):
        length_report([1.0], ["a", "b"], ["c"])


def test_training_stores_validation_accuracy_by_length(tmp_path):
    # Validation: the chosen answer is shorter in half the groups, so length alone scores 1/2 there.
    group = lambda p, c, r: {"prompt": p, "responses": [c, r], "ranking": [[0], [1]]}  # noqa: E731
    train = [group(f"q{i}", "yes, glad to help!", "no.") for i in range(16)]
    val = [group("v1", "yes, glad to help!", "no."), group("v2", "yes!", "no, no, no, no, no."),
           group("v3", "yes, happy to!", "no, I won't, sorry, never."), group("v4", "tie?", "tie?")]  # v4: tied texts, one comparison
    config = RewardConfig(base_model=str(tiny_bert(tmp_path / "bert")), max_length=48, batch_size=4, epochs=2,
                          lr=1e-3, precision="fp32", device="cpu")
    metrics = train_reward_model(train, config, tmp_path / "rm", val_groups=val)
    assert metrics["val_comparisons"] == 4
    assert metrics["val_length_baseline"] == pytest.approx((1 + 0 + 0 + 0.5) / 4)
    buckets = {b["bucket"]: b for b in metrics["val_by_length"]}
    assert [(b["bucket"], b["pairs"]) for b in metrics["val_by_length"]] == [
        ("chosen shorter by >50%", 1), ("chosen shorter by 10-50%", 1), ("within 10%", 1), ("chosen longer by >50%", 1)]
    assert buckets["within 10%"] == {"bucket": "within 10%", "pairs": 1, "accuracy": 0.5, "length_baseline": 0.5}
    assert sum(b["pairs"] for b in metrics["val_by_length"]) == 4
    overall = sum(b["accuracy"] * b["pairs"] for b in metrics["val_by_length"]) / 4
    assert overall == pytest.approx(metrics["val_accuracy"])


# ----------------------------------------------------------------------------------------------
# Length dependence of an evaluation


def test_length_dependence_by_hand():
    margins = [1.0, -1.0, 0.0, 2.0]
    chosen, rejected = ["aaaa", "a", "aaaaaaaaaa", "abc"], ["a", "aaaa", "aaaaaaaaaa", "abcd"]
    # Length differences 3, -3, 0, -1 (mean -1/4); margins' mean 1/2. Deviations: margins .5, -1.5, -.5, 1.5;
    # lengths 3.25, -2.75, .25, -.75. Sum of products 4.5, sums of squares 5 and 18.75.
    report = length_dependence(margins, chosen, rejected)
    assert report["length_margin_corr"] == pytest.approx(4.5 / math.sqrt(5 * 18.75))
    # Shorter chosen: pairs 2 (wrong) and 4 (right); longer chosen: pair 1 (right); pair 3 is a tie of lengths.
    assert {k: v for k, v in report.items() if k != "length_margin_corr"} == {
        "accuracy_shorter_chosen": 0.5, "pairs_shorter_chosen": 2, "accuracy_longer_chosen": 1.0, "pairs_longer_chosen": 1}
    assert margin_report(margins, chosen, rejected)["length_margin_corr"] == report["length_margin_corr"]


def test_length_dependence_without_evidence():
    # One pair, or a constant margin: no correlation to report; no shorter-chosen pair: no accuracy there.
    assert length_dependence([1.0], ["aa"], ["a"]) == {
        "length_margin_corr": None, "accuracy_shorter_chosen": None, "pairs_shorter_chosen": 0,
        "accuracy_longer_chosen": 1.0, "pairs_longer_chosen": 1}
    assert length_dependence([1.0, 1.0], ["aa", "a"], ["a", "aaa"])["length_margin_corr"] is None
    assert length_dependence([-2.0, 3.0], ["aa", "a"], ["a", "aaa"])["length_margin_corr"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in length"):
        length_dependence([1.0], ["a", "b"], ["c"])


# ----------------------------------------------------------------------------------------------
# ODIN's losses by hand


X, Y = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 4.0, 5.0, 9.0])
# Deviations: x -1.5, -.5, .5, 1.5; y -3, -1, 0, 4. Sum of products 11, sums of squares 5 and 26.
RHO = 11 / math.sqrt(5 * 26)


def test_pearson_by_hand_and_its_degenerate_batches():
    assert float(pearson(X, Y)) == pytest.approx(RHO)
    assert float(pearson(X.flip(0), Y)) == pytest.approx(-RHO)
    assert float(pearson(X, torch.full((4,), 7.0))) == 0.0  # one length for the whole batch: no evidence
    assert float(pearson(X[:1], Y[:1])) == 0.0


def test_odin_losses_by_hand():
    assert float(odin_length_loss(X, Y)) == pytest.approx(-RHO)  # the length head rises with length: lowest
    assert float(odin_decorrelation_loss(X, Y)) == pytest.approx(RHO)
    assert float(odin_decorrelation_loss(X.flip(0), Y)) == pytest.approx(RHO)  # |rho|: either sign costs
    w_q, w_l = torch.tensor([[1.0, 2.0, -1.0]]), torch.tensor([[3.0, -1.0, 2.0]])
    assert float(odin_orthogonality_loss(w_q, w_l)) == pytest.approx(abs(3 - 2 - 2))
    assert float(odin_orthogonality_loss(w_q, torch.tensor([[2.0, -1.0, 0.0]]))) == 0.0
    total, terms = odin_regulariser(X.flip(0), X, Y, w_q, w_l,
                                    weights={"length": 1.0, "decorrelation": 2.0, "orthogonality": 3.0})
    assert terms == pytest.approx({"length": -RHO, "decorrelation": RHO, "orthogonality": 1.0})
    assert float(total) == pytest.approx(-RHO + 2 * RHO + 3 * 1.0)


def test_odin_gradients_move_each_head_its_way():
    quality, length = X.flip(0).clone().requires_grad_(), X.flip(0).clone().requires_grad_()
    total, _ = odin_regulariser(quality, length, Y, torch.zeros(1, 3), torch.zeros(1, 3))
    total.backward()
    # Both heads start anti-correlated with length; one small step down the loss turns the length head
    # toward length and brings the quality head nearer to no correlation.
    with torch.no_grad():
        length_after, quality_after = length - 0.5 * length.grad, quality - 0.5 * quality.grad
    assert float(pearson(length_after, Y)) > float(pearson(length.detach(), Y))
    assert abs(float(pearson(quality_after, Y))) < abs(float(pearson(quality.detach(), Y)))


def test_the_response_token_count_is_what_the_model_sees(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert(tmp_path / "bert"))
    encoder = PairEncoder(tokenizer, max_length=16, add_eos=False)
    short, long = encoder.encode(["a prompt", "p"], ["abc", "x" * 40])
    assert short.response_tokens == 3 and not short.truncated  # one token a character; the prompt not counted
    assert long.response_tokens == 16 - encoder.specials and len(long.input_ids) == 16  # cut as the model sees it


# ----------------------------------------------------------------------------------------------
# ODIN trained: a toy set where length alone separates the pairs


def _length_only_groups(n: int, seed: int) -> list[dict]:
    """Random letters of two different lengths from 2 to 40; the longer one is chosen. Content says nothing."""
    rng = random.Random(seed)
    word = lambda k: "".join(rng.choice("abcdefgh") for _ in range(k))  # noqa: E731
    groups = []
    for i in range(n):
        a, b = rng.sample(range(2, 41), 2)
        groups.append({"prompt": f"q{i}", "responses": [word(max(a, b)), word(min(a, b))], "ranking": [[0], [1]]})
    return groups


@pytest.fixture(scope="module")
def length_only(tmp_path_factory):
    """One tiny BERT trained on the toy set with each length_debias, and probe responses of every length."""
    root = tmp_path_factory.mktemp("length_only")
    torch.manual_seed(0)  # the tiny backbone's random weights: the same whatever ran before
    base = tiny_bert(root / "bert")
    groups = _length_only_groups(128, seed=0)
    rng = random.Random(1)
    probe = ["".join(rng.choice("abcdefgh") for _ in range(k)) for k in range(2, 41) for _ in range(8)]
    metrics = {}
    for mode in LENGTH_DEBIAS:
        config = RewardConfig(base_model=str(base), max_length=64, batch_size=16, epochs=20, lr=1e-3, lora_r=0,
                              warmup_fraction=0.0, precision="fp32", device="cpu", length_debias=mode)
        metrics[mode] = train_reward_model(groups, config, root / mode, val_groups=_length_only_groups(24, seed=2))
    return root, probe, metrics


def _length_corr(folder, probe) -> float:
    model, tokenizer, _ = load_reward_model(folder)
    scores = score(model, tokenizer, ["q"] * len(probe), probe, max_length=64)
    return float(pearson(torch.tensor(scores), torch.tensor([float(len(p)) for p in probe])))


def test_odin_scores_without_length_where_the_plain_model_learns_it(length_only):
    root, probe, metrics = length_only
    plain, odin = _length_corr(root / "none", probe), _length_corr(root / "odin", probe)
    assert plain > 0.8, plain  # length is all there is to learn, and the plain model learns it
    assert abs(odin) < 0.3, odin  # the scoring head has left it to the length head
    # Validation pairs differ by as little as one character, so even the plain model misses some.
    assert metrics["none"]["val_accuracy"] > 0.65 and metrics["none"]["val_length_margin_corr"] > 0.5
    last = metrics["odin"]["history"][-1]
    assert last["odin_length"] < -0.9  # the length head follows the token count
    assert "odin_length" not in metrics["none"]["history"][-1]
    assert metrics["odin"]["val_pairs_longer_chosen"] == 24 and metrics["odin"]["val_pairs_shorter_chosen"] == 0


def test_the_odin_folder_loads_as_one_classifier_scoring_the_quality_head(length_only):
    root, probe, _ = length_only
    folder = root / "odin"
    assert json.loads((folder / "reward_config.json").read_text())["length_debias"] == "odin"
    hf = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    model, tokenizer, _ = load_reward_model(folder)
    assert model.length_head is None  # loading never builds the length channel back
    texts = probe[::40]
    encoded = PairEncoder(tokenizer, 64, add_eos=False).encode(["q"] * len(texts), texts)
    batch = collate(encoded, tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        logits = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"]).logits.squeeze(-1)
    assert logits.tolist() == pytest.approx(score(model, tokenizer, ["q"] * len(texts), texts, max_length=64), abs=1e-5)
    # The same backbone with the side file's length head: the folder's logits are the quality head alone.
    side = load_file(str(folder / LENGTH_HEAD_FILE))
    model.length_head = torch.nn.Linear(model.head.in_features, 1)
    with torch.no_grad():
        model.length_head.weight.copy_(side["weight"])
        model.length_head.bias.copy_(side["bias"])
        quality, length = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], with_length=True)
    assert logits.tolist() == pytest.approx(quality.tolist(), abs=1e-5)
    assert float(pearson(length, torch.tensor([float(len(t)) for t in texts]))) > 0.9
    assert not (root / "none" / LENGTH_HEAD_FILE).exists()


def test_an_unknown_length_debias_is_refused(tmp_path):
    config = RewardConfig(base_model=str(tiny_bert(tmp_path / "bert")), length_debias="regress", device="cpu")
    with pytest.raises(ValueError, match="length_debias must be one of none, odin"):
        train_reward_model(_length_only_groups(4, seed=0), config, tmp_path / "rm")
    assert not (tmp_path / "rm").exists()
