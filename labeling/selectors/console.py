"""Reads for the project console: the overview's numbers, the data browser's pages and the annotators table.

The data browser pages by keyset (`id < before`, newest first), never by OFFSET, and never counts the
whole table, so a page costs the same on the first page of ten rows and the last of a million: the
project's index (or the primary key scanned backwards) finds the next `limit` rows and stops.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, DatasetSnapshot, ImportBatch, Judgment, Project, Prompt, Response
from labeling.selectors.quality import agreement_report, annotator_report, judgment_rows

BROWSE_VIEWS = ("prompts", "tasks", "responses", "judgments")
PAGE_SIZE = 50
ACTIVE_WINDOW = timedelta(minutes=15)


# --- overview ----------------------------------------------------------------------------------

def project_counts(*, project: Project) -> dict[str, Any]:
    tasks = project.tasks.filter(is_gold=False).aggregate(
        total=Count("id"), complete=Count("id", filter=Q(status=ComparisonTask.Status.COMPLETE)))
    judgments = project.judgments.aggregate(
        human=Count("id", filter=Q(source="human")), imported=Count("id", filter=~Q(source="human")))
    return {
        "prompts": project.prompts.count(),
        "tasks_total": tasks["total"], "tasks_complete": tasks["complete"],
        "percent": round(100 * tasks["complete"] / tasks["total"]) if tasks["total"] else 0,
        "judgments_human": judgments["human"], "judgments_imported": judgments["imported"],
        "demonstrations": project.demonstrations.count(),
        "members": project.memberships.count(),
    }


def judgments_per_hour(*, project: Project, hours: int = 48, now: datetime | None = None) -> list[dict[str, Any]]:
    """Human judgments in each of the last `hours` hours, oldest first, empty hours included."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    counted = dict(
        project.judgments.filter(source="human", created_at__gte=start)
        .annotate(hour=TruncHour("created_at")).values_list("hour").annotate(n=Count("id")).values_list("hour", "n")
    )
    counted = {hour.timestamp(): n for hour, n in counted.items()}  # aware datetimes, any zone: compare instants
    hours_ = [start + timedelta(hours=i) for i in range(hours)]
    return [{"hour": hour, "count": counted.get(hour.timestamp(), 0)} for hour in hours_]


def labeling_now(*, project: Project, now: datetime | None = None) -> list[dict[str, Any]]:
    """Annotators holding a live lease or who judged in the last 15 minutes, with their recent count."""
    now = now or timezone.now()
    since = now - ACTIVE_WINDOW
    leased = set(Assignment.objects.filter(project=project, state=Assignment.State.ACTIVE, expires_at__gt=now)
                 .values_list("annotator_id", flat=True))
    recent = dict(project.judgments.filter(source="human", created_at__gte=since, annotator__isnull=False)
                  .values_list("annotator_id").annotate(n=Count("id")).values_list("annotator_id", "n"))
    ids = leased | set(recent)
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    return sorted(({"username": names.get(i, ""), "recent": recent.get(i, 0), "leased": i in leased} for i in ids),
                  key=lambda row: (-row["recent"], row["username"]))


def import_last_get(*, project: Project) -> ImportBatch | None:
    return project.imports.order_by("-id").first()


def import_list(*, project: Project, limit: int) -> list[ImportBatch]:
    """The newest imports with who made them (one query)."""
    return list(project.imports.select_related("created_by").order_by("-id")[:limit])


def snapshot_list(*, project: Project, limit: int) -> list[DatasetSnapshot]:
    return list(project.snapshots.order_by("-id")[:limit])


# --- data browser ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BrowseFilters:
    source: str = ""
    annotator: str = ""
    status: str = ""
    since: date | None = None
    until: date | None = None  # inclusive

    def created_q(self) -> Q:
        q = Q()
        if self.since:
            q &= Q(created_at__gte=timezone.make_aware(datetime.combine(self.since, time.min)))
        if self.until:
            q &= Q(created_at__lt=timezone.make_aware(datetime.combine(self.until + timedelta(days=1), time.min)))
        return q


def _prompts(project: Project, filters: BrowseFilters) -> QuerySet:
    rows = Prompt.objects.filter(project=project)
    if filters.source:
        rows = rows.filter(responses__source=filters.source).distinct()
    return rows.values("id", "external_id", "text", "messages", "created_at")


def _tasks(project: Project, filters: BrowseFilters) -> QuerySet:
    rows = ComparisonTask.objects.filter(project=project)
    if filters.status:
        rows = rows.filter(status=filters.status)
    return rows.values("id", "prompt_id", "prompt__text", "status", "is_gold", "judgments_count", "created_at")


def _responses(project: Project, filters: BrowseFilters) -> QuerySet:
    rows = Response.objects.filter(prompt__project=project)
    if filters.source:
        rows = rows.filter(source=filters.source)
    return rows.values("id", "prompt_id", "text", "source", "created_at")


def _judgments(project: Project, filters: BrowseFilters) -> QuerySet:
    rows = Judgment.objects.filter(project=project)
    if filters.source:
        rows = rows.filter(source=filters.source)
    if filters.annotator:
        rows = rows.filter(annotator__username=filters.annotator)
    if filters.status in ("current", "superseded"):  # NOT EXISTS, as the exports write it (see _current there)
        revised = Exists(Judgment.objects.filter(supersedes_id=OuterRef("pk")))
        rows = rows.filter(revised if filters.status == "superseded" else ~revised)
    return rows.values("id", "task_id", "annotator__username", "source", "ranking", "both_bad", "created_at")


_BROWSERS = {"prompts": _prompts, "tasks": _tasks, "responses": _responses, "judgments": _judgments}


def browse_page(*, project: Project, view: str, filters: BrowseFilters, before: int | None = None,
                limit: int = PAGE_SIZE) -> tuple[list[dict[str, Any]], int | None]:
    """One page of a data view, newest first, and the `before` of the next page (None on the last)."""
    rows = _BROWSERS[view](project, filters).filter(filters.created_q())
    if before is not None:
        rows = rows.filter(id__lt=before)
    page = list(rows.order_by("-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, (page[-1]["id"] if more else None)


SOURCES_SAMPLE = 2000


def browse_sources(*, project: Project) -> list[str]:
    """Sources to suggest in the filter: those of the newest responses and judgments. A DISTINCT over
    every response would read the whole table (seconds at millions of rows); the field takes any name."""
    responses = Response.objects.filter(prompt__project=project).order_by("-id").values_list("source", flat=True)
    judgments = project.judgments.order_by("-id").values_list("source", flat=True)
    return sorted(set(responses[:SOURCES_SAMPLE]) | set(judgments[:SOURCES_SAMPLE]))


# --- annotators --------------------------------------------------------------------------------

def member_rows(*, project: Project, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each member with role, judgments (all and last 24 hours), gold accuracy, agreement with the others,
    and their exclusion (excluded_at, excluded_by: a username or None, exclusion_reason)."""
    now = now or timezone.now()
    members = list(project.memberships.select_related("user", "excluded_by").order_by("user__username"))
    counts = {
        row["annotator_id"]: row for row in project.judgments.filter(source="human", annotator__isnull=False)
        .values("annotator_id").annotate(total=Count("id"), day=Count("id", filter=Q(created_at__gte=now - timedelta(days=1))))
    }
    rows = judgment_rows(project=project, human_only=True)
    gold = {e["annotator_id"]: e for e in annotator_report(rows=rows)}
    agreement = {e["annotator_id"]: e for e in agreement_report(rows=rows)["annotators"]}
    return [{
        "user_id": m.user_id, "username": m.user.username, "role": m.role,
        "judgments": counts.get(m.user_id, {}).get("total", 0), "last_day": counts.get(m.user_id, {}).get("day", 0),
        "gold_accuracy": gold.get(m.user_id, {}).get("gold_accuracy"), "gold_pairs": gold.get(m.user_id, {}).get("gold_pairs", 0),
        "median_ms": gold.get(m.user_id, {}).get("median_ms"),
        "agreement": agreement.get(m.user_id, {}).get("agreement"),
        "excluded_at": m.excluded_at, "excluded_by": m.excluded_by.username if m.excluded_by else None,
        "exclusion_reason": m.exclusion_reason,
    } for m in members]


def user_get_by_username(*, username: str) -> AbstractUser | None:
    return get_user_model().objects.filter(username=username, is_active=True).first()


def api_token_get(*, user: AbstractUser):
    from rest_framework.authtoken.models import Token

    return Token.objects.filter(user=user).first()
