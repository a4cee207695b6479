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
several recipes are compared by one judge. --judge-endpoint ID judges with a registered
OpenAI-compatible endpoint instead (bench/loop_judge.py): each prompt is asked in both orders, and
disagreeing verdicts are a tie. One of --judge-data, --judge-version, --judge-endpoint. One file may
feed several roles: training pairs come first, and the labeler's and the judge's pairs never share a
prompt with them.

A win rate is only as good as its judge. --eval-pairs ({id, prompt, chosen, rejected} files whose
prompts no trainer or judge saw; the others are dropped and counted) measures the offline round's
policy without one: its preference accuracy against its parent's on human pairs, and DPO's implicit
reward accuracy (training.ml.preference_eval; beta: the DPO run's, else DPOConfig's default).

Prints JSON: train_pairs, eval_prompts, rm_val_accuracy, judge ("reward:<version id>" or
"endpoint:<name>"; judge_version is that version's id), judge_val_accuracy and its
judge_val_accuracy_ci95 (bootstrap over prompts of the judge's own held-out pairs, judge_val_pairs of
them, scored again), judge_warning (null, or why the win rate says little: the interval does not lie
above 1/2 or there is none; an endpoint replied with neither answer; also printed on stderr),
win_rate (policy over parent by the judge), win_rate_ci95 (bootstrap over prompts), win_rate_own_rm
(by the project's own reward model), length_ratio (mean response tokens, policy over parent),
length_controlled_win_rate (AlpacaEval 2's: the length difference regressed out), kl_to_parent (per
response), seconds per stage. An endpoint judge adds judge_inconsistent and judge_unparsed (shares
of prompts whose two orders disagreed, whose reply named neither answer; both count 1/2), and has
null judge_val_*. With --eval-pairs: eval_pairs (those measured), eval_pairs_dropped,
pref_accuracy_parent, pref_accuracy_policy, pref_accuracy_delta (paired, policy - parent), their
per-token variants (pref_accuracy_per_token_*), implicit_reward_accuracy, implicit_margin_mean,
pref_beta, with *_ci95 intervals (bootstrap over prompts); without --eval-pairs these keys are absent.
Bad input (a file that does not parse, a prompt longer than the policy's context, an empty eval
set, a judge with too little data, an endpoint that does not answer) stops it with a message before
anything trains.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.loop_common import BenchError, import_pairs, read_records, reward_params_of, train  # noqa: E402
from bench.loop_judge import (  # noqa: E402
    endpoint_judge, endpoint_judge_check, endpoint_judge_get, judge_heldout_interval, judge_warning,
)
from bench.report import emit  # noqa: E402

MIN_JUDGE_PAIRS = 50


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", action="append", required=True, help="{id, prompt, chosen, rejected} JSONL(.gz)")
    parser.add_argument("--judge-data", action="append", default=[], help="the judge's own pairs, same shape "
                        "(pairs whose prompt is in the training or labeler data are dropped)")
    parser.add_argument("--judge-version", type=int, help="reuse the judge a previous run trained (its model version "
                        "id) instead of --judge-data; refused if it saw a training prompt")
    parser.add_argument("--judge-endpoint", type=int, help="judge with this registered OpenAI-compatible endpoint "
                        "(its model version id), asked in both orders, instead of a reward model")
    parser.add_argument("--eval-prompts", required=True, help="JSONL(.gz) whose `prompt` fields are asked")
    parser.add_argument("--eval-pairs", action="append", default=[], help="{id, prompt, chosen, rejected} JSONL(.gz): "
                        "human pairs no trainer saw, for the policy's preference accuracy against its parent")
    parser.add_argument("--eval-pairs-n", type=int, default=500, help="--eval-pairs measured (0: all)")
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
    judges = [flag for flag, given in (("--judge-data", args.judge_data), ("--judge-version", args.judge_version),
                                       ("--judge-endpoint", args.judge_endpoint)) if given]
    if len(judges) != 1:
        raise BenchError("give one judge: --judge-data, --judge-version or --judge-endpoint"
                         + (f" ({' and '.join(judges)} are alternatives)" if judges else ""))
    if args.online and not args.labeler_data:
        raise BenchError("--online needs --labeler-data (the simulated labeler's own pairs)")
    if args.online and args.judge_endpoint:
        raise BenchError("--online rounds are judged by a reward model: give --judge-data or --judge-version")
    if args.eval_pairs and args.online_only:
        raise BenchError("--eval-pairs measures the offline round's policy, which --online-only skips")
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
    if args.judge_data and len(judge) < MIN_JUDGE_PAIRS:
        raise BenchError(f"the judge has {len(judge)} pairs; it needs at least {MIN_JUDGE_PAIRS} to mean anything")
    if args.online and len(labeler) < MIN_JUDGE_PAIRS:
        raise BenchError(f"the labeler has {len(labeler)} pairs; it needs at least {MIN_JUDGE_PAIRS} to mean anything")
    return train, judge, prompts, labeler


def load_eval_pairs(args: argparse.Namespace, seen: set[str]) -> tuple[list[dict], int]:
    """--eval-pairs: (the pairs whose prompt is not in `seen`, shuffled by --seed and cut to
    --eval-pairs-n; how many were dropped for a seen prompt)."""
    if not args.eval_pairs:
        return [], 0
    records = [r for path in args.eval_pairs for r in read_records(path, ("prompt", "chosen", "rejected"))]
    kept = [r for r in records if r["prompt"] not in seen]
    if not kept:
        raise BenchError(f"no evaluation pair left in --eval-pairs ({len(records)} read; every prompt is in the "
                         "training, judge or labeler data)")
    if len(kept) < len(records):
        print(f"loop_quality: {len(records) - len(kept)} of {len(records)} --eval-pairs dropped: their prompt is in "
              "the training, judge or labeler data", file=sys.stderr)
    random.Random(args.seed).shuffle(kept)
    return (kept[: args.eval_pairs_n] if args.eval_pairs_n else kept), len(records) - len(kept)


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


def head_to_head(
    policy_dir: str, parent_dir: str, judges: dict[str, str], prompts: Sequence[str], max_new_tokens: int = 128,
    batch_size: int = 8, seed: int = 0, device: str = "auto", precision: str = "fp32",
) -> dict[str, Any]:
    """The policy and its parent each answer every prompt (temperature 1, the same seed), and every
    judge (a reward-model folder by name) scores both answers.

    Returns {"rows": [{"policy", "parent", "policy_tokens", "parent_tokens", "outcome": {judge: 1|0.5|0}}],
    "kl_per_token", "kl_per_response"} (KL of the policy to the parent on its own samples).
    """
    from training.ml.common import pick_device, resolve_precision, set_seed
    from training.ml.evaluate import kl_to_reference, outcomes_of, respond, rm_scores
    from training.ml.reward.artifact import load_reward_model
    from training.ml.text import DEFAULT_SYSTEM_PROMPT, load_policy

    dev = pick_device(device)
    precision = resolve_precision(precision, dev)
    policy, tokenizer = load_policy(policy_dir, dev)
    parent, _ = load_policy(parent_dir, dev)
    answers = []
    for model in (policy.eval(), parent.eval()):
        set_seed(seed)
        answers.append(respond(model, tokenizer, prompts, 1.0, max_new_tokens, batch_size, DEFAULT_SYSTEM_PROMPT, precision))
    (ours, raw), (theirs, _) = answers
    kls = [kl_to_reference(policy, parent, *out, batch_size=batch_size, precision=precision) for out in raw]
    weights = [len(out[0]) for out in raw]
    del policy, parent
    rows = [{"policy": a, "parent": b, "policy_tokens": len(tokenizer(a, add_special_tokens=False)["input_ids"]),
             "parent_tokens": len(tokenizer(b, add_special_tokens=False)["input_ids"]), "outcome": {}}
            for a, b in zip(ours, theirs)]
    for name, folder in judges.items():
        rm, rm_tok, rm_config = load_reward_model(folder, dev)
        outcomes = outcomes_of(rm_scores(rm, rm_tok, prompts, ours, rm_config.max_length),
                               rm_scores(rm, rm_tok, prompts, theirs, rm_config.max_length))
        for row, outcome in zip(rows, outcomes):
            row["outcome"][name] = outcome
    mean = lambda key: sum(k[key] * w for k, w in zip(kls, weights)) / max(sum(weights), 1)  # noqa: E731
    return {"rows": rows, "kl_per_token": mean("kl_per_token"), "kl_per_response": mean("kl_per_response")}


def preference_report(args: argparse.Namespace, policy, parent, pairs: list[dict]) -> dict[str, Any]:
    """training.ml.preference_eval's figures for the round's policy against its parent on the held-out
    human pairs, with the DPO run's beta and length (DPOConfig's defaults for another trainer) and the
    system prompt the bench generates with."""
    from training.ml.dpo import DPOConfig
    from training.ml.preference_eval import evaluate_preferences
    from training.ml.text import DEFAULT_SYSTEM_PROMPT

    values, defaults = (policy.config or {}).get("values") or {}, DPOConfig()
    beta = float(values.get("beta", defaults.beta)) if args.policy == "dpo" else defaults.beta
    max_length = int(values.get("max_length") or defaults.max_length)
    report = evaluate_preferences(policy.artifact_path, parent.artifact_path, pairs, beta=beta, max_length=max_length,
                                  batch_size=args.batch_size, system_prompt=DEFAULT_SYSTEM_PROMPT, seed=args.seed)
    return {**report, "pref_beta": beta}


def offline_round(args: argparse.Namespace, *, tag: str, parent, judge, records: list[dict], prompts: list[str],
                  eval_pairs: list[dict], seconds: dict[str, float]) -> dict[str, Any]:
    """The imported pairs train the project's reward model, then the policy from `parent`; the
    policy and its parent answer `prompts` and the judge (a reward model, or an endpoint with
    --judge-endpoint; and the project's own RM) decides. With eval_pairs, the policy's preference
    accuracy against its parent's on them (preference_report)."""
    from labeling.services.projects import project_create
    from training.ml.evaluate import length_controlled_win_rate, win_rate_interval

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

    judges = {"own": rm.artifact_path} | ({} if args.judge_endpoint else {"judge": judge.artifact_path})
    duel = head_to_head(policy.artifact_path, parent.artifact_path, judges, prompts,
                        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed)
    rows, verdicts = duel["rows"], {}
    if args.judge_endpoint:
        verdicts = endpoint_judge(judge, prompts, [r["policy"] for r in rows], [r["parent"] for r in rows], args.seed)
        for row, outcome in zip(rows, verdicts.pop("outcomes")):
            row["outcome"]["judge"] = outcome
    seconds["evaluate"], clock = time.perf_counter() - clock, time.perf_counter()
    preferences = preference_report(args, policy, parent, eval_pairs) if eval_pairs else {}
    if eval_pairs:
        seconds["preferences"] = time.perf_counter() - clock
    outcomes = [r["outcome"]["judge"] for r in rows]
    low, high = win_rate_interval(outcomes, seed=args.seed)
    mean_tokens = lambda side: sum(r[f"{side}_tokens"] for r in rows) / len(rows)  # noqa: E731
    return {
        **verdicts, **preferences,
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


def judge_facts(args: argparse.Namespace, judge) -> dict[str, Any]:
    """What the JSON says of the judge. A reward model's held-out accuracy gets its interval, and an
    interval not above 1/2 its warning, printed at once (before the policy trains)."""
    if args.judge_endpoint:
        return {"judge": f"endpoint:{judge.name}", "judge_val_accuracy": None, "judge_val_accuracy_ci95": None,
                "judge_val_pairs": 0, "judge_warning": None}
    facts = {"judge": f"reward:{judge.pk}", "judge_val_accuracy": judge.metrics.get("val_accuracy"),
             **judge_heldout_interval(judge, seed=args.seed)}
    facts["judge_warning"] = judge_warning(facts["judge_val_accuracy_ci95"])
    if facts["judge_warning"]:
        print(f"loop_quality: warning: {facts['judge_warning']}", file=sys.stderr, flush=True)
    return facts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import django

    django.setup()
    reused = reused_judge(args)
    reused_prompts = reused_judge_prompts(reused) if reused else set()
    train_records, judge_records, prompts, labeler_records = load_inputs(args, reused_prompts)
    seen = {r["prompt"] for r in train_records + judge_records + labeler_records} | reused_prompts
    eval_pairs, dropped = load_eval_pairs(args, seen)
    endpoint = endpoint_judge_get(args.judge_endpoint) if args.judge_endpoint else None
    if endpoint is not None:
        endpoint_judge_check(endpoint)
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
    judge = reused or endpoint
    if judge is None:
        judge_project = project_create(name=f"loop quality judge {tag}", slug=f"loop-judge-{tag}", mode="pairwise")
        import_pairs(judge_project, judge_records)
        seconds["import"], clock = time.perf_counter() - clock, time.perf_counter()
        judge_base = args.judge_base or args.reward_base
        judge = train(judge_project, "reward", {**reward_params_of(args), **({"base": judge_base} if judge_base else {})})
        seconds["judge"] = time.perf_counter() - clock
    result = {"train_pairs": len(train_records), "judge_pairs": len(judge_records), "judge_version": judge.pk,
              "eval_prompts": len(prompts), "policy": args.policy, "parent": parent.artifact_path, "seconds": seconds,
              **judge_facts(args, judge), **({"eval_pairs_dropped": dropped} if args.eval_pairs else {})}
    if not args.online_only:
        result.update(offline_round(args, tag=tag, parent=parent, judge=judge, records=train_records, prompts=prompts,
                                    eval_pairs=eval_pairs, seconds=seconds))
    if args.online:
        from bench.loop_online import online_rounds

        clock = time.perf_counter()
        result["labeler_pairs"] = len(labeler_records)
        result["online"] = online_rounds(args=args, base=parent, judge=judge, prompts=prompts,
                                         train_prompts=list(dict.fromkeys(r["prompt"] for r in train_records)),
                                         labeler_records=labeler_records)
        seconds["online"] = time.perf_counter() - clock
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
