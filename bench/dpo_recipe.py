"""Does a DPO recipe make the policy agree with people on prompts it never saw? No judge, no generation.

    .venv/bin/python bench/dpo_recipe.py --train ../shared/datasets/hh-rlhf/helpful-base-test.jsonl.gz \
        --eval ../shared/datasets/hh-rlhf/helpful-rejection-sampled-test.jsonl.gz \
        --train-pairs 200 --eval-pairs 300 --config '{"lr": 3e-5, "beta": 0.1}' --threads 2

The recipe (training.ml.dpo.DPOConfig: its defaults, then --config) trains the base policy (--policy-base,
default the installed SmolLM2-135M-Instruct) on --train-pairs pairs of --train, in process, through the
product's own trainer; then training.ml.preference_eval measures the new policy against its parent on
--eval-pairs pairs of --eval whose prompts no training pair has (when --train and --eval are the same
file, the product's split rule, keyed by the prompt text, keeps the held-out side for evaluation). The
trainer also reports its held-out implicit reward accuracy at the start and the end (as in a product run).

It is the cheap way to search for a recipe (issue 29's target: implicit reward accuracy at least 55%
with its interval above 50%, and a preference-accuracy gain whose interval is above zero): one
training and two forward passes over the evaluation pairs, where bench/loop_quality.py also trains a
reward model and a judge and samples answers. Prints JSON (bench/report.py): the recipe, train_pairs,
eval_pairs, dropped_overlap, every preference_metrics figure (pref_accuracy_parent, pref_accuracy_policy,
pref_accuracy_delta and its ci95, implicit_reward_accuracy and its ci95, implicit_margin_mean, the
per-token variants), target_met, train_seconds, eval_seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.loop_common import BenchError, read_records  # noqa: E402
from bench.report import emit  # noqa: E402

MODEL_DIR = ROOT / "var" / "models" / "smollm2-135m-instruct"
FIELDS = ("prompt", "chosen", "rejected")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="{prompt, chosen, rejected} JSONL(.gz) to train on")
    parser.add_argument("--eval", required=True, help="the same shape, to measure on (its prompts seen in --train are dropped)")
    parser.add_argument("--train-pairs", type=int, default=200)
    parser.add_argument("--eval-pairs", type=int, default=300)
    parser.add_argument("--config", default="{}", help="DPOConfig overrides as JSON, e.g. '{\"lr\": 5e-5, \"beta\": 0.2}'")
    parser.add_argument("--policy-base", default=str(MODEL_DIR), help="HF causal-LM folder (plain or LoRA adapter)")
    parser.add_argument("--eval-max-length", type=int, default=0, help="tokens per evaluated sequence (0: the recipe's max_length)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the JSON here")
    return parser.parse_args(argv)


def pairs_split(train: list[dict], evaluate: list[dict], same_file: bool, train_n: int, eval_n: int) -> tuple[list, list, int]:
    """(training pairs, evaluation pairs, evaluation pairs dropped because a training pair has their prompt).
    From one file, the product's split (labeling.splits, keyed by the prompt text) decides the sides."""
    from labeling.splits import prompt_is_held_out

    key = lambda record: " ".join(str(record["prompt"]).split()).lower()  # noqa: E731 (whitespace and case ignored)
    if same_file:
        evaluate = [r for r in train if prompt_is_held_out(key(r))]
        train = [r for r in train if not prompt_is_held_out(key(r))]
    train = train[:train_n] if train_n else train
    seen = {key(r) for r in train}
    kept = [r for r in evaluate if key(r) not in seen]
    return train, kept[:eval_n] if eval_n else kept, len(evaluate) - len(kept)


def target_met(figures: dict[str, Any]) -> bool:
    """Issue 29's bar: implicit reward accuracy at least 55% with its interval above 50%, and the
    preference-accuracy gain's interval above zero."""
    implicit, gain = figures.get("implicit_reward_accuracy_ci95"), figures.get("pref_accuracy_delta_ci95")
    return bool(implicit and gain and figures["implicit_reward_accuracy"] >= 0.55 and implicit[0] > 0.5 and gain[0] > 0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from training.ml.dpo import DPOConfig, train_dpo
    from training.ml.preference_eval import evaluate_preferences

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        overrides = json.loads(args.config)
        config = DPOConfig(**{**overrides, "device": overrides.get("device", "auto")})
    except (ValueError, TypeError) as exc:
        raise BenchError(f"--config: {exc}") from None
    train_records = read_records(args.train, FIELDS)
    same = Path(args.train).resolve() == Path(args.eval).resolve()
    train, evaluate, dropped = pairs_split(train_records, train_records if same else read_records(args.eval, FIELDS),
                                           same, args.train_pairs, args.eval_pairs)
    if not train or not evaluate:
        raise BenchError(f"{len(train)} training and {len(evaluate)} evaluation pairs: both must be non-empty")
    strip = lambda rows: [{k: r[k] for k in FIELDS} for r in rows]  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="dpo-recipe-") as scratch:
        started = time.perf_counter()
        metrics = train_dpo(args.policy_base, strip(train), Path(scratch) / "policy", config, eval_pairs=strip(evaluate))
        trained = time.perf_counter()
        figures = evaluate_preferences(Path(scratch) / "policy", args.policy_base, strip(evaluate), beta=config.beta,
                                       max_length=args.eval_max_length or config.max_length, device=config.device,
                                       precision=config.precision, system_prompt=config.system_prompt, seed=config.seed)
    return {"recipe": {**overrides}, "train_pairs": len(train), "dropped_overlap": dropped, **figures,
            "trainer_eval_implicit_reward_accuracy_end": metrics.get("eval_implicit_reward_accuracy_end"),
            "target_met": target_met(figures), "train_seconds": trained - started,
            "eval_seconds": time.perf_counter() - trained, "steps": metrics["steps"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        result = run(args)
    except BenchError as exc:
        raise SystemExit(f"dpo_recipe: {exc}") from None
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
