"""Getting preferences out: one service behind the API, the admin action and `manage.py export_preferences`.

Formats: trl, trl-chat, hh, ranked (InstructGPT K-way, one line per judgment), judgments (raw),
parquet (of trl), csv, and Hugging Face dataset folders (hf, hf-chat, hf-ranked: a folder from
the CLI, a .zip over HTTP and in files). The reads (filters, querysets, row batches) are in
labeling.selectors.exports, the records in labeling.export_records; this module writes them out:
streamed chunks, files, snapshots and background jobs. On Postgres the JSONL pair formats are built
by Postgres itself and copied out with COPY, since JSON encoding in Python's loop was the
bottleneck (4.1x the raw COPY with json, 2.4x with orjson).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import tempfile
import uuid
import zipfile
from contextlib import closing
from dataclasses import replace
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from config.db import db_retry, heartbeats
from config.jobs import JobReaper, job_claim, jobs_reap_stale
from config.tasks_send import task_send_on_commit
from labeling.export_records import (
    CSV_COLUMNS, HF_FORMATS, HF_SPLITS, JUDGMENT_FORMATS, SQL_JSON_FORMATS, csv_row, extension, hf_data_file,
    hf_dataset_card, jsonl, judgment_record, pair_record, ranked_record,
)
from labeling.models import DatasetSnapshot, ExportJob, Project
from labeling.selectors.exports import (
    AnnotatorLabels, ExportFilters, export_count, export_jobs_queued_unpicked_list, export_jobs_stale_list,
    format_validate, judgment_rows, on_postgres, ordered_plans, pair_json_lines, pair_json_sql, pair_rows,
    response_texts,
)

logger = logging.getLogger(__name__)

PARQUET_ROW_GROUP = 10_000
EXPORT_TASK = "labeling.tasks.export_run"


@dataclass
class ExportResult:
    rows: int = 0
    bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# --- chunks of a text format -----------------------------------------------------------------

def _sql_json(fmt: str, filters: ExportFilters) -> bool:
    """Whether Postgres builds the JSON lines itself: not when they carry a label model's posterior,
    which Python adds from the stored fit."""
    return fmt in SQL_JSON_FORMATS and on_postgres() and filters.label_model == "none"


def _pair_jsonl(fmt: str, project: Project, filters: ExportFilters) -> Iterator[tuple[bytes, int]]:
    if _sql_json(fmt, filters):
        for lines in pair_json_lines(fmt=fmt, project=project, filters=filters):
            yield "".join(line + "\n" for line in lines).encode(), len(lines)
        return
    for batch in pair_rows(project=project, filters=filters):
        yield jsonl([pair_record(fmt, row) for row in batch]), len(batch)


def _csv(project: Project, filters: ExportFilters) -> Iterator[tuple[bytes, int]]:
    label = AnnotatorLabels(filters.pseudonymous)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for batch in pair_rows(project=project, filters=filters):
        writer.writerows(csv_row(row, label(row["annotator_id"])) for row in batch)
        yield buffer.getvalue().encode(), len(batch)
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode(), 0


def _judgment_lines(fmt: str, project: Project, filters: ExportFilters) -> Iterator[tuple[bytes, int]]:
    label = AnnotatorLabels(filters.pseudonymous)
    for batch in judgment_rows(project=project, filters=filters):
        if fmt == "judgments":
            records = [judgment_record(row, label(row["annotator_id"])) for row in batch]
        else:
            responses = response_texts(ids={rid for row in batch for group in row["ranking"] for rid in group})
            records = [ranked_record(row, label(row["annotator_id"]), responses) for row in batch]
        yield jsonl(records), len(batch)


def export_chunks(*, project: Project, fmt: str, filters: ExportFilters) -> Iterator[tuple[bytes, int]]:
    """(bytes, rows) chunks of a text format, for HTTP streaming and for files alike."""
    format_validate(fmt=fmt, filters=filters)
    if fmt in SQL_JSON_FORMATS:
        return _pair_jsonl(fmt, project, filters)
    if fmt == "csv":
        return _csv(project, filters)
    if fmt in JUDGMENT_FORMATS:
        return _judgment_lines(fmt, project, filters)
    raise ValidationError({"format": f"{fmt} is written to a file, not streamed as lines"})


PREVIEW_LINES = 5


def export_preview(*, project: Project, fmt: str, filters: ExportFilters, lines: int = PREVIEW_LINES) -> tuple[str, list[str]]:
    """The first lines of an export as the console shows them before a download: (shape, lines). File
    formats (Parquet, HF folders) show the rows of the text format they are written from."""
    shape = {"parquet": "trl", **HF_FORMATS}.get(fmt, fmt)
    out: list[str] = []
    with closing(export_chunks(project=project, fmt=shape, filters=filters)) as chunks:  # closes the cursor early
        for chunk, _ in chunks:
            out += chunk.decode().splitlines()
            if len(out) >= lines + 1:  # a CSV header counts as a line
                break
    return shape, out[: lines + (1 if shape == "csv" else 0)]


# --- one export to a file object -------------------------------------------------------------

def _parquet(project: Project, filters: ExportFilters, out: IO[bytes]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [("id", pa.int64()), ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())]
    if filters.label_model != "none":
        columns.append(("label_posterior", pa.float64()))
    schema = pa.schema(columns)
    rows = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        pending: list[dict[str, Any]] = []
        for batch in pair_rows(project=project, filters=filters):
            pending.extend(pair_record("trl", row) for row in batch)
            if len(pending) >= PARQUET_ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(pending, schema=schema))
                rows, pending = rows + len(pending), []
        if pending or not rows:
            writer.write_table(pa.Table.from_pylist(pending, schema=schema))
            rows += len(pending)
    return rows


def _hf_records(fmt: str, project: Project, filters: ExportFilters) -> Iterator[list[dict[str, Any]]]:
    shape = HF_FORMATS[fmt]
    if shape == "ranked":
        for data, _ in _judgment_lines("ranked", project, filters):
            yield [json.loads(line) for line in data.splitlines()]  # the same records as the ranked JSONL
        return
    for batch in pair_rows(project=project, filters=filters):
        yield [pair_record(shape, row) for row in batch]


def hf_dataset_write(*, project: Project, fmt: str, filters: ExportFilters, folder: Path) -> ExportResult:
    """Write a Hugging Face dataset folder: data/{train,test}-00000-of-00001.parquet (the product's
    split, or only the split the filters ask for; an empty split is left out) and README.md with
    `configs`, so `datasets.load_dataset(folder)` loads it. Rows per split are in result.extra."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    format_validate(fmt=fmt, filters=filters)
    folder = Path(folder)
    counts: dict[str, int] = {}
    for split in HF_SPLITS:
        if filters.split and filters.split != split:
            continue
        records = [r for batch in _hf_records(fmt, project, replace(filters, split=split)) for r in batch]
        if not records:
            continue
        (folder / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(records), folder / hf_data_file(split), compression="zstd",
                       row_group_size=PARQUET_ROW_GROUP)
        counts[split] = len(records)
    if not counts:
        raise ValidationError({"format": "no rows to write a dataset from"})
    card = hf_dataset_card(fmt=fmt, project=project.name, rows=counts, filters=filters.as_dict())
    (folder / "README.md").write_text(card, encoding="utf-8")
    return ExportResult(rows=sum(counts.values()), extra={"splits": counts})


def _hf_zip(fmt: str, project: Project, filters: ExportFilters, out: IO[bytes]) -> ExportResult:
    with tempfile.TemporaryDirectory() as tmp:
        result = hf_dataset_write(project=project, fmt=fmt, filters=filters, folder=Path(tmp))
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:  # parquet is compressed
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(tmp).as_posix())
    return result


def _copy_pairs(fmt: str, project: Project, filters: ExportFilters, out: IO[bytes]) -> int:
    """COPY of JSON lines Postgres builds. CSV mode with quote and delimiter bytes JSON always escapes
    (\\x01, \\x02) passes each line through untouched; text mode would double every backslash."""
    sql = pair_json_sql(fmt=fmt, project=project, filters=filters)
    with transaction.atomic(), ordered_plans(), connection.cursor() as cursor:
        cursor.cursor.copy_expert(
            f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')", out, size=1 << 16)
        return cursor.cursor.rowcount


def preferences_export(
    *, project: Project, fmt: str, filters: ExportFilters, out: IO[bytes],
    on_rows: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write one export to a binary file object; on_rows(n) reports progress as rows go out."""
    format_validate(fmt=fmt, filters=filters)
    if fmt == "parquet":
        return ExportResult(rows=_parquet(project, filters, out))
    if fmt in HF_FORMATS:
        return _hf_zip(fmt, project, filters, out)
    if _sql_json(fmt, filters):
        return ExportResult(rows=_copy_pairs(fmt, project, filters, _RowCounter(out, on_rows) if on_rows else out))
    result = ExportResult()
    for data, rows in export_chunks(project=project, fmt=fmt, filters=filters):
        out.write(data)
        result.rows, result.bytes = result.rows + rows, result.bytes + len(data)
        if on_rows:
            on_rows(result.rows)
    return result


class _RowCounter:
    """A file wrapper for COPY, which writes one row per call: counts rows for progress reports."""

    def __init__(self, out: IO[bytes], on_rows: Callable[[int], None], every: int = 20_000):
        self.out, self.on_rows, self.every, self.rows = out, on_rows, every, 0

    def write(self, data: bytes) -> int:
        self.rows += 1
        if self.rows % self.every == 0:
            self.on_rows(self.rows)
        return self.out.write(data)


# --- files, snapshots, jobs ------------------------------------------------------------------

def export_path(*, project: Project, stem: str, fmt: str, create: bool = True) -> Path:
    folder = Path(settings.PAIRWISE_EXPORTS_DIR) / project.slug
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}.{extension(fmt)}"


def partial_path(path: Path) -> Path:
    """Where export_to_file writes before the rename."""
    return path.with_name(path.name + ".part")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def export_to_file(
    *, project: Project, fmt: str, filters: ExportFilters, path: Path,
    on_rows: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write next to the target and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        with open(partial, "wb", buffering=1 << 20) as out:
            result = preferences_export(project=project, fmt=fmt, filters=filters, out=out, on_rows=on_rows)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    result.bytes = path.stat().st_size
    return result


def dataset_snapshot_freeze(
    *, project: Project, fmt: str, filters: ExportFilters, path: Path, rows: int, user: AbstractUser | None,
) -> DatasetSnapshot:
    """Record a written export as a snapshot, with a manifest beside the file."""
    sha256 = file_sha256(path)
    snapshot = DatasetSnapshot.objects.create(
        project=project, format=fmt, filters=filters.as_dict(), path=str(path), rows=rows, sha256=sha256,
        created_by=user,
    )
    manifest = {
        "snapshot_id": snapshot.pk, "project": project.slug, "format": fmt, "file": path.name, "rows": rows,
        "bytes": path.stat().st_size, "sha256": sha256, "filters": filters.as_dict(),
        "created_by": user.get_username() if user else None, "created_at": snapshot.created_at.isoformat(),
    }
    manifest_path(snapshot=snapshot).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return snapshot


def manifest_path(*, snapshot: DatasetSnapshot) -> Path:
    return Path(snapshot.path).with_name(Path(snapshot.path).name + ".manifest.json")


def dataset_snapshot_create(
    *, project: Project, fmt: str, filters: ExportFilters, user: AbstractUser | None = None,
) -> DatasetSnapshot:
    stem = f"snapshot-{timezone.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    path = export_path(project=project, stem=stem, fmt=fmt)
    result = export_to_file(project=project, fmt=fmt, filters=filters, path=path)
    return dataset_snapshot_freeze(project=project, fmt=fmt, filters=filters, path=path, rows=result.rows, user=user)


def export_job_create(
    *, project: Project, fmt: str, filters: ExportFilters, user: AbstractUser | None = None, snapshot: bool = False,
) -> ExportJob:
    """Queue a large export; the worker writes the file and reports progress on the job."""
    format_validate(fmt=fmt, filters=filters)
    with transaction.atomic():
        job = ExportJob.objects.create(
            project=project, format=fmt, filters={**filters.as_dict(), "snapshot": snapshot}, created_by=user)
        _export_job_send(job)
    return job


def _export_job_send(job: ExportJob) -> None:
    """Send the job's task after the commit, and record the send (for the reaper, config.jobs)."""
    job.sent_at, job.sends = timezone.now(), job.sends + 1
    ExportJob.objects.filter(pk=job.pk).update(sent_at=job.sent_at, sends=job.sends)
    task_send_on_commit(EXPORT_TASK, job.pk)


def _progress_writer() -> Callable[[int, float, int], None]:
    """Progress must be visible while the export's own connection is busy (COPY) or inside its
    transaction, so on Postgres it goes through a second, autocommit connection."""
    table = ExportJob._meta.db_table
    if not on_postgres():
        return lambda job_id, progress, rows: ExportJob.objects.filter(pk=job_id).update(progress=progress, rows=rows)
    side = connection.get_new_connection(connection.get_connection_params())
    side.autocommit = True

    def write(job_id: int, progress: float, rows: int) -> None:
        with side.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET progress = %s, rows = %s WHERE id = %s", [progress, rows, job_id])

    write.close = side.close  # type: ignore[attr-defined]
    return write


def _export_job_start(*, job_id: int) -> ExportJob | None:
    """The job, claimed for this worker (config.jobs.job_claim); None when there is nothing to do."""
    return job_claim(ExportJob, job_id=job_id, stale=export_jobs_stale_list, reset={"progress": 0.0, "rows": 0, "error": ""})


def _export_job_beat(job_id: int) -> bool:
    return ExportJob.objects.filter(pk=job_id, status=ExportJob.Status.RUNNING).update(heartbeat_at=timezone.now()) == 1


def export_run(*, job_id: int) -> ExportJob:
    """Run a queued export job, with heartbeats while it writes. Idempotent: a finished or failed
    job is left alone, and so is one a live worker is writing; one whose worker died restarts."""
    job = _export_job_start(job_id=job_id)
    if job is None:
        return ExportJob.objects.get(pk=job_id)
    options = dict(job.filters)
    freeze = bool(options.pop("snapshot", False))
    filters = ExportFilters.from_dict(options)
    write_progress = _progress_writer()
    path = export_path(project=job.project, stem=f"job-{job.pk}", fmt=job.format)
    try:
        with heartbeats(name=f"heartbeat-export-{job.pk}", beat=lambda: _export_job_beat(job.pk)):
            total = max(1, export_count(project=job.project, fmt=job.format, filters=filters))
            result = export_to_file(
                project=job.project, fmt=job.format, filters=filters, path=path,
                on_rows=lambda rows: write_progress(job.pk, min(0.99, rows / total), rows),
            )
            finished = db_retry(lambda: _export_job_succeed(job=job, path=path, rows=result.rows, freeze=freeze,
                                                            filters=filters), what=f"finishing export job {job.pk}")
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        db_retry(lambda: ExportJob.objects.filter(pk=job.pk, status=ExportJob.Status.RUNNING).update(
            status=ExportJob.Status.FAILED, error=error, finished_at=timezone.now()), what=f"failing export job {job.pk}")
        raise
    finally:
        getattr(write_progress, "close", lambda: None)()
    if not finished:  # reaped while it wrote (its heartbeats did not land): the job stays failed, no orphan file
        path.unlink(missing_ok=True)
    job.refresh_from_db()
    return job


def _export_job_succeed(*, job: ExportJob, path: Path, rows: int, freeze: bool, filters: ExportFilters) -> bool:
    """RUNNING -> SUCCEEDED with its snapshot, in one transaction; False when the job is no longer RUNNING."""
    with transaction.atomic():
        if not ExportJob.objects.select_for_update().filter(pk=job.pk, status=ExportJob.Status.RUNNING).exists():
            return False
        snapshot = None
        if freeze:
            snapshot = dataset_snapshot_freeze(project=job.project, fmt=job.format, filters=filters, path=path,
                                               rows=rows, user=job.created_by)
        ExportJob.objects.filter(pk=job.pk).update(
            status=ExportJob.Status.SUCCEEDED, progress=1.0, rows=rows, path=str(path), snapshot=snapshot,
            finished_at=timezone.now(), heartbeat_at=timezone.now())
    return True


def _export_job_part_remove(job: ExportJob) -> None:
    path = export_path(project=job.project, stem=f"job-{job.pk}", fmt=job.format, create=False)
    partial_path(path).unlink(missing_ok=True)


_EXPORT_REAPER = JobReaper(
    what="export", failed_status=ExportJob.Status.FAILED, stale=export_jobs_stale_list,
    unpicked=lambda now: export_jobs_queued_unpicked_list(now=now), send=lambda job: _export_job_send(job),
    cleanup=_export_job_part_remove,
)


def export_jobs_reap_stale() -> list[int]:
    """Fail RUNNING export jobs whose heartbeat went stale (the worker was killed: Celery acknowledged
    its task, so nothing else will move the job) and remove their `.part` files; send again the
    tasks of QUEUED jobs no worker picked up, failing them after PAIRWISE_QUEUED_MAX_AGE (config.jobs).
    Returns the failed ids. Run every minute by beat (labeling.tasks.export_jobs_reap_stale) and by
    manage.py reap_runs."""
    return jobs_reap_stale(_EXPORT_REAPER)


def export_stream_file(*, project: Project, fmt: str, filters: ExportFilters) -> IO[bytes]:
    """Parquet needs its footer written last, so over HTTP it goes through a temporary file on disk."""
    spool = tempfile.TemporaryFile()
    preferences_export(project=project, fmt=fmt, filters=filters, out=spool)
    spool.seek(0)
    return spool
