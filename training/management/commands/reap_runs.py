"""Fail runs whose heartbeat went stale (the same service the every-minute beat task runs)."""
from django.core.management.base import BaseCommand

from training.services.runs import runs_reap_stale


class Command(BaseCommand):
    help = "Mark RUNNING runs with a stale heartbeat as failed and remove their half-written artifacts."

    def handle(self, *args, **options):
        reaped = runs_reap_stale()
        self.stdout.write(f"reaped {len(reaped)} run(s){': ' + ', '.join(map(str, reaped)) if reaped else ''}")
