"""bench/active_learning.py on a tiny file with a tiny backbone, through the product's queue and submit
path: the JSON's shape, curves that add up, and its refusals."""
from __future__ import annotations

import gzip
import json

import pytest

from bench import active_learning
from labeling.models import ComparisonTask, Judgment, Project


def _write(path, n: int) -> str:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(n):
            good, bad = ("yes, glad to help", "no") if i % 3 else ("a careful answer", "whatever")
            f.write(json.dumps({"id": f"t/{i}", "prompt": f"question {i}?", "chosen": f"{good} {i}",
                                "rejected": f"{bad} {i}"}) + "\n")
        f.write(json.dumps({"id": "same", "prompt": "q?", "chosen": "x", "rejected": "x "}) + "\n")  # no truth: dropped
    return str(path)


@pytest.mark.django_db
def test_tiny_run_end_to_end(tmp_path, bert_dir):
    out = tmp_path / "result.json"
    result = active_learning.main(["--data", _write(tmp_path / "pairs.jsonl.gz", 40), "--pool", "24", "--rounds", "3",
                                   "--per-round", "5", "--eval-pairs", "10", "--seeds", "2", "--heads", "3",
                                   "--base", str(bert_dir), "--max-length", "32", "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    assert (result["pool"], result["eval_pairs"], result["seeds"]) == (24, 10, 2)
    assert set(result["strategies"]) == {"random", "uncertainty", "disagreement"}
    for name, s in result["strategies"].items():
        assert s["labels"] == [5, 10, 15]  # monotone: each round adds --per-round labels
        assert len(s["accuracy_mean"]) == len(s["accuracy_ci95"]) == 3 and len(s["accuracy_by_seed"]) == 2
        for mean, (low, high), *seeds in zip(s["accuracy_mean"], s["accuracy_ci95"], *s["accuracy_by_seed"]):
            assert 0 <= min(seeds) <= mean <= max(seeds) <= 1
            assert mean == pytest.approx(sum(seeds) / 2) and low <= mean <= high
        fraction = s["labels_saved_fraction"]
        assert fraction is None or 0 <= fraction <= 1
    # Round 1 is the same random sample everywhere: every strategy's first point is random's.
    firsts = {tuple(s["accuracy_by_seed"][i][0] for i in range(2)) for s in result["strategies"].values()}
    assert len(firsts) == 1
    # Every label went through the product's queue and submit path: 3 strategies x 2 seeds x 15.
    projects = Project.objects.filter(slug__startswith="al-")
    assert projects.count() == 6 and Judgment.objects.filter(project__in=projects).count() == 90
    assert ComparisonTask.objects.filter(project__in=projects, status="complete").count() == 90
    # The acquisition orders' scores were stored on the open tasks, as the product stores them.
    assert not ComparisonTask.objects.filter(project__in=projects, status="open", acquisition_score__isnull=True).exists()


def test_labels_saved_interpolates_and_is_null_when_never_reached():
    assert active_learning.labels_saved([10, 20, 30], [0.5, 0.6, 0.7], 0.7, 30) == pytest.approx(0.0)
    assert active_learning.labels_saved([10, 20, 30], [0.5, 0.7, 0.8], 0.6, 30) == pytest.approx(1 - 15 / 30)
    assert active_learning.labels_saved([10, 20, 30], [0.7, 0.8, 0.9], 0.6, 30) == pytest.approx(1 - 10 / 30)
    assert active_learning.labels_saved([10, 20, 30], [0.5, 0.55, 0.58], 0.6, 30) is None


@pytest.mark.parametrize("argv, message", [
    (["--strategies", "uncertainty"], "must name random"),
    (["--rounds", "5", "--per-round", "10", "--pool", "20"], "more pairs than --pool"),
    (["--seeds", "0"], "must be positive"),
])
def test_refusals(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        active_learning.main(["--data", _write(tmp_path / "p.jsonl.gz", 4), *argv])
