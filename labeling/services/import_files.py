"""Binary containers an import reads: Parquet files (a Hugging Face dataset's `data/train-*.parquet`)
and zip archives of a dataset folder. Every member of a zip spends the same byte budget
(labeling.upload_limits) as it is read, after decompression, .gz members included; Parquet is checked
by its declared uncompressed size before a row is read, then spends what each batch holds."""
from __future__ import annotations

import shutil
import tempfile
import zipfile
from typing import IO, Any, Iterator

from labeling.upload_limits import ByteBudget

PARQUET_BATCH = 2000
SPOOL_BYTES = 8 * 1024 * 1024  # a Parquet member is copied out to seek in; larger ones go to disk


class FileUnreadable(Exception):
    """The file as a whole cannot be read (reported on the `file` field, line 0)."""


def parquet_rows(stream: IO[bytes], budget: ByteBudget) -> Iterator[tuple[int, Any]]:
    """Each row as a dict, numbered from 1 in file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as exc:
        raise FileUnreadable(f"is not a readable Parquet file: {exc}") from None
    meta = parquet.metadata
    budget.check(sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)))
    line = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
        budget.spend(batch.nbytes)  # what was decoded, whatever the metadata declared
        for row in batch.to_pylist():
            line += 1
            yield line, row


def _hidden(name: str) -> bool:
    """Tool metadata beside the data (.argilla/settings.json, __MACOSX/ resource forks, README.md)."""
    parts = name.split("/")
    return any(p.startswith((".", "__")) for p in parts) or name.lower().endswith((".md", ".txt", ".yaml", ".yml"))


def zip_members(stream: IO[bytes], budget: ByteBudget) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, stream) of each data file in the archive, in name order (train-00000 before train-00001),
    each opened as the previous one is done: the caller reads it through the shared budget."""
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileUnreadable(f"is not a readable zip archive: {exc}") from None
    members = sorted((m for m in archive.infolist() if not m.is_dir() and not _hidden(m.filename)),
                     key=lambda m: m.filename)
    budget.check(sum(m.file_size for m in members))  # as declared: refused before inflating anything
    if not members:
        raise FileUnreadable("the zip archive holds no data files")
    for member in members:
        try:
            with archive.open(member) as data:
                yield member.filename, _seekable(data) if member.filename.lower().endswith(".parquet") else data
        except (zipfile.BadZipFile, EOFError) as exc:
            raise FileUnreadable(f"{member.filename}: unreadable in the zip archive: {exc}") from None


def _seekable(data: IO[bytes]) -> IO[bytes]:
    """Parquet reads its footer first: a copy to seek in (no larger than the member's declared size,
    which zipfile never reads past, and which the budget has checked)."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    shutil.copyfileobj(data, spool)
    spool.seek(0)
    return spool
