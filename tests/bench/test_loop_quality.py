"""bench/loop_quality.py end to end on tiny models, through the product's services; and its refusals."""
from __future__ import annotations

import gzip
import json
import math

import pytest

from bench import loop_quality
from bench.loop_judge import CHANCE_WARNING, JUDGE_SYSTEM_PROMPT, NO_HELDOUT_WARNING
from tests.tiny_models import tiny_llama
from tests.training.conftest import DPO_FAST

REWARD_FAST = json.dumps({"max_length": 48, "batch_size": 4, "epochs": 1, "precision": "fp32", "device": "cpu"})


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
        # Eight held-out pairs, and two whose prompt a trainer saw (dropped): the training's and the judge's.
        "pairs": _write(tmp_path / "pairs.jsonl.gz", _pairs("held-out", 8)
                        + [_pairs("train", 2)[1], _pairs("judge", 3)[2]]),
    }


@pytest.mark.django_db
def test_a_dpo_round_is_judged_against_its_parent(files, tmp_path, bert_dir, capsys):
    from training.models import ModelVersion

    policy_dir = tiny_llama(tmp_path / "policy")
    out = tmp_path / "result.json"
    result = loop_quality.main([
        "--train-data", files["train"], "--judge-data", files["judge"], "--eval-prompts", files["eval"],
        "--eval-pairs", files["pairs"], "--policy-base", str(policy_dir), "--reward-base", str(bert_dir),
        "--eval-n", "10", "--max-new-tokens", "6", "--threads", "1", "--policy-config", json.dumps(DPO_FAST),
        "--reward-config", REWARD_FAST, "--json", str(out),
    ])
    assert result["train_pairs"] == 16 and result["judge_pairs"] == 60 and result["eval_prompts"] == 6
    assert 0.0 <= result["win_rate"] <= 1.0 and result["win_rate"] * 12 == int(result["win_rate"] * 12)  # halves of 6
    low, high = result["win_rate_ci95"]
    assert low <= result["win_rate"] <= high
    assert 0.0 < result["length_controlled_win_rate"] < 1.0 and result["length_ratio"] > 0
    assert result["rm_val_accuracy"] is None or 0.0 <= result["rm_val_accuracy"] <= 1.0
    assert result["kl_to_parent"] is not None
    assert set(result["seconds"]) == {"import", "reward", "judge", "policy", "evaluate", "preferences"}
    assert json.loads(out.read_text())["win_rate"] == result["win_rate"]
    assert "judge_inconsistent" not in result and result["judge"] == f"reward:{result['judge_version']}"

    # Preference accuracy on the held-out human pairs: the two whose prompt a trainer saw are dropped.
    assert result["eval_pairs"] == 8 and result["eval_pairs_dropped"] == 2
    assert result["pref_beta"] == DPO_FAST["beta"] == 0.5  # the DPO run's beta, not DPOConfig's default
    for key in ("pref_accuracy_parent", "pref_accuracy_policy", "pref_accuracy_per_token_parent",
                "pref_accuracy_per_token_policy", "implicit_reward_accuracy"):
        assert 0.0 <= result[key] <= 1.0 and result[key] * 16 == int(result[key] * 16), key  # halves of 8 pairs
    for key in ("pref_accuracy_delta", "implicit_reward_accuracy", "implicit_margin_mean"):
        low, high = result[f"{key}_ci95"]
        assert low <= result[key] <= high, key
    assert result["pref_accuracy_delta"] == pytest.approx(result["pref_accuracy_policy"] - result["pref_accuracy_parent"])
    assert -1.0 <= result["pref_accuracy_delta"] <= 1.0 and math.isfinite(result["implicit_margin_mean"])

    # The judge's held-out accuracy is checked on the very pairs its validation scored, with an interval;
    # a tiny judge is no better than chance (when measured: 0 of its 4 held-out pairs right), and the
    # warning is there exactly when the interval is not above 1/2.
    judge = ModelVersion.objects.get(pk=result["judge_version"])
    assert result["judge_val_pairs"] == judge.metrics["val_comparisons"]
    interval = result["judge_val_accuracy_ci95"]
    if interval is None:
        assert result["judge_val_pairs"] == 0 and result["judge_warning"] == NO_HELDOUT_WARNING
    else:
        low, high = interval
        assert 0.0 <= low <= result["judge_val_accuracy"] <= high <= 1.0
        assert result["judge_warning"] == (CHANCE_WARNING if low <= 0.5 else None)
    assert (CHANCE_WARNING in capsys.readouterr().err) == (result["judge_warning"] == CHANCE_WARNING)


def test_eval_pairs_drop_what_a_trainer_saw_and_are_cut_to_n(files):
    def pairs(*extra):
        args = loop_quality.parse_args(["--train-data", files["train"], "--judge-data", files["judge"],
                                        "--eval-prompts", files["eval"], "--eval-pairs", files["pairs"], *extra])
        train, judge, _, _ = loop_quality.load_inputs(args)
        return loop_quality.load_eval_pairs(args, {r["prompt"] for r in train + judge})

    kept, dropped = pairs()
    assert len(kept) == 8 and dropped == 2 and all(r["prompt"].startswith("held-out") for r in kept)
    kept, dropped = pairs("--eval-pairs-n", "3")
    assert len(kept) == 3 and dropped == 2
    args = loop_quality.parse_args(["--train-data", files["train"], "--judge-data", files["judge"],
                                    "--eval-prompts", files["eval"], "--eval-pairs", files["train"]])
    with pytest.raises(SystemExit, match=r"no evaluation pair left in --eval-pairs \(16 read"):
        loop_quality.load_eval_pairs(args, {r["prompt"] for r in loop_quality.load_inputs(args)[0]})


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


# The replies about "fresh question i?": the first with the policy's answer shown as A, the second as B.
SCRIPT = {
    0: ("A", "B"),  # the policy's answer won in both orders: 1
    1: ("B", "A"),  # the parent's won in both: 0
    2: ("A", "A"),  # the judge went by position: a tie, inconsistent
    3: ("[[A]]", "Assistant B is better."),  # 1
    4: ("I cannot tell.", "B"),  # a reply that names neither answer: a tie, unparsed
    5: ("B", "[[B]]"),  # position again: a tie, inconsistent
}


def scripted(question: str, turn: int, a: str, b: str) -> str:
    """SCRIPT's reply; "A" to anything else (the check before training)."""
    i = question.removeprefix("fresh question ").removesuffix("?")
    return SCRIPT[int(i)][turn] if i.isdigit() else "A"


@pytest.mark.django_db
def test_an_endpoint_judges_in_both_orders(files, tmp_path, bert_dir, settings, scripted_judge):
    from training.services.endpoints import endpoint_version_register

    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"  # the operator's allow-list opens loopback
    state, base_url = scripted_judge(scripted)
    endpoint = endpoint_version_register(project=None, name="llm-judge", base_url=base_url, model="judge",
                                         temperature=0.9, retries=0, timeout_s=20)
    result = loop_quality.main([
        "--train-data", files["train"], "--judge-endpoint", str(endpoint.pk), "--eval-prompts", files["eval"],
        "--policy-base", str(tiny_llama(tmp_path / "policy")), "--reward-base", str(bert_dir), "--eval-n", "10",
        "--max-new-tokens", "6", "--threads", "1", "--policy-config", json.dumps(DPO_FAST), "--reward-config", REWARD_FAST,
    ])
    assert result["judge"] == "endpoint:llm-judge" and result["judge_pairs"] == 0 and result["eval_prompts"] == 6
    assert result["win_rate"] == pytest.approx((1 + 0 + 0.5 + 1 + 0.5 + 0.5) / 6)
    assert result["judge_inconsistent"] == pytest.approx(2 / 6) and result["judge_unparsed"] == pytest.approx(1 / 6)
    low, high = result["win_rate_ci95"]
    assert low <= result["win_rate"] <= high
    assert result["judge_val_accuracy_ci95"] is None and "1 of 6 prompts" in result["judge_warning"]
    assert "judge" not in result["seconds"] and "eval_pairs" not in result  # no reward-model judge, no --eval-pairs

    # One check before training, then each prompt in both orders, greedy, with the judge's instructions
    # (bench/loop_judge.py's tests check that the second order swaps the answers).
    bodies = [r["body"] for r in state.seen]
    assert len(bodies) == 1 + 2 * 6 and {b["temperature"] for b in bodies} == {0.0}
    assert all(b["messages"][0] == {"role": "system", "content": JUDGE_SYSTEM_PROMPT} for b in bodies)
    assert state.asked == {"Is this a test?": 0} | {f"fresh question {i}?": 1 for i in range(6)}


@pytest.mark.parametrize("extra, message", [
    (["--judge-data", "JUDGE"], "--judge-data and --judge-endpoint are alternatives"),
    (["--online", "1", "--labeler-data", "JUDGE"], "--online rounds are judged by a reward model"),
])
def test_an_endpoint_judge_is_refused_with_another_judge_or_online_rounds(files, extra, message):
    extra = [files["judge"] if a == "JUDGE" else a for a in extra]
    with pytest.raises(SystemExit, match=message):
        loop_quality.main(["--train-data", files["train"], "--judge-endpoint", "1", "--eval-prompts", files["eval"], *extra])


def test_eval_pairs_are_refused_without_an_offline_round(files):
    with pytest.raises(SystemExit, match="--eval-pairs measures the offline round's policy, which --online-only skips"):
        loop_quality.main(["--train-data", files["train"], "--judge-data", files["judge"], "--eval-prompts", files["eval"],
                           "--eval-pairs", files["pairs"], "--online", "1", "--labeler-data", files["judge"],
                           "--online-only"])


@pytest.mark.django_db
def test_an_endpoint_judge_that_is_missing_or_unreachable_stops_before_anything_trains(files, settings, scripted_judge):
    from training.models import ModelVersion
    from training.services.endpoints import endpoint_version_register

    common = ["--train-data", files["train"], "--eval-prompts", files["eval"]]
    with pytest.raises(SystemExit, match="--judge-endpoint 987654: no registered endpoint with that id"):
        loop_quality.main([*common, "--judge-endpoint", "987654"])
    state, base_url = scripted_judge(scripted)
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"
    endpoint = endpoint_version_register(project=None, name="local", base_url=base_url, model="judge", retries=0)
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = ""  # the operator closed loopback since: the client refuses it
    with pytest.raises(SystemExit, match=r"--judge-endpoint \d+ \(local\): endpoint .* failed"):
        loop_quality.main([*common, "--judge-endpoint", str(endpoint.pk)])
    assert state.seen == [] and not ModelVersion.objects.exclude(pk=endpoint.pk).exists()  # nothing trained
