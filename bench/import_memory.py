"""How much memory an import takes: a JSONL file of preference records imported through the product's
import service (the API's and the command's path) into a fresh project on the configured database
(Postgres: set DATABASE_URL; the database must be migrated).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/pairwise .venv/bin/python bench/import_memory.py --mb 100

The file ({id, prompt, chosen, rejected}, about 1 KB a line, every prompt distinct) is written into a
temporary folder first, so its own writing is not measured. The peak is the process's resident set
high-water mark during the import (reset before it through /proc/self/clear_refs where Linux allows,
and sampled every 5 ms besides). Prints JSON: file_mb, baseline_rss_mb (before the import),
peak_rss_mb, ratio ((peak - baseline) / file_mb; the target is at most 3), seconds, records.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.export_bench import text as _text  # noqa: E402  (the same filler words as the export bench)
from bench.report import emit  # noqa: E402

MB = 1024 * 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=100.0, help="Size of the generated JSONL file in MiB (default 100).")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.mb <= 0:
        p.error("--mb must be positive")
    return args


def write_file(path: Path, size_bytes: int, seed: int) -> int:
    """Preference records until the file holds size_bytes; returns how many lines."""
    rng, written, n = random.Random(seed), 0, 0
    with path.open("w", encoding="utf-8") as f:
        while written < size_bytes:
            line = json.dumps({"id": f"bench/{n}", "prompt": f"{n}: {_text(rng, 300)}?", "chosen": _text(rng, 400),
                               "rejected": _text(rng, 250)}) + "\n"
            f.write(line)
            written += len(line)
            n += 1
    return n


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


class PeakRss:
    """The resident set's peak while in the block: the kernel's high-water mark, reset on entry where
    /proc/self/clear_refs allows it, and a 5 ms sampler besides (for kernels that do not)."""

    def __enter__(self) -> "PeakRss":
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.sampled, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.sampled = max(self.sampled, rss_mb())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.sampled, rss_mb(), _status_kb("VmHWM") / 1024 if self.reset else 0.0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import django

    django.setup()
    from django.conf import settings

    from labeling.services.imports import project_data_import
    from labeling.services.projects import project_create

    with tempfile.TemporaryDirectory(prefix="import-memory-") as folder:
        path = Path(folder) / "bench.jsonl"
        records = write_file(path, int(args.mb * MB), args.seed)
        file_mb = path.stat().st_size / MB
        tag = uuid.uuid4().hex[:8]
        project = project_create(name=f"import memory {tag}", slug=f"import-memory-{tag}", mode="pairwise")
        baseline = rss_mb()
        clock = time.perf_counter()
        with path.open("rb") as stream, PeakRss() as peak:
            result = project_data_import(project=project, stream=stream, filename=path.name,
                                         max_bytes=max(settings.PAIRWISE_MAX_IMPORT_BYTES, path.stat().st_size))
        seconds = time.perf_counter() - clock
    return {"file_mb": round(file_mb, 2), "records": records, "judgments": result.judgments,
            "baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(peak.peak, 1),
            "ratio": round((peak.peak - baseline) / file_mb, 2), "seconds": round(seconds, 2)}


if __name__ == "__main__":
    emit(main(), indent=None)
