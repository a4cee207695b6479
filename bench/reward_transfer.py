"""Does the reward model transfer? Train on one preference source, evaluate on every other, through
the product's own path, on the configured database (Postgres: set DATABASE_URL).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/pairwise .venv/bin/python bench/reward_transfer.py \
        --train-pairs 1000 --eval-pairs 500

Sources are NAME=FILE[,FILE...] (--source, repeatable; the files of one source are pooled); without
--source, the shared ../shared/datasets next to the repository: hh-base, hh-rs (hh-rlhf
helpful-base / helpful-rejection-sampled), pandalm, llmbar (its eight subsets pooled) and hhh.

Per source (a row): its prompts are split by the product's split rule (labeling.splits, keyed by
the prompt text, --held-out of them); up to --train-pairs pairs of the training side are imported
into a throwaway project (labeling.services.imports), a reward run trains on them
(training.services.runs.run_create + training.services.reward.reward_model_train, in process), and
the version is scored with training.services.reward.reward_model_evaluate (what the
evaluate_reward_model command runs, each cell recorded on the version under the source's name, as
--record does, so the training page shows the row) on the source's own held-out side (the diagonal) and on every
other source (up to --eval-pairs pairs each, the same sample for every row).

With --leave-one-out, a row per source trains on the MIX of every other source's training side
(each up to --train-pairs) and is scored on that source, which it never saw (its whole sample, the
diagonal), and on the others' held-out sides: does mixing sources into training make a model that
holds up on a kind of data it has not met? It mixes them as a user would: each source imported
into a project of its own and frozen, and the row's run naming those snapshots (mix_snapshots).

Two baselines per cell, on the same pairs, so a model that learned a shortcut is visible:
- length: the longer answer wins (ties half).
- relevance: the answer closer to the prompt wins, by the cosine of the default backbone's sentence
  embeddings of each, encoded apart (MiniLM was trained as exactly such an embedder). No training
  at all, so it is the same in every row. It tells whether fine-tuning added anything that transfers.
And one ensemble: the reward model's margin plus --relevance-weight times the relevance margin
("with_relevance"): what the RM would score with that prior added after training.

Prints JSON: "matrix" {train: {eval: {pairs, accuracy, ci95 (percentile bootstrap over pairs),
length_baseline, relevance_baseline, with_relevance, by_length, length_margin_corr, accuracy_shorter_chosen,
accuracy_longer_chosen and their pairs}}}, "rows" (version, its own
validation accuracy and seconds), "mean_off_diagonal" (mean of the off-diagonal cells'
accuracies), the same mean for each baseline and the ensemble, how many off-diagonal cells beat
the length baseline ("off_diagonal_above_length_baseline", and "..._with_relevance_above_...") and
the means of the cells' length_margin_corr, accuracy_shorter_chosen and accuracy_longer_chosen, and
seconds. With --leave-one-out the same figures are over the unseen cells ("mean_unseen", ...).
A matrix also reports, per source, the ensemble of the rows that never saw it ("ensemble": its
accuracy, and how often its members disagree), to set against a leave-one-out row: mixing models
against mixing data. Pairs with an empty (whitespace-only) response are dropped, as the import would refuse them.
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

from bench.loop_common import import_pairs, read_records, train  # noqa: E402
from bench.report import emit, progress  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
LLMBAR = ("natural", "adversarial-neighbor", "adversarial-gptinst", "adversarial-gptout", "adversarial-manual",
          "processed-mt-bench", "processed-llmeval2", "processed-faireval")
DEFAULT_SOURCES = {
    "hh-base": ["hh-rlhf/helpful-base-test.jsonl.gz"],
    "hh-rs": ["hh-rlhf/helpful-rejection-sampled-test.jsonl.gz"],
    "pandalm": ["pandalm/testset-v1.jsonl.gz"],
    "llmbar": [f"llmbar/{name}.jsonl.gz" for name in LLMBAR],
    "hhh": ["hhh-alignment/hhh-alignment.jsonl.gz"],
}
FIELDS = ("prompt", "chosen", "rejected")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", default=[], metavar="NAME=FILE[,FILE...]",
                        help="a named source (repeatable); default: the shared data sets")
    parser.add_argument("--train-pairs", type=int, default=1000, help="pairs imported per row (0: all of its training side)")
    parser.add_argument("--eval-pairs", type=int, default=500, help="pairs scored per cell (0: all)")
    parser.add_argument("--held-out", type=float, default=0.2, help="fraction of each source's prompts kept for its diagonal")
    parser.add_argument("--base", default="", help="reward backbone folder (default: the product's)")
    parser.add_argument("--config", default="{}", help="RewardConfig overrides as JSON")
    parser.add_argument("--relevance-model", default="", help="sentence-embedding folder for the relevance baseline (default: the bundled MiniLM)")
    parser.add_argument("--relevance-weight", type=float, default=5.0,
                        help="weight of the relevance margin (a cosine difference, in [-2, 2]) added to the RM's margin in 'with_relevance'")
    parser.add_argument("--leave-one-out", action="store_true",
                        help="a row per source trained on the mix of every OTHER source and scored on it, never seen "
                             "(and on the others' held-out sides), instead of the one-source matrix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args(argv)
    try:
        args.config = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"reward_transfer: --config is not JSON: {exc}") from None
    if not isinstance(args.config, dict):
        raise SystemExit("reward_transfer: --config must be a JSON object")
    return args


def parse_sources(specs: Sequence[str]) -> dict[str, list[str]]:
    if not specs:
        return {name: [str(SHARED / f) for f in files] for name, files in DEFAULT_SOURCES.items()}
    sources: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, files = spec.partition("=")
        if not sep or not name or not files:
            raise SystemExit(f"reward_transfer: --source {spec!r} is not NAME=FILE[,FILE...]")
        if name in sources:
            raise SystemExit(f"reward_transfer: source {name!r} given twice")
        sources[name] = files.split(",")
    if len(sources) < 2:
        raise SystemExit("reward_transfer: give at least two sources (a row evaluates on every other)")
    return sources


def load_sources(sources: dict[str, list[str]], held_out: float, seed: int) -> dict[str, dict[str, Any]]:
    """Per source: its training side (shuffled) and its held-out side, split by prompt text."""
    from labeling.splits import TEST, prompt_split

    loaded = {}
    for name, files in sources.items():
        records = [r for path in files for r in read_records(path, FIELDS)]
        kept = [r for r in records if r["chosen"].strip() and r["rejected"].strip()]
        if not kept:
            raise SystemExit(f"reward_transfer: source {name} has no usable pairs")
        random.Random(f"{seed}:{name}").shuffle(kept)
        sides: dict[bool, list[dict]] = {True: [], False: []}
        for r in kept:
            sides[prompt_split(r["prompt"], fraction=held_out, seed=str(seed)) == TEST].append(r)
        loaded[name] = {"files": files, "pairs": len(kept), "dropped_blank": len(records) - len(kept),
                        "all": kept, "held_out": sides[True], "train": sides[False]}
    return loaded


class Relevance:
    """Zero-shot relevance of an untrained sentence embedder (the default backbone, MiniLM, trained to
    be one): margin = relevance(prompt, chosen) - relevance(prompt, rejected), where relevance is the
    cosine of the two texts' embeddings, each encoded ALONE and mean-pooled. The pair is cut as the
    reward model cuts it (PairEncoder: the prompt from the left), then split into its two segments."""

    def __init__(self, path: str, max_length: int = 256, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        from training.ml.reward.data import PairEncoder, pad_id_of

        tokenizer = AutoTokenizer.from_pretrained(path)
        self.backbone = AutoModel.from_pretrained(path).eval()
        self.encoder = PairEncoder(tokenizer, max_length, add_eos=False)
        self.pad_id, self.prefix_id, self.batch_size = pad_id_of(tokenizer), sentence_prefix_id(tokenizer), batch_size

    def scores(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        import torch

        from training.ml.reward.data import collate

        seqs, out = self.encoder.encode(prompts, responses), []
        for i in range(0, len(seqs), self.batch_size):
            batch = collate(seqs[i:i + self.batch_size], self.pad_id, torch.device("cpu"))
            with torch.no_grad():
                out += segment_cosine(self.backbone, batch, self.prefix_id).tolist()
        return out

    def margins(self, records: Sequence[dict[str, str]]) -> list[float]:
        prompts = [r["prompt"] for r in records]
        chosen, rejected = self.scores(prompts, [r["chosen"] for r in records]), self.scores(prompts, [r["rejected"] for r in records])
        return [c - r for c, r in zip(chosen, rejected)]


def sentence_prefix_id(tokenizer: Any) -> int | None:
    """The token the tokenizer puts before every sentence (BERT's [CLS]), or None."""
    empty, one = tokenizer("")["input_ids"], tokenizer("x")["input_ids"]
    return empty[0] if empty and one and one[0] == empty[0] else None


def segment_cosine(backbone: Any, batch: dict[str, Any], prefix_id: int | None) -> Any:
    """Shape: a collated pair batch [B, T] -> [B]: the cosine of its two segments' embeddings, each
    segment encoded alone (encoded together, every token has attended to both), the response with
    prefix_id in front as a sentence of its own would have; the prompt's segment already starts with it."""
    import torch

    from training.ml.modeling_pairwise_reward import pool

    live, types = batch["attention_mask"].bool(), batch["token_type_ids"]
    prompt = _segment(batch["input_ids"], live & (types == 0), None)
    answer = _segment(batch["input_ids"], live & (types == 1), prefix_id)
    embed = lambda ids, mask: torch.nn.functional.normalize(  # noqa: E731
        pool(backbone(input_ids=ids, attention_mask=mask).last_hidden_state.float(), mask, "mean"), dim=-1)
    return (embed(*prompt) * embed(*answer)).sum(-1)


def _segment(input_ids: Any, keep: Any, prefix_id: int | None) -> tuple[Any, Any]:
    """Shape: input_ids, keep [B, T] -> ids, mask [B, W]: each row's kept tokens in order, right-padded."""
    import torch

    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    order = torch.argsort(torch.where(keep, positions, positions + input_ids.shape[1]), dim=1)
    count = keep.sum(1)
    width = max(int(count.max()), 1)
    mask = (torch.arange(width) < count[:, None]).long()
    ids = input_ids.gather(1, order)[:, :width] * mask
    if prefix_id is not None:
        ids = torch.cat([torch.full_like(ids[:, :1], prefix_id), ids], 1)
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
    return ids, mask


# reward_model_evaluate's length dependence (training.ml.reward.evaluate.length_dependence), kept per cell.
LENGTH_DEPENDENCE = ("length_margin_corr", "accuracy_shorter_chosen", "pairs_shorter_chosen",
                     "accuracy_longer_chosen", "pairs_longer_chosen")


def cell(margins: Sequence[float], report: dict[str, Any], seed: int,
         relevance: Sequence[float] = (), relevance_weight: float = 0.0) -> dict[str, Any]:
    """One matrix cell from reward_model_evaluate's report and margins: accuracy with a 95% bootstrap
    interval; with the same pairs' relevance margins, the relevance baseline and the ensemble."""
    from training.ml.evaluate import win_rate_interval
    from training.ml.reward.evaluate import margin_outcomes

    if not margins:
        return {"pairs": 0, "accuracy": None, "ci95": None, "length_baseline": None, "relevance_baseline": None,
                "with_relevance": None, "by_length": [],
                **{k: 0 if k.startswith("pairs_") else None for k in LENGTH_DEPENDENCE}}
    if relevance and len(relevance) != len(margins):
        raise ValueError(f"{len(relevance)} relevance margins for {len(margins)} pairs")
    accuracy = lambda ms: sum(margin_outcomes(ms)) / len(ms) if ms else None  # noqa: E731
    low, high = win_rate_interval(margin_outcomes(margins), seed=seed)
    return {"pairs": report["pairs"], "accuracy": report["accuracy"], "ci95": [low, high],
            "length_baseline": report["length_baseline"], "relevance_baseline": accuracy(list(relevance)),
            "with_relevance": accuracy([m + relevance_weight * r for m, r in zip(margins, relevance)]),
            "by_length": report["by_length"], **{k: report.get(k) for k in LENGTH_DEPENDENCE}}


def summary(matrix: dict[str, dict[str, dict[str, Any]]], unseen: bool = False) -> dict[str, Any]:
    """Means over the cells a model never trained on with pairs (accuracy, each baseline, the
    ensemble), and how many of them beat the length baseline. A matrix row never saw the other
    sources (its off-diagonal cells); a leave-one-out row (unseen=True) never saw the source it is
    named after (its diagonal)."""
    off = [c for t, row in matrix.items() for e, c in row.items() if (t == e) == unseen and c["pairs"]]
    prefix = "unseen" if unseen else "off_diagonal"

    def mean(key: str) -> float | None:
        return sum(c[key] for c in off) / len(off) if off and off[0].get(key) is not None else None

    def mean_known(key: str) -> float | None:  # cells without such pairs (None) left out
        known = [c[key] for c in off if c.get(key) is not None]
        return sum(known) / len(known) if known else None

    def above(key: str) -> str | None:
        return f"{sum(c[key] > c['length_baseline'] for c in off)}/{len(off)}" if mean(key) is not None else None

    return {
        f"mean_{prefix}": mean("accuracy"),
        f"mean_{prefix}_length_baseline": mean("length_baseline"),
        f"mean_{prefix}_relevance_baseline": mean("relevance_baseline"),
        f"mean_{prefix}_with_relevance": mean("with_relevance"),
        f"{prefix}_above_length_baseline": above("accuracy"),
        f"{prefix}_with_relevance_above_length_baseline": above("with_relevance"),
        f"mean_{prefix}_length_margin_corr": mean_known("length_margin_corr"),
        f"mean_{prefix}_accuracy_shorter_chosen": mean_known("accuracy_shorter_chosen"),
        f"mean_{prefix}_accuracy_longer_chosen": mean_known("accuracy_longer_chosen"),
    }


def ensemble_cell(members: Sequence[Sequence[float]], length_baseline: float | None, seed: int) -> dict[str, Any]:
    """Several reward models scored together on the same pairs: each member's margins divided by
    their standard deviation over the pairs (heads trained apart have different scales), then
    averaged. "disagreement" is the share of pairs the members do not all call the same way (a
    zero margin calls neither), with the accuracy on the pairs they agree on and on the rest: if
    disagreement marks the pairs a model gets wrong, it is worth recording.

    Shape: members [M][N] margins -> one cell."""
    import numpy as np

    from training.ml.evaluate import win_rate_interval
    from training.ml.reward.evaluate import margin_outcomes

    m = np.asarray(members, dtype=float)
    if m.ndim != 2 or not m.shape[1]:
        return {"members": len(members), "pairs": 0, "accuracy": None, "ci95": None, "length_baseline": None,
                "disagreement": None, "accuracy_agreed": None, "accuracy_disputed": None}
    scale = m.std(axis=1, keepdims=True)
    outcomes = np.asarray(margin_outcomes((m / np.where(scale > 0, scale, 1.0)).mean(axis=0).tolist()))
    agreed = (m > 0).all(axis=0) | (m < 0).all(axis=0)
    rate = lambda keep: float(outcomes[keep].mean()) if keep.any() else None  # noqa: E731
    low, high = win_rate_interval(outcomes.tolist(), seed=seed)
    return {"members": m.shape[0], "pairs": m.shape[1], "accuracy": float(outcomes.mean()), "ci95": [low, high],
            "length_baseline": length_baseline, "disagreement": float(1 - agreed.mean()),
            "accuracy_agreed": rate(agreed), "accuracy_disputed": rate(~agreed)}


def ensembles(matrix: dict[str, dict[str, dict[str, Any]]], margins: dict[tuple[str, str], list[float]],
              seed: int) -> dict[str, Any]:
    """Per source, the ensemble of every row that did NOT train on it (a matrix's column without
    its diagonal), on the sample they all scored; and the means over sources."""
    cells = {}
    for source in matrix:
        members = [margins[(row, source)] for row in matrix if row != source]
        cells[source] = ensemble_cell(members, matrix[next(r for r in matrix if r != source)][source]["length_baseline"], seed)
    scored = [c for c in cells.values() if c["pairs"]]
    mean = lambda key: sum(c[key] for c in scored) / len(scored) if scored else None  # noqa: E731
    return {"mean_ensemble": mean("accuracy"), "mean_ensemble_disagreement": mean("disagreement"),
            "ensemble_above_length_baseline": f"{sum(c['accuracy'] > c['length_baseline'] for c in scored)}/{len(scored)}",
            "ensemble": cells}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the matrix, prints its JSON (and writes it to --json) and returns it."""
    args = parse_args(argv)
    result = transfer(args)
    emit(result, args.json)
    return result


def row_sources(names: Sequence[str], leave_one_out: bool) -> dict[str, list[str]]:
    """The sources each row trains on, by row name: a matrix row its own; a leave-one-out row every
    OTHER source (mixed into its run as those sources' frozen snapshots: the product's mix_snapshots)."""
    return {name: [o for o in names if (o != name) == leave_one_out] for name in names}


def _frozen_source(name: str, records: list[dict]) -> Any:
    """One source's training pairs imported into a project of their own and frozen (a training snapshot)."""
    from labeling.services.projects import project_create
    from training.services.snapshots import training_snapshot_create

    tag = uuid.uuid4().hex[:8]
    project = project_create(name=f"reward transfer source {name} {tag}", slug=f"transfer-src-{tag}", mode="pairwise")
    import_pairs(project, records)
    return training_snapshot_create(project=project)


def transfer(args: argparse.Namespace) -> dict[str, Any]:
    data = load_sources(parse_sources(args.source), args.held_out, args.seed)
    import django

    django.setup()
    import torch

    from labeling.services.projects import project_create
    from training.ml.reward.config import default_reward_base
    from training.services.reward import reward_model_evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cap = lambda records: records[: args.eval_pairs] if args.eval_pairs else records  # noqa: E731
    samples = {(name, side): cap(d["held_out"] if side else d["all"]) for name, d in data.items() for side in (True, False)}
    relevance, related = Relevance(args.relevance_model or str(default_reward_base())), {}
    matrix: dict[str, dict[str, Any]] = {}
    margins: dict[tuple[str, str], list[float]] = {}
    rows: dict[str, Any] = {}
    params = {**({"threads": args.threads} if args.threads else {}), **({"base": args.base} if args.base else {}),
              "config": {**args.config, "seed": args.seed}}
    train_side = lambda d: d["train"][: args.train_pairs] if args.train_pairs else d["train"]  # noqa: E731
    # A leave-one-out row mixes the other sources in as the product would: each imported once into a
    # project of its own and frozen, then named in the row's run params (mix_snapshots).
    frozen = {name: _frozen_source(name, train_side(d)) for name, d in data.items()} if args.leave_one_out else {}
    for name, sources in row_sources(list(data), args.leave_one_out).items():
        clock = time.perf_counter()
        tag = uuid.uuid4().hex[:8]
        project = project_create(name=f"reward transfer {name} {tag}", slug=f"transfer-{tag}", mode="pairwise")
        if args.leave_one_out:
            version = train(project, "reward", {**params, "mix_snapshots": [frozen[o].pk for o in sources]})
        else:
            import_pairs(project, train_side(data[name]))
            version = train(project, "reward", params)
        records = [r for o in sources for r in train_side(data[o])]
        trained = time.perf_counter() - clock
        matrix[name] = {}
        for other in data:
            # A source the row trained on is scored on its held-out side; any other on its sample.
            key = (other, (other == name) != args.leave_one_out)
            report = reward_model_evaluate(version=version, records=samples[key], with_margins=True, record_as=other,
                                           source=",".join(Path(f).name for f in data[other]["files"]))
            if key not in related:
                related[key] = relevance.margins(samples[key])
            matrix[name][other] = cell(report["margins"], report, args.seed, related[key], args.relevance_weight)
            margins[(name, other)] = report["margins"]
        rows[name] = {"version": version.pk, "train_pairs": len(records), "trained_on": sources, "val_accuracy": version.metrics.get("val_accuracy"),
                      "val_length_baseline": version.metrics.get("val_length_baseline"),
                      "train_seconds": trained, "eval_seconds": time.perf_counter() - clock - trained}
        progress({"row": name, **rows[name], "accuracy": {e: c["accuracy"] for e, c in matrix[name].items()}})
    return {
        "sources": {n: {k: d[k] for k in ("files", "pairs", "dropped_blank")} | {"train_side": len(d["train"]),
                    "held_out_side": len(d["held_out"])} for n, d in data.items()},
        "train_pairs": args.train_pairs, "eval_pairs": args.eval_pairs, "base": args.base or "default",
        "mode": "leave-one-out" if args.leave_one_out else "matrix", "config": args.config,
        "relevance_weight": args.relevance_weight, "seed": args.seed, **summary(matrix, unseen=args.leave_one_out),
        **({} if args.leave_one_out else ensembles(matrix, margins, args.seed)),
        "rows": rows, "matrix": matrix,
        "seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":
    main()
