"""One prompt split for the whole product (labeling.splits): every trainer (reward, SFT, DPO, PPO)
is run for real on a project and sees no prompt that evaluation holds out, evaluation answers
exactly the held-out prompts, and an export's `test` split is exactly that held-out set."""
from __future__ import annotations

import io
import json

import pytest

from labeling.models import Prompt
from labeling.services.imports import project_data_import
from labeling.splits import prompt_is_held_out
from tests.labeling.judging import export
from tests.training.conftest import DPO_FAST, EVAL_FAST, PPO_FAST, SFT_FAST, fast_params, policy_run
from training.ml import dpo, evaluate, ppo, sft
from training.ml.reward import loop as reward_loop
from training.models import ModelVersion, TrainingRun
from training.services.evaluation import policy_evaluate
from training.services.reward import reward_model_train
from training.services.runs import run_create
from training.services.versions import base_models_install

N = 30


def _import(project) -> None:
    records = [{"id": f"pair{i}", "prompt": f"preference prompt {i}?", "chosen": f"yes, glad to help with {i}!",
                "rejected": f"no. {i}"} for i in range(N)]
    records += [{"id": f"demo{i}", "prompt": f"demonstration prompt {i}?", "demonstration": f"here you go, {i}."}
                for i in range(N)]
    body = "\n".join(json.dumps(r) for r in records).encode()
    project_data_import(project=project, stream=io.BytesIO(body), filename="split.jsonl")


def _spy(monkeypatch, module, name: str, seen: list) -> None:
    """Record what the real trainer is called with, then run it."""
    real = getattr(module, name)

    def spy(*args, **kwargs):
        seen.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


def _texts(prompts) -> set[str]:
    return {p if isinstance(p, str) else json.dumps(p) for p in prompts}


@pytest.mark.django_db
def test_no_trainer_sees_a_held_out_prompt_and_evaluation_sees_only_those(
    project_factory, tiny_policy, tiny_reward_base, models_dir, monkeypatch,
):
    base = base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)[ModelVersion.Kind.POLICY]
    # Too few held-out groups to measure the reward model: the project promotes without that check.
    project = project_factory(gen_max_new_tokens=6, reward_promote_min_heldout_groups=0)
    _import(project)
    prompts = list(Prompt.objects.filter(project=project))
    held = {p.text for p in prompts if prompt_is_held_out(p.external_id)}
    assert held and len(held) < len(prompts)  # both sides exist, so the checks below can fail

    seen: dict[str, list] = {k: [] for k in ("reward", "sft", "dpo", "ppo", "evaluate")}
    _spy(monkeypatch, reward_loop, "train_reward_model", seen["reward"])
    _spy(monkeypatch, sft, "train_sft", seen["sft"])
    _spy(monkeypatch, dpo, "train_dpo", seen["dpo"])
    _spy(monkeypatch, ppo, "train_ppo", seen["ppo"])
    _spy(monkeypatch, evaluate, "evaluate_policy", seen["evaluate"])

    run = run_create(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base, epochs=1))
    rm = reward_model_train(run_id=run.pk)
    assert rm is not None, TrainingRun.objects.get(pk=run.pk).error
    for kind, config, extra in (("sft", SFT_FAST, {"include_chosen": True}), ("dpo", DPO_FAST, {}), ("ppo", PPO_FAST, {})):
        done, version = policy_run(project, kind, config, **extra)
        assert done.status == TrainingRun.Status.SUCCEEDED, done.error
    evaluation = run_create(project=project, kind=TrainingRun.Kind.EVALUATE, base_version=version, params=EVAL_FAST | {"max_prompts": 100})
    assert policy_evaluate(run_id=evaluation.pk) is not None

    reward_args, reward_kwargs = seen["reward"][0]
    groups = reward_args[0]
    trained = {
        "reward": _texts(g["prompt"] for g in groups),
        "sft": _texts(e["prompt"] for e in seen["sft"][0][0][1]),
        "dpo": _texts(p["prompt"] for p in seen["dpo"][0][0][1]),
        "ppo": _texts(seen["ppo"][0][0][2]) | _texts(d["prompt"] for d in seen["ppo"][0][1]["demonstrations"]),
    }
    for kind, texts in trained.items():
        assert texts and not texts & held, f"{kind} trained on held-out prompts {sorted(texts & held)}"
    # The reward model validates on exactly the held-out prompts it was given judgments for.
    assert _texts(g["prompt"] for g in reward_kwargs["val_groups"]) == {t for t in held if t.startswith("preference")}
    assert rm.metrics["val_groups"] == len(reward_kwargs["val_groups"])
    # Evaluation answers the held-out prompts, and only those.
    (_, _, _, eval_prompts, eval_demos), _ = seen["evaluate"][0]
    assert _texts(eval_prompts) == held
    assert _texts(d["prompt"] for d in eval_demos) == {t for t in held if t.startswith("demonstration")}
    assert base.pk != version.pk
    # An export's test split is exactly the held-out set (of the prompts with pairs), its train
    # split exactly what the reward model and DPO trained on.
    exported = {split: {json.loads(line)["prompt"] for line in export(project, split=split).decode().splitlines()}
                for split in ("test", "train")}
    assert exported["test"] == {t for t in held if t.startswith("preference")}
    assert exported["train"] == trained["reward"] == trained["dpo"]
