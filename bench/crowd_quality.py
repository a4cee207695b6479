"""Do the label models find the truth and the bad annotators better than majority vote? Real human
pairs, a simulated crowd, the product's own queue, submit path and label-model fit, on the configured
database (Postgres: set DATABASE_URL).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/pairwise .venv/bin/python bench/crowd_quality.py \
        --data ../shared/datasets/hh-rlhf/helpful-base-test.jsonl.gz --pairs 2000 --annotators 30 \
        --bad-share 0.3 --overlap 3

1. --pairs records of --data ({id, prompt, chosen, rejected}; the recorded choice is the truth)
   become two-response tasks of a new pairwise project with --overlap.
2. --annotators simulated annotators take tasks through task_assign_next and answer through
   judgment_submit, in random turns until the queue is empty: good ones are right with a
   probability drawn from 0.7..0.9 (--biased-share of them click the first-shown response in
   --bias of their answers instead), and --bad-share are bad: half answer at random, half always
   pick the response shown first.
3. labeling.services.label_models.label_model_fit fits every model; per model the bench reports
   the accuracy of its consensus against the recorded choice (a 50/50 posterior scores one half),
   bad_flagged_recall (bad annotators with any flag), good_flagged_rate and its seconds.
4. fit_seconds: the pure fit on a synthetic crowd of --scale-votes votes (no queue, no database).
5. --train-reward: the default reward model (RewardConfig's defaults, MiniLM) is trained three times
   on the crowd's labels through the product's training snapshot (training.selectors.data): every
   judgment as given (label_model none, today's default), majority vote's hard consensus, and the best
   label model's soft posterior; each is scored on --eval-pairs pairs of --eval-data (whose prompts
   the crowd never saw; the recorded choice is the truth). Reported under `training` with an interval.
"""
from __future__ import annotations

import argparse
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

from bench.loop_common import read_records  # noqa: E402
from bench.pair_project import pair_project_create  # noqa: E402
from bench.report import emit, progress  # noqa: E402


class CrowdError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"crowd_quality: {message}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True, help="{id, prompt, chosen, rejected} JSONL(.gz); repeatable")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--bad-share", type=float, default=0.3)
    parser.add_argument("--biased-share", type=float, default=0.25, help="share of the good annotators with a position bias")
    parser.add_argument("--bias", type=float, default=0.3, help="how often a biased annotator just clicks the first response")
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale-votes", type=int, default=100_000, help="synthetic votes for fit_seconds; 0 skips it")
    parser.add_argument("--train-reward", action="store_true", help="also train the reward model on each kind of label")
    parser.add_argument("--eval-data", action="append", default=[], help="held-out pairs for --train-reward; repeatable")
    parser.add_argument("--eval-pairs", type=int, default=500)
    parser.add_argument("--reward-base", default="", help="reward backbone folder for --train-reward (default: MiniLM)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads for --train-reward (0: torch's default)")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.pairs < 1 or not 1 <= args.overlap <= args.annotators:
        raise CrowdError("--pairs must be positive and --overlap between 1 and --annotators")
    if not 0 <= args.bad_share <= 1 or not 0 <= args.biased_share <= 1 or not 0 <= args.bias <= 1:
        raise CrowdError("--bad-share, --biased-share and --bias are shares from 0 to 1")
    if args.train_reward and not args.eval_data:
        raise CrowdError("--train-reward needs --eval-data (pairs whose prompts the crowd does not see)")
    return args


def load_pairs(paths: list[str], n: int, rng: random.Random) -> list[dict[str, Any]]:
    records = [r for path in paths for r in read_records(path, ("prompt", "chosen", "rejected"))
               if r["chosen"].strip() != r["rejected"].strip()]  # the same text twice has no truth to find
    if not records:
        raise CrowdError("no usable pairs in --data")
    rng.shuffle(records)
    return records[:n]


def crowd_make(*, n: int, bad_share: float, biased_share: float, rng: random.Random) -> list[dict[str, Any]]:
    """[{kind, accuracy}]: 'spammer' (random), 'first' (always the first shown), 'biased', 'good'."""
    bad = round(n * bad_share)
    biased = round((n - bad) * biased_share)
    kinds = ["spammer"] * ((bad + 1) // 2) + ["first"] * (bad // 2) + ["biased"] * biased + ["good"] * (n - bad - biased)
    return [{"kind": kind, "accuracy": rng.uniform(0.7, 0.9)} for kind in kinds]


def answer(who: dict[str, Any], shown: list[int], truth: int, bias: float, rng: random.Random) -> int:
    """The response id this simulated annotator picks."""
    other = shown[1] if shown[0] == truth else shown[0]
    if who["kind"] == "spammer":
        return rng.choice(shown)
    if who["kind"] == "first" or (who["kind"] == "biased" and rng.random() < bias):
        return shown[0]
    return truth if rng.random() < who["accuracy"] else other


def project_with_tasks(records: list[dict[str, Any]], overlap: int, tag: str, rng: random.Random):
    """A pairwise project whose tasks are the records (bench.pair_project); {task id: (a, b, chosen response id)}."""
    project, tasks = pair_project_create(records, name=f"crowd quality {tag}", slug=f"crowd-{tag}", rng=rng,
                                         filename="crowd.jsonl", overlap=overlap)
    truth = {}
    for task_id, (record, ids) in tasks.items():
        a, b = sorted(ids.values())
        truth[task_id] = (a, b, ids[record["chosen"]])
    return project, truth


def simulate(project, crowd: list[dict[str, Any]], truth: dict, args: argparse.Namespace, rng: random.Random, tag: str):
    """Annotators take turns (random order each round) until the queue gives none of them a task."""
    from django.contrib.auth import get_user_model

    from labeling.services.assignment import Verdict, judgment_submit, task_assign_next
    from labeling.services.projects import membership_set

    users = []
    for i, who in enumerate(crowd):
        user = get_user_model().objects.create_user(username=f"crowd-{tag}-{i}-{who['kind']}")
        membership_set(project=project, user=user, role="annotator")
        users.append(user)
    active, judgments = set(range(len(users))), 0
    while active:
        for i in rng.sample(sorted(active), len(active)):
            assignment = task_assign_next(annotator=users[i], project=project).assignment
            if assignment is None:
                active.discard(i)
                continue
            shown = list(assignment.shown_order)
            winner = answer(crowd[i], shown, truth[assignment.task_id][2], args.bias, rng)
            loser = shown[0] if winner == shown[1] else shown[1]
            judgment_submit(assignment=assignment, annotator=users[i], verdict=Verdict(ranking=[[winner], [loser]]),
                            idempotency_key=f"crowd-{tag}-{assignment.pk}")
            judgments += 1
    return users, judgments


def score(fit, truth: dict, users, crowd) -> dict[str, Any]:
    out = {}
    bad = {u.pk for u, who in zip(users, crowd) if who["kind"] in ("spammer", "first")}
    good = {u.pk for u in users} - bad
    for name, stored in fit.fits.items():
        hits = 0.0
        for a, b, chosen in truth.values():
            p = fit.posteriors.get(f"{a}-{b}", {}).get(name, 0.5)
            hits += 0.5 if p == 0.5 else float((p > 0.5) == (chosen == a))
        flagged = {int(k) for k, s in stored["annotators"].items() if s["flags"]}
        out[name] = {"accuracy": hits / len(truth), "bad_flagged_recall": len(flagged & bad) / len(bad) if bad else None,
                     "good_flagged_rate": len(flagged & good) / len(good) if good else None,
                     "seconds": round(stored["seconds"], 3)}
    return out


def fit_seconds(votes: int, seed: int) -> dict[str, Any]:
    """The pure fit alone on a synthetic crowd of `votes` votes (overlap 3, 100 annotators, 30% bad)."""
    import numpy as np

    from labeling.label_models import Vote, label_models_fit

    rng = np.random.default_rng(seed)
    items, annotators = max(1, votes // 3), 100
    item, who, a_first = rng.integers(0, items, votes), rng.integers(0, annotators, votes), rng.random(votes) < 0.5
    truth = rng.random(items) < 0.5
    right = rng.random(votes) < 0.8
    says_a = np.where(who < 15, rng.random(votes) < 0.5, np.where(who < 30, a_first, truth[item] == right))
    data = [Vote((2 * int(i), 2 * int(i) + 1), int(w), 1 if s else -1, bool(f)) for i, w, s, f in zip(item, who, says_a, a_first)]
    started = time.perf_counter()
    fits = label_models_fit(votes=data)
    return {"votes": votes, "seconds": round(time.perf_counter() - started, 3),
            "models": {name: round(fit.seconds, 3) for name, fit in fits.items()}}


def train_on_labels(project, best: str, eval_records: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The default reward model trained on each kind of label, and its accuracy on eval_records."""
    import tempfile

    import torch

    from training.dataset import reward_groups
    from training.ml.reward.artifact import load_reward_model
    from training.ml.reward.config import RewardConfig
    from training.ml.reward.evaluate import margin_outcomes, pair_margins
    from training.ml.preference_eval import bootstrap_interval
    from training.ml.reward.loop import train_reward_model
    from training.selectors.data import training_dataset_collect, training_filters

    if args.threads:
        torch.set_num_threads(args.threads)
    out = {}
    for name, params in (("every judgment", {}), ("majority (hard)", {"label_model": "majority", "label_targets": "hard"}),
                         (f"{best} (soft)", {"label_model": best})):
        started = time.perf_counter()
        dataset = training_dataset_collect(project=project, filters=training_filters(params=params, project=project))
        data = reward_groups(dataset)
        with tempfile.TemporaryDirectory() as tmp:
            metrics = train_reward_model(data.train, RewardConfig(base_model=args.reward_base, seed=args.seed), Path(tmp) / "rm",
                                         reference_texts=data.reference_texts, val_groups=data.held_out)
            model, tokenizer, config = load_reward_model(Path(tmp) / "rm")
            hits = margin_outcomes(pair_margins(model, tokenizer, eval_records, max_length=config.max_length))
        accuracy = sum(hits) / len(hits)
        out[name] = {"groups": len(data.train), "eval_accuracy": accuracy, "eval_accuracy_ci95": bootstrap_interval(hits, seed=args.seed),
                     "val_accuracy": metrics["val_accuracy"], "seconds": round(time.perf_counter() - started, 1)}
        progress({"step": "trained", "labels": name, **out[name]})
    return {"eval_pairs": len(eval_records), "models": out}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import django

    django.setup()
    from labeling.services.label_models import label_model_fit

    rng, tag, clock, seconds = random.Random(args.seed), uuid.uuid4().hex[:8], time.perf_counter(), {}
    records = load_pairs(args.data, args.pairs, rng)
    crowd = crowd_make(n=args.annotators, bad_share=args.bad_share, biased_share=args.biased_share, rng=rng)
    project, truth = project_with_tasks(records, args.overlap, tag, rng)
    seconds["import"], clock = round(time.perf_counter() - clock, 3), time.perf_counter()
    users, judgments = simulate(project, crowd, truth, args, rng, tag)
    seconds["simulate"], clock = round(time.perf_counter() - clock, 3), time.perf_counter()
    progress({"step": "simulated", "judgments": judgments, "seconds": seconds["simulate"]})
    fit = label_model_fit(project_id=project.pk)
    seconds["fit"] = round(time.perf_counter() - clock, 3)
    models = score(fit, truth, users, crowd)
    label_models = {k: v for k, v in models.items() if k != "majority"}
    result = {
        "data": args.data, "pairs": len(truth), "annotators": args.annotators, "bad_share": args.bad_share,
        "overlap": args.overlap, "seed": args.seed, "project": project.slug, "judgments": judgments,
        "crowd": {kind: sum(who["kind"] == kind for who in crowd) for kind in ("good", "biased", "spammer", "first")},
        "majority_accuracy": models["majority"]["accuracy"], "label_models": models,
        "best_label_model": max(label_models, key=lambda k: label_models[k]["accuracy"]),
        "fit_seconds": fit_seconds(args.scale_votes, args.seed) if args.scale_votes else None,
        "seconds": seconds,
    }
    if args.train_reward:
        seen = {r["prompt"] for r in records}
        held = [r for r in load_pairs(args.eval_data, 10**9, random.Random(args.seed)) if r["prompt"] not in seen]
        result["training"] = train_on_labels(project, result["best_label_model"], held[:args.eval_pairs], args)
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
