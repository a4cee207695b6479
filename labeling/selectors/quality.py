"""Reads for label quality, consensus and leaderboards. The math lives in labeling.stats.

Only current judgments count (a superseded judgment was corrected by its annotator); agreement,
kappa, alpha, gold and position bias use human judgments only, since imported datasets have one
anonymous verdict per pair. A machine annotator's judgments count in none of these reads (not even the
source leaderboard): labeling.selectors.machine_quality measures them against the people.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import combinations
from statistics import mean, median
from typing import Any, Iterable

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, QuerySet

from labeling import stats
from labeling.models import MACHINE_SOURCE_PREFIX, Judgment, Project, Response

CHUNK = 2000
PERIODS = ("day", "week", "month")


@dataclass
class JudgmentRow:
    id: int
    annotator_id: int | None
    task_id: int
    prompt_id: int
    outcomes: dict[tuple[int, int], int]
    shown_order: list[int]
    likert: dict[str, Any]
    flags: dict[str, Any]
    time_spent_ms: int
    created_at: datetime
    is_gold: bool
    gold_ranking: list[list[int]] | None
    response_ids: list[int] = field(default_factory=list)


def current_judgments(*, project: Project, human_only: bool = True, machines: bool = False) -> QuerySet[Judgment]:
    """Current judgments: people's only (human_only), or with imported datasets' too; a machine
    annotator's only with machines=True (they are measured against people, never counted as data about
    the responses beside them: labeling.selectors.machine_quality)."""
    # NOT EXISTS rather than superseded_by__isnull, whose LEFT JOIN the planner misestimates.
    corrected = Judgment.objects.filter(supersedes_id=OuterRef("pk"))
    judgments = Judgment.objects.filter(~Exists(corrected), project=project)
    if human_only:
        return judgments.filter(source="human")
    return judgments if machines else judgments.exclude(source__startswith=MACHINE_SOURCE_PREFIX)


def judgment_rows(*, project: Project, human_only: bool = True, machines: bool = False) -> list[JudgmentRow]:
    rows = current_judgments(project=project, human_only=human_only, machines=machines).order_by("id").values_list(
        "id", "annotator_id", "task_id", "task__prompt_id", "ranking", "shown_order", "likert", "flags",
        "time_spent_ms", "created_at", "task__is_gold", "task__gold_ranking",
    )
    out = []
    for jid, who, task, prompt, ranking, shown, likert, flags, ms, created, gold, gold_ranking in rows.iterator(CHUNK):
        out.append(JudgmentRow(
            jid, who, task, prompt, stats.ranking_outcomes(ranking or []), list(shown or []), likert or {},
            flags or {}, ms, created, gold, gold_ranking, [rid for group in ranking or [] for rid in group],
        ))
    return out


def _period(moment: datetime, period: str) -> str:
    day: date = moment.date()
    if period == "day":
        return day.isoformat()
    if period == "month":
        return day.strftime("%Y-%m")
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _votes(rows: Iterable[JudgmentRow]) -> dict[tuple[int, int], dict[int, JudgmentRow]]:
    """Response pair -> {annotator: their latest judgment of it}."""
    votes: dict[tuple[int, int], dict[int, JudgmentRow]] = defaultdict(dict)
    for row in rows:
        if row.annotator_id is None:
            continue
        for pair in row.outcomes:
            votes[pair][row.annotator_id] = row
    return votes


def _usernames(ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    return dict(get_user_model().objects.filter(pk__in=wanted).values_list("pk", "username"))


def _share(share: stats.Share) -> dict[str, Any]:
    return {"agreement": share.rate, "agree": share.hits, "compared": share.total}


def agreement_report(*, rows: list[JudgmentRow], period: str = "week") -> dict[str, Any]:
    """InstructGPT pairwise agreement: per project, per annotator against the others, and over time."""
    votes = _votes(rows)
    outcome_votes = {pair: {who: row.outcomes[pair] for who, row in by.items()} for pair, by in votes.items()}
    overall, per_annotator = stats.pairwise_agreement(outcome_votes)
    timed = {
        pair: {who: (row.outcomes[pair], _period(row.created_at, period)) for who, row in by.items()}
        for pair, by in votes.items()
    }
    names = _usernames(per_annotator)
    return {
        "project": {**_share(overall), "items": sum(1 for by in votes.values() if len(by) >= 2)},
        "annotators": [
            {"annotator_id": who, "username": names.get(who, ""), **_share(share)}
            for who, share in sorted(per_annotator.items(), key=lambda kv: names.get(kv[0], ""))
        ],
        "over_time": [{"period": p, **_share(s)} for p, s in stats.agreement_over_time(timed).items()],
        "paper_reference": {"training_labelers": 0.726, "held_out_labelers": 0.773},
    }


def alpha_report(*, rows: list[JudgmentRow]) -> dict[str, Any]:
    """Krippendorff's ordinal alpha on pair preferences (-1, tie, +1) and, where given, on Likert scores."""
    votes = _votes(rows)
    pair_units = [[row.outcomes[pair] for row in by.values()] for pair, by in votes.items()]
    likert_units: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        for rid, score in row.likert.items():
            if row.annotator_id is not None and isinstance(score, (int, float)):
                likert_units[str(rid)][row.annotator_id] = float(score)
    return {
        "preference_alpha": stats.krippendorff_alpha_ordinal(pair_units),
        "likert_alpha": stats.krippendorff_alpha_ordinal(list(u.values()) for u in likert_units.values()),
        "units": sum(1 for u in pair_units if len(u) >= 2),
    }


def kappa_report(*, rows: list[JudgmentRow], min_overlap: int = 20) -> list[dict[str, Any]]:
    """Cohen's kappa on pair preferences for every two annotators sharing at least min_overlap pairs."""
    by_annotator: dict[int, dict[tuple[int, int], int]] = defaultdict(dict)
    for pair, by in _votes(rows).items():
        for who, row in by.items():
            by_annotator[who][pair] = row.outcomes[pair]
    names = _usernames(by_annotator)
    out = []
    for a, b in combinations(sorted(by_annotator), 2):
        shared = sorted(by_annotator[a].keys() & by_annotator[b].keys())
        if len(shared) < min_overlap:
            continue
        kappa = stats.cohen_kappa([by_annotator[a][p] for p in shared], [by_annotator[b][p] for p in shared])
        out.append({"a": names.get(a, ""), "b": names.get(b, ""), "a_id": a, "b_id": b,
                    "overlap": len(shared), "kappa": kappa})
    return out


def annotator_report(*, rows: list[JudgmentRow]) -> list[dict[str, Any]]:
    """Per annotator: judgments, gold accuracy (gold pairs decided as the gold answer) and time per task."""
    per: dict[int, dict[str, Any]] = defaultdict(lambda: {"judgments": 0, "gold_hits": 0, "gold_pairs": 0, "ms": []})
    for row in rows:
        if row.annotator_id is None:
            continue
        entry = per[row.annotator_id]
        entry["judgments"] += 1
        entry["ms"].append(row.time_spent_ms)
        if row.is_gold and row.gold_ranking:
            for pair, expected in stats.ranking_outcomes(row.gold_ranking).items():
                if expected != 0 and pair in row.outcomes:
                    entry["gold_pairs"] += 1
                    entry["gold_hits"] += int(row.outcomes[pair] == expected)
    names = _usernames(per)
    return [
        {
            "annotator_id": who, "username": names.get(who, ""), "judgments": e["judgments"],
            "gold_accuracy": stats.Share(e["gold_hits"], e["gold_pairs"]).rate, "gold_pairs": e["gold_pairs"],
            "median_ms": median(e["ms"]), "mean_ms": mean(e["ms"]),
        }
        for who, e in sorted(per.items(), key=lambda kv: names.get(kv[0], ""))
    ]


def reference_report(*, rows: list[JudgmentRow]) -> dict[str, Any]:
    """Agreement with the original labels of preference data imported "open for annotators": the
    tasks that are not gold but hold a reference ranking (labeling.services.imports). Per decided
    reference pair, whether the annotator decided it the same way; overall and per annotator."""
    total = [0, 0]
    per: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        if row.is_gold or not row.gold_ranking or row.annotator_id is None:
            continue
        for pair, expected in stats.ranking_outcomes(row.gold_ranking).items():
            if expected != 0 and pair in row.outcomes:
                hit = int(row.outcomes[pair] == expected)
                for tally in (total, per[row.annotator_id]):
                    tally[0] += hit
                    tally[1] += 1
    names = _usernames(per)
    return {
        "overall": _share(stats.Share(*total)),
        "annotators": [{"annotator_id": who, "username": names.get(who, ""), **_share(stats.Share(*hc))}
                       for who, hc in sorted(per.items(), key=lambda kv: names.get(kv[0], ""))],
    }


def annotators_below_gold_accuracy(*, project: Project, threshold: float) -> set[int]:
    """Annotators whose gold accuracy in the project is under `threshold` (those with no gold answers
    yet have no accuracy and are not counted as below it)."""
    report = annotator_report(rows=judgment_rows(project=project, human_only=True))
    return {e["annotator_id"] for e in report if e["gold_accuracy"] is not None and e["gold_accuracy"] < threshold}


def _first_shown_wins(row: JudgmentRow) -> tuple[int, int]:
    """(wins, decided) of the earlier-shown response over the later one, over every decided pair.
    With two responses this is exactly "the left one wins"."""
    wins = decided = 0
    for earlier, later in combinations(row.shown_order, 2):
        key = (earlier, later) if earlier < later else (later, earlier)
        outcome = row.outcomes.get(key, 0)
        if outcome == 0:
            continue
        decided += 1
        wins += int((outcome == 1) == (earlier < later))
    return wins, decided


def _bias(hits: int, total: int) -> dict[str, Any]:
    rate = hits / total if total else None
    z = (hits - total / 2) / ((total / 4) ** 0.5) if total else None
    return {"first_wins": hits, "decided": total, "rate": rate, "ci95": stats.wilson_interval(hits, total),
            "z_vs_50": z}


def position_bias_report(*, rows: list[JudgmentRow]) -> dict[str, Any]:
    """How often the response shown first (left) wins, overall and per annotator, against 50%."""
    total = [0, 0]
    per: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        wins, decided = _first_shown_wins(row)
        total[0] += wins
        total[1] += decided
        if row.annotator_id is not None:
            per[row.annotator_id][0] += wins
            per[row.annotator_id][1] += decided
    names = _usernames(per)
    return {
        "overall": _bias(*total),
        "annotators": [{"annotator_id": who, "username": names.get(who, ""), **_bias(*hd)}
                       for who, hd in sorted(per.items(), key=lambda kv: names.get(kv[0], ""))],
    }


def response_sources(*, response_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(response_ids))
    out: dict[int, str] = {}
    for start in range(0, len(ids), CHUNK):
        out.update(Response.objects.filter(pk__in=ids[start:start + CHUNK]).values_list("pk", "source"))
    return out


def safety_report(*, project: Project, rows: list[JudgmentRow], period: str = "week") -> list[dict[str, Any]]:
    """Per response source: the share of judged responses carrying each flag, and the any-flag trend."""
    sources = response_sources(response_ids=(rid for row in rows for rid in row.response_ids))
    seen: dict[str, int] = defaultdict(int)
    flagged: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    trend: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for row in rows:
        bucket = _period(row.created_at, period)
        for rid in row.response_ids:
            source = sources.get(rid, "?")
            keys = row.flags.get(str(rid)) or row.flags.get(rid) or []
            seen[source] += 1
            for key in set(keys):
                flagged[source][key] += 1
            trend[source][bucket][0] += int(bool(keys))
            trend[source][bucket][1] += 1
    labels = dict(project.flag_choices)
    return [
        {
            "source": source, "responses": n,
            "any_flag_rate": sum(trend[source][p][0] for p in trend[source]) / n,
            "flags": [{"key": key, "label": labels.get(key, key), "count": count, "rate": count / n}
                      for key, count in sorted(flagged[source].items())],
            "trend": [{"period": p, "flagged": f, "responses": t, "rate": f / t}
                      for p, (f, t) in sorted(trend[source].items())],
        }
        for source, n in sorted(seen.items())
    ]


def pair_consensus_list(
    *, project: Project, min_agreement: float = 0.0, min_votes: int = 2, human_only: bool = True,
) -> list[dict[str, Any]]:
    """Majority vote per response pair: the winner (None without a strict majority), agreement and votes."""
    rows = judgment_rows(project=project, human_only=human_only)
    votes: dict[tuple[int, int], list[int]] = defaultdict(list)
    for row in rows:
        for pair, outcome in row.outcomes.items():
            votes[pair].append(outcome)
    out = []
    for (a, b), outcomes in sorted(votes.items()):
        consensus = stats.majority_vote(outcomes)
        if consensus.votes < min_votes or consensus.agreement < min_agreement:
            continue
        winner = {1: a, -1: b}.get(consensus.winner) if consensus.winner else None
        out.append({"a": a, "b": b, "votes": consensus.votes, "winner": winner,
                    "agreement": consensus.agreement, "unanimous": consensus.unanimous})
    return out


def _battles(rows: Iterable[JudgmentRow], key) -> tuple[list[tuple[int, int, float]], list[Any]]:
    """Battles between players named by key(response id); a response pair with one player is skipped."""
    players: dict[Any, int] = {}
    battles = []
    for row in rows:
        for (a, b), outcome in row.outcomes.items():
            pa, pb = key(a), key(b)
            if pa == pb:
                continue
            ia, ib = players.setdefault(pa, len(players)), players.setdefault(pb, len(players))
            battles.append((ia, ib, (outcome + 1) / 2))
    return battles, list(players)


def prompt_bradley_terry(*, project: Project, prompt_id: int, human_only: bool = False) -> list[dict[str, Any]]:
    """Bradley-Terry ratings of one prompt's responses, best first."""
    rows = [r for r in judgment_rows(project=project, human_only=human_only) if r.prompt_id == prompt_id]
    battles, players = _battles(rows, key=lambda rid: rid)
    ratings = stats.bradley_terry(battles, len(players))
    order = sorted(range(len(players)), key=lambda i: -ratings[i])
    return [{"response_id": players[i], "rating": float(ratings[i])} for i in order]


def source_leaderboard(
    *, project: Project, rows: list[JudgmentRow] | None = None, rounds: int = 200, seed: int = 0,
) -> list[dict[str, Any]]:
    """Response sources ranked by Bradley-Terry rating with percentile-bootstrap 95% intervals
    (Chatbot Arena's method). Battles between two responses of the same source are left out."""
    rows = rows if rows is not None else judgment_rows(project=project, human_only=False)
    sources = response_sources(response_ids=(rid for row in rows for rid in row.response_ids))
    battles, players = _battles(rows, key=lambda rid: sources.get(rid, "?"))
    ratings, lower, upper = stats.bradley_terry_bootstrap(battles, len(players), rounds=rounds, seed=seed)
    counts: dict[int, int] = defaultdict(int)
    for a, b, _ in battles:
        counts[a] += 1
        counts[b] += 1
    order = sorted(range(len(players)), key=lambda i: -ratings[i])
    return [
        {"rank": n + 1, "source": players[i], "rating": float(ratings[i]), "ci_low": float(lower[i]),
         "ci_high": float(upper[i]), "battles": counts[i]}
        for n, i in enumerate(order)
    ]


def quality_report(*, project: Project, period: str = "week", min_overlap: int = 20, rounds: int = 200) -> dict[str, Any]:
    """Everything the dashboard shows, from one read of the judgments."""
    rows = judgment_rows(project=project)
    return {
        "judgments": len(rows),
        "agreement": agreement_report(rows=rows, period=period),
        "alpha": alpha_report(rows=rows),
        "kappa": kappa_report(rows=rows, min_overlap=min_overlap),
        "annotators": annotator_report(rows=rows),
        "reference": reference_report(rows=rows),
        "position_bias": position_bias_report(rows=rows),
        "safety": safety_report(project=project, rows=rows, period=period),
        "leaderboard": source_leaderboard(project=project, rounds=rounds),
    }
