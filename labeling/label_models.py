"""Label models over pairwise votes: per-annotator reliability and per-item posteriors (pure: no Django).

An item is an unordered response pair (a, b) with a < b; a vote says a won (+1), b won (-1) or a tie
(0), and which of the two the annotator saw first. K-way rankings enter through their pairs
(labeling/ranking.py's one rule; two responses in one tie group are a tie vote).

Models (all return P(a wins), P(b wins), P(tie) per item, ties 0 where a model has none):
- "majority": each vote weighs the same, a tie half to each side (the baseline).
- "dawid-skene": crowd-kit's DawidSkene over {a, b, tie}, one confusion matrix per annotator.
  Shown order is shuffled per assignment, so an always-first clicker looks random in this frame
  and DS learns to give them no weight.
- "position-em": a MACE-like model with the shown order as a feature, our own EM in numpy: an
  annotator answers honestly with probability s, else picks the first-shown response with
  probability b. crowd-kit's NoisyBradleyTerry models the same two parameters, but its gradient
  is a per-vote Python loop: 10,000 votes took 6.0 s here, so 100,000 (the issue's budget: under
  a minute for everything) would take a minute alone; this vectorised EM fits 100,000 in about 0.5 s.
Gold items (known outcome) anchor every model: their posterior is fixed to the gold answer at
every step (DS takes them as crowd-kit's true_labels), so annotator reliability is learnt
against them first.

Per annotator: accuracy (the model's own estimate: DS's prior-weighted confusion diagonal,
s + (1 - s) / 2 for position-em, agreement with the others for majority) with a 95% Wilson
interval at that rate over the annotator's votes; agreement with the posterior's hard labels;
the share of decided votes that picked the first-shown response against the expected 0.5 with a
two-sided binomial p-value; and flags with their evidence.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from typing import Iterable, Sequence

import numpy as np

from labeling.ranking import ranking_pairs
from labeling.stats import wilson_interval

MODELS = ("majority", "dawid-skene", "position-em")
# What training snapshots and exports may ask for: "none" keeps every judgment as it is; a model gives
# its consensus, as soft targets (the posterior) or hard ones (the consensus ranking) (training.consensus).
LABEL_MODEL_CHOICES = ("none", *MODELS)
LABEL_TARGETS = ("soft", "hard")
A, B, TIE = 0, 1, 2
# Flags: a spammer's accuracy interval lies wholly below this. Random clicks sit at 0.5; the weakest
# honest annotators the issue simulates are right 70% of the time, 64% when they also click the first
# response in 30% of their answers, and 0.65 flagged every bad one and at most 5% of good ones on
# simulated crowds of 3,000 to 10,000 pairs (0.62 missed some bad ones, 0.70 flagged biased good ones).
# An always-first clicker picks the first-shown response in at least this share of decided votes,
# and chance alone would not explain it.
SPAMMER_MAX_ACCURACY_HIGH = 0.65
ALWAYS_FIRST_MIN_SHARE = 0.9
ALWAYS_FIRST_MAX_P = 1e-3
MIN_VOTES_TO_FLAG = 10
EM_ITERATIONS = 100


@dataclass(frozen=True)
class Vote:
    item: tuple[int, int]  # (a, b), a < b
    annotator: int
    outcome: int  # +1 a won, -1 b won, 0 tie
    a_first: bool  # a was shown before b


@dataclass
class ModelFit:
    name: str
    items: list[tuple[int, int]]
    probs: np.ndarray  # (items, 3): P(a), P(b), P(tie)
    annotators: dict[int, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def posterior(self, item: tuple[int, int]) -> float:
        """P(a beats b), a tie counting half."""
        row = self.probs[self.item_index()[item]]
        return float(row[A] + row[TIE] / 2)

    def item_index(self) -> dict[tuple[int, int], int]:
        if len(getattr(self, "_index", ())) != len(self.items):
            self._index = {item: k for k, item in enumerate(self.items)}
        return self._index

    def targets(self, response_ids: Sequence[int]) -> list[list]:
        """The soft labels of one task: [[i, j, P(slot i beats slot j)], ...] for the slots i < j whose
        response pair the fit has (rounded to 6 places: the snapshot file is text)."""
        index, out = self.item_index(), []
        for i, j in combinations(range(len(response_ids)), 2):
            a, b = response_ids[i], response_ids[j]
            if (min(a, b), max(a, b)) in index:
                p = self.posterior((min(a, b), max(a, b)))
                out.append([i, j, round(p if a < b else 1.0 - p, 6)])
        return out


def targets_ranking(size: int, targets: Sequence[Sequence[float]]) -> list[list[int]]:
    """The hard consensus of soft labels over `size` slots, as tie groups best first: each slot scores
    the pairs it more likely wins (a coin flip, p = 0.5, half each; Copeland's rule), equal scores
    tie. For two responses it is the more likely winner, or a tie at exactly 0.5."""
    score = [0.0] * size
    for i, j, p in targets:
        i, j = int(i), int(j)
        score[i] += 1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0
        score[j] += 1.0 if p < 0.5 else 0.5 if p == 0.5 else 0.0
    levels = sorted(set(score), reverse=True)
    return [[s for s in range(size) if score[s] == level] for level in levels]


def judgment_votes(*, annotator: int, ranking: Sequence[Sequence[int]], shown_order: Sequence[int]) -> list[Vote]:
    """One vote per response pair of a judgment: its ranking's pairs, and a tie for two responses
    of one tie group."""
    won = set(ranking_pairs([list(g) for g in ranking]))
    position = {rid: i for i, rid in enumerate(shown_order)}
    votes = []
    for a, b in combinations(sorted(r for g in ranking for r in g), 2):
        outcome = 1 if (a, b) in won else -1 if (b, a) in won else 0
        votes.append(Vote((a, b), annotator, outcome, position.get(a, 0) < position.get(b, 0)))
    return votes


def gold_outcomes(ranking: Sequence[Sequence[int]]) -> dict[tuple[int, int], int]:
    """The gold answer of every pair of a gold ranking, as outcomes."""
    return {v.item: v.outcome for v in judgment_votes(annotator=0, ranking=ranking, shown_order=[])}


class _Encoded:
    """The votes as integer arrays, shared by every model."""

    def __init__(self, votes: Sequence[Vote], gold: dict[tuple[int, int], int]):
        self.items = sorted({v.item for v in votes})
        index = {item: i for i, item in enumerate(self.items)}
        self.annotators = sorted({v.annotator for v in votes})
        who = {a: i for i, a in enumerate(self.annotators)}
        self.i = np.fromiter((index[v.item] for v in votes), dtype=np.int64, count=len(votes))
        self.w = np.fromiter((who[v.annotator] for v in votes), dtype=np.int64, count=len(votes))
        self.label = np.fromiter((A if v.outcome > 0 else B if v.outcome < 0 else TIE for v in votes),
                                 dtype=np.int64, count=len(votes))
        self.first = np.fromiter((A if v.a_first else B for v in votes), dtype=np.int64, count=len(votes))
        self.gold_idx = np.array([index[k] for k in gold if k in index], dtype=np.int64)
        self.gold_label = np.array([A if gold[k] > 0 else B if gold[k] < 0 else TIE for k in gold if k in index],
                                   dtype=np.int64)

    def anchor(self, probs: np.ndarray) -> np.ndarray:
        if len(self.gold_idx):
            probs[self.gold_idx] = 0.0
            probs[self.gold_idx, self.gold_label] = 1.0
        return probs


def _majority(enc: _Encoded) -> tuple[np.ndarray, np.ndarray]:
    n = len(enc.items)
    a = np.bincount(enc.i, weights=(enc.label == A) + 0.5 * (enc.label == TIE), minlength=n)
    total = np.bincount(enc.i, minlength=n)
    p_a = a / np.maximum(total, 1)
    probs = enc.anchor(np.stack([p_a, 1 - p_a, np.zeros(n)], axis=1))
    # Accuracy against the others' majority (the annotator's own vote left out, else a lone voter scores 1).
    own_a = (enc.label == A) + 0.5 * (enc.label == TIE)
    others = total[enc.i] - 1
    loo = np.where(others > 0, (a[enc.i] - own_a) / np.maximum(others, 1), np.nan)
    hit = np.where(enc.label == A, loo, np.where(enc.label == B, 1 - loo, np.nan))
    ok = ~np.isnan(hit)
    acc = np.bincount(enc.w[ok], weights=hit[ok], minlength=len(enc.annotators)) / np.maximum(
        np.bincount(enc.w[ok], minlength=len(enc.annotators)), 1)
    return probs, acc


def _dawid_skene(enc: _Encoded) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd  # crowd-kit pulls in scipy and pandas (about a second): only a fit pays it
    from crowdkit.aggregation import DawidSkene

    data = pd.DataFrame({"task": enc.i, "worker": enc.w, "label": enc.label})
    observed = set(np.unique(enc.label).tolist())
    keep = [k for k, lab in enumerate(enc.gold_label.tolist()) if lab in observed]
    true = pd.Series(enc.gold_label[keep], index=enc.gold_idx[keep]) if keep else None
    with warnings.catch_warnings():
        # crowd-kit 1.4.2 uses pandas keywords that pandas 3.1 deprecates (inplace=, copy=): noise, not ours.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = DawidSkene(n_iter=EM_ITERATIONS).fit(data, true_labels=true)
    probs = np.zeros((len(enc.items), 3))
    for label in ds.probas_.columns:
        probs[ds.probas_.index.to_numpy(), int(label)] = ds.probas_[label].to_numpy()
    errors = ds.errors_
    acc = np.zeros(len(enc.annotators))
    for (worker, observed_label), row in errors.iterrows():
        if observed_label in row.index:
            acc[int(worker)] += ds.priors_[observed_label] * row[observed_label]
    return enc.anchor(probs), acc


def _position_em(enc: _Encoded) -> tuple[np.ndarray, np.ndarray]:
    decided = enc.label != TIE
    i, w, v, f = enc.i[decided], enc.w[decided], enc.label[decided], enc.first[decided]
    n_items, n_workers = len(enc.items), len(enc.annotators)
    votes_of = np.bincount(w, minlength=n_workers)
    # Start from the majority, so EM keeps "a won" meaning a won (the model is symmetric in z).
    p0 = _majority(enc)[0][:, A]
    skill, bias, prior = np.full(n_workers, 0.7), np.full(n_workers, 0.5), 0.5
    for _ in range(EM_ITERATIONS):
        pick_first = np.where(v == f, bias[w], 1 - bias[w])
        like = [skill[w] * (v == z) + (1 - skill[w]) * pick_first for z in (A, B)]
        honest = p0[i] * skill[w] * (v == A) / like[0] + (1 - p0[i]) * skill[w] * (v == B) / like[1]
        skill = (np.bincount(w, weights=honest, minlength=n_workers) + 1) / (votes_of + 2)
        spam = 1 - honest
        bias = (np.bincount(w, weights=spam * (v == f), minlength=n_workers) + 1) / (
            np.bincount(w, weights=spam, minlength=n_workers) + 2)
        prior = float(np.clip(p0.mean(), 1e-3, 1 - 1e-3))
        pick_first = np.where(v == f, bias[w], 1 - bias[w])
        log_a = math.log(prior) + np.bincount(i, weights=np.log(skill[w] * (v == A) + (1 - skill[w]) * pick_first), minlength=n_items)
        log_b = math.log(1 - prior) + np.bincount(i, weights=np.log(skill[w] * (v == B) + (1 - skill[w]) * pick_first), minlength=n_items)
        new = 1 / (1 + np.exp(np.clip(log_b - log_a, -50, 50)))
        if len(enc.gold_idx):
            new[enc.gold_idx] = np.where(enc.gold_label == A, 1.0, np.where(enc.gold_label == B, 0.0, 0.5))
        done = np.abs(new - p0).max(initial=0.0) < 1e-6
        p0 = new
        if done:
            break
    # An honest answer is right; a position pick is right half the time, the order being shuffled.
    return np.stack([p0, 1 - p0, np.zeros(n_items)], axis=1), skill + (1 - skill) / 2


def _binomial_p(hits: int, total: int) -> float:
    """Two-sided exact binomial p-value against 0.5 (summed in log space: no overflow at large n)."""
    if total == 0:
        return 1.0
    logs = [math.lgamma(total + 1) - math.lgamma(k + 1) - math.lgamma(total - k + 1) - total * math.log(2)
            for k in range(total + 1)]
    observed = logs[hits]
    return float(min(1.0, sum(math.exp(x) for x in logs if x <= observed + 1e-9)))


def _position(enc: _Encoded) -> list[dict]:
    decided = enc.label != TIE
    firsts = np.bincount(enc.w[decided], weights=enc.label[decided] == enc.first[decided], minlength=len(enc.annotators))
    totals = np.bincount(enc.w[decided], minlength=len(enc.annotators))
    return [{"decided": int(n), "first_picks": int(k), "first_share": k / n if n else None, "first_expected": 0.5,
             "first_p_value": _binomial_p(int(k), int(n))} for k, n in zip(firsts, totals)]


def _annotator_stats(enc: _Encoded, probs: np.ndarray, acc: np.ndarray, position: list[dict]) -> dict[int, dict]:
    hard = probs.argmax(axis=1)
    clear = probs.max(axis=1) > 0.5
    agree_hits = np.bincount(enc.w[clear[enc.i]], weights=(hard[enc.i] == enc.label)[clear[enc.i]], minlength=len(enc.annotators))
    agree_n = np.bincount(enc.w[clear[enc.i]], minlength=len(enc.annotators))
    votes = np.bincount(enc.w, minlength=len(enc.annotators))
    out = {}
    for k, annotator in enumerate(enc.annotators):
        n, accuracy = int(votes[k]), float(acc[k])
        low, high = wilson_interval(round(accuracy * n), n) or (0.0, 1.0)
        pos = position[k]
        stats = {"votes": n, "accuracy": accuracy, "accuracy_low": low, "accuracy_high": high,
                 "agreement": float(agree_hits[k] / agree_n[k]) if agree_n[k] else None, **pos, "flags": []}
        if n >= MIN_VOTES_TO_FLAG and high < SPAMMER_MAX_ACCURACY_HIGH:
            stats["flags"].append({"flag": "spammer", "evidence": (
                f"estimated accuracy {accuracy:.0%} (95% interval {low:.0%} to {high:.0%}) over {n} votes; "
                f"random answers score about 50%")})
        share = pos["first_share"]
        if (pos["decided"] >= MIN_VOTES_TO_FLAG and share is not None and share >= ALWAYS_FIRST_MIN_SHARE
                and pos["first_p_value"] < ALWAYS_FIRST_MAX_P):
            stats["flags"].append({"flag": "always-first", "evidence": (
                f"picked the first-shown response in {pos['first_picks']} of {pos['decided']} decided votes "
                f"({share:.0%}, expected about 50%; p = {pos['first_p_value']:.1e})")})
        out[annotator] = stats
    return out


FITTERS = {"majority": _majority, "dawid-skene": _dawid_skene, "position-em": _position_em}


def label_models_fit(*, votes: Iterable[Vote], gold: dict[tuple[int, int], int] | None = None,
                     models: Sequence[str] = MODELS) -> dict[str, ModelFit]:
    """Fit each named model on the votes; gold outcomes (by item) anchor every fit."""
    votes = list(votes)
    unknown = set(models) - set(FITTERS)
    if unknown:
        raise ValueError(f"unknown label models: {sorted(unknown)}")
    enc = _Encoded(votes, gold or {})
    if not votes:
        return {name: ModelFit(name, [], np.zeros((0, 3))) for name in models}
    position = _position(enc)
    fits = {}
    for name in models:
        started = time.perf_counter()
        probs, acc = FITTERS[name](enc)
        probs = np.clip(probs, 0.0, 1.0)
        fits[name] = ModelFit(name, enc.items, probs, _annotator_stats(enc, probs, acc, position),
                              time.perf_counter() - started)
    return fits


def versus_majority(fits: dict[str, ModelFit]) -> dict[str, dict[str, int]]:
    """Per model, against majority vote over the same pairs: how many pairs each decides ('a' or 'b'
    more likely than the other), on how many they pick opposite winners (flips), and how many the
    majority leaves at 50/50 that the model decides."""
    majority = fits.get("majority")
    out = {}
    for name, fit in fits.items():
        if majority is None or name == "majority":
            continue
        m_side = np.sign(majority.probs[:, A] - majority.probs[:, B])
        side = np.sign(fit.probs[:, A] - fit.probs[:, B])
        out[name] = {"pairs": len(fit.items), "decided": int((side != 0).sum()),
                     "flips": int(((side * m_side) < 0).sum()), "majority_ties_decided": int(((m_side == 0) & (side != 0)).sum())}
    return out


def flagged(fit: ModelFit) -> set[int]:
    return {a for a, s in fit.annotators.items() if s["flags"]}

