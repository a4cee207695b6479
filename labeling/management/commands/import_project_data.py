import io
import json
import tempfile
import zipfile
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from labeling.services.imports import FORMATS, PREFERENCES, DataImportError, project_data_import
from labeling.services.projects import project_create


def _folder_as_zip(folder: Path) -> io.IOBase:
    """A dataset folder (data/train-00000-of-00002.parquet, ...) is read as the zip of its files, so the
    command and an uploaded .zip go through the same reader. Stored, not compressed: only a wrapper."""
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    spool.seek(0)
    return spool


class Command(BaseCommand):
    help = ("Import prompts, prompts with responses, preference pairs, judgments or demonstrations: JSONL, JSON, "
            "CSV (optionally .gz), Parquet, a .zip or folder of a dataset, in any format of --format.")

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="A file, or a dataset folder (e.g. Hugging Face parquet files).")
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--create", action="store_true", help="Create the project if it does not exist.")
        parser.add_argument("--mode", default="rank", help="Mode for --create: pairwise, rank or demonstrate.")
        parser.add_argument("--k", type=int, default=None, help="Responses per task for --create.")
        parser.add_argument("--source", default="", help="Name of the external source for imported responses.")
        parser.add_argument("--format", dest="fmt", default="auto", choices=FORMATS,
                            help="Record format (default: detected per record).")
        parser.add_argument("--preferences", default=PREFERENCES[0], choices=PREFERENCES,
                            help="What preference pairs and ranked judgments become: 'judgments' (default) keeps them "
                                 "as judgments from their source, which fill their tasks' seats; 'open' makes each an "
                                 "open task for annotators, the recorded ranking kept as its hidden reference.")
        parser.add_argument("--count-for-retrain", action="store_true",
                            help="Let the imported judgments count toward retrain_min_judgments (default: an import "
                                 "never starts a scheduled training round).")
        parser.add_argument("--skip-invalid", action="store_true",
                            help="Import the valid records, leave out the others (default: all or nothing).")
        parser.add_argument("--rejects", type=Path, default=None,
                            help="With --skip-invalid: write the left-out lines here as JSONL (line, field, message, raw).")

    def handle(self, *args, file: Path, project: str, create: bool, mode: str, k: int | None, source: str,
               fmt: str, skip_invalid: bool, rejects: Path | None, preferences: str, count_for_retrain: bool,
               **opts):
        if not file.exists():
            raise CommandError(f"{file}: no such file or folder")
        if rejects and not skip_invalid:
            raise CommandError("--rejects needs --skip-invalid (without it nothing is imported when a line is bad)")
        target = Project.objects.filter(slug=project).first()
        if target is None:
            if not create:
                raise CommandError(f"project '{project}' does not exist (pass --create to make it)")
            fields = {"mode": mode, **({"responses_per_task": k} if k else {})}
            try:
                target = project_create(name=project, slug=project, **fields)
            except ValidationError as exc:
                raise CommandError(f"cannot create project: {exc}") from None
        name = f"{file.name}.zip" if file.is_dir() else file.name
        with (_folder_as_zip(file) if file.is_dir() else file.open("rb")) as stream:
            try:
                result = project_data_import(project=target, stream=stream, filename=name, source=source, fmt=fmt,
                                             skip_invalid=skip_invalid, preferences=preferences,
                                             count_for_retrain=count_for_retrain)
            except DataImportError as exc:
                lines = "\n".join(f"{file}:{issue.line}: {issue.field}: {issue.message}" for issue in exc.issues)
                raise CommandError(f"import failed, nothing was written:\n{lines}") from None
        summary = ", ".join(f"{key} {value}" for key, value in result.as_dict().items() if key != "batch_id")
        self.stdout.write(f"imported into {target.slug}: {summary}")
        self.stdout.write(f"{target.slug} has {result.project_open_tasks} tasks open for annotators")
        if result.rejects:
            if rejects:
                with rejects.open("w", encoding="utf-8") as out:
                    for issue in result.rejects:
                        out.write(json.dumps({"line": issue.line, "field": issue.field, "message": issue.message,
                                              "raw": issue.raw}, ensure_ascii=False) + "\n")
            where = f", written to {rejects}" if rejects else " (pass --rejects PATH to keep them)"
            self.stdout.write(f"skipped {len(result.rejects)} invalid lines{where}")
            for issue in result.rejects[:5]:
                self.stdout.write(f"  {file}:{issue.line}: {issue.field}: {issue.message}")
