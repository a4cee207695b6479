"""Reads behind every export: filters as loose input, filters as querysets, counts, and rows in
batches through a server-side cursor (the writing is in labeling.services.exports).

Memory stays flat at any size: rows come through a server-side cursor in fetches of CHUNK rows
(bigger fetches spill past Postgres' work_mem), inside a transaction so Django does not declare
the cursor WITH HOLD (which materialises the whole result a second time).
"""
from __future__ import annotations

import hashlib
import hmac
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from itertools import islice
from typing import Any, Iterator

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Exists, F, FloatField, Func, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import MD5, Cast, Concat, Substr
from django.utils import timezone
from django.utils.dateparse import parse_date

from labeling import splits
from labeling.export_records import FORMATS, JUDGMENT_FORMATS, PAIR_FORMATS, POSTERIOR_FORMATS, PG_PROMPT, PG_RECORDS
from labeling.label_models import LABEL_MODEL_CHOICES, LABEL_TARGETS
from labeling.selectors.annotators import excluded_annotators
from labeling.models import (
    MACHINE_SOURCE_PREFIX, ExportJob, Judgment, LabelModelFit, PreferencePair, Project, Response, TaskResponse,
)

CHUNK = 2000
CONSENSUS = ("all", "majority", "unanimous")


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


# --- filters ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportFilters:
    date_from: date | None = None
    date_to: date | None = None  # inclusive
    annotator: str | None = None  # username
    sources: tuple[str, ...] = ()  # both responses of a pair must come from these
    model_versions: tuple[int, ...] = ()
    judgment_source: str | None = None  # "human", or an imported dataset's name
    min_agreement: float = 0.0
    consensus: str = "all"
    exclude_gold: bool = False
    split: str | None = None  # splits.TRAIN | splits.TEST
    test_fraction: float = splits.HELD_OUT_FRACTION
    split_seed: str = splits.DEFAULT_SEED
    pseudonymous: bool = True
    label_model: str = "none"  # labeling.label_models.LABEL_MODEL_CHOICES: a pair's posterior column, a snapshot's consensus
    label_targets: str = "soft"  # a training snapshot's consensus as soft targets or a hard ranking

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ExportFilters":
        """Build from loose input (query params, JSON, CLI); raises ValidationError naming the field."""
        data = {k: v for k, v in (data or {}).items() if v not in (None, "", [])}
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValidationError({key: "unknown filter" for key in sorted(unknown)})
        try:
            filters = cls(
                date_from=_date(data.get("date_from"), "date_from"),
                date_to=_date(data.get("date_to"), "date_to"),
                annotator=str(data["annotator"]) if "annotator" in data else None,
                sources=_strings(data.get("sources", ())),
                model_versions=tuple(int(v) for v in _strings(data.get("model_versions", ()))),
                judgment_source=str(data["judgment_source"]) if "judgment_source" in data else None,
                min_agreement=float(data.get("min_agreement", 0.0)),
                consensus=str(data.get("consensus", "all")),
                exclude_gold=_bool(data.get("exclude_gold", False)),
                split=str(data["split"]) if "split" in data else None,
                test_fraction=float(data.get("test_fraction", splits.HELD_OUT_FRACTION)),
                split_seed=str(data.get("split_seed", splits.DEFAULT_SEED)),
                pseudonymous=_bool(data.get("pseudonymous", True)),
                label_model=str(data.get("label_model", "none")),
                label_targets=str(data.get("label_targets", "soft")),
            )
        except (TypeError, ValueError) as exc:
            raise ValidationError({"filters": str(exc)}) from None
        return filters.validated()

    def validated(self) -> "ExportFilters":
        errors = {}
        if self.consensus not in CONSENSUS:
            errors["consensus"] = f"must be one of {list(CONSENSUS)}"
        if not 0.0 <= self.min_agreement <= 1.0:
            errors["min_agreement"] = "must be between 0 and 1"
        if self.label_model not in LABEL_MODEL_CHOICES:
            errors["label_model"] = f"must be one of {list(LABEL_MODEL_CHOICES)}"
        if self.label_targets not in LABEL_TARGETS:
            errors["label_targets"] = f"must be one of {list(LABEL_TARGETS)}"
        if self.split not in (None, splits.TRAIN, splits.TEST):
            errors["split"] = f"must be {splits.TRAIN} or {splits.TEST}"
        if not 0.0 < self.test_fraction < 1.0:
            errors["test_fraction"] = "must be between 0 and 1, exclusive"
        if errors:
            raise ValidationError(errors)
        return self

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("date_from", "date_to"):
            out[key] = out[key].isoformat() if out[key] else None
        out["sources"], out["model_versions"] = list(self.sources), list(self.model_versions)
        return out


def _date(value: Any, name: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    parsed = parse_date(str(value))
    if parsed is None:
        raise ValueError(f"{name} must be a date, YYYY-MM-DD")
    return parsed


def _strings(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in items if str(v).strip())


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def format_validate(*, fmt: str, filters: ExportFilters) -> None:
    if fmt not in FORMATS:
        raise ValidationError({"format": f"must be one of {list(FORMATS)}"})
    if fmt not in PAIR_FORMATS and (filters.consensus != "all" or filters.min_agreement > 0):
        raise ValidationError({"consensus": f"consensus and min_agreement apply to pair formats, not {fmt}"})
    if filters.label_model != "none" and fmt not in POSTERIOR_FORMATS:
        raise ValidationError({"label_model": f"the label model's posterior is a column of {sorted(POSTERIOR_FORMATS)}, not {fmt}"})


# --- querysets -------------------------------------------------------------------------------

def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _current(judgment_ref: str) -> Q:
    """Not superseded, as NOT EXISTS: the LEFT JOIN ... IS NULL that `superseded_by__isnull` writes is
    estimated at one row, and at 1M pairs the planner then nests a loop over all judgments per pair."""
    return Q(~Exists(Judgment.objects.filter(supersedes_id=OuterRef(judgment_ref))))


def _judgment_q(filters: ExportFilters, prefix: str = "", machine: str = "exclude") -> Q:
    q = _current("judgment_id" if prefix == "judgment__" else "pk")
    if filters.date_from:
        q &= Q(**{f"{prefix}created_at__gte": _day_start(filters.date_from)})
    if filters.date_to:
        q &= Q(**{f"{prefix}created_at__lt": _day_start(filters.date_to + timedelta(days=1))})
    if filters.annotator:
        q &= Q(**{f"{prefix}annotator__username": filters.annotator})
    if filters.judgment_source:
        q &= Q(**{f"{prefix}source": filters.judgment_source})
    elif machine == "only":
        q &= Q(**{f"{prefix}source__startswith": MACHINE_SOURCE_PREFIX})
    elif machine == "exclude":
        # A machine annotator's labels export and train only when asked for by name (or, for a training
        # snapshot, by its `sources`): unnamed, the data is the people's (and imported datasets'), as it
        # was before machines judged.
        q &= ~Q(**{f"{prefix}source__startswith": MACHINE_SOURCE_PREFIX})
    if filters.exclude_gold:
        q &= Q(**{f"{prefix}task__is_gold": False})
    return q


def _split(queryset: QuerySet, filters: ExportFilters, external_id: str) -> QuerySet:
    """labeling.splits.prompt_split computed by the database: md5 of split_key(external id, seed),
    its first BUCKET_DIGITS hex digits against split_threshold. Fixed-width lowercase hex compares
    as text exactly as it does as a number, on any database."""
    if not filters.split:
        return queryset
    key_prefix = splits.split_key("", filters.split_seed)  # the key is this prefix + the prompt id
    bucket = Substr(MD5(Concat(Value(key_prefix), F(external_id))), 1, splits.BUCKET_DIGITS)
    threshold = splits.split_threshold(filters.test_fraction)
    queryset = queryset.alias(split_bucket=bucket)
    if filters.split == splits.TEST:
        return queryset.filter(split_bucket__lt=threshold)
    return queryset.filter(split_bucket__gte=threshold)


def _count(queryset: QuerySet) -> Subquery:
    return Subquery(queryset.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n"))


def _with_consensus(pairs: QuerySet, filters: ExportFilters) -> QuerySet:
    """Agreement of a pair = judgments preferring chosen over rejected / current judgments that saw
    both (a tie is a vote). Consensus is over every current judgment, not just the filtered ones."""
    wins = PreferencePair.objects.filter(
        _current("judgment_id"), chosen_id=OuterRef("chosen_id"), rejected_id=OuterRef("rejected_id"))
    votes = Judgment.objects.filter(_current("pk"), task__slots__response_id=OuterRef("chosen_id")).filter(
        task__slots__response_id=OuterRef("rejected_id"))
    pairs = pairs.alias(wins=_count(wins), votes=_count(votes)).alias(
        agreement=Cast(F("wins"), FloatField()) / Cast(F("votes"), FloatField()))
    if filters.min_agreement > 0:
        pairs = pairs.filter(agreement__gte=filters.min_agreement)
    if filters.consensus == "all":
        return pairs
    pairs = pairs.filter(agreement__gt=0.5) if filters.consensus == "majority" else pairs.filter(wins=F("votes"))
    # One row per response pair: the first matching judgment speaks for the consensus.
    first = PreferencePair.objects.filter(
        Q(chosen_id=OuterRef("chosen_id"), rejected_id=OuterRef("rejected_id")), _judgment_q(filters, "judgment__"),
    ).order_by("id").values("id")[:1]
    return pairs.filter(id=Subquery(first))


def pair_queryset(*, project: Project, filters: ExportFilters) -> QuerySet[PreferencePair]:
    pairs = PreferencePair.objects.filter(_judgment_q(filters, "judgment__"), project=project).exclude(
        judgment__annotator_id__in=excluded_annotators(project=project))
    if filters.sources:
        pairs = pairs.filter(chosen__source__in=filters.sources, rejected__source__in=filters.sources)
    if filters.model_versions:
        pairs = pairs.filter(chosen__model_version_id__in=filters.model_versions,
                             rejected__model_version_id__in=filters.model_versions)
    pairs = _split(pairs, filters, "prompt__external_id")
    if filters.consensus != "all" or filters.min_agreement > 0:
        pairs = _with_consensus(pairs, filters)
    return pairs.order_by("id")


MACHINE_CHOICES = ("exclude", "include", "only")


def judgment_queryset(
    *, project: Project, filters: ExportFilters, with_excluded: bool = False, machine: str = "exclude",
) -> QuerySet[Judgment]:
    """The judgments the filters keep; those of excluded annotators too with with_excluded (a training
    snapshot drops and counts them itself). machine: whether machine annotators' judgments are left
    out (the default), kept beside the rest, or the only ones (a training snapshot's `sources`);
    filters.judgment_source, when set, decides instead."""
    if machine not in MACHINE_CHOICES:
        raise ValueError(f"machine: one of {MACHINE_CHOICES}")
    judgments = Judgment.objects.filter(_judgment_q(filters, machine=machine), project=project)
    if not with_excluded:
        judgments = judgments.exclude(annotator_id__in=excluded_annotators(project=project))
    outside = TaskResponse.objects.filter(task_id=OuterRef("task_id"))
    if filters.sources:
        judgments = judgments.filter(~Exists(outside.exclude(response__source__in=filters.sources)))
    if filters.model_versions:
        judgments = judgments.filter(~Exists(outside.exclude(response__model_version_id__in=filters.model_versions)))
    return _split(judgments, filters, "task__prompt__external_id").order_by("id")


def export_count(*, project: Project, fmt: str, filters: ExportFilters) -> int:
    format_validate(fmt=fmt, filters=filters)
    queryset = judgment_queryset if fmt in JUDGMENT_FORMATS else pair_queryset
    return queryset(project=project, filters=filters).count()


# --- rows ------------------------------------------------------------------------------------

PAIR_COLUMNS = {
    "id": "id", "chosen_id": "chosen_id", "rejected_id": "rejected_id", "prompt_text": "prompt__text", "prompt_messages": "prompt__messages",
    "chosen_text": "chosen__text", "rejected_text": "rejected__text", "chosen_source": "chosen__source",
    "rejected_source": "rejected__source", "annotator_id": "judgment__annotator_id",
    "judgment_source": "judgment__source", "judged_at": "judgment__created_at",
}
JUDGMENT_COLUMNS = {
    "judgment_id": "id", "task_id": "task_id", "prompt_id": "task__prompt_id",
    "prompt_external_id": "task__prompt__external_id", "prompt_text": "task__prompt__text",
    "prompt_messages": "task__prompt__messages", "annotator_id": "annotator_id", "source": "source",
    "ranking": "ranking", "both_bad": "both_bad", "likert": "likert", "flags": "flags",
    "rationale": "rationale", "shown_order": "shown_order", "time_spent_ms": "time_spent_ms",
    "supersedes_id": "supersedes_id", "is_gold": "task__is_gold", "created_at": "created_at",
}


def _batched(iterator: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(islice(iterator, size)):
        yield batch


def _rows(queryset: QuerySet, columns: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
    """Batches of {name: value} through a server-side cursor; in a transaction on Postgres (see module doc)."""
    names = list(columns)
    values = queryset.values_list(*columns.values())

    def batches() -> Iterator[list[dict[str, Any]]]:
        for batch in _batched(values.iterator(chunk_size=CHUNK), CHUNK):
            yield [dict(zip(names, row)) for row in batch]

    if on_postgres():
        with transaction.atomic():
            yield from batches()
    else:
        yield from batches()


def pair_rows(*, project: Project, filters: ExportFilters) -> Iterator[list[dict[str, Any]]]:
    """Batches of pair rows; with filters.label_model each row also has `label_posterior`."""
    posteriors = label_posteriors_get(project=project, model=filters.label_model)
    for batch in _rows(pair_queryset(project=project, filters=filters), PAIR_COLUMNS):
        if posteriors is not None:
            for row in batch:
                row["label_posterior"] = pair_posterior(posteriors, row["chosen_id"], row["rejected_id"])
        yield batch


def label_posteriors_get(*, project: Project, model: str) -> dict[str, float] | None:
    """{"a-b": P(a beats b)} of `model` from the project's latest label-model fit (labeling.services.
    label_models); None for "none". No fit yet is a ValidationError naming label_model."""
    if model == "none":
        return None
    stored = LabelModelFit.objects.filter(project=project).values_list("posteriors", flat=True).first()
    if stored is None:
        raise ValidationError({"label_model": "this project has no label-model fit yet: refit on the annotators tab "
                                              "(it also runs after every batch of judgments)"})
    return {key: row[model] for key, row in stored.items() if model in row}


def pair_posterior(posteriors: dict[str, float], chosen: int, rejected: int) -> float | None:
    """P(chosen beats rejected) from a fit's posteriors keyed by the smaller response id first; None
    for a pair the fit has not seen (imported judgments, or judged since the last fit)."""
    p = posteriors.get(f"{min(chosen, rejected)}-{max(chosen, rejected)}")
    return None if p is None else (p if chosen < rejected else round(1.0 - p, 6))


def judgment_rows(*, project: Project, filters: ExportFilters) -> Iterator[list[dict[str, Any]]]:
    return _rows(judgment_queryset(project=project, filters=filters), JUDGMENT_COLUMNS)


def response_texts(*, ids: set[int]) -> dict[int, tuple[str, str]]:
    """{response id: (text, source)}."""
    return {pk: (text, source) for pk, text, source in Response.objects.filter(pk__in=ids).values_list("pk", "text", "source")}


def annotator_pseudonym(user_id: int | None) -> str | None:
    """Stable across exports and projects, meaningless without SECRET_KEY."""
    if user_id is None:
        return None
    digest = hmac.new(settings.SECRET_KEY.encode(), f"annotator:{user_id}".encode(), hashlib.sha256)
    return "a_" + digest.hexdigest()[:16]


class AnnotatorLabels:
    """Annotator labels: HMAC pseudonyms by default, usernames when an admin asks for them."""

    def __init__(self, pseudonymous: bool):
        self.pseudonymous, self.names = pseudonymous, {}

    def __call__(self, user_id: int | None) -> str | None:
        if user_id is None or self.pseudonymous:
            return annotator_pseudonym(user_id)
        if user_id not in self.names:
            self.names[user_id] = get_user_model().objects.filter(pk=user_id).values_list("username", flat=True).first()
        return self.names[user_id]


# --- pair records built by Postgres (labeling.export_records.PG_RECORDS) ------------------------

def pair_json_sql(*, fmt: str, project: Project, filters: ExportFilters) -> str:
    """One SELECT of JSON lines; the subquery t is the ORM's own SQL for the filtered pairs."""
    columns = ["prompt_text", "prompt_messages", "chosen_text", "rejected_text"]
    pairs = pair_queryset(project=project, filters=filters)
    inner = pairs.values(**{c: F(PAIR_COLUMNS[c]) for c in columns}, pair_id=F("id"))
    sql, params = inner.query.sql_with_params()
    with connection.cursor() as cursor:
        inner_sql = cursor.mogrify(sql, params).decode()
    return (f"SELECT {PG_RECORDS[fmt]} FROM (SELECT t.pair_id AS id, t.prompt_text, t.prompt_messages, "
            f"t.chosen_text AS chosen, t.rejected_text AS rejected, {PG_PROMPT} AS prompt FROM ({inner_sql}) AS t) AS p")


@contextmanager
def ordered_plans() -> Iterator[None]:
    """Rows go out in id order. Left to itself the planner sorts the wide joined rows, which spills
    to disk at scale (100 MB per 100k rows); reading pairs in index order and joining by key does not.

    SET LOCAL outlives a released savepoint, so the old value is put back afterwards: a caller's
    transaction must not plan every later query with sorts disabled (cost 1e10 also triggers JIT).
    On an exception the enclosing atomic() rolls back, and the SET with it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_sort')")
        (previous,) = cursor.fetchone()
        cursor.execute("SET LOCAL enable_sort = off")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('enable_sort', %s, true)", [previous])


def pair_json_lines(*, fmt: str, project: Project, filters: ExportFilters) -> Iterator[list[str]]:
    """Batches of JSON lines built by Postgres (Postgres only), in id order."""
    sql = pair_json_sql(fmt=fmt, project=project, filters=filters)
    with transaction.atomic(), ordered_plans(), connection.chunked_cursor() as cursor:
        cursor.execute(sql)
        while rows := cursor.fetchmany(CHUNK):
            yield [line for (line,) in rows]


# --- export jobs the reaper looks at ---------------------------------------------------------

def export_jobs_stale_list(*, now: datetime | None = None) -> QuerySet[ExportJob]:
    """RUNNING jobs whose last heartbeat (or start) is older than PAIRWISE_HEARTBEAT_STALE: the worker died."""
    cutoff = (now or timezone.now()) - settings.PAIRWISE_HEARTBEAT_STALE
    running = ExportJob.objects.filter(status=ExportJob.Status.RUNNING)
    return (running.filter(heartbeat_at__lt=cutoff) | running.filter(heartbeat_at__isnull=True, started_at__lt=cutoff)
            | running.filter(heartbeat_at__isnull=True, started_at__isnull=True, created_at__lt=cutoff))


def export_jobs_queued_unpicked_list(*, now: datetime | None = None) -> QuerySet[ExportJob]:
    """QUEUED jobs whose task was last sent longer than PAIRWISE_QUEUED_RESEND_AFTER ago: no worker took it."""
    cutoff = (now or timezone.now()) - settings.PAIRWISE_QUEUED_RESEND_AFTER
    queued = ExportJob.objects.filter(status=ExportJob.Status.QUEUED)
    return queued.filter(sent_at__lt=cutoff) | queued.filter(sent_at__isnull=True, created_at__lt=cutoff)
