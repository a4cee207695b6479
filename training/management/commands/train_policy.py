"""Queue a policy run (sft, dpo or ppo) for a project, with trainer config overrides such as LoRA:

    manage.py train_policy --project demo --kind dpo --config '{"lora_r": 16, "lora_alpha": 32}'

The run trains from the promoted policy (or --parent VERSION_ID) on a snapshot frozen at its start
(or --snapshot ID); a LoRA run makes an adapter version (merge it with the versions API or page).
"""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from training import plan
from training.management.cli import json_object, project_from_slug
from training.services.runs import RunAlreadyActive, run_request
from training.services.runspec import spec_error_text


class Command(BaseCommand):
    help = "Queue an SFT, DPO or PPO run for a project."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--kind", required=True, choices=sorted(plan.POLICY_KINDS), help="The policy trainer.")
        parser.add_argument("--config", default="", help='Trainer config overrides as JSON, e.g. \'{"lora_r": 16, "epochs": 2}\'.')
        parser.add_argument("--parent", type=int, default=None, help="Train from this policy version (default: the promoted one).")
        parser.add_argument("--snapshot", type=int, default=None, help="Train from this frozen training snapshot.")
        parser.add_argument("--include-chosen", action="store_true", help="SFT: also train on chosen responses.")
        parser.add_argument("--processes", type=int, default=None,
                            help="SFT and DPO: train on this many processes (default: PAIRWISE_TRAIN_PROCESSES; at most "
                                 "PAIRWISE_MAX_PROCESSES).")

    def handle(self, *args, project: str, kind: str, config: str, parent: int | None, snapshot: int | None,
               include_chosen: bool, processes: int | None, **options):
        found = project_from_slug(project)
        spec = {"version": parent, "config": json_object(config, "--config"), "snapshot": snapshot,
                "include_chosen": include_chosen or None, "processes": processes}
        try:
            run = run_request(project=found, kind=kind, trigger="command",
                              spec={k: v for k, v in spec.items() if v not in (None, {})})
        except RunAlreadyActive as exc:
            raise CommandError(exc.messages[0]) from None
        except ValidationError as exc:
            text = spec_error_text(exc)
            if parent is not None and "version" in getattr(exc, "error_dict", {}):  # --parent is the spec's version
                text = f"--parent {parent}: {text}"
            raise CommandError(text) from None
        self.stdout.write(f"queued {kind} run {run.pk}")
