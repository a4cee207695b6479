"""bench/loop_quality.py end to end on tiny models, through the product's services; and its refusals."""
from __future__ import annotations

import gzip
import json

import pytest

import loop_quality
from tests.tiny_models import tiny_llama
from tests.training.conftest import DPO_FAST


def _write(path, records) -> str:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return str(path)


def _pairs(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}{i}", "prompt": f"{prefix} question {i}?", "chosen": "yes, glad to help!", "rejected": "no."}
            for i in range(n)]


@pytest.fixture
def files(tmp_path, settings):
    settings.PAIRWISE_MODELS_DIR = tmp_path / "models"
    settings.PAIRWISE_EXPORTS_DIR = tmp_path / "exports"
    return {
        "train": _write(tmp_path / "train.jsonl.gz", _pairs("train", 16)),
        "judge": _write(tmp_path / "judge.jsonl.gz", _pairs("judge", 60)),
        "eval": _write(tmp_path / "eval.jsonl.gz", [{"prompt": f"fresh question {i}?"} for i in range(6)]
                       + [{"prompt": "train question 0?"}]),  # seen in training: dropped
    }


@pytest.mark.django_db
def test_a_dpo_round_is_judged_against_its_parent(files, tmp_path, bert_dir):
    policy_dir = tiny_llama(tmp_path / "policy")
    out = tmp_path / "result.json"
    result = loop_quality.main([
        "--train-data", files["train"], "--judge-data", files["judge"], "--eval-prompts", files["eval"],
        "--policy-base", str(policy_dir), "--reward-base", str(bert_dir), "--eval-n", "10", "--max-new-tokens", "6",
        "--threads", "1", "--policy-config", json.dumps(DPO_FAST),
        "--reward-config", json.dumps({"max_length": 48, "batch_size": 4, "epochs": 1, "precision": "fp32", "device": "cpu"}),
        "--json", str(out),
    ])
    assert result["train_pairs"] == 16 and result["judge_pairs"] == 60 and result["eval_prompts"] == 6
    assert 0.0 <= result["win_rate"] <= 1.0 and result["win_rate"] * 12 == int(result["win_rate"] * 12)  # halves of 6
    low, high = result["win_rate_ci95"]
    assert low <= result["win_rate"] <= high
    assert 0.0 < result["length_controlled_win_rate"] < 1.0 and result["length_ratio"] > 0
    assert result["rm_val_accuracy"] is None or 0.0 <= result["rm_val_accuracy"] <= 1.0
    assert result["kl_to_parent"] is not None and set(result["seconds"]) == {"import", "reward", "judge", "policy", "evaluate"}
    assert json.loads(out.read_text())["win_rate"] == result["win_rate"]


@pytest.mark.parametrize("case, message", [
    ("broken", "train.jsonl.gz:2: not JSON"), ("no_eval", "no evaluation prompt left"),
    ("small_judge", "needs at least 50"), ("missing_field", "missing or non-string chosen"),
])
def test_bad_input_stops_before_anything_trains(files, tmp_path, case, message):
    args = {"train": files["train"], "judge": files["judge"], "eval": files["eval"]}
    if case == "broken":
        args["train"] = str(tmp_path / "train.jsonl.gz")
        with gzip.open(args["train"], "wt") as f:
            f.write(json.dumps(_pairs("train", 1)[0]) + "\n{not json\n")
    elif case == "no_eval":
        args["eval"] = _write(tmp_path / "seen.jsonl.gz", [{"prompt": "train question 1?"}])
    elif case == "small_judge":
        args["judge"] = _write(tmp_path / "small.jsonl.gz", _pairs("judge", 10))
    else:
        args["train"] = _write(tmp_path / "partial.jsonl.gz", [{"prompt": "p", "rejected": "r"}])
    with pytest.raises(SystemExit, match=message):
        loop_quality.main(["--train-data", args["train"], "--judge-data", args["judge"], "--eval-prompts", args["eval"]])


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_online_rounds_run_the_real_loop_on_a_worker(files, tmp_path, bert_dir):
    """Two rounds: the labeler ranks the promoted policy's candidates through the assignment engine,
    the scheduled check starts each round on a real worker, and the judge scores every round's policy."""
    from labeling.models import Judgment, Response
    from training.models import ModelVersion, TrainingRun

    policy_dir = tiny_llama(tmp_path / "policy")
    result = loop_quality.main([
        "--train-data", files["train"], "--judge-data", files["judge"], "--eval-prompts", files["eval"],
        "--labeler-data", _write(tmp_path / "labeler.jsonl.gz", _pairs("labeler", 60)),
        "--policy-base", str(policy_dir), "--reward-base", str(bert_dir), "--eval-n", "4", "--max-new-tokens", "6",
        "--threads", "1", "--policy-config", json.dumps(DPO_FAST), "--online", "2", "--online-only",
        "--online-prompts", "4", "--online-k", "3", "--promote-margin", "-1", "--batch-size", "8",
        "--online-log", str(tmp_path / "worker.log"),
        "--reward-config", json.dumps({"max_length": 48, "batch_size": 4, "epochs": 1, "precision": "fp32", "device": "cpu"}),
    ])
    assert "win_rate" not in result and result["labeler_pairs"] == 60  # --online-only: no offline round
    rounds = result["online"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and [r["parent"] for r in rounds] == ["base", "round1"]
    first, second = (ModelVersion.objects.get(pk=r["policy_version"]) for r in rounds)
    assert first.promoted is False and second.promoted and second.parent == first  # margin -1: each round promotes
    for r in rounds:
        assert r["judgments"] >= 1 and r["pairs"] >= r["judgments"] and r["promoted"]
        for side in ("vs_base", "vs_parent"):
            low, high = r[side]["win_rate_ci95"]
            assert 0.0 <= low <= r[side]["win_rate"] <= high <= 1.0 and r[side]["length_ratio"] > 0
    # Every judgment came from the simulated annotator through the assignment engine, on responses the
    # promoted policy of that moment wrote: round 2 labeled round 1's policy's candidates.
    project = TrainingRun.objects.get(result_version=first).project
    judged = Judgment.objects.filter(project=project)
    assert judged.count() == sum(r["judgments"] for r in rounds) and {j.source for j in judged} == {"human"}
    writers = set(Response.objects.filter(slots__task__judgments__in=judged).values_list("model_version_id", flat=True))
    assert writers == {first.parent_id, first.pk}
    kinds = list(TrainingRun.objects.filter(project=project, pipeline_id__isnull=False).values_list("kind", flat=True))
    assert sorted(kinds) == sorted(["reward", "dpo", "evaluate", "candidates"] * 2)


def test_online_needs_a_labeler(files):
    with pytest.raises(SystemExit, match="--online needs --labeler-data"):
        loop_quality.main(["--train-data", files["train"], "--judge-data", files["judge"], "--eval-prompts", files["eval"],
                           "--online", "1"])


@pytest.mark.django_db
def test_a_judge_is_reused_by_id_and_refused_when_it_saw_a_training_prompt(files, tmp_path, bert_dir):
    policy_dir = tiny_llama(tmp_path / "policy")
    common = ["--eval-prompts", files["eval"], "--policy-base", str(policy_dir), "--reward-base", str(bert_dir),
              "--eval-n", "3", "--max-new-tokens", "4", "--threads", "1", "--policy-config", json.dumps(DPO_FAST),
              "--reward-config", json.dumps({"max_length": 48, "batch_size": 4, "epochs": 1, "precision": "fp32", "device": "cpu"})]
    first = loop_quality.main(["--train-data", files["train"], "--judge-data", files["judge"], *common])
    again = loop_quality.main(["--train-data", files["train"], "--judge-version", str(first["judge_version"]), *common])
    assert again["judge_version"] == first["judge_version"] and again["judge_pairs"] == 0
    assert again["policy_version"] != first["policy_version"]
    # Training on the judge's own data is refused before anything trains.
    with pytest.raises(SystemExit, match=r"trained on 60 of the training or labeler prompts"):
        loop_quality.main(["--train-data", files["judge"], "--judge-version", str(first["judge_version"]), *common])
    with pytest.raises(SystemExit, match="no trained reward model version"):
        loop_quality.main(["--train-data", files["train"], "--judge-version", "987654", *common])


def test_one_file_feeds_the_policy_and_the_judge_without_sharing_a_prompt(files):
    def inputs(train_pairs: int):
        return loop_quality.load_inputs(loop_quality.parse_args([
            "--train-data", files["judge"], "--judge-data", files["judge"], "--eval-prompts", files["eval"],
            "--train-pairs", str(train_pairs)]))

    train, judge, prompts, _ = inputs(10)
    assert len(train) == 10 and len(judge) == 50 and not {r["prompt"] for r in train} & {r["prompt"] for r in judge}
    assert len(prompts) == 7  # "train question 0?" is not in this run's data: it may be asked
    with pytest.raises(SystemExit, match="the judge has 49 pairs"):  # the judge keeps only what training left
        inputs(11)
