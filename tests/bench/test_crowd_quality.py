"""bench/crowd_quality.py on a tiny file, through the product's queue, submit path and fit; and its refusals."""
from __future__ import annotations

import gzip
import json

import pytest

from bench import crowd_quality
from labeling.models import Judgment, LabelModelFit


def _write(path, n: int) -> str:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"t/{i}", "prompt": f"question {i}?", "chosen": f"good answer {i}",
                                "rejected": f"bad answer {i}"}) + "\n")
        f.write(json.dumps({"id": "same", "prompt": "q?", "chosen": "x", "rejected": "x "}) + "\n")  # no truth: dropped
    return str(path)


@pytest.mark.django_db
def test_tiny_crowd_end_to_end(tmp_path):
    out = tmp_path / "result.json"
    result = crowd_quality.main(["--data", _write(tmp_path / "pairs.jsonl.gz", 12), "--pairs", "50",
                                 "--annotators", "6", "--overlap", "3", "--bad-share", "0.34", "--seed", "2",
                                 "--scale-votes", "3000", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["pairs"] == 12 and result["judgments"] == 36 == Judgment.objects.count()
    assert result["crowd"] == {"good": 3, "biased": 1, "spammer": 1, "first": 1}
    assert set(result["label_models"]) == {"majority", "dawid-skene", "position-em"}
    assert result["best_label_model"] in ("dawid-skene", "position-em")
    for model in result["label_models"].values():
        assert 0 <= model["accuracy"] <= 1 and 0 <= model["bad_flagged_recall"] <= 1
        assert 0 <= model["good_flagged_rate"] <= 1 and model["seconds"] >= 0
    assert result["majority_accuracy"] == result["label_models"]["majority"]["accuracy"]
    assert LabelModelFit.objects.get(project__slug=result["project"]).judgments == 36
    assert result["fit_seconds"]["votes"] == 3000 and set(result["fit_seconds"]["models"]) == set(result["label_models"])


@pytest.mark.parametrize("argv, message", [
    (["--overlap", "7", "--annotators", "6"], "--overlap between 1 and --annotators"),
    (["--bad-share", "1.5"], "shares from 0 to 1"),
])
def test_refusals(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        crowd_quality.main(["--data", _write(tmp_path / "p.jsonl.gz", 2), *argv])


@pytest.mark.django_db
def test_train_reward_compares_the_three_kinds_of_label_on_unseen_pairs(tmp_path):
    import torch

    from tests.tiny_models import tiny_bert

    torch.manual_seed(0)
    base = tiny_bert(tmp_path / "bert")
    held = tmp_path / "held.jsonl.gz"
    with gzip.open(held, "wt", encoding="utf-8") as f:
        for i in range(7):
            f.write(json.dumps({"id": f"h/{i}", "prompt": f"other {i}?", "chosen": "good", "rejected": "bad"}) + "\n")
        f.write(json.dumps({"id": "seen", "prompt": "question 0?", "chosen": "a", "rejected": "b"}) + "\n")  # the crowd saw it
    result = crowd_quality.main(["--data", _write(tmp_path / "pairs.jsonl.gz", 12), "--pairs", "50", "--annotators", "6",
                                 "--overlap", "3", "--seed", "2", "--scale-votes", "0", "--train-reward",
                                 "--eval-data", str(held), "--reward-base", str(base), "--threads", "1"])
    training = result["training"]
    assert training["eval_pairs"] == 7
    best = f"{result['best_label_model']} (soft)"
    assert list(training["models"]) == ["every judgment", "majority (hard)", best]
    assert training["models"]["every judgment"]["groups"] > training["models"][best]["groups"] > 0
    for model in training["models"].values():
        low, high = model["eval_accuracy_ci95"]
        assert 0 <= low <= model["eval_accuracy"] <= high <= 1


def test_train_reward_needs_eval_data(tmp_path):
    with pytest.raises(SystemExit, match="--train-reward needs --eval-data"):
        crowd_quality.main(["--data", _write(tmp_path / "p.jsonl.gz", 2), "--train-reward"])
