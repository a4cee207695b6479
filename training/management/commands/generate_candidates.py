"""Queue a candidate-generation run: the promoted policy samples K responses for prompts that have
no open task yet, and the worker turns them into comparison tasks."""
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from training import plan
from training.management.cli import project_from_slug
from training.services.runs import RunAlreadyActive, run_request
from training.services.runspec import spec_error_text


class Command(BaseCommand):
    help = "Queue candidate generation from the promoted policy for a project's prompts without open tasks."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--max-prompts", type=int, default=16, help="Prompts to sample for in this run.")

    def handle(self, *args, project: str, max_prompts: int, **options):
        found = project_from_slug(project)
        try:
            run = run_request(project=found, kind=plan.CANDIDATES, trigger="command", max_prompts=max_prompts)
        except RunAlreadyActive as exc:
            raise CommandError(exc.messages[0]) from None
        except ValidationError as exc:
            raise CommandError(spec_error_text(exc)) from None
        self.stdout.write(f"queued candidates run {run.pk}")
