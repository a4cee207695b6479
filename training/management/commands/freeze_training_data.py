"""Freeze a project's training data into a snapshot (training.dataset's JSONL file plus its
manifest) and print its id, for `train_reward_model --snapshot ID` or the API's `snapshot`."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling.label_models import LABEL_MODEL_CHOICES, LABEL_TARGETS
from training.dataset import DATA_SOURCES, HUMAN_SOURCES
from training.management.cli import json_object, project_from_slug
from training.selectors.data import training_filters
from training.services.snapshots import training_snapshot_create


class Command(BaseCommand):
    help = "Freeze a project's training data (prompts, demonstrations, live judgments) into a snapshot; prints its id last."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--filters", default="", help='Export filters as JSON, e.g. \'{"date_from": "2026-01-01"}\'.')
        parser.add_argument("--include-gold", action="store_true", help="Keep gold judgments (left out by default).")
        parser.add_argument("--label-model", choices=LABEL_MODEL_CHOICES, default="none",
                            help="One consensus record per task from this label model instead of every judgment.")
        parser.add_argument("--label-targets", choices=LABEL_TARGETS, default="soft",
                            help="With --label-model: the posterior as soft targets, or only the consensus ranking.")
        parser.add_argument("--sources", choices=DATA_SOURCES, default=HUMAN_SOURCES,
                            help="Whose judgments: people's (and imported datasets'), machine annotators', or both.")
        parser.add_argument("--machine-weight", type=float, default=None,
                            help="With --sources both: each machine judgment's weight in the reward loss, 0..1 (default 1).")

    def handle(self, *args, project: str, filters: str, include_gold: bool, label_model: str, label_targets: str,
               sources: str, machine_weight: float | None, **options):
        found = project_from_slug(project)
        given = json_object(filters, "--filters")
        params = {"filters": given, "include_gold": include_gold, "label_model": label_model, "label_targets": label_targets,
                  "sources": sources, "machine_weight": machine_weight}
        try:
            snapshot = training_snapshot_create(project=found, filters=training_filters(params=params, project=found))
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"snapshot {snapshot.pk}: {snapshot.rows} rows, sha256 {snapshot.sha256}, {snapshot.path}")
        self.stdout.write(str(snapshot.pk))
