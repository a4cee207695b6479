"""bench/reward_transfer.py end to end on a tiny model through the product's services; its bootstrap
cells and summary on hand-computed values; and its refusals."""
from __future__ import annotations

import gzip
import json

import pytest

import reward_transfer

CONFIG = {"max_length": 48, "batch_size": 4, "epochs": 2, "lr": 1e-3, "precision": "fp32", "device": "cpu"}


def _write(path, records) -> str:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return str(path)


def _pairs(prefix: str, n: int, chosen: str, rejected: str) -> list[dict]:
    return [{"id": f"{prefix}/{i}", "prompt": f"{prefix} question {i}?", "chosen": chosen, "rejected": rejected,
             "source": prefix} for i in range(n)]


@pytest.mark.django_db
def test_the_matrix_is_trained_and_scored_through_the_product(tmp_path, settings, bert_dir):
    settings.PAIRWISE_MODELS_DIR = tmp_path / "models"
    settings.PAIRWISE_EXPORTS_DIR = tmp_path / "exports"
    # "a": the longer answer is chosen; "b": the shorter one is, so length alone scores 0 there.
    a = _write(tmp_path / "a.jsonl.gz", _pairs("a", 30, "yes, glad to help!", "no.")
               + [{"id": "a/blank", "prompt": "p", "chosen": "x", "rejected": " "}])  # dropped: blank
    b = _write(tmp_path / "b.jsonl.gz", _pairs("b", 20, "ok.", "zzzz zzzz zzzz zzzz"))
    out = tmp_path / "result.json"
    result = reward_transfer.main([
        "--source", f"a={a}", "--source", f"b={b}", "--base", str(bert_dir), "--train-pairs", "16",
        "--eval-pairs", "12", "--held-out", "0.3", "--threads", "1", "--config", json.dumps(CONFIG), "--json", str(out),
    ])
    assert result["sources"]["a"]["pairs"] == 30 and result["sources"]["a"]["dropped_blank"] == 1
    sides = result["sources"]["b"]
    assert sides["train_side"] + sides["held_out_side"] == 20 and 0 < sides["held_out_side"] < 20
    assert set(result["matrix"]) == {"a", "b"} and all(set(row) == {"a", "b"} for row in result["matrix"].values())
    assert result["rows"]["a"]["train_pairs"] == 16 and result["rows"]["b"]["train_pairs"] == sides["train_side"]
    off = result["matrix"]["a"]["b"]
    assert off["pairs"] == 12 and off["length_baseline"] == 0.0
    assert result["matrix"]["b"]["a"]["pairs"] == 12 and result["matrix"]["b"]["a"]["length_baseline"] == 1.0
    assert result["matrix"]["b"]["b"]["pairs"] == sides["held_out_side"]
    for row in result["matrix"].values():
        for c in row.values():
            low, high = c["ci95"]
            assert low <= c["accuracy"] <= high and sum(b["pairs"] for b in c["by_length"]) == c["pairs"]
    # Each model learns its own source: the diagonal is right on pairs it never trained on.
    assert result["matrix"]["a"]["a"]["accuracy"] == 1.0 and result["matrix"]["b"]["b"]["accuracy"] == 1.0
    cells = [result["matrix"]["a"]["b"], result["matrix"]["b"]["a"]]
    assert result["mean_off_diagonal"] == pytest.approx((cells[0]["accuracy"] + cells[1]["accuracy"]) / 2)
    assert result["mean_off_diagonal_length_baseline"] == 0.5
    assert result["rows"]["a"]["val_length_baseline"] in (None, 1.0)
    assert json.loads(out.read_text())["matrix"] == result["matrix"]


def test_a_cell_has_a_bootstrap_interval_and_the_length_baseline():
    report = {"pairs": 2, "accuracy": 0.5, "length_baseline": 1.0, "by_length": []}
    # Two pairs, one right: bootstrap means are 0, 1/2 or 1 with chances 1/4, 1/2, 1/4.
    assert reward_transfer.cell([1.0, -1.0], report, seed=0)["ci95"] == [0.0, 1.0]
    all_right = reward_transfer.cell([0.3, 2.0, 0.1], report | {"pairs": 3, "accuracy": 1.0}, seed=0)
    assert all_right["ci95"] == [1.0, 1.0] and all_right["length_baseline"] == 1.0
    tie = reward_transfer.cell([0.0], report | {"pairs": 1}, seed=0)  # a tie counts one half
    assert tie["ci95"] == [0.5, 0.5]
    assert reward_transfer.cell([], report, seed=0) == {"pairs": 0, "accuracy": None, "ci95": None,
                                                         "length_baseline": None, "by_length": []}


def test_the_summary_averages_off_diagonal_cells_only():
    c = lambda acc, base, n=10: {"accuracy": acc, "length_baseline": base, "pairs": n}  # noqa: E731
    matrix = {"x": {"x": c(0.9, 0.1), "y": c(0.6, 0.7), "z": c(0.0, 0.0, n=0)},
              "y": {"x": c(0.8, 0.5), "y": c(1.0, 0.2)}}
    assert reward_transfer.summary(matrix) == {
        "mean_off_diagonal": pytest.approx(0.7), "mean_off_diagonal_length_baseline": pytest.approx(0.6),
        "off_diagonal_above_length_baseline": "1/2",
    }


@pytest.mark.parametrize("argv, message", [
    (["--source", "a=x.jsonl"], "at least two sources"),
    (["--source", "a"], "is not NAME=FILE"),
    (["--source", "a=x", "--source", "a=y"], "given twice"),
    (["--config", "[1]"], "must be a JSON object"),
    (["--config", "{"], "is not JSON"),
])
def test_bad_arguments_stop_before_anything_trains(argv, message):
    with pytest.raises(SystemExit, match=message):
        args = reward_transfer.parse_args(argv)
        reward_transfer.parse_sources(args.source)


def test_a_broken_file_stops_with_its_line(tmp_path):
    good = _write(tmp_path / "good.jsonl.gz", _pairs("g", 3, "a", "b"))
    broken = tmp_path / "broken.jsonl.gz"
    with gzip.open(broken, "wt") as f:
        f.write(json.dumps(_pairs("x", 1, "a", "b")[0]) + "\n{not json\n")
    with pytest.raises(SystemExit, match="broken.jsonl.gz:2: not JSON"):
        reward_transfer.main(["--source", f"g={good}", "--source", f"x={broken}"])
