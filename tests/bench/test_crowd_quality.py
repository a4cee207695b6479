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
