"""Binary containers an import reads: Parquet files (a Hugging Face dataset's `data/train-*.parquet`)
and zip archives of a dataset folder. Both are checked against the size limit by their uncompressed
size before a row is read, as gzip is by bytes after decompression."""
from __future__ import annotations

import io
import zipfile
from typing import IO, Any, Iterator

PARQUET_BATCH = 2000


class FileUnreadable(Exception):
    """The file as a whole cannot be read (reported on the `file` field, line 0)."""


def parquet_rows(stream: IO[bytes], limit: int) -> Iterator[tuple[int, Any]]:
    """Each row as a dict, numbered from 1 in file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as exc:
        raise FileUnreadable(f"is not a readable Parquet file: {exc}") from None
    meta = parquet.metadata
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if size > limit:
        raise FileUnreadable(f"file is larger than the limit of {limit} bytes")
    line = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
        for row in batch.to_pylist():
            line += 1
            yield line, row


def _hidden(name: str) -> bool:
    """Tool metadata beside the data (.argilla/settings.json, __MACOSX/ resource forks, README.md)."""
    parts = name.split("/")
    return any(p.startswith((".", "__")) for p in parts) or name.lower().endswith((".md", ".txt", ".yaml", ".yml"))


def zip_members(stream: IO[bytes], limit: int) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, bytes) of each data file in the archive, in name order (train-00000 before train-00001)."""
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileUnreadable(f"is not a readable zip archive: {exc}") from None
    members = sorted((m for m in archive.infolist() if not m.is_dir() and not _hidden(m.filename)),
                     key=lambda m: m.filename)
    if sum(m.file_size for m in members) > limit:
        raise FileUnreadable(f"file is larger than the limit of {limit} bytes")
    if not members:
        raise FileUnreadable("the zip archive holds no data files")
    for member in members:
        try:
            data = archive.read(member)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise FileUnreadable(f"{member.filename}: unreadable in the zip archive: {exc}") from None
        yield member.filename, io.BytesIO(data)
