"""Create every periodic schedule with django-celery-beat. Idempotent: run it again after adding
projects; existing schedules (and any edits made to them in the admin) are left as they are."""
from django.core.management.base import BaseCommand

from training import services


class Command(BaseCommand):
    help = "Create the beat schedules: the stale-run reaper every minute and a per-project retrain check."

    def add_arguments(self, parser):
        parser.add_argument("--check-minutes", type=int, default=0,
                            help="Minutes between retrain checks for newly created schedules (default: settings or 5).")

    def handle(self, *args, check_minutes: int, **options):
        result = services.schedules_setup(check_minutes=check_minutes or None)
        self.stdout.write(
            f"schedules: {result['created']} created, {result['existing']} already there, {result['disabled']} disabled "
            f"(deleted projects)"
        )
