"""The reward model with LoRA and gradient checkpointing: only the adapters and the head train, the
saved folder is a plain merged model (base + a low-rank update) that AutoModelForSequenceClassification
loads with our scores, named target modules are the only ones adapted, and gradient checkpointing
changes neither the loss nor the gradients. Tiny random models, offline, no DB."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from tests.tiny_models import tiny_bert, tiny_llama
from training.ml.common import no_progress, set_seed
from training.ml.reward import loop as reward_loop
from training.ml.reward.artifact import save_reward_model, score
from training.ml.reward.config import RewardConfig
from training.ml.reward.data import PairEncoder, collate, make_batch, pad_id_of, tokenize_groups
from training.ml.reward.loop import _train_loop, train_reward_model
from training.ml.reward.loss import grouped_ranking_loss
from training.ml.reward.model import trainable_reward_model

torch.set_num_threads(1)

R = 4
PROMPTS = ["q 1?", "Human: a longer prompt\n\nAssistant:", "x"]
RESPONSES = ["good good good", "bad", "a much longer response than the others"]
BERT_QV = {f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")}

# Runs in a fresh interpreter that imports nothing of ours (no peft either): what another tool sees.
FOREIGN = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification
folder, batch = sys.argv[1], json.load(open(sys.argv[2]))
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(**{k: torch.tensor(v) for k, v in batch.items()}).logits
print(json.dumps({"cls": type(model).__name__, "scores": logits[:, 0].tolist()}))
"""


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    return {"bert": tiny_bert(tmp_path_factory.mktemp("rl-bert")), "llama": tiny_llama(tmp_path_factory.mktemp("rl-llama"))}


def separable_groups(n: int) -> list[dict]:
    return [{"prompt": f"question {i}?", "responses": ["good good good", "bad bad"], "ranking": [[0], [1]]}
            for i in range(n)]


def lora_config(base: Path, **kw) -> RewardConfig:
    defaults = {"base_model": str(base), "max_length": 48, "batch_size": 8, "lr": 3e-3, "epochs": 2,
                "warmup_fraction": 0.0, "precision": "fp32", "device": "cpu", "val_fraction": 0.0, "seed": 0,
                "lora_r": R, "lora_alpha": 8, "lora_dropout": 0.0}
    return RewardConfig(**(defaults | kw))


def linear_names(base: Path) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in AutoModel.from_pretrained(base).named_modules() if isinstance(m, torch.nn.Linear)}


def adapted_names(model: torch.nn.Module) -> set[str]:
    """Names (in the plain backbone) of the modules peft put adapters on."""
    return {n.removeprefix("base_model.model.") for n, m in model.backbone.named_modules() if isinstance(m, LoraLayer)}


def foreign_scores(folder: Path, tmp_path: Path) -> dict:
    tok = AutoTokenizer.from_pretrained(folder)
    saved = json.loads((folder / "pairwise_config.json").read_text())
    encoder = PairEncoder(tok, saved["max_length"], add_eos=saved["pooling"] == "last")
    batch = collate(encoder.encode(PROMPTS, RESPONSES), pad_id_of(tok), torch.device("cpu"))
    (tmp_path / "batch.json").write_text(json.dumps({k: v.tolist() for k, v in batch.items()}))
    out = subprocess.run([sys.executable, "-c", FOREIGN, str(folder), str(tmp_path / "batch.json")],
                         capture_output=True, text=True, check=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    return json.loads(out.stdout.strip().splitlines()[-1])


def low_rank_residual(delta: torch.Tensor, rank: int) -> float:
    """Largest singular value of delta beyond the first `rank`, relative to the largest."""
    s = torch.linalg.svdvals(delta.double())
    return float(s[rank:].max() / s[0]) if s.numel() > rank and s[0] > 0 else 0.0


# --------------------------------------------------------------- (a) adapters + head train, merged save


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_lora_trains_adapters_and_head_only_and_saves_a_merged_model_with_the_same_scores(which, bases, tmp_path):
    config = lora_config(bases[which])
    set_seed(config.seed)
    model = trainable_reward_model(config)
    config = dataclasses.replace(config, pooling=model.pooling)  # as the trainer saves it ('auto' resolved)
    tok = AutoTokenizer.from_pretrained(config.base_model)
    assert adapted_names(model) == set(linear_names(config.base_model))  # all-linear: every linear layer
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert model.head.weight.requires_grad and model.head.bias.requires_grad

    encoder = PairEncoder(tok, config.max_length, add_eos=model.pooling == "last")
    groups = tokenize_groups(separable_groups(16), encoder)
    history, _ = _train_loop(model, groups, config, torch.device("cpu"), "fp32", pad_id_of(tok), no_progress)
    assert len(history) == 4
    after = dict(model.named_parameters())
    assert not torch.equal(after["head.weight"], before["head.weight"])  # the head trains
    lora_b = [n for n in before if "lora_B" in n]
    assert lora_b and any(not torch.equal(after[n], before[n]) for n in lora_b)  # the adapters train
    frozen = [n for n in before if "lora_" not in n and not n.startswith("head.")]
    assert frozen and all(torch.equal(after[n], before[n]) for n in frozen)  # the base weights do not

    with torch.no_grad():
        model.bias.fill_(-0.3)  # the normalisation bias must reach score.bias through the merge
    ours = score(model, tok, PROMPTS, RESPONSES, max_length=config.max_length)  # adapters still separate
    save_reward_model(tmp_path / "rm", model, tok, config)
    assert not adapted_names(model) and not (tmp_path / "rm" / "adapter_config.json").exists()
    assert not [k for k in load_file(str(tmp_path / "rm" / "model.safetensors")) if "lora" in k]
    assert score(model, tok, PROMPTS, RESPONSES, max_length=config.max_length) == pytest.approx(ours, abs=1e-5)
    theirs = foreign_scores(tmp_path / "rm", tmp_path)
    assert theirs["cls"] == "PairwiseRewardModel"
    assert theirs["scores"] == pytest.approx(ours, abs=1e-5)


@pytest.fixture(scope="module")
def lora_run(bases, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("rl-run") / "rm"
    reference = [(f"question {i}?", "good good good") for i in range(4)]
    metrics = train_reward_model(separable_groups(32), lora_config(bases["bert"], val_fraction=0.25), folder,
                                 reference_texts=reference)
    return folder, metrics


def test_lora_run_saves_the_base_plus_a_low_rank_update(lora_run, bases):
    folder, metrics = lora_run
    assert metrics["val_accuracy"] == 1.0 and metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert not (folder / "adapter_config.json").exists()
    saved = load_file(str(folder / "model.safetensors"))
    base = AutoModel.from_pretrained(bases["bert"]).state_dict()
    assert {k.removeprefix("model.") for k in saved if k.startswith("model.")} == set(base)  # no adapter tensors
    adapted = {f"{n}.weight" for n in linear_names(bases["bert"])}
    for key, weight in base.items():
        merged = saved[f"model.{key}"]
        if key not in adapted:  # embeddings, LayerNorms, biases: bit-identical to the base
            assert torch.equal(merged, weight), key
            continue
        delta = merged - weight
        assert low_rank_residual(delta, R) < 1e-4, key  # W + (alpha / r) B A: rank <= r
        if not key.startswith("pooler."):  # the pooler's output is never read, so it gets no gradient
            assert delta.abs().max() > 0, key


def test_lora_adaptation_metrics_count_adapters_and_head(lora_run, bases):
    _, metrics = lora_run
    linears = linear_names(bases["bert"]).values()
    hidden = AutoModel.from_pretrained(bases["bert"]).config.hidden_size
    lora = sum(R * (m.in_features + m.out_features) for m in linears)
    base_total = sum(p.numel() for p in AutoModel.from_pretrained(bases["bert"]).parameters())
    assert metrics["adaptation"] == {"lora_r": R, "trainable_parameters": lora + hidden + 1,
                                     "total_parameters": base_total + lora + hidden + 1, "gradient_checkpointing": False}
    assert metrics["adaptation"]["trainable_parameters"] < 0.15 * metrics["adaptation"]["total_parameters"]


# -------------------------------------------------------------------- (d) named target modules only


def test_named_target_modules_are_the_only_ones_adapted(bases, tmp_path):
    config = lora_config(bases["bert"], lora_target_modules="query, value")
    assert adapted_names(trainable_reward_model(config)) == BERT_QV

    metrics = train_reward_model(separable_groups(16), config, tmp_path / "rm")
    hidden = AutoModel.from_pretrained(bases["bert"]).config.hidden_size
    assert metrics["adaptation"]["trainable_parameters"] == len(BERT_QV) * R * 2 * hidden + hidden + 1
    saved = load_file(str(tmp_path / "rm" / "model.safetensors"))
    base = AutoModel.from_pretrained(bases["bert"]).state_dict()
    changed = {k.removesuffix(".weight") for k, w in base.items() if not torch.equal(saved[f"model.{k}"], w)}
    assert changed == BERT_QV
    for name in BERT_QV:
        assert low_rank_residual(saved[f"model.{name}.weight"] - base[f"{name}.weight"], R) < 1e-4


# ------------------------------------------------------------------- (c) gradient checkpointing


def inside_first_block(model: torch.nn.Module) -> torch.nn.Module:
    """The first module inside the backbone's first block (BERT's attention, Llama's self_attn). transformers
    checkpoints a block's forward, not its __call__, so the block's own hooks run once; its children's
    run again when the backward pass recomputes the block."""
    block = next(m for n, m in model.backbone.named_modules() if n.endswith(("encoder.layer.0", "layers.0")))
    return next(iter(block.children()))


@pytest.mark.parametrize("lora_r", [0, R])
@pytest.mark.parametrize("which", ["bert", "llama"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients_on_a_fixed_batch(which, lora_r, bases):
    results = {}
    for checkpointing in (False, True):
        # Dropout on, so the recomputed forward must replay the same random masks.
        config = lora_config(bases[which], lora_r=lora_r, gradient_checkpointing=checkpointing, dropout=0.1,
                             lora_dropout=0.1)
        set_seed(0)
        model = trainable_reward_model(config)
        tok = AutoTokenizer.from_pretrained(config.base_model)
        encoder = PairEncoder(tok, config.max_length, add_eos=model.pooling == "last")
        batch = make_batch(tokenize_groups(separable_groups(4), encoder), pad_id_of(tok), torch.device("cpu"))
        calls: list[int] = []
        inside_first_block(model).register_forward_hook(lambda *_, calls=calls: calls.append(1))
        model.train()
        set_seed(1)
        rewards = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = grouped_ranking_loss(rewards, batch["winners"], batch["losers"], batch["group_index"], batch["num_groups"])
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[checkpointing] = (loss.item(), grads, len(calls))

    (loss, grads, calls), (loss_gc, grads_gc, calls_gc) = results[False], results[True]
    assert (calls, calls_gc) == (1, 2)  # the checkpointed block really ran again in the backward pass
    assert loss_gc == pytest.approx(loss, abs=1e-5)
    assert set(grads_gc) == set(grads) and "head.weight" in grads
    assert any("lora_B" in n for n in grads) == (lora_r > 0)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_gc[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("lora_r", [0, R])
def test_gradient_checkpointing_run_trains_like_a_plain_run(lora_r, bases, tmp_path, monkeypatch):
    built, calls = {}, {False: [], True: []}

    def spy(config: RewardConfig):
        model = trainable_reward_model(config)
        built[config.gradient_checkpointing] = model
        inside_first_block(model).register_forward_hook(lambda *_: calls[config.gradient_checkpointing].append(1))
        return model

    monkeypatch.setattr(reward_loop, "trainable_reward_model", spy)
    runs = {}
    for checkpointing in (False, True):
        config = lora_config(bases["bert"], lora_r=lora_r, gradient_checkpointing=checkpointing, dropout=0.1,
                             val_fraction=0.25)
        runs[checkpointing] = train_reward_model(separable_groups(24), config, tmp_path / f"rm-{checkpointing}")
    plain, checkpointed = runs[False], runs[True]
    assert checkpointed["adaptation"]["gradient_checkpointing"] and not plain["adaptation"]["gradient_checkpointing"]
    # Every training forward ran the block twice (once more in the backward pass); evaluation once.
    steps = len(plain["history"])
    assert len(calls[True]) == len(calls[False]) + steps > steps > 1
    assert len(checkpointed["history"]) == steps
    for a, b in zip(checkpointed["history"], plain["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert checkpointed["val_log_loss"] == pytest.approx(plain["val_log_loss"], abs=1e-5)
    full = plain["adaptation"]
    assert (full["trainable_parameters"] == full["total_parameters"]) == (lora_r == 0)
    # The training-only options are off again in the model that was evaluated and saved.
    backbone = built[True].backbone
    assert not adapted_names(built[True])
    assert not any(getattr(m, "gradient_checkpointing", False) is True for m in backbone.modules())
    assert not getattr(backbone, "_require_grads_hooks", None)


def test_the_reward_default_is_lora_with_its_own_learning_rate():
    from training.ml.reward.config import RewardConfig, reward_lr

    default = RewardConfig()
    assert (default.lora_r, default.lora_alpha, default.lr) == (16, 32, None) and reward_lr(default) == 3e-4
    assert reward_lr(RewardConfig(lora_r=0)) == 3e-5  # every weight trains: the smaller step
    assert reward_lr(RewardConfig(lr=1e-5)) == reward_lr(RewardConfig(lora_r=0, lr=1e-5)) == 1e-5  # a given lr wins
    import torch

    from training.ml.reward.loop import reward_optimizer

    optimizer, _ = reward_optimizer(torch.nn.Linear(2, 1), default, total_steps=1)
    assert {g["lr"] for g in optimizer.param_groups} == {3e-4}  # what the trainer steps with
