"""bench/reward_transfer.py end to end on a tiny model through the product's services; its bootstrap
cells and summary on hand-computed values; and its refusals."""
from __future__ import annotations

import gzip
import json

import pytest

from bench import reward_transfer

# Every weight trains: a tiny random backbone learns these toy rules in two epochs that way (adapters
# on it would need more); the reward default itself is tested in tests/training/ml/test_reward_lora.py.
CONFIG = {"max_length": 48, "batch_size": 4, "epochs": 2, "lr": 1e-3, "precision": "fp32", "device": "cpu", "lora_r": 0}


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
        "--relevance-model", str(bert_dir), "--relevance-weight", "1e6",
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
    # a's chosen answers are the shorter ones, b's the longer: each off-diagonal cell is all one side.
    assert (cells[0]["pairs_shorter_chosen"], cells[0]["pairs_longer_chosen"]) == (12, 0)
    assert (cells[1]["pairs_shorter_chosen"], cells[1]["pairs_longer_chosen"]) == (0, 12)
    assert result["mean_off_diagonal_accuracy_shorter_chosen"] == pytest.approx(cells[0]["accuracy"])
    assert result["mean_off_diagonal_accuracy_longer_chosen"] == pytest.approx(cells[1]["accuracy"])
    assert result["rows"]["a"]["val_length_baseline"] in (None, 1.0)
    assert json.loads(out.read_text())["matrix"] == result["matrix"]
    # Each cell is kept on its row's version, as `evaluate_reward_model --record` keeps it.
    from training.models import ModelVersion

    kept = ModelVersion.objects.get(pk=result["rows"]["a"]["version"]).metrics["evaluations"]
    assert {name: e["accuracy"] for name, e in kept.items()} == {e: c["accuracy"] for e, c in result["matrix"]["a"].items()}
    assert kept["b"]["source"] == "b.jsonl.gz" and kept["b"]["trained_prompts"] == 0 and kept["a"]["trained_prompts"] == 0
    # At a huge weight the ensemble is the relevance baseline itself, and the summary averages it.
    for row in result["matrix"].values():
        for c in row.values():
            assert 0.0 <= c["relevance_baseline"] <= 1.0 and c["with_relevance"] == c["relevance_baseline"]
    assert result["mean_off_diagonal_relevance_baseline"] == pytest.approx(
        (result["matrix"]["a"]["b"]["relevance_baseline"] + result["matrix"]["b"]["a"]["relevance_baseline"]) / 2)
    assert result["relevance_weight"] == 1e6
    # With two sources each column's ensemble is the one row that never saw it.
    for source, other in (("a", "b"), ("b", "a")):
        ensemble = result["ensemble"][source]
        assert ensemble["members"] == 1 and ensemble["accuracy"] == result["matrix"][other][source]["accuracy"]
        assert ensemble["disagreement"] == 0.0 and ensemble["length_baseline"] == result["matrix"][other][source]["length_baseline"]


def test_a_cell_has_a_bootstrap_interval_and_the_length_baseline():
    report = {"pairs": 2, "accuracy": 0.5, "length_baseline": 1.0, "by_length": []}
    # Two pairs, one right: bootstrap means are 0, 1/2 or 1 with chances 1/4, 1/2, 1/4.
    assert reward_transfer.cell([1.0, -1.0], report, seed=0)["ci95"] == [0.0, 1.0]
    all_right = reward_transfer.cell([0.3, 2.0, 0.1], report | {"pairs": 3, "accuracy": 1.0}, seed=0)
    assert all_right["ci95"] == [1.0, 1.0] and all_right["length_baseline"] == 1.0
    tie = reward_transfer.cell([0.0], report | {"pairs": 1}, seed=0)  # a tie counts one half
    assert tie["ci95"] == [0.5, 0.5]
    assert reward_transfer.cell([], report, seed=0) == {"pairs": 0, "accuracy": None, "ci95": None, "length_baseline": None,
                                                         "relevance_baseline": None, "with_relevance": None, "by_length": [],
                                                         "length_margin_corr": None, "accuracy_shorter_chosen": None,
                                                         "pairs_shorter_chosen": 0, "accuracy_longer_chosen": None,
                                                         "pairs_longer_chosen": 0}
    dependence = {"length_margin_corr": 0.25, "accuracy_shorter_chosen": 0.0, "pairs_shorter_chosen": 1,
                  "accuracy_longer_chosen": 1.0, "pairs_longer_chosen": 1}
    assert reward_transfer.cell([1.0, -1.0], report | dependence, seed=0).items() >= dependence.items()


def test_a_cell_scores_the_relevance_baseline_and_the_ensemble():
    report = {"pairs": 3, "accuracy": 2 / 3, "length_baseline": 0.5, "by_length": []}
    margins, relevance = [1.0, -0.5, 0.2], [-0.1, 0.2, 0.0]  # relevance: wrong, right, tie
    c = reward_transfer.cell(margins, report, seed=0, relevance=relevance, relevance_weight=5.0)
    assert c["relevance_baseline"] == pytest.approx(0.5)  # (0 + 1 + 0.5) / 3
    # The RM alone gets 2 of 3; with 5 x relevance: 1 - 0.5 > 0, -0.5 + 1 > 0, 0.2 + 0 > 0, all right.
    assert c["accuracy"] == pytest.approx(2 / 3) and c["with_relevance"] == pytest.approx(1.0)
    assert reward_transfer.cell(margins, report, seed=0, relevance=relevance, relevance_weight=0.0)["with_relevance"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 relevance margins for 3 pairs"):
        reward_transfer.cell(margins, report, seed=0, relevance=[0.1, 0.2])


@pytest.mark.parametrize("which", ["tiny", "minilm"])  # minilm: [CLS] p [SEP] r [SEP], so the response gets a [CLS]
def test_segment_cosine_encodes_prompt_and_response_apart(which, bert_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from training.ml.reward.config import default_reward_base
    from training.ml.reward.data import PairEncoder, collate, pad_id_of

    path = bert_dir if which == "tiny" else default_reward_base()
    tok, backbone = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    prompts, responses = ["what is a prime?", "q"], ["a number with two divisors", "a much longer answer than the other one"]
    batch = collate(PairEncoder(tok, 64, add_eos=False).encode(prompts, responses), pad_id_of(tok), torch.device("cpu"))

    def alone(text):  # the text by itself, no padding, mean-pooled, unit length: the embedder's own use
        mean = backbone(input_ids=torch.tensor([tok(text)["input_ids"]])).last_hidden_state[0].mean(0)
        return torch.nn.functional.normalize(mean, dim=-1)

    with torch.no_grad():
        expected = [float(alone(p) @ alone(r)) for p, r in zip(prompts, responses)]
        got = reward_transfer.segment_cosine(backbone, batch, reward_transfer.sentence_prefix_id(tok)).tolist()
    assert got == pytest.approx(expected, abs=1e-5)


def test_the_response_gets_the_token_a_sentence_starts_with(bert_dir):
    from transformers import AutoTokenizer

    from training.ml.reward.config import default_reward_base

    minilm = AutoTokenizer.from_pretrained(default_reward_base())
    assert reward_transfer.sentence_prefix_id(minilm) == minilm.cls_token_id  # [CLS] x [SEP]
    assert reward_transfer.sentence_prefix_id(AutoTokenizer.from_pretrained(bert_dir)) is None  # the tiny one adds nothing


def test_relevance_prefers_the_answer_closest_to_the_prompt(bert_dir):
    relevance = reward_transfer.Relevance(str(bert_dir))
    # An answer that IS the prompt embeds like it (cosine 1); anything else has less.
    prompt = "what is a prime number?"
    on_topic = {"prompt": prompt, "chosen": prompt, "rejected": "zebra zebra zebra"}
    assert relevance.scores([prompt], [prompt]) == [pytest.approx(1.0, abs=1e-5)]
    margins = relevance.margins([on_topic, on_topic | {"chosen": on_topic["rejected"], "rejected": prompt}])
    assert margins[0] > 0 and margins[1] == pytest.approx(-margins[0])
    assert relevance.margins([]) == []


def test_the_summary_averages_off_diagonal_cells_only():
    def c(acc, base, n=10, rel=None, ens=None, short=None, long=None, corr=None):
        return {"accuracy": acc, "length_baseline": base, "pairs": n, "relevance_baseline": rel, "with_relevance": ens,
                "accuracy_shorter_chosen": short, "accuracy_longer_chosen": long, "length_margin_corr": corr}

    # A cell without shorter-chosen pairs (None) is left out of that mean, not counted as 0.
    matrix = {"x": {"x": c(0.9, 0.1, rel=0.0, ens=0.0, short=0.0), "y": c(0.6, 0.7, rel=0.4, ens=0.8, long=0.9, corr=0.5),
                    "z": c(0.0, 0.0, n=0)},
              "y": {"x": c(0.8, 0.5, rel=0.6, ens=0.4, short=0.4, long=0.7, corr=0.1), "y": c(1.0, 0.2, rel=0.0, ens=0.0)}}
    assert reward_transfer.summary(matrix) == {
        "mean_off_diagonal": pytest.approx(0.7), "mean_off_diagonal_length_baseline": pytest.approx(0.6),
        "mean_off_diagonal_relevance_baseline": pytest.approx(0.5), "mean_off_diagonal_with_relevance": pytest.approx(0.6),
        "off_diagonal_above_length_baseline": "1/2", "off_diagonal_with_relevance_above_length_baseline": "1/2",
        "mean_off_diagonal_length_margin_corr": pytest.approx(0.3), "mean_off_diagonal_accuracy_shorter_chosen": 0.4,
        "mean_off_diagonal_accuracy_longer_chosen": pytest.approx(0.8),
    }
    without = {t: {e: cell | {"relevance_baseline": None, "with_relevance": None} for e, cell in row.items()}
               for t, row in matrix.items()}
    assert reward_transfer.summary(without)["mean_off_diagonal_with_relevance"] is None
    assert reward_transfer.summary(without)["off_diagonal_with_relevance_above_length_baseline"] is None


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


def test_a_leave_one_out_row_trains_on_every_other_source():
    assert reward_transfer.row_sources(["a", "b", "c"], leave_one_out=True) == {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}
    assert reward_transfer.row_sources(["a", "b"], leave_one_out=False) == {"a": ["a"], "b": ["b"]}


def test_the_leave_one_out_summary_averages_the_unseen_cells():
    def c(acc, base):
        return {"accuracy": acc, "length_baseline": base, "pairs": 5, "relevance_baseline": None, "with_relevance": None}

    matrix = {"x": {"x": c(0.7, 0.6), "y": c(0.9, 0.5)}, "y": {"x": c(1.0, 0.0), "y": c(0.5, 0.8)}}
    got = reward_transfer.summary(matrix, unseen=True)
    assert got["mean_unseen"] == pytest.approx(0.6) and got["mean_unseen_length_baseline"] == pytest.approx(0.7)
    assert got["unseen_above_length_baseline"] == "1/2" and got["mean_unseen_relevance_baseline"] is None


@pytest.mark.django_db
def test_leave_one_out_scores_each_source_on_a_model_that_never_saw_it(tmp_path, settings, bert_dir):
    settings.PAIRWISE_MODELS_DIR = tmp_path / "models"
    settings.PAIRWISE_EXPORTS_DIR = tmp_path / "exports"
    # a and b share one rule (the "yes" answer wins); c reverses it. So c's row, trained on a + b,
    # is wrong on every pair of c, which it never saw, and right on a's held-out side.
    a = _write(tmp_path / "a.jsonl.gz", _pairs("a", 24, "yes indeed", "no sorry"))
    b = _write(tmp_path / "b.jsonl.gz", _pairs("b", 24, "yes sure", "no thanks"))
    c = _write(tmp_path / "c.jsonl.gz", _pairs("c", 24, "no thanks", "yes sure"))
    result = reward_transfer.main([
        "--source", f"a={a}", "--source", f"b={b}", "--source", f"c={c}", "--leave-one-out", "--base", str(bert_dir),
        "--train-pairs", "10", "--eval-pairs", "8", "--held-out", "0.3", "--threads", "1", "--config", json.dumps(CONFIG),
        "--relevance-model", str(bert_dir),
    ])
    assert result["mode"] == "leave-one-out"
    assert {n: r["train_pairs"] for n, r in result["rows"].items()} == {"a": 20, "b": 20, "c": 20}
    # Mixed in as a user would: the other sources' frozen snapshots, named in the run (mix_snapshots).
    from training.models import ModelVersion

    version = ModelVersion.objects.get(pk=result["rows"]["c"]["version"])
    assert result["rows"]["c"]["trained_on"] == ["a", "b"] and version.metrics["data"]["judgments"] == 0
    mixed = version.metrics["data"]["mixed"]
    assert len(mixed) == 2 and all(m["project"].startswith("transfer-src-") and 0 < m["groups"] <= 10 for m in mixed)
    unseen_c, seen_a = result["matrix"]["c"]["c"], result["matrix"]["c"]["a"]
    assert unseen_c["pairs"] == 8 and seen_a["pairs"] == result["sources"]["a"]["held_out_side"]
    assert unseen_c["accuracy"] == 0.0 and seen_a["accuracy"] == 1.0
    # a's row trained on b and c, which contradict each other: nothing to say about its cells but their count.
    assert result["matrix"]["a"]["a"]["pairs"] == 8
    assert result["mean_unseen"] == pytest.approx(sum(result["matrix"][n][n]["accuracy"] for n in "abc") / 3)
    assert "mean_off_diagonal" not in result and "ensemble" not in result


def test_an_ensemble_scales_each_member_before_averaging_and_records_disagreement():
    # Member 2's margins are 20x larger: averaged raw, it alone would decide ([-4.5, 14.5]: wrong, right).
    # Scaled by their standard deviations (1 and 20): [1, -1] and [-0.5, 1.5] -> mean [0.25, 0.25], both right.
    c = reward_transfer.ensemble_cell([[1.0, -1.0], [-10.0, 30.0]], length_baseline=0.5, seed=0)
    assert c["accuracy"] == 1.0 and c["members"] == 2 and c["pairs"] == 2 and c["length_baseline"] == 0.5
    assert c["disagreement"] == 1.0 and c["accuracy_agreed"] is None and c["accuracy_disputed"] == 1.0
    # A member with one margin everywhere (std 0) is kept unscaled; one zero margin is a dispute.
    c = reward_transfer.ensemble_cell([[1.0, 2.0, -1.0, 3.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]], 0.0, seed=0)
    assert c["accuracy"] == 1.0 and c["disagreement"] == 0.25 and c["accuracy_agreed"] == 1.0 and c["accuracy_disputed"] == 1.0
    assert c["ci95"] == [1.0, 1.0]
    assert reward_transfer.ensemble_cell([[]], None, seed=0)["pairs"] == 0


def test_each_source_gets_the_ensemble_of_the_rows_that_never_saw_it():
    def c(base):
        return {"accuracy": 0.0, "length_baseline": base, "pairs": 2}

    matrix = {t: {e: c(0.25 if e == "z" else 0.75) for e in "xyz"} for t in "xyz"}
    right, wrong = [1.0, 2.0], [-1.0, -2.0]
    # z's own row is wrong on z; x's and y's are right: the ensemble for z must leave z's row out.
    margins = {(t, e): wrong if t == e else right for t in "xyz" for e in "xyz"}
    got = reward_transfer.ensembles(matrix, margins, seed=0)
    assert {s: (cell["members"], cell["accuracy"]) for s, cell in got["ensemble"].items()} == {
        "x": (2, 1.0), "y": (2, 1.0), "z": (2, 1.0)}
    assert got["ensemble"]["z"]["length_baseline"] == 0.25 and got["mean_ensemble"] == 1.0
    assert got["mean_ensemble_disagreement"] == 0.0 and got["ensemble_above_length_baseline"] == "3/3"
