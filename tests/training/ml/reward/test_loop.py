"""Training a reward model: tiny-model training, K=4 groups with ties, normalisation and the saved
round trip, truncation counted, atomic output, the validation figures by length it stores, and ODIN's
length-disentangled training on a toy set where length alone separates the pairs. Pure torch, no DB."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.tiny_models import tiny_bert
from training.ml.reward.evaluate import evaluate_pairs
from training.ml.reward.artifact import LENGTH_HEAD_FILE, load_reward_model, save_reward_model, score
from training.ml.reward.config import LENGTH_DEBIAS, RewardConfig
from training.ml.reward.data import PairEncoder, collate
from training.ml.reward.loss import pearson
from training.ml.reward.model import RewardModel
from training.ml.reward.loop import train_reward_model

torch.set_num_threads(1)


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


def test_response_pooling_trains_and_reloads(bert_dir, tmp_path):
    train_reward_model(separable_groups(32), tiny_config(bert_dir, pooling="response", epochs=2), tmp_path / "rm")
    model, tok, config = load_reward_model(tmp_path / "rm")
    assert config.pooling == model.pooling == "response"
    rewards = score(model, tok, ["q?", "q?"], ["good good good", "bad bad"])
    assert rewards[0] > rewards[1]


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
    assert json.loads((folder / "pairwise_config.json").read_text())["length_debias"] == "odin"
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


def test_odin_still_learns_what_is_not_length(tmp_path):
    """Guards the quality head: where the chosen answer differs in content (its letters) and is also longer
    70% of the time, ODIN's scoring head must still separate the pairs (it may not learn only the leftovers
    of the length head). On real preference data it does lose accuracy (README, Benchmarks: reward_transfer)."""
    rng = random.Random(0)

    def groups(n: int) -> list[dict]:
        out = []
        for i in range(n):
            a, b = rng.sample(range(2, 41), 2)
            chosen_len, rejected_len = (max(a, b), min(a, b)) if rng.random() < 0.7 else (min(a, b), max(a, b))
            out.append({"prompt": f"q{i}", "ranking": [[0], [1]],
                        "responses": ["".join(rng.choice("abcd") for _ in range(chosen_len)),
                                      "".join(rng.choice("efgh") for _ in range(rejected_len))]})
        return out

    torch.manual_seed(0)
    config = RewardConfig(base_model=str(tiny_bert(tmp_path / "bert")), max_length=64, batch_size=16, epochs=20, lr=1e-3,
                          lora_r=0, warmup_fraction=0.0, precision="fp32", device="cpu", length_debias="odin")
    metrics = train_reward_model(groups(128), config, tmp_path / "odin", val_groups=groups(48))
    assert metrics["val_accuracy"] >= 0.9
    assert metrics["val_accuracy_shorter_chosen"] >= 0.9 and metrics["val_accuracy_longer_chosen"] >= 0.9


def test_soft_targets_train_and_validate_on_the_favoured_side(bert_dir, tmp_path):
    # The label model's posterior says "good" beats "bad" with 0.9, written both ways round.
    groups = [{"prompt": f"q {i}?", "responses": ["good good good", "bad bad"], "ranking": [[0], [1]],
               "targets": [[0, 1, 0.9]]} for i in range(16)]
    groups += [{"prompt": f"r {i}?", "responses": ["bad bad", "good good good"], "ranking": [[1], [0]],
                "targets": [[0, 1, 0.1]]} for i in range(16)]
    before = RewardModel.from_backbone_path(bert_dir)
    metrics = train_reward_model(groups, tiny_config(bert_dir, epochs=3, val_fraction=0.25), tmp_path / "rm")
    model, tok, _ = load_reward_model(tmp_path / "rm")
    assert metrics["comparisons"] + metrics["val_comparisons"] == 32
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert any(not torch.equal(p, model.backbone.state_dict()[k])
               for k, p in before.backbone.state_dict().items() if p.is_floating_point())
    rewards = score(model, tok, ["q 99?", "q 99?"], ["good good good", "bad bad"])
    assert rewards[0] > rewards[1]
