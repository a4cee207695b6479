"""`manage.py check_integrity [--project SLUG] [--json]`: exit 0 and "ok", or 1 and the problems."""
import json

from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from labeling.selectors.integrity import integrity_problems


class Command(BaseCommand):
    help = "Check counters, seats, judgments and preference pairs against the rows (read-only)."

    def add_arguments(self, parser):
        parser.add_argument("--project", help="Project slug (soft-deleted ones too); all projects by default.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        project = None
        if options["project"]:
            project = Project.objects.filter(slug=options["project"]).first()
            if project is None:
                raise CommandError(f"no project {options['project']!r}")
        problems = integrity_problems(project=project)
        if options["json"]:
            self.stdout.write(json.dumps({"ok": not problems, "problems": [p.as_dict() for p in problems]}))
        elif problems:
            self.stdout.write("\n".join(str(p) for p in problems))
        else:
            self.stdout.write("ok")
        if problems:
            raise CommandError(f"{len(problems)} integrity problem(s)", returncode=1)
