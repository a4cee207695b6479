"""Create every periodic schedule with django-celery-beat. Idempotent: run it again after adding
projects; existing schedules (and any edits made to them in the admin) are left as they are.

The per-project schedule runs a training round when enough new judgments exist:
reward retrain -> policy retrain -> evaluation -> optional auto-promotion -> candidate generation.
The pipeline options below go into the kwargs of the schedules this call creates."""
import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from training.services.runspec import spec_error_text
from training.services.schedules import schedules_setup


class Command(BaseCommand):
    help = ("Create the beat schedules: the stale-run reaper every minute and a per-project training round "
            "(reward -> policy -> evaluation -> auto-promotion -> candidates).")

    def add_arguments(self, parser):
        parser.add_argument("--check-minutes", type=int, default=0,
                            help="Minutes between retrain checks for newly created schedules (default: settings or 5).")
        parser.add_argument("--policy-kind", default="", choices=["", "sft", "dpo", "ppo"],
                            help="Policy step of the round (default: settings.PAIRWISE_PIPELINE_POLICY_KIND or dpo).")
        parser.add_argument("--auto-promote-margin", type=float, default=None,
                            help="Promote a new policy that beats its parent by this margin (default: manual promotion).")
        parser.add_argument("--promote-metric", default="", choices=["", "win_rate", "reward"],
                            help="win_rate: RM win rate >= 0.5 + margin; reward: mean RM score gain >= margin.")
        parser.add_argument("--step-params", default="",
                            help='Per-step run params as JSON, e.g. \'{"dpo": {"config": {"epochs": 2}}}\'.')

    def handle(self, *args, check_minutes: int, policy_kind: str, auto_promote_margin, promote_metric: str,
               step_params: str, **options):
        pipeline = {}
        if policy_kind:
            pipeline["policy_kind"] = policy_kind
        if auto_promote_margin is not None:
            pipeline["auto_promote_margin"] = auto_promote_margin
        if promote_metric:
            pipeline["promote_metric"] = promote_metric
        if step_params:
            try:
                pipeline["step_params"] = json.loads(step_params)
            except json.JSONDecodeError as exc:
                raise CommandError(f"--step-params is not JSON: {exc}") from None
        try:
            result = schedules_setup(check_minutes=check_minutes or None, pipeline_options=pipeline or None)
        except ValidationError as exc:
            raise CommandError(spec_error_text(exc)) from None
        self.stdout.write(
            f"schedules: {result['created']} created, {result['existing']} already there, "
            f"{result['updated']} given the options, {result['disabled']} disabled (deleted projects)"
        )
