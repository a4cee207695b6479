"""`manage.py export_preferences --project SLUG --format trl --output out.jsonl [filters]`;
`--format hf|hf-chat|hf-ranked --output FOLDER` writes a Hugging Face dataset folder."""
import sys
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling.export_records import FORMATS, HF_FORMATS
from labeling.selectors.exports import CONSENSUS, ExportFilters
from labeling.selectors.projects import project_get_live
from labeling.services.exports import dataset_snapshot_create, hf_dataset_write, preferences_export


class Command(BaseCommand):
    help = "Export a project's preferences (trl, trl-chat, hh, ranked, judgments, parquet, csv, hf, hf-chat, hf-ranked)."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--format", default="trl", choices=FORMATS)
        parser.add_argument("--output", default="-", help="File path, or - for stdout (not for parquet); a folder for the hf formats.")
        parser.add_argument("--snapshot", action="store_true", help="Freeze as a DatasetSnapshot under the exports dir.")
        parser.add_argument("--date-from")
        parser.add_argument("--date-to")
        parser.add_argument("--annotator", help="Username.")
        parser.add_argument("--sources", help="Comma-separated response sources; both responses must match.")
        parser.add_argument("--model-versions", help="Comma-separated model version ids.")
        parser.add_argument("--judgment-source", help='"human" or an imported dataset name.')
        parser.add_argument("--min-agreement", type=float)
        parser.add_argument("--consensus", choices=CONSENSUS)
        parser.add_argument("--exclude-gold", action="store_true")
        parser.add_argument("--split", choices=["train", "test"])
        parser.add_argument("--test-fraction", type=float)
        parser.add_argument("--split-seed")
        parser.add_argument("--real-annotator-ids", action="store_true", help="Usernames instead of pseudonyms.")

    def handle(self, *args, **options):
        project = project_get_live(slug=options["project"])
        if project is None:
            raise CommandError(f"no project {options['project']!r}")
        keys = ["date_from", "date_to", "annotator", "sources", "model_versions", "judgment_source",
                "min_agreement", "consensus", "split", "test_fraction", "split_seed"]
        raw = {key: options[key] for key in keys}
        raw.update(exclude_gold=options["exclude_gold"], pseudonymous=not options["real_annotator_ids"])
        try:
            filters = ExportFilters.from_dict(raw)
            if options["snapshot"]:
                snapshot = dataset_snapshot_create(project=project, fmt=options["format"], filters=filters)
                self.stderr.write(f"snapshot {snapshot.pk}: {snapshot.rows} rows, sha256 {snapshot.sha256}, {snapshot.path}")
                return
            if options["format"] in HF_FORMATS:
                if options["output"] == "-":
                    raise CommandError("--format hf* writes a dataset folder: give --output FOLDER")
                result = hf_dataset_write(project=project, fmt=options["format"], filters=filters,
                                          folder=Path(options["output"]))
            elif options["output"] == "-":
                result = preferences_export(project=project, fmt=options["format"], filters=filters,
                                            out=sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                with open(options["output"], "wb", buffering=1 << 20) as out:
                    result = preferences_export(project=project, fmt=options["format"], filters=filters, out=out)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if options["verbosity"] >= 1:
            self.stderr.write(f"{result.rows} rows")
