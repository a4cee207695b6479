"""Throughput and accuracy: our grouped reward trainer vs TRL 1.16's RewardTrainer, one run.

    .venv/bin/python bench/reward_bench.py --data /work/shared/datasets/hh-rlhf/helpful-base-test.jsonl.gz \
        --k 2 --limit 1000 [--max-length 256] [--batch 16] [--json out.json]

What is equal on both sides: backbone (bundled all-MiniLM-L6-v2 unless --base), the records and
their train/val split (by prompt hash), the token ids of every (prompt, response) (our pair
template, prompt cut from the left; TRL gets them pre-tokenized so it drops nothing),
max length, precision (bf16 where the CPU/GPU has it, for both), learning rate, cosine schedule
with the same warmup, weight decay, one epoch, dropout off, and comparisons per optimizer step:
ours takes --batch judgments per step, TRL takes --batch pairs per micro-batch with
gradient_accumulation_steps = comparisons per judgment.

What differs, by design: ours scores each of a judgment's K responses once and takes all its
comparisons from those K rewards (grouped loss); TRL sees each comparison as an independent
shuffled pair (2 forward passes per comparison). TRL keeps its own defaults otherwise
(gradient checkpointing on, see --trl-gradient-checkpointing; [CLS]-pooler head from
AutoModelForSequenceClassification); ours uses mean pooling and batches judgments of similar length.

K=4 from pairwise hh-rlhf: hh pairs almost never share a prompt, so real 4-way rankings do not
exist here. Each training record i becomes the group
    [chosen_i, rejected_i, off_a, off_b]  ranked  [[0], [1], [2, 3]]
where off_a and off_b are responses (chosen or rejected at random) of two other training records
with different prompts. The assumption: an answer to this conversation, even the dispreferred
one, beats an answer to a different conversation; the two off-topic answers are a tie (the
paper's ties, dropped from the loss). That gives 5 comparisons per group, not C(4,2)=6: the
one human comparison plus 4 synthetic "on-topic beats off-topic" ones, which are easy. So
validation accuracy is measured ONLY on held-out human pairs (chosen vs rejected), never on
synthetic comparisons, for both trainers. Off-topic responses come from training records only.

Throughput = training comparisons / seconds of the training loop (model loading, tokenization
and evaluation excluded on both sides). The CPU here has 2 cores: expect noise of ~10%.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from bench.report import emit  # noqa: E402
from labeling.ranking import ranking_pairs  # noqa: E402
from training.ml.common import autocast, pick_device, resolve_precision  # noqa: E402
from training.ml.reward.evaluate import pair_margins  # noqa: E402
from training.ml.preference_file import read_preference_file  # noqa: E402
from training.ml.reward.artifact import load_reward_model  # noqa: E402
from training.ml.reward.config import RewardConfig, default_reward_base  # noqa: E402
from training.ml.reward.data import PairEncoder, collate, groups_from_pairs, is_validation  # noqa: E402
from training.ml.reward.loop import train_reward_model  # noqa: E402


def build_k4_groups(records: list[dict], rng: random.Random) -> list[dict]:
    """See the module docstring: chosen > rejected > two tied off-topic responses."""
    groups = []
    for i, rec in enumerate(records):
        others = []
        while len(others) < 2:
            j = rng.randrange(len(records))
            if j != i and records[j]["prompt"] != rec["prompt"] and j not in others:
                others.append(j)
        off = [records[j][rng.choice(["chosen", "rejected"])] for j in others]
        groups.append({"prompt": rec["prompt"], "responses": [rec["chosen"], rec["rejected"], *off],
                       "ranking": [[0], [1], [2, 3]]})
    return groups


def load_records(paths: list[str], limit: int | None, seed: int) -> list[dict]:
    records = [r for p in paths for r in read_preference_file(p)]
    random.Random(seed).shuffle(records)
    return records[:limit] if limit else records


def run_ours(groups: list[dict], val_records: list[dict], args, base: str, precision: str) -> dict[str, Any]:
    config = RewardConfig(
        base_model=base, max_length=args.max_length, batch_size=args.batch, lr=args.lr, epochs=1,
        lora_r=0,  # full fine-tuning on both sides: TRL's RewardTrainer here trains every weight
        warmup_fraction=args.warmup, weight_decay=0.01, seed=args.seed, precision=precision,
        val_fraction=args.val_fraction, log_every=10**9,
    )
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train_reward_model(groups, config, Path(tmp) / "rm")
        model, tokenizer, _ = load_reward_model(Path(tmp) / "rm")
        margins = pair_margins(model, tokenizer, val_records, batch_size=64, max_length=args.max_length,
                               precision=precision)
    return metrics | {"val_margins": margins}


def paired_difference(ours: list[float], trl: list[float], seed: int, resamples: int = 2000) -> dict[str, Any]:
    """Accuracy difference (ours - TRL) on the same held-out pairs, with a paired bootstrap 95%
    interval: both models are scored on every pair, so resampling pairs keeps their correlation
    and the interval is much narrower than two independent accuracies would suggest."""
    right = torch.tensor([[o > 0, t > 0] for o, t in zip(ours, trl)], dtype=torch.float64)
    diffs = right[:, 0] - right[:, 1]
    g = torch.Generator().manual_seed(seed)
    boot = diffs[torch.randint(len(diffs), (resamples, len(diffs)), generator=g)].mean(1)
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"acc_diff": round(float(diffs.mean()), 4), "acc_diff_ci95": [round(low, 4), round(high, 4)],
            "only_ours_right": int((diffs > 0).sum()), "only_trl_right": int((diffs < 0).sum())}


def trl_pairs(groups: list[dict], encoder: PairEncoder) -> dict[str, list]:
    """Every non-tied comparison as an independent (chosen_ids, rejected_ids) pair."""
    chosen, rejected = [], []
    for g in groups:
        enc = encoder.encode([g["prompt"]] * len(g["responses"]), g["responses"])
        for w, l in ranking_pairs(g["ranking"]):
            chosen.append(enc[w].input_ids)
            rejected.append(enc[l].input_ids)
    return {"chosen_ids": chosen, "rejected_ids": rejected}


def run_trl(train_groups: list[dict], val_pairs: list[dict], args, base: str, precision: str,
            per_group: int) -> dict[str, Any]:
    from datasets import Dataset
    from trl import RewardConfig as TRLConfig
    from trl import RewardTrainer

    device = pick_device("auto")
    tokenizer = AutoTokenizer.from_pretrained(base)
    encoder = PairEncoder(tokenizer, args.max_length, add_eos=False)
    data = trl_pairs(train_groups, encoder)
    steps = math.ceil(len(data["chosen_ids"]) / (args.batch * per_group))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TRLConfig(
            output_dir=tmp, use_cpu=device.type == "cpu", bf16=precision == "bf16",
            per_device_train_batch_size=args.batch, gradient_accumulation_steps=per_group,
            learning_rate=args.lr, num_train_epochs=1, lr_scheduler_type="cosine",
            warmup_steps=int(args.warmup * steps), weight_decay=0.01, max_length=args.max_length,
            gradient_checkpointing=args.trl_gradient_checkpointing == "on", disable_dropout=True,
            report_to=[], save_strategy="no", logging_steps=10**9, seed=args.seed, dataloader_num_workers=0,
        )
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        trainer = RewardTrainer(model=model, args=cfg, train_dataset=Dataset.from_dict(data),
                                processing_class=tokenizer)
        kept = len(trainer.train_dataset)
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
        val = trl_val_accuracy(trainer.model, encoder, val_pairs, precision, tokenizer.pad_token_id)
    return {"comparisons": kept, "dropped_by_trl": len(data["chosen_ids"]) - kept, "seconds": seconds,
            "train_runtime": result.metrics.get("train_runtime"), "train_loss": result.training_loss, **val}


@torch.no_grad()
def trl_val_accuracy(model, encoder: PairEncoder, records: list[dict], precision: str, pad_id: int) -> dict:
    model.eval()
    device = next(model.parameters()).device
    seqs = encoder.encode([r["prompt"] for r in records] * 2,
                          [r["chosen"] for r in records] + [r["rejected"] for r in records])
    rewards = []
    for s in range(0, len(seqs), 64):
        batch = collate(seqs[s:s + 64], pad_id, device)
        with autocast(device, precision):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        rewards += logits.float().squeeze(-1).tolist()
    n = len(records)
    margins = torch.tensor([c - r for c, r in zip(rewards[:n], rewards[n:])])
    return {"val_accuracy": float((margins > 0).double().mean()),
            "val_log_loss": float(-torch.nn.functional.logsigmoid(margins).mean()), "val_margins": margins.tolist()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, help="preference JSONL(.gz); repeatable")
    ap.add_argument("--k", type=int, choices=[2, 4], default=2)
    ap.add_argument("--limit", type=int, default=600, help="records used (after a seeded shuffle)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="judgments per step (ours) = pairs per micro-batch (TRL)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup", type=float, default=0.05)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--base", default=None, help="backbone folder; default: bundled all-MiniLM-L6-v2")
    ap.add_argument("--trl-gradient-checkpointing", choices=["on", "off"], default="on",
                    help="TRL's RewardConfig defaults to on")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)

    base = args.base or str(default_reward_base())
    device = pick_device("auto")
    precision = resolve_precision(args.precision, device)
    records = load_records(args.data, args.limit, args.seed)
    val_records = [r for r in records if is_validation(r, args.val_fraction, args.seed)]
    train_records = [r for r in records if not is_validation(r, args.val_fraction, args.seed)]
    train_groups = (groups_from_pairs(train_records) if args.k == 2
                    else build_k4_groups(train_records, random.Random(args.seed)))
    per_group = len(ranking_pairs(train_groups[0]["ranking"]))

    ours = run_ours(train_groups + groups_from_pairs(val_records), val_records, args, base, precision)
    out: dict[str, Any] = {
        "k": args.k, "comparisons": ours["comparisons"], "records": len(records),
        "train_groups": ours["groups"], "val_pairs": ours["val_comparisons"],
        "max_length": args.max_length, "batch_comparisons_per_step": args.batch * per_group,
        "precision": precision, "device": str(device), "threads": torch.get_num_threads(),
        "ours_seconds": round(ours["train_seconds"], 1),
        "ours_comparisons_per_s": round(ours["comparisons_per_s"], 2),
        "ours_val_acc": round(ours["val_accuracy"], 4), "ours_val_log_loss": round(ours["val_log_loss"], 4),
        "ours_truncated_sequences": ours["truncated"],
    }
    if not args.skip_trl:
        trl = run_trl(train_groups, val_records, args, base, precision, per_group)
        out |= {
            "trl_comparisons": trl["comparisons"], "trl_dropped": trl["dropped_by_trl"],
            "trl_seconds": round(trl["seconds"], 1),
            "trl_comparisons_per_s": round(trl["comparisons"] / trl["seconds"], 2),
            "trl_val_acc": round(trl["val_accuracy"], 4), "trl_val_log_loss": round(trl["val_log_loss"], 4),
            "trl_gradient_checkpointing": args.trl_gradient_checkpointing,
        }
        out["speedup"] = round(out["ours_comparisons_per_s"] / out["trl_comparisons_per_s"], 2)
        out |= paired_difference(ours["val_margins"], trl["val_margins"], args.seed)
    emit(out, args.json, indent=1)
    return out


if __name__ == "__main__":
    main()
