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
                                   "--base", str(bert_dir), "--max-length", "32", "--threads", "1", "--json", str(out), "--svg", str(tmp_path / "curve.svg")])
    assert json.loads(out.read_text()) == result
    import xml.etree.ElementTree as ET
    lines = ET.parse(tmp_path / "curve.svg").getroot().findall("{http://www.w3.org/2000/svg}path")
    assert [p.get("data-strategy") for p in lines] == ["random", "uncertainty", "disagreement"]
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


SVG = "{http://www.w3.org/2000/svg}"


def _saved(path, strategies: dict) -> str:
    path.write_text(json.dumps({"seeds": 3, "strategies": strategies}))
    return str(path)


def _curve(labels, means, ci=True) -> dict:
    out = {"labels": labels, "accuracy_mean": means}
    if ci:
        out["accuracy_ci95"] = [[m - 0.02, m + 0.03] for m in means]
    return out


def test_from_json_replots_without_the_database(tmp_path):
    """No django_db mark: pytest-django refuses any query, so a re-plot that touched the database fails."""
    import xml.etree.ElementTree as ET

    saved = _saved(tmp_path / "r.json", {
        "random": _curve([10, 20, 30], [0.55, 0.57, 0.58]),
        "uncertainty": _curve([10, 20, 30], [0.55, 0.56, 0.6]),
        "dis<agree>&ment": _curve([10, 20, 30], [0.55, 0.58, 0.61], ci=False),  # escaped; no band
    })
    out = tmp_path / "plots" / "curve.svg"
    result = active_learning.main(["--from-json", saved, "--svg", str(out)])
    assert set(result["strategies"]) == {"random", "uncertainty", "dis<agree>&ment"}
    root = ET.parse(out).getroot()  # well-formed
    assert root.tag == SVG + "svg"
    lines = root.findall(f"{SVG}path")
    assert [p.get("data-strategy") for p in lines] == ["random", "uncertainty", "dis<agree>&ment"]
    assert all(p.get("d").count("L") == 2 for p in lines)  # one vertex per round
    assert [b.get("data-strategy") for b in root.findall(f"{SVG}polygon")] == ["random", "uncertainty"]
    texts = {t.text for t in root.iter(SVG + "text")}
    assert {"labels", "random", "uncertainty", "dis<agree>&ment", "95% interval"} <= texts
    assert "dis<agree>" not in out.read_text()  # escaped in the markup


@pytest.mark.parametrize("content, message", [
    (None, "cannot read it"),
    ("{not json", "not JSON"),
    (json.dumps([1, 2]), "no \"strategies\" object"),
    (json.dumps({"strategies": {"random": {"labels": [1, 2], "accuracy_mean": [0.5]}}}), "equally long lists"),
    (json.dumps({"strategies": {"random": {"labels": [1], "accuracy_mean": ["x"]}}}), "equally long lists"),
    (json.dumps({"strategies": {"random": {"labels": [1], "accuracy_mean": [0.5], "accuracy_ci95": [0.4]}}}),
     "one \\[low, high\\] per point"),
])
def test_a_bad_saved_result_is_refused_clearly(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit, match=message):
        active_learning.main(["--from-json", str(path), "--svg", str(tmp_path / "c.svg")])
    assert not (tmp_path / "c.svg").exists()


def test_from_json_needs_svg_and_a_run_needs_data(tmp_path):
    with pytest.raises(SystemExit, match="give --svg"):
        active_learning.main(["--from-json", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit, match="--data is required"):
        active_learning.main(["--pool", "4"])
