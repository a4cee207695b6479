"""`bench/loop_quality.py --online R`: R rounds of the product's own loop, with a simulated labeler.

Each round is what a deployment does, through its services and a real Celery worker:

1. The promoted policy writes K candidates per prompt (the candidate service; round 1 calls it here,
   later rounds get them from the previous round's last step).
2. The labeler, a reward model trained on --labeler-data in its own project (the "human"), ranks
   every task it is given by the assignment engine and submits through judgment_submit as an
   annotator user. Equal scores are ties.
3. The scheduled check (training.services.rounds.reward_retrain_check, what beat calls) sees enough
   new judgments and queues a round; the worker runs reward -> policy -> evaluation (promotion by
   the project's own reward model) -> candidates from the promoted policy.
4. The judge (the independent reward model of loop_quality) compares the round's policy with the
   base policy and with its parent on the evaluation prompts: same sampling settings and seed.

The labeler, the judge and the policy never share data: three projects, three files.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.loop_common import import_pairs, reward_params_of, train
from bench.report import progress

ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    """The URL of the database this process uses (under pytest, its test database)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        return f"sqlite:///{db['NAME']}"
    auth = (db.get("USER") or "") + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth + '@' if auth else ''}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class Worker:
    """A Celery worker process on the bench's database, broker and folders (one child: runs go one by one)."""

    def __init__(self, log_path: Path, *, threads: int = 0, device: str = ""):
        from django.conf import settings

        env = {**os.environ, "CONN_MAX_AGE": "0", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
               "DATABASE_URL": database_url(), "PAIRWISE_MODELS_DIR": str(settings.PAIRWISE_MODELS_DIR),
               "PAIRWISE_EXPORTS_DIR": str(settings.PAIRWISE_EXPORTS_DIR)}
        # Operator knobs are the worker's settings, never a round's step params (training.runspec).
        if threads:
            env["PAIRWISE_TRAIN_THREADS"] = str(threads)
        if device:
            env["PAIRWISE_DEVICE"] = device
        env.pop("CELERY_TASK_ALWAYS_EAGER", None)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "celery,training", "-c", "1",
             "-l", "info", "-n", f"loop-online-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        self._log.close()


def shared_reward_base(folder: str):
    """The reward backbone folder as an installed shared base (install_base_models does the same):
    a round's reward step names it by version id."""
    from training.models import ModelVersion
    from training.selectors.versions import base_version_get
    from training.services.versions import model_version_register

    path = Path(folder).resolve()
    return base_version_get(kind=ModelVersion.Kind.REWARD, artifact_path=str(path)) or model_version_register(
        project=None, kind=ModelVersion.Kind.REWARD, name=path.name, base=str(path), artifact_path=path,
        config={"role": "base"})


class Labeler:
    """Ranks a task's responses by a reward model's scores, best first; equal scores are one tie group."""

    def __init__(self, folder: str):
        from training.ml.reward.artifact import load_reward_model

        self.model, self.tokenizer, self.config = load_reward_model(folder, "cpu")

    def ranking(self, prompt: str, texts: dict[int, str]) -> list[list[int]]:
        from training.ml.evaluate import rm_scores

        ids = list(texts)
        scores = rm_scores(self.model, self.tokenizer, [prompt] * len(ids), [texts[i] for i in ids], self.config.max_length)
        groups: dict[float, list[int]] = {}
        for rid, value in sorted(zip(ids, scores), key=lambda x: -x[1]):
            groups.setdefault(round(value, 6), []).append(rid)
        return list(groups.values())


def label_open_tasks(*, project, annotator, labeler: Labeler) -> int:
    """The annotator takes tasks from the assignment engine until none is left, and submits the
    labeler's ranking for each. Returns the number of judgments."""
    from labeling.models import Response
    from labeling.services.assignment import Verdict, judgment_submit, task_assign_next

    done = 0
    while (nxt := task_assign_next(annotator=annotator, project=project)).assignment is not None:
        assignment = nxt.assignment
        texts = dict(Response.objects.filter(pk__in=assignment.shown_order).values_list("pk", "text"))
        ranking = labeler.ranking(assignment.task.prompt.text, {rid: texts[rid] for rid in assignment.shown_order})
        judgment_submit(assignment=assignment, annotator=annotator,
                        verdict=Verdict(ranking=ranking, time_spent_ms=1000), idempotency_key=f"online-{assignment.pk}")
        done += 1
    return done


def wait_round(*, project, first_run, worker: Worker, timeout: float) -> dict[str, Any]:
    from training.selectors.runs import pipeline_list

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rounds = [r for r in pipeline_list(project=project) if str(r["pipeline_id"]) == str(first_run.pipeline_id)]
        if rounds and rounds[0]["status"] in {"succeeded", "failed", "stopped"}:
            return rounds[0]
        if not worker.alive():
            raise SystemExit(f"loop_quality --online: the worker died:\n{worker.tail()}")
        time.sleep(2)
    raise SystemExit(f"loop_quality --online: the round did not finish in {timeout:.0f} s:\n{worker.tail()}")


def judge_versions(*, versions: dict[str, str], judge_dir: str, prompts: list[str], max_new_tokens: int,
                   batch_size: int, seed: int) -> dict[str, dict[str, list]]:
    """Each policy folder answers every prompt once (temperature 1, the same seed for each); the
    judge scores every answer. {name: {"responses", "scores", "tokens"}}."""
    from training.ml.common import set_seed
    from training.ml.evaluate import respond, rm_scores
    from training.ml.reward.artifact import load_reward_model
    from training.ml.text import DEFAULT_SYSTEM_PROMPT, load_policy

    answers = {}
    for name, folder in versions.items():
        model, tokenizer = load_policy(folder, "cpu")
        set_seed(seed)
        texts, _ = respond(model.eval(), tokenizer, prompts, 1.0, max_new_tokens, batch_size, DEFAULT_SYSTEM_PROMPT, "fp32")
        answers[name] = {"responses": texts,
                         "tokens": [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]}
        del model
    rm, rm_tok, rm_config = load_reward_model(judge_dir, "cpu")
    for entry in answers.values():
        entry["scores"] = rm_scores(rm, rm_tok, prompts, entry["responses"], rm_config.max_length)
    return answers


def duel(answers: dict[str, dict[str, list]], ours: str, theirs: str, seed: int) -> dict[str, Any]:
    from training.ml.evaluate import length_controlled_win_rate, outcomes_of, win_rate_interval

    outcomes = outcomes_of(answers[ours]["scores"], answers[theirs]["scores"])
    diffs = [a - b for a, b in zip(answers[ours]["tokens"], answers[theirs]["tokens"])]
    return {"win_rate": sum(outcomes) / len(outcomes), "win_rate_ci95": list(win_rate_interval(outcomes, seed=seed)),
            "length_controlled_win_rate": length_controlled_win_rate(outcomes, diffs),
            "length_ratio": sum(answers[ours]["tokens"]) / max(sum(answers[theirs]["tokens"]), 1)}


def online_rounds(*, args, base, judge, prompts: list[str], train_prompts: list[str],
                  labeler_records: list[dict]) -> dict[str, Any]:
    """The --online report: {"labeler_val_accuracy", "rounds": [{round, judgments, policy_version,
    promoted, vs_base, vs_parent, own_rm_win_rate, seconds}]}. The labeler's reward model is trained
    in process, like the judge (bench.loop_common.train)."""
    from django.contrib.auth import get_user_model

    from labeling.services.imports import project_data_import
    from labeling.services.projects import membership_set, project_create
    from training.models import TrainingRun
    from training.services.candidates import candidates_generate
    from training.services.rounds import reward_retrain_check
    from training.services.runs import run_create

    tag = uuid.uuid4().hex[:8]
    labeler_project = project_create(name=f"online labeler {tag}", slug=f"online-labeler-{tag}", mode="pairwise")
    import_pairs(labeler_project, labeler_records)
    reward_params = reward_params_of(args)
    labeler_rm = train(labeler_project, "reward", reward_params)
    labeler = Labeler(labeler_rm.artifact_path)

    per_round = args.online_prompts
    # The scheduled check fires on any new judgment: a prompt whose K samples repeat makes no task,
    # so a round may hold fewer than per_round judgments.
    project = project_create(name=f"online loop {tag}", slug=f"online-{tag}", mode="rank",
                             responses_per_task=args.online_k, overlap=1, gold_rate=0.0,
                             gen_max_new_tokens=args.max_new_tokens, retrain_min_judgments=1,
                             # every round's reward model judges its policy, as when the README's figures were measured
                             reward_promote_min_heldout_groups=0)
    body = "\n".join(json.dumps({"id": f"online{i}", "prompt": p}) for i, p in enumerate(train_prompts))
    project_data_import(project=project, stream=io.BytesIO(body.encode()), filename="online-prompts.jsonl")
    annotator = get_user_model().objects.create_user(username=f"labeler-{tag}")
    membership_set(project=project, user=annotator, role="annotator")

    # The round's step params are a request (training.runspec): threads and device go to the worker's
    # settings, and the reward backbone is named as an installed shared base, not by its folder.
    device = args.reward_config.get("device") or args.policy_config.get("device") or ""

    def requestable(config: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k != "device"}

    reward_step: dict[str, Any] = {"config": requestable(reward_params["config"])}
    if args.reward_base:
        reward_step["base"] = shared_reward_base(args.reward_base).pk
    step_params = {
        "reward": reward_step,
        args.policy: {"config": requestable({**args.policy_config, "seed": args.seed})},
        "evaluate": {"max_prompts": 16, "max_new_tokens": 64},
        "candidates": {"max_prompts": per_round, "batch_size": args.batch_size},
    }
    first = run_create(project=project, kind="candidates", params={"trigger": "bench", "max_prompts": per_round,
                                                                    "batch_size": args.batch_size})
    candidates_generate(run_id=first.pk, worker="bench/loop_online.py")

    worker = Worker(Path(args.online_log), threads=args.threads, device=device)
    report: dict[str, Any] = {"labeler_val_accuracy": labeler_rm.metrics.get("val_accuracy"), "rounds": []}
    versions = {"base": base.artifact_path}
    try:
        parent_name = "base"
        for number in range(1, args.online + 1):
            clock = time.perf_counter()
            judged = label_open_tasks(project=project, annotator=annotator, labeler=labeler)
            labeled = time.perf_counter() - clock
            run = reward_retrain_check(project_id=project.pk, policy_kind=args.policy,
                                       auto_promote_margin=args.promote_margin, step_params=step_params)
            if run is None:
                raise SystemExit(f"loop_quality --online: round {number} did not start ({judged} judgments)")
            finished = wait_round(project=project, first_run=run, worker=worker, timeout=args.online_timeout)
            runs = {r.kind: r for r in TrainingRun.objects.filter(pipeline_id=run.pipeline_id)}
            if finished["status"] != "succeeded":
                raise SystemExit(f"loop_quality --online: round {number} {finished['status']}: "
                                 + "; ".join(f"{k}: {r.status} {r.error[-500:]}" for k, r in runs.items()))
            policy = runs[args.policy].result_version
            name = f"round{number}"
            versions[name] = policy.artifact_path
            trained = time.perf_counter() - clock - labeled
            answers = judge_versions(versions={k: versions[k] for k in {"base", parent_name, name}},
                                     judge_dir=judge.artifact_path, prompts=prompts,
                                     max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed)
            evaluation = policy.metrics.get("evaluation", {})
            promotion = (runs["evaluate"].params or {}).get("promotion", {})
            report["rounds"].append({
                "round": number, "judgments": judged, "policy_version": policy.pk, "parent": parent_name,
                "pairs": (runs[args.policy].params or {}).get("pairs"),
                "promoted": bool(promotion.get("promoted")), "promotion": promotion.get("reason"),
                "own_rm_win_rate": evaluation.get("win_rate_vs_parent"),
                "vs_base": duel(answers, name, "base", args.seed),
                "vs_parent": duel(answers, name, parent_name, args.seed),
                "seconds": {"label": labeled, "round": trained, "judge": time.perf_counter() - clock - labeled - trained},
            })
            progress(report["rounds"][-1])
            if promotion.get("promoted"):
                parent_name = name
    finally:
        worker.stop()
    return report
