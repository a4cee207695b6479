"""Evaluate a reward-model version on a ../shared/datasets-shaped file (gzip or plain JSONL of
{id, prompt, chosen, rejected}) and print {"pairs", "accuracy", "mean_margin", "log_loss", "length_baseline",
"by_length", "length_margin_corr", "accuracy_shorter_chosen", "accuracy_longer_chosen" (with their pair
counts), "ci95", "trained_prompts"} as JSON ("length_baseline" and "by_length": "the longer answer
wins" on the same pairs, and both accuracies by how much longer the chosen answer is; the margin's
correlation with the length difference and the accuracy where the chosen answer is shorter / longer
say whether the model only learned length; "trained_prompts":
how many of the file's prompts the version trained on). --record NAME also stores the result on the
version, shown on the training page and in its model card."""
from __future__ import annotations

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from training.selectors.versions import model_version_get
from training.services.reward import reward_model_evaluate


class Command(BaseCommand):
    help = "Print a reward model's pairwise accuracy, mean margin and log loss on a preference file, as JSON."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Our --version is the model version id, not Django's "print the version".
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--version", dest="version_id", type=int, required=True, help="ModelVersion id.")
        parser.add_argument("--data", required=True, help="gzip/plain JSONL of {id, prompt, chosen, rejected}.")
        parser.add_argument("--limit", type=int, default=0, help="Only the first N records (0 = all).")
        parser.add_argument("--record", default="", metavar="NAME",
                            help="Store the result on the version under NAME (e.g. 'hh-rlhf test'); the same NAME again replaces it.")

    def handle(self, *args, version_id: int, data: str, limit: int, record: str, **options):
        from training.ml.preference_file import PAIR_FIELDS, read_preference_file

        version = model_version_get(version_id=version_id)
        if version is None:
            raise CommandError(f"no model version {version_id}")
        try:
            records = read_preference_file(data, PAIR_FIELDS)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc) if isinstance(exc, ValueError) else f"cannot read {data}: {exc}") from None
        if limit:
            records = records[:limit]
        try:
            result = reward_model_evaluate(version=version, records=records, record_as=record, source=Path(data).name)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(json.dumps(result))
