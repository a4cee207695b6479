"""What the benches that run the product's own loop share (bench/loop_quality.py, its --online rounds in
bench/loop_online.py and its judges in bench/loop_judge.py, bench/reward_transfer.py): reading
preference files, importing pairs into a project as judgments, training a run in process through the
services, and a reward run's params. Both loop benches import it; neither imports the other's
helpers, so the arrow goes one way (loop_quality -> loop_online -> loop_common; loop_quality ->
loop_judge -> loop_common)."""
from __future__ import annotations

import argparse
import io
import json
from typing import Any


class BenchError(SystemExit):
    """A clear message (exit status 1, as SystemExit gives any message), before anything trains."""

    def __init__(self, message: str):
        super().__init__(f"loop_quality: {message}")


def read_records(path: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """gzip or plain JSONL; each line must be an object with string `fields` (training.ml.preference_file)."""
    from training.ml.preference_file import read_preference_file

    try:
        return read_preference_file(path, fields)
    except (OSError, ValueError) as exc:
        raise BenchError(str(exc) if isinstance(exc, ValueError) else f"{path}: cannot read ({exc})") from None


def import_pairs(project, records: list[dict]) -> None:
    from labeling.services.imports import project_data_import

    lines = (json.dumps({"id": f"{i}:{r.get('id', '')}", "prompt": r["prompt"], "chosen": r["chosen"],
                         "rejected": r["rejected"]}) for i, r in enumerate(records))
    project_data_import(project=project, stream=io.BytesIO("\n".join(lines).encode()), filename="loop-quality.jsonl")


def train(project, kind: str, params: dict[str, Any]):
    from training.models import TrainingRun
    from training.services.policy import policy_train
    from training.services.reward import reward_model_train
    from training.services.runs import run_create

    run = run_create(project=project, kind=kind, params=params)
    version = (reward_model_train if kind == "reward" else policy_train)(run_id=run.pk, worker="bench/loop_quality.py")
    if version is None:
        raise SystemExit(f"loop_quality: the {kind} run failed: {TrainingRun.objects.get(pk=run.pk).error[:2000]}")
    return version


def reward_params_of(args: argparse.Namespace) -> dict[str, Any]:
    """A reward run's params for every reward model of the bench (project, judge, labeler)."""
    return {**({"threads": args.threads} if args.threads else {}), "config": {**args.reward_config, "seed": args.seed}}
