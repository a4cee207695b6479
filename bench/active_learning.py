"""Label where it matters? Held-out reward accuracy against labels when the queue is ordered at random,
by the reward model's uncertainty, or by an ensemble's disagreement (Project.queue_order), through
the product's queue, on the configured database (Postgres: set DATABASE_URL).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/pw_bench_al .venv/bin/python bench/active_learning.py \
        --data ../shared/datasets/hh-rlhf/helpful-base-test.jsonl.gz --pool 600 --rounds 5 --per-round 60 \
        --eval-pairs 300 --seeds 3 --threads 1

1. Records of --data ({id, prompt, chosen, rejected}; the recorded choice is the truth) are shuffled
   (seed 0); --pool of them become the labeling pool, --eval-pairs others whose prompts the pool does
   not hold are the held-out pairs, never labeled.
2. Per seed and strategy, the pool is imported into a new pairwise project (overlap 1, the two answers
   in a random order) whose queue_order is the strategy's (random: "uncertainty" with random scores).
   Before the first round every task gets the same seeded random score in every strategy, so round 1
   labels the same tasks everywhere (there is no model yet to ask).
3. A round: a simulated annotator who always gives the recorded choice takes --per-round tasks through
   task_assign_next and answers through judgment_submit (then its prefetched lease is released, and the
   next round's annotator is a new one, so every round starts from the fresh scores). Then the round's
   reward model is fitted on every label so far, scored on the held-out pairs, and the open tasks are
   rescored with the product's math (training.ml.acquisition) and stored through the product's write
   (labeling.services.tasks.tasks_acquisition_scores_set), as acquisition_scores_update does after a
   reward run.
4. The reward model per round is NOT the product's fine-tuned one, to keep this cheap on a CPU: it is a
   logistic head on frozen embeddings (the --base backbone's pooled states, MiniLM by default, computed
   once per text), training.ml.acquisition.head_fit on winner-minus-loser differences. uncertainty is its
   1 - |2p - 1|; disagreement the variance of p over --heads heads fitted on bootstrap resamples
   (training.ml.acquisition.ensemble_fit), as the product scores the "disagreement" order.

Prints JSON: "strategies" {name: {"labels": [labels after each round], "accuracy_mean": [held-out
accuracy, mean over seeds], "accuracy_ci95": [[low, high] per point: Student t over the seeds],
"accuracy_by_seed", "labels_saved_fraction": the share of random's final label count this strategy
did without to reach random's final mean accuracy (linear between rounds; null if it never reached it;
0 when it needed as many; random's own is above 0 when its curve reached that level before its last round,
the plateau to read the others against)}}, the settings, and seconds. The scores it stores are symmetric in
the two answers, so knowing which one was chosen (the bench keeps it to simulate the annotator) leaks nothing.

--svg PATH also draws the curve (mean accuracy against labels, one line per strategy, the seeds' 95% band
when the JSON has it) as a self-contained SVG; --from-json PATH --svg PATH re-plots a saved result
without running anything (no database, no model):

    .venv/bin/python bench/active_learning.py --from-json var/bench/al_bench2.json --svg docs/active_learning.svg
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.loop_common import read_records  # noqa: E402
from bench.pair_project import pair_project_create  # noqa: E402
from bench.report import emit, progress  # noqa: E402

STRATEGIES = ("random", "uncertainty", "disagreement")


class ActiveLearningError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"active_learning: {message}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", help="{id, prompt, chosen, rejected} JSONL(.gz); repeatable (required unless --from-json)")
    parser.add_argument("--pool", type=int, default=600, help="pairs annotators may label")
    parser.add_argument("--eval-pairs", type=int, default=300, help="held-out pairs (prompts never labeled)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=60, help="labels added per round")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated, of {', '.join(STRATEGIES)}")
    parser.add_argument("--heads", type=int, default=5, help="the disagreement ensemble's heads")
    parser.add_argument("--l2", type=float, default=None, help="the heads' L2 penalty (default: training.ml.acquisition.L2)")
    parser.add_argument("--base", default="", help="backbone folder for the frozen embeddings (default: MiniLM)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--svg", default=None, help="also draw the accuracy-against-labels curve here (SVG)")
    parser.add_argument("--from-json", default=None, help="re-plot a saved result (needs --svg); runs nothing")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        if not args.svg:
            raise ActiveLearningError("--from-json only re-plots: give --svg PATH")
        return args
    if not args.data:
        raise ActiveLearningError("--data is required (unless --from-json)")
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not set(args.strategies) <= set(STRATEGIES) or "random" not in args.strategies:
        raise ActiveLearningError(f"--strategies must name random and any of {', '.join(STRATEGIES[1:])}")
    if min(args.pool, args.eval_pairs, args.rounds, args.per_round, args.seeds, args.heads) < 1:
        raise ActiveLearningError("--pool, --eval-pairs, --rounds, --per-round, --seeds and --heads must be positive")
    if args.rounds * args.per_round > args.pool:
        raise ActiveLearningError("--rounds x --per-round labels more pairs than --pool holds")
    return args


def split_records(paths: list[str], pool: int, eval_pairs: int) -> tuple[list[dict], list[dict]]:
    """(pool, held-out): shuffled once (seed 0); held-out pairs never share a prompt with the pool."""
    records = [r for path in paths for r in read_records(path, ("prompt", "chosen", "rejected"))
               if r["chosen"].strip() != r["rejected"].strip() and r["chosen"].strip() and r["rejected"].strip()]
    random.Random(0).shuffle(records)
    chosen = records[:pool]
    seen = {r["prompt"] for r in chosen}
    held = [r for r in records[pool:] if r["prompt"] not in seen][:eval_pairs]
    if len(chosen) < pool or not held:
        raise ActiveLearningError(f"--data has {len(records)} usable pairs: too few for --pool {pool} and held-out pairs")
    return chosen, held


def embed_texts(records: list[dict], args: argparse.Namespace):
    """{(prompt, response): pooled embedding} for every answer, one forward pass each."""
    import torch

    from training.ml.acquisition import embed_and_score
    from training.ml.reward.config import default_reward_base
    from training.ml.reward.model import RewardModel
    from transformers import AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    base = args.base or str(default_reward_base())
    model, tokenizer = RewardModel.from_backbone_path(base), AutoTokenizer.from_pretrained(base)
    keys = sorted({(r["prompt"], r[side]) for r in records for side in ("chosen", "rejected")})
    _, pooled = embed_and_score(model, tokenizer, [p for p, _ in keys], [t for _, t in keys], max_length=args.max_length)
    return dict(zip(keys, pooled))


def project_with_pool(records: list[dict], tag: str, rng: random.Random):
    """A pairwise project (overlap 1, bench.pair_project) whose tasks are the records; {task id: (prompt,
    chosen, rejected, chosen response id)}."""
    from labeling.models import Project

    project, tasks = pair_project_create(records, name=f"active learning {tag}", slug=f"al-{tag}", rng=rng,
                                         filename="pool.jsonl", overlap=1, gold_rate=0,
                                         queue_order=Project.QueueOrder.UNCERTAINTY)
    return project, {task_id: (r["prompt"], r["chosen"], r["rejected"], ids[r["chosen"]]) for task_id, (r, ids) in tasks.items()}


def label_round(project, truth: dict, n: int, tag: str) -> list[int]:
    """A new annotator who always gives the recorded choice labels n tasks off the queue; the task ids."""
    from django.contrib.auth import get_user_model

    from labeling.services.assignment import Verdict, assignments_release, judgment_submit, task_assign_next
    from labeling.services.projects import membership_set

    user = get_user_model().objects.create_user(username=f"al-{tag}")
    membership_set(project=project, user=user, role="annotator")
    done = []
    while len(done) < n:
        assignment = task_assign_next(annotator=user, project=project).assignment
        if assignment is None:
            break
        winner = truth[assignment.task_id][3]
        loser = next(r for r in assignment.shown_order if r != winner)
        judgment_submit(assignment=assignment, annotator=user, verdict=Verdict(ranking=[[winner], [loser]]),
                        idempotency_key=f"al-{tag}-{assignment.pk}")
        done.append(assignment.task_id)
    assignments_release(project=project, annotator=user)  # its prefetched lease: the next round rescored it
    return done


def _diffs(emb: dict, rows: list[tuple[str, str, str]]):
    import numpy as np

    return np.stack([emb[(p, c)] - emb[(p, r)] for p, c, r in rows])


def run_strategy(strategy: str, seed: int, pool: list[dict], held: list[dict], emb: dict, args: argparse.Namespace,
                 tag: str) -> list[tuple[int, float]]:
    """[(labels, held-out accuracy)] after each round."""
    import numpy as np

    from labeling.models import ComparisonTask
    from labeling.services.tasks import tasks_acquisition_scores_set
    from training.ml import acquisition

    l2 = acquisition.L2 if args.l2 is None else args.l2
    project, truth = project_with_pool(pool, f"{tag}-{strategy}-{seed}", random.Random(seed))
    # Round 1 is the same random sample in every strategy: the same seeded score per record.
    first = random.Random(1000 + seed)
    by_record = {i: first.random() for i in range(len(pool))}
    record_of = {t.pk: int(t.prompt.external_id) for t in ComparisonTask.objects.filter(project=project).select_related("prompt")}
    tasks_acquisition_scores_set(project=project, scores={t: by_record[record_of[t]] for t in truth})
    later = np.random.default_rng(2000 + seed)  # random's later rounds: fresh random scores
    held_diffs = _diffs(emb, [(r["prompt"], r["chosen"], r["rejected"]) for r in held])
    labeled: list[tuple[str, str, str]] = []
    curve = []
    for round_no in range(1, args.rounds + 1):
        for task_id in label_round(project, truth, args.per_round, f"{tag}-{strategy}-{seed}-{round_no}"):
            labeled.append(truth[task_id][:3])
        diffs = _diffs(emb, labeled)
        head = acquisition.head_fit(diffs, l2=l2)
        p = acquisition.pair_probabilities(head, held_diffs, np.zeros_like(held_diffs))
        accuracy = float(np.mean(np.where(p == 0.5, 0.5, p > 0.5)))
        curve.append((len(labeled), accuracy))
        progress({"strategy": strategy, "seed": seed, "round": round_no, "labels": len(labeled), "accuracy": accuracy})
        open_ids = list(ComparisonTask.objects.filter(project=project, status="open").values_list("pk", flat=True))
        if round_no == args.rounds or not open_ids:
            break
        pairs = [(emb[(truth[t][0], truth[t][1])], emb[(truth[t][0], truth[t][2])]) for t in open_ids]
        if strategy == "random":
            scores = later.random(len(open_ids))
        elif strategy == "uncertainty":
            q = acquisition.pair_probabilities(head, np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs]))
            scores = 1.0 - np.abs(2.0 * q - 1.0)
        else:
            heads = acquisition.ensemble_fit(diffs, heads=args.heads, seed=seed * 100 + round_no, l2=l2)
            scores = acquisition.disagreement_scores(heads, [np.stack(pair) for pair in pairs])
        tasks_acquisition_scores_set(project=project, scores=dict(zip(open_ids, map(float, scores))))
    return curve


def ci95(values: list[float]) -> list[float]:
    """Student t interval of the mean over seeds (one seed: the point itself)."""
    import numpy as np
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return [mean, mean]
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return [mean - half, mean + half]


def labels_saved(labels: list[int], accuracy: list[float], target: float, random_final_labels: int) -> float | None:
    """1 - (labels this curve needed to reach target) / random's final label count; linear between
    rounds; None if it never reaches the target."""
    for i, acc in enumerate(accuracy):
        if acc >= target:
            if i == 0 or accuracy[i] == accuracy[i - 1]:
                needed = labels[i]
            else:
                needed = labels[i - 1] + (target - accuracy[i - 1]) / (accuracy[i] - accuracy[i - 1]) * (labels[i] - labels[i - 1])
            return max(0.0, min(1.0, 1.0 - needed / random_final_labels))
    return None


def summarise(curves: dict[str, list[list[tuple[int, float]]]]) -> dict[str, Any]:
    import numpy as np

    out = {}
    for name, runs in curves.items():
        rounds = min(len(c) for c in runs)
        labels = [runs[0][i][0] for i in range(rounds)]
        by_seed = [[c[i][1] for i in range(rounds)] for c in runs]
        out[name] = {"labels": labels, "accuracy_mean": [float(np.mean([s[i] for s in by_seed])) for i in range(rounds)],
                     "accuracy_ci95": [ci95([s[i] for s in by_seed]) for i in range(rounds)],
                     "accuracy_by_seed": by_seed}
    base = out["random"]
    target, final_labels = base["accuracy_mean"][-1], base["labels"][-1]
    for stats in out.values():
        stats["labels_saved_fraction"] = labels_saved(stats["labels"], stats["accuracy_mean"], target, final_labels)
    return out


SERIES_COLORS = ("#555555", "#d95f02", "#1b9e77", "#7570b3", "#e7298a")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def curves_from_result(result: Any, source: str = "the result") -> dict[str, dict[str, list]]:
    """{strategy: {"labels", "accuracy_mean", "accuracy_ci95" (or None)}} from a result's "strategies",
    checked; a clear ActiveLearningError when it is not a result of this bench."""
    strategies = result.get("strategies") if isinstance(result, dict) else None
    if not isinstance(strategies, dict) or not strategies:
        raise ActiveLearningError(f"{source} has no \"strategies\" object: not a result of this bench")
    out = {}
    for name, stats in strategies.items():
        if not isinstance(stats, dict):
            raise ActiveLearningError(f"{source}: strategy {name!r} is not an object")
        labels, mean, ci = stats.get("labels"), stats.get("accuracy_mean"), stats.get("accuracy_ci95")
        if not (isinstance(labels, list) and isinstance(mean, list) and labels and len(labels) == len(mean)
                and all(map(_number, labels + mean))):
            raise ActiveLearningError(f"{source}: strategy {name!r} needs \"labels\" and \"accuracy_mean\", "
                                      "equally long lists of numbers")
        if ci is not None and not (isinstance(ci, list) and len(ci) == len(mean) and all(
                isinstance(pair, list) and len(pair) == 2 and all(map(_number, pair)) for pair in ci)):
            raise ActiveLearningError(f"{source}: strategy {name!r} has an \"accuracy_ci95\" that is not "
                                      "one [low, high] per point")
        out[str(name)] = {"labels": labels, "accuracy_mean": mean, "accuracy_ci95": ci}
    return out


def curve_svg(curves: dict[str, dict[str, list]], title: str, width: int = 640, height: int = 380) -> str:
    """Mean accuracy against labels, one <path> per strategy, its 95% band (when given) a <polygon>
    behind it; axes with ticks and labels, a legend. Standalone: styles inline, text escaped.
    (training.charts.curve_svg draws one unbanded series styled by the page's CSS, hence this one.)"""
    left, right, top, bottom = 58, 150, 34, 48
    xs = [x for c in curves.values() for x in c["labels"]]
    ys = [y for c in curves.values() for y in c["accuracy_mean"] + [v for pair in c["accuracy_ci95"] or [] for v in pair]]
    x0, x1 = min(0, min(xs)), max(xs)
    y0, y1 = min(ys), max(ys)
    step = 0.01 if y1 - y0 <= 0.15 else 0.05 if y1 - y0 <= 0.5 else 0.1
    y0, y1 = math.floor(y0 / step) * step, math.ceil(y1 / step) * step
    if y1 - y0 < step:
        y1 = y0 + step
    y0, y1 = max(y0, 0.0) if y0 >= -1e-9 else y0, min(y1, 1.0) if y1 <= 1 + 1e-9 else y1
    pw, ph = width - left - right, height - top - bottom
    sx = lambda x: left + (x - x0) / max(x1 - x0, 1e-12) * pw  # noqa: E731
    sy = lambda y: top + ph - (y - y0) / max(y1 - y0, 1e-12) * ph  # noqa: E731
    font = 'font-family="sans-serif" font-size="12"'
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label={quoteattr(title)}><title>{escape(title)}</title>',
             f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
             f'<text x="{left}" y="{top - 12}" font-family="sans-serif" font-size="14">{escape(title)}</text>']
    ticks = round((y1 - y0) / step)
    stride = max(1, math.ceil(ticks / 8))
    for i in range(0, ticks + 1, stride):
        y = y0 + i * step
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" {font} text-anchor="end">{100 * y:.0f}%</text>')
    for x in sorted(set(xs) | {x0}):
        parts.append(f'<text x="{sx(x):.1f}" y="{top + ph + 16}" {font} text-anchor="middle">{x:g}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999999"/>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 10}" {font} text-anchor="middle">labels</text>')
    parts.append(f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" {font} text-anchor="middle">'
                 'held-out accuracy (mean over seeds)</text>')
    for i, (name, c) in enumerate(curves.items()):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        points = list(zip(c["labels"], c["accuracy_mean"]))
        if c["accuracy_ci95"]:
            ring = [(x, hi) for x, (_, hi) in zip(c["labels"], c["accuracy_ci95"])]
            ring += [(x, lo) for x, (lo, _) in reversed(list(zip(c["labels"], c["accuracy_ci95"])))]
            parts.append(f'<polygon class="band" data-strategy={quoteattr(name)} fill="{color}" fill-opacity="0.12" '
                         f'stroke="none" points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ring)}"/>')
        d = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(points))
        parts.append(f'<path class="line" data-strategy={quoteattr(name)} d="{d}" fill="none" stroke="{color}" '
                     f'stroke-width="2"/>')
        parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>' for x, y in points)
        ly = top + 10 + 20 * i
        parts.append(f'<line x1="{left + pw + 14}" x2="{left + pw + 36}" y1="{ly}" y2="{ly}" stroke="{color}" '
                     f'stroke-width="2"/><text x="{left + pw + 42}" y="{ly + 4}" {font}>{escape(name)}</text>')
    if any(c["accuracy_ci95"] for c in curves.values()):
        ly = top + 10 + 20 * len(curves)
        parts.append(f'<rect x="{left + pw + 14}" y="{ly - 6}" width="22" height="12" fill="#555555" '
                     f'fill-opacity="0.12"/><text x="{left + pw + 42}" y="{ly + 4}" {font}>95% interval</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def svg_write(result: dict[str, Any], path: str, source: str = "the result") -> None:
    curves = curves_from_result(result, source)
    seeds = result.get("seeds")
    title = "Held-out reward accuracy against labels" + (f" ({seeds} seeds)" if _number(seeds) else "")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(curve_svg(curves, title), encoding="utf-8")


def replot(args: argparse.Namespace) -> dict[str, Any]:
    """--from-json: read a saved result, draw it; nothing runs, the database is not opened."""
    try:
        result = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ActiveLearningError(f"--from-json {args.from_json}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ActiveLearningError(f"--from-json {args.from_json}: not JSON ({exc})") from None
    svg_write(result, args.svg, f"--from-json {args.from_json}")
    progress({"step": "plotted", "from": args.from_json, "svg": args.svg})
    emit(result, args.json)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.from_json is not None:
        return replot(args)
    import django

    django.setup()
    started, tag = time.perf_counter(), uuid.uuid4().hex[:8]
    pool, held = split_records(args.data, args.pool, args.eval_pairs)
    emb = embed_texts(pool + held, args)
    embed_seconds = round(time.perf_counter() - started, 1)
    progress({"step": "embedded", "texts": len(emb), "seconds": embed_seconds})
    curves = {name: [run_strategy(name, seed, pool, held, emb, args, tag) for seed in range(args.seeds)]
              for name in args.strategies}
    strategies = summarise(curves)
    result = {
        "data": args.data, "pool": len(pool), "eval_pairs": len(held), "rounds": args.rounds, "per_round": args.per_round,
        "seeds": args.seeds, "heads": args.heads, "base": args.base or "MiniLM (default_reward_base)",
        "model": "logistic head on frozen pooled embeddings", "strategies": strategies,
        "seconds": {"embed": embed_seconds, "total": round(time.perf_counter() - started, 1)},
    }
    emit(result, args.json)
    if args.svg:
        svg_write(result, args.svg)
    return result


if __name__ == "__main__":
    main()
