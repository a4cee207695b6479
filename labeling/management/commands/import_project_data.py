from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from labeling.services.imports import DataImportError, project_data_import
from labeling.services.projects import project_create


class Command(BaseCommand):
    help = "Import prompts, prompts with responses, preference pairs or demonstrations (JSONL, JSONL.gz, CSV)."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--create", action="store_true", help="Create the project if it does not exist.")
        parser.add_argument("--mode", default="rank", help="Mode for --create: pairwise, rank or demonstrate.")
        parser.add_argument("--k", type=int, default=None, help="Responses per task for --create.")
        parser.add_argument("--source", default="", help="Name of the external source for imported responses.")

    def handle(self, *args, file: Path, project: str, create: bool, mode: str, k: int | None, source: str, **opts):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        target = Project.objects.filter(slug=project).first()
        if target is None:
            if not create:
                raise CommandError(f"project '{project}' does not exist (pass --create to make it)")
            fields = {"mode": mode, **({"responses_per_task": k} if k else {})}
            try:
                target = project_create(name=project, slug=project, **fields)
            except ValidationError as exc:
                raise CommandError(f"cannot create project: {exc}") from None
        with file.open("rb") as stream:
            try:
                result = project_data_import(project=target, stream=stream, filename=file.name, source=source)
            except DataImportError as exc:
                lines = "\n".join(f"{file}:{issue.line}: {issue.field}: {issue.message}" for issue in exc.issues)
                raise CommandError(f"import failed, nothing was written:\n{lines}") from None
        summary = ", ".join(f"{key} {value}" for key, value in result.as_dict().items() if key != "batch_id")
        self.stdout.write(f"imported into {target.slug}: {summary}")
