"""Train a reward model for a project from its judgments: queue a run, or run it here with --sync.

With --sync the last line of output is the new version id (scripts read it with `tail -n1`).
"""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from training import plan
from training.management.cli import json_object, project_from_slug
from training.services.reward import reward_model_train
from training.services.runs import RunAlreadyActive, run_request
from training.services.runspec import spec_error_text


class Command(BaseCommand):
    help = "Queue a reward-model run for a project, or run it in the foreground with --sync."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--base", default="", help="The backbone: an installed shared reward base, by version id or name "
                                                       "(manage.py install_base_models --reward-base FOLDER installs one; "
                                                       "default: the newest installed, else MiniLM).")
        parser.add_argument("--sync", action="store_true", help="Train here, with a progress bar, instead of queueing.")
        parser.add_argument("--config", default="", help='RewardConfig overrides as JSON, e.g. \'{"epochs": 2, "lr": 1e-5}\'.')
        parser.add_argument("--no-promote", action="store_true", help="Register the version without promoting it.")
        parser.add_argument("--snapshot", type=int, default=None,
                            help="Train from this frozen training snapshot (default: freeze the live data now).")
        parser.add_argument("--include-gold", action="store_true", help="Also train on gold judgments.")
        parser.add_argument("--mix-snapshot", type=int, action="append", default=[], metavar="ID", dest="mix_snapshots",
                            help="Also train on another project's frozen training snapshot (its training side); repeatable. "
                                 "Public preference sets imported as projects make the reward model transfer further.")

    def handle(self, *args, project: str, base: str, sync: bool, config: str, no_promote: bool, snapshot: int | None,
               include_gold: bool, mix_snapshots: list[int], **options):
        found = project_from_slug(project)
        overrides = json_object(config, "--config")
        try:
            spec = {"config": overrides, "base": base or None, "promote": "never" if no_promote else None,
                    "snapshot": snapshot, "include_gold": include_gold, "mix_snapshots": mix_snapshots}
            run = run_request(project=found, kind=plan.REWARD, trigger="command", send=not sync,
                              spec={k: v for k, v in spec.items() if v not in (None, "", [], {}, False)})
        except RunAlreadyActive as exc:
            raise CommandError(exc.messages[0]) from None
        except ValidationError as exc:
            raise CommandError(spec_error_text(exc)) from None
        if not sync:
            self.stdout.write(f"queued reward run {run.pk}")
            return
        bar = ProgressBar(self.stderr)
        version = reward_model_train(run_id=run.pk, worker="manage.py train_reward_model", echo=bar)
        bar.close()
        run.refresh_from_db()
        if version is None:
            raise CommandError(f"reward run {run.pk} {run.status}: {run.error.splitlines()[0] if run.error else ''}")
        metrics = version.metrics
        self.stdout.write(
            f"run {run.pk} succeeded: val_accuracy={metrics.get('val_accuracy')} val_log_loss={metrics.get('val_log_loss')} "
            f"groups={metrics.get('groups')} seconds={metrics.get('seconds', 0):.1f} artifact={version.artifact_path}"
        )
        promotion = metrics.get("promotion") or {}
        if promotion:
            self.stdout.write(f"{'promoted' if version.promoted else 'kept as a candidate'}: {promotion.get('reason')}")
        self.stdout.write(str(version.pk))


class ProgressBar:
    """A one-line text bar on stderr (a Django OutputWrapper), so stdout stays parseable."""

    def __init__(self, out, width: int = 30):
        self.out, self.width, self.last = out, width, ""

    def __call__(self, fraction: float, metrics: dict) -> None:
        filled = int(self.width * fraction)
        extra = " ".join(f"{k}={metrics[k]:.4f}" for k in ("loss", "accuracy") if isinstance(metrics.get(k), float))
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:5.1f}% {extra}"
        if line != self.last:
            self.out.write(line.ljust(len(self.last)), ending="")
            self.out.flush()
            self.last = line

    def close(self) -> None:
        if self.last:
            self.out.write("", ending="\n")
