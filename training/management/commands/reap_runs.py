"""Fail runs, export jobs and import jobs whose heartbeat went stale (the services the every-minute beat tasks run)."""
from django.core.management.base import BaseCommand

from labeling.services.exports import export_jobs_reap_stale
from labeling.services.import_jobs import import_jobs_reap_stale
from training.services.runs import runs_reap_stale


class Command(BaseCommand):
    help = ("Mark RUNNING runs, export and import jobs with a stale heartbeat as failed and remove their half-written "
            "artifacts; send again the tasks of queued ones no worker picked up.")

    def handle(self, *args, **options):
        for what, reaped in (("run", runs_reap_stale()), ("export job", export_jobs_reap_stale()),
                             ("import job", import_jobs_reap_stale())):
            self.stdout.write(f"reaped {len(reaped)} {what}(s){': ' + ', '.join(map(str, reaped)) if reaped else ''}")
