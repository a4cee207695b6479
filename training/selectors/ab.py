"""Reads of blind human A/B evaluations: the evaluation projects made from a project, and the
Bradley-Terry leaderboard of model versions from their judgments."""
from __future__ import annotations

from typing import Any

from labeling import stats
from labeling.models import Judgment, Project, Response
from labeling.selectors.quality import judgment_rows
from training.models import ModelVersion, TrainingRun


def ab_evaluation_list(*, project: Project) -> list[dict[str, Any]]:
    """The blind A/B evaluations created from this project: the pairwise project, versions, run and
    how many of its tasks were judged."""
    runs = TrainingRun.objects.filter(kind=TrainingRun.Kind.CANDIDATES, params__ab__source_project_id=project.pk) \
        .select_related("project").order_by("-created_at", "-id")
    out = []
    for run in runs:
        ab = run.params["ab"]
        out.append({
            "project": run.project.slug, "project_name": run.project.name, "versions": ab["versions"], "run_id": run.pk,
            "status": run.status, "progress": round(float(run.progress), 4),
            "tasks": run.project.tasks.count(), "judgments": Judgment.objects.filter(project=run.project, superseded_by__isnull=True).count(),
        })
    return out


def ab_leaderboard(*, project: Project, rounds: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """Bradley-Terry ratings of model versions (Elo scale) with percentile-bootstrap 95% intervals,
    from live human judgments in every blind A/B project made from this project. The fit is
    labeling.stats.bradley_terry_bootstrap (the quality dashboard's, Chatbot Arena's method)."""
    ab_projects = Project.objects.filter(pk__in=TrainingRun.objects.filter(
        kind=TrainingRun.Kind.CANDIDATES, params__ab__source_project_id=project.pk).values("project_id"))
    rows = [row for ab in ab_projects for row in judgment_rows(project=ab, human_only=True)]
    response_ids = sorted({rid for row in rows for rid in row.response_ids})
    version_of: dict[int, int | None] = {}
    for start in range(0, len(response_ids), 2000):
        version_of.update(Response.objects.filter(pk__in=response_ids[start:start + 2000]).values_list("pk", "model_version_id"))
    players: dict[int, int] = {}
    battles: list[tuple[int, int, float]] = []
    wins: dict[int, float] = {}
    for row in rows:
        for (a, b), outcome in row.outcomes.items():
            va, vb = version_of.get(a), version_of.get(b)
            if va is None or vb is None or va == vb:
                continue
            ia, ib = players.setdefault(va, len(players)), players.setdefault(vb, len(players))
            battles.append((ia, ib, (outcome + 1) / 2))
            wins[ia] = wins.get(ia, 0.0) + (outcome + 1) / 2
            wins[ib] = wins.get(ib, 0.0) + (1 - outcome) / 2
    if not players:
        return []
    ratings, lower, upper = stats.bradley_terry_bootstrap(battles, len(players), rounds=rounds, seed=seed)
    names = dict(ModelVersion.objects.filter(pk__in=list(players)).values_list("pk", "name"))
    counts: dict[int, int] = {}
    for a, b, _ in battles:
        counts[a] = counts.get(a, 0) + 1
        counts[b] = counts.get(b, 0) + 1
    version_ids = list(players)
    order = sorted(range(len(version_ids)), key=lambda i: -ratings[i])
    return [
        {"rank": n + 1, "version_id": version_ids[i], "name": names.get(version_ids[i], "?"),
         "rating": float(ratings[i]), "ci_low": float(lower[i]), "ci_high": float(upper[i]),
         "battles": counts.get(i, 0), "win_share": wins.get(i, 0.0) / max(counts.get(i, 0), 1)}
        for n, i in enumerate(order)
    ]
