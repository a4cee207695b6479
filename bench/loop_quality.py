"""Does a training round make the policy better? The real product, through its services, on the
configured database (Postgres: set DATABASE_URL); nothing is trained by a side script.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/pairwise .venv/bin/python bench/loop_quality.py \
        --train-data ../shared/datasets/hh-rlhf/helpful-base-test.jsonl.gz \
        --judge-data ../shared/datasets/hh-rlhf/helpful-rejection-sampled-test.jsonl.gz \
        --eval-prompts ../shared/datasets/pandalm/testset-v1.jsonl.gz --train-pairs 1000 --eval-n 100

1. --train-data ({id, prompt, chosen, rejected} files) is imported into a project as judgments;
   its round trains the reward model, then the policy (--policy, default dpo) from the promoted
   base policy (SmolLM2-135M-Instruct after install_base_models, or --policy-base).
2. --judge-data is imported into a second project, whose reward model is the independent judge:
   it never sees the training data, and the policy never sees its data.
3. --eval-prompts (only `prompt` is read; prompts found in either data set are dropped): the parent
   and the new policy each answer them with the same sampling settings and seed, and the judge
   decides. Ties count one half.
4. --online R (bench/loop_online.py) also runs R rounds of the real loop: the promoted policy's
   candidates, a simulated labeler (a reward model trained on --labeler-data) ranking them through
   the assignment engine, the scheduled round on a real Celery worker; each round's policy is judged
   against the base and against its parent. --online-only skips step 1's offline round.

--judge-version ID reuses a judge an earlier run trained (refused if it saw a training prompt), so
several recipes are compared by one judge. One file may feed several roles: training pairs come
first, and the labeler's and the judge's pairs never share a prompt with them.

Prints JSON: train_pairs, eval_prompts, rm_val_accuracy, judge_val_accuracy, win_rate (policy over
parent by the judge), win_rate_ci95 (bootstrap over prompts), win_rate_own_rm (by the project's own
reward model), length_ratio (mean response tokens, policy over parent), length_controlled_win_rate
(AlpacaEval 2's: the length difference regressed out), kl_to_parent (per response), seconds per
stage. Bad input (a file that does not parse, a prompt longer than the policy's context, an empty
eval set, a judge with too little data) stops it with a message before anything trains.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

MIN_JUDGE_PAIRS = 50


class BenchError(SystemExit):
    """A clear message and exit status 2, before anything trains."""

    def __init__(self, message: str):
        super().__init__(f"loop_quality: {message}")


def read_records(path: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """gzip or plain JSONL; each line must be an object with string `fields` (training.ml.preference_file)."""
    from training.ml.preference_file import read_preference_file

    try:
        return read_preference_file(path, fields)
    except (OSError, ValueError) as exc:
        raise BenchError(str(exc) if isinstance(exc, ValueError) else f"{path}: cannot read ({exc})") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", action="append", required=True, help="{id, prompt, chosen, rejected} JSONL(.gz)")
    parser.add_argument("--judge-data", action="append", default=[], help="the judge's own pairs, same shape "
                        "(pairs whose prompt is in the training or labeler data are dropped)")
    parser.add_argument("--judge-version", type=int, help="reuse the judge a previous run trained (its model version "
                        "id) instead of --judge-data; refused if it saw a training prompt")
    parser.add_argument("--eval-prompts", required=True, help="JSONL(.gz) whose `prompt` fields are asked")
    parser.add_argument("--train-pairs", type=int, default=1000, help="pairs imported for training (0: all)")
    parser.add_argument("--judge-pairs", type=int, default=0, help="pairs the judge trains on (0: all)")
    parser.add_argument("--eval-n", type=int, default=100, help="evaluation prompts")
    parser.add_argument("--policy", choices=["dpo", "ppo", "sft"], default="dpo")
    parser.add_argument("--policy-base", default="", help="HF causal-LM folder (default: the installed SmolLM2)")
    parser.add_argument("--reward-base", default="", help="reward backbone folder (default: MiniLM)")
    parser.add_argument("--judge-base", default="", help="the judge's backbone folder (default: --reward-base)")
    parser.add_argument("--policy-config", default="{}", help="trainer config overrides as JSON")
    parser.add_argument("--reward-config", default="{}", help="RewardConfig overrides as JSON (both reward models)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16, help="responses generated together in the evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the JSON here")
    online = parser.add_argument_group("the online loop (bench/loop_online.py)")
    online.add_argument("--online", type=int, default=0, metavar="R", help="also run R rounds of the real loop "
                        "with a simulated labeler on a Celery worker")
    online.add_argument("--labeler-data", action="append", default=[], help="the simulated labeler's pairs")
    online.add_argument("--labeler-pairs", type=int, default=0, help="pairs the labeler trains on (0: all)")
    online.add_argument("--online-only", action="store_true", help="skip the offline round")
    online.add_argument("--online-prompts", type=int, default=32, help="prompts labeled per round")
    online.add_argument("--online-k", type=int, default=4, help="candidates per prompt (K)")
    online.add_argument("--promote-margin", type=float, default=0.0,
                        help="the round promotes its policy when its own RM's win rate is >= 0.5 + this")
    online.add_argument("--online-timeout", type=float, default=3600, help="seconds a round may take")
    online.add_argument("--online-log", default=str(ROOT / "var" / "loop-online-worker.log"), help="the worker's log")
    args = parser.parse_args(argv)
    if bool(args.judge_data) == bool(args.judge_version):
        raise BenchError("give either --judge-data or --judge-version")
    if args.online and not args.labeler_data:
        raise BenchError("--online needs --labeler-data (the simulated labeler's own pairs)")
    for name in ("policy_config", "reward_config"):
        try:
            setattr(args, name, json.loads(getattr(args, name)))
        except json.JSONDecodeError as exc:
            raise BenchError(f"--{name.replace('_', '-')} is not JSON: {exc}") from None
    return args


def load_inputs(args: argparse.Namespace, judge_prompts: set[str] = frozenset()) -> tuple[list[dict], list[dict], list[str], list[dict]]:
    """(training pairs, judge pairs, evaluation prompts, labeler pairs), shuffled by --seed and cut.
    judge_prompts: those a reused judge (--judge-version) trained on."""
    rng = random.Random(args.seed)
    pairs = ("prompt", "chosen", "rejected")
    train = [r for path in args.train_data for r in read_records(path, pairs)]
    judge = [r for path in args.judge_data for r in read_records(path, pairs)]
    labeler = [r for path in args.labeler_data for r in read_records(path, pairs)]
    for records in (train, judge, labeler):
        rng.shuffle(records)
    # One file may feed several roles: the training pairs come first, the labeler's and the judge's
    # never share a prompt with them (nor with each other).
    train = train[: args.train_pairs] if args.train_pairs else train
    taken = {r["prompt"] for r in train}
    labeler = [r for r in labeler if r["prompt"] not in taken]
    labeler = labeler[: args.labeler_pairs] if args.labeler_pairs else labeler
    taken |= {r["prompt"] for r in labeler}
    judge = [r for r in judge if r["prompt"] not in taken]
    judge = judge[: args.judge_pairs] if args.judge_pairs else judge
    if taken & judge_prompts:
        raise BenchError(f"--judge-version {args.judge_version} trained on {len(taken & judge_prompts)} of the training "
                         "or labeler prompts; the judge must never see the training data")
    seen = taken | {r["prompt"] for r in judge} | judge_prompts
    prompts = list(dict.fromkeys(r["prompt"] for r in read_records(args.eval_prompts, ("prompt",)) if r["prompt"] not in seen))
    rng.shuffle(prompts)
    prompts = prompts[: args.eval_n]
    if not train:
        raise BenchError("no training pairs")
    if not prompts:
        raise BenchError(f"no evaluation prompt left in {args.eval_prompts} (every one is empty or in the training data)")
    if not args.judge_version and len(judge) < MIN_JUDGE_PAIRS:
        raise BenchError(f"the judge has {len(judge)} pairs; it needs at least {MIN_JUDGE_PAIRS} to mean anything")
    if args.online and len(labeler) < MIN_JUDGE_PAIRS:
        raise BenchError(f"the labeler has {len(labeler)} pairs; it needs at least {MIN_JUDGE_PAIRS} to mean anything")
    return train, judge, prompts, labeler


def check_context(policy_dir: str, prompts: list[str], max_new_tokens: int, system_prompt: str) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from training.ml.text import encode_prompt

    limit = getattr(AutoConfig.from_pretrained(policy_dir), "max_position_embeddings", None)
    if not limit:
        return
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    for i, prompt in enumerate(prompts, start=1):
        n = len(encode_prompt(tokenizer, prompt, system_prompt))
        if n + max_new_tokens > limit:
            raise BenchError(f"evaluation prompt {i} has {n} tokens; with {max_new_tokens} new ones it exceeds the "
                             f"policy's context of {limit} ({prompt[:60]!r}...)")


def import_pairs(project, records: list[dict]) -> None:
    from labeling.services.imports import project_data_import

    lines = (json.dumps({"id": f"{i}:{r.get('id', '')}", "prompt": r["prompt"], "chosen": r["chosen"],
                         "rejected": r["rejected"]}) for i, r in enumerate(records))
    project_data_import(project=project, stream=io.BytesIO("\n".join(lines).encode()), filename="loop-quality.jsonl")


def train(project, kind: str, params: dict[str, Any]):
    from training.models import TrainingRun
    from training.services.policy import policy_train
    from training.services.reward import reward_model_train
    from training.services.runs import run_create

    run = run_create(project=project, kind=kind, params=params)
    version = (reward_model_train if kind == "reward" else policy_train)(run_id=run.pk, worker="bench/loop_quality.py")
    if version is None:
        raise SystemExit(f"loop_quality: the {kind} run failed: {TrainingRun.objects.get(pk=run.pk).error[:2000]}")
    return version


def reused_judge(args: argparse.Namespace):
    """The reward version --judge-version names, or None."""
    if not args.judge_version:
        return None
    from training.models import ModelVersion

    judge = ModelVersion.objects.filter(pk=args.judge_version, kind=ModelVersion.Kind.REWARD,
                                        status=ModelVersion.Status.READY).first()
    if judge is None or judge.project_id is None:
        raise BenchError(f"--judge-version {args.judge_version}: no trained reward model version with that id")
    return judge


def reused_judge_prompts(judge) -> set[str]:
    """Every prompt of the reused judge's project (load_inputs refuses one in the training data)."""
    from labeling.models import Prompt

    return set(Prompt.objects.filter(project_id=judge.project_id).values_list("text", flat=True))


def reward_params_of(args: argparse.Namespace) -> dict[str, Any]:
    """A reward run's params for every reward model of the bench (project, judge, labeler)."""
    return {**({"threads": args.threads} if args.threads else {}), "config": {**args.reward_config, "seed": args.seed}}


def offline_round(args: argparse.Namespace, *, tag: str, parent, judge, records: list[dict], prompts: list[str],
                  seconds: dict[str, float]) -> dict[str, Any]:
    """The imported pairs train the project's reward model, then the policy from `parent`; the
    policy and its parent answer `prompts` and the judge (and the project's own RM) decide."""
    from labeling.services.projects import project_create
    from training.ml.evaluate import head_to_head, length_controlled_win_rate, win_rate_interval

    clock = time.perf_counter()
    # Its reward model is promoted whatever its held-out evidence: the round's evaluation needs it.
    project = project_create(name=f"loop quality {tag}", slug=f"loop-{tag}", mode="pairwise",
                             reward_promote_min_heldout_groups=0)
    import_pairs(project, records)
    rm = train(project, "reward", {**reward_params_of(args), **({"base": args.reward_base} if args.reward_base else {})})
    seconds["reward"], clock = time.perf_counter() - clock, time.perf_counter()
    # SFT learns from the chosen answers: pairs are all these projects hold.
    chosen = {"include_chosen": True} if args.policy == "sft" else {}
    common = {"threads": args.threads} if args.threads else {}
    policy = train(project, args.policy, {**common, **chosen, "config": {**args.policy_config, "seed": args.seed}})
    seconds["policy"], clock = time.perf_counter() - clock, time.perf_counter()

    duel = head_to_head(policy.artifact_path, parent.artifact_path,
                        {"judge": judge.artifact_path, "own": rm.artifact_path}, prompts,
                        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed)
    seconds["evaluate"] = time.perf_counter() - clock
    rows = duel["rows"]
    outcomes = [r["outcome"]["judge"] for r in rows]
    low, high = win_rate_interval(outcomes, seed=args.seed)
    mean_tokens = lambda side: sum(r[f"{side}_tokens"] for r in rows) / len(rows)  # noqa: E731
    return {
        "policy_version": policy.pk, "project": project.slug, "rm_val_accuracy": rm.metrics.get("val_accuracy"),
        "win_rate": sum(outcomes) / len(outcomes), "win_rate_ci95": [low, high],
        "win_rate_own_rm": sum(r["outcome"]["own"] for r in rows) / len(rows),
        "length_ratio": mean_tokens("policy") / max(mean_tokens("parent"), 1e-9),
        "length_controlled_win_rate": length_controlled_win_rate(
            outcomes, [r["policy_tokens"] - r["parent_tokens"] for r in rows]),
        "kl_to_parent": duel["kl_per_response"], "kl_per_token": duel["kl_per_token"],
        "policy_config": policy.config.get("values"),
        "samples": [{"prompt": p[:300], "policy": r["policy"][:300], "parent": r["parent"][:300]}
                    for p, r in list(zip(prompts, rows))[:3]],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import django

    django.setup()
    reused = reused_judge(args)
    train_records, judge_records, prompts, labeler_records = load_inputs(
        args, reused_judge_prompts(reused) if reused else frozenset())
    import torch

    from labeling.services.projects import project_create
    from training.ml.text import DEFAULT_SYSTEM_PROMPT
    from training.models import ModelVersion
    from training.services.versions import base_models_install

    if args.threads:
        torch.set_num_threads(args.threads)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    parent = base_models_install(policy_dir=args.policy_base or None, reward_base_dir=args.reward_base or None)[
        ModelVersion.Kind.POLICY]
    check_context(parent.artifact_path, prompts, args.max_new_tokens, DEFAULT_SYSTEM_PROMPT)
    tag = uuid.uuid4().hex[:8]
    judge = reused
    if judge is None:
        judge_project = project_create(name=f"loop quality judge {tag}", slug=f"loop-judge-{tag}", mode="pairwise")
        import_pairs(judge_project, judge_records)
        seconds["import"], clock = time.perf_counter() - clock, time.perf_counter()
        judge_base = args.judge_base or args.reward_base
        judge = train(judge_project, "reward", {**reward_params_of(args), **({"base": judge_base} if judge_base else {})})
        seconds["judge"] = time.perf_counter() - clock
    result = {"train_pairs": len(train_records), "judge_pairs": len(judge_records), "judge_version": judge.pk,
              "eval_prompts": len(prompts),
              "policy": args.policy, "parent": parent.artifact_path,
              "judge_val_accuracy": judge.metrics.get("val_accuracy"), "seconds": seconds}
    if not args.online_only:
        result.update(offline_round(args, tag=tag, parent=parent, judge=judge, records=train_records, prompts=prompts,
                                    seconds=seconds))
    if args.online:
        from loop_online import online_rounds

        clock = time.perf_counter()
        result["labeler_pairs"] = len(labeler_records)
        result["online"] = online_rounds(args=args, base=parent, judge=judge, prompts=prompts, train=train,
                                         train_prompts=list(dict.fromkeys(r["prompt"] for r in train_records)),
                                         labeler_records=labeler_records)
        seconds["online"] = time.perf_counter() - clock
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
