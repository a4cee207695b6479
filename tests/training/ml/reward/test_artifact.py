"""The saved reward model is a standard sequence-classification checkpoint: a process that knows
only transformers loads it with AutoModelForSequenceClassification and gets our scores; folders in
the old layout (backbone + reward_head.safetensors) and under the old config name (reward_config.json)
still load. Tiny random models, offline."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from tests.tiny_models import tiny_bert, tiny_llama
from training.ml.checkpoint import CONFIG_FILE
from training.ml.reward.artifact import (
    HEAD_FILE, LEGACY_CONFIG_FILE, MODELING_FILE, load_reward_model, reward_config_path, score,
)
from training.ml.reward.config import RewardConfig
from training.ml.reward.data import PairEncoder, collate, pad_id_of
from training.ml.reward.loop import train_reward_model
from training.ml.reward.model import RewardModel

torch.set_num_threads(1)

PROMPTS = ["q 1?", "Human: a longer prompt\n\nAssistant:", "x"]
RESPONSES = ["good good good", "bad", "a much longer response than the others"]

# Runs in a fresh interpreter that imports nothing of ours: what another tool (TRL) sees.
FOREIGN = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification
folder, batch = sys.argv[1], json.load(open(sys.argv[2]))
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(**{k: torch.tensor(v) for k, v in batch.items()}).logits
print(json.dumps({"cls": type(model).__name__, "shape": list(logits.shape), "scores": logits[:, 0].tolist(),
                  "prefix": model.base_model_prefix, "score_is_linear": isinstance(model.score, torch.nn.Linear)}))
"""


def groups(n: int) -> list[dict]:
    return [{"prompt": f"q {i}?", "responses": ["good good good", "bad bad"], "ranking": [[0], [1]]} for i in range(n)]


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_saved_folder_loads_as_sequence_classification_with_our_scores(which, tmp_path):
    base = tiny_bert(tmp_path / "base") if which == "bert" else tiny_llama(tmp_path / "base")
    config = RewardConfig(base_model=str(base), max_length=64, batch_size=8, lr=3e-3, epochs=1,
                          precision="fp32", val_fraction=0.0, seed=0)
    train_reward_model(groups(16), config, tmp_path / "rm", reference_texts=[("q 0?", "good good good")])
    folder = tmp_path / "rm"
    assert len(json.loads((folder / "config.json").read_text())["id2label"]) == 1  # num_labels=1
    assert not (folder / HEAD_FILE).exists()

    model, tok, saved = load_reward_model(folder)
    assert model.pooling == ("mean" if which == "bert" else "last")
    assert float(model.bias) != 0.0  # the normalisation bias must survive the export
    ours = score(model, tok, PROMPTS, RESPONSES, max_length=saved.max_length)
    encoder = PairEncoder(tok, saved.max_length, add_eos=model.pooling == "last")
    batch = collate(encoder.encode(PROMPTS, RESPONSES), pad_id_of(tok), torch.device("cpu"))
    (tmp_path / "batch.json").write_text(json.dumps({k: v.tolist() for k, v in batch.items()}))

    out = subprocess.run([sys.executable, "-c", FOREIGN, str(folder), str(tmp_path / "batch.json")],
                         capture_output=True, text=True, check=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert theirs["cls"] == "PairwiseRewardModel" and theirs["shape"] == [3, 1]
    assert theirs["prefix"] == "model" and theirs["score_is_linear"]  # what TRL's PPO get_reward reads
    assert theirs["scores"] == pytest.approx(ours, abs=1e-5)


def test_old_layout_folder_still_loads(tmp_path):
    """A version saved before this change: backbone folder + reward_head.safetensors + reward_config.json."""
    base = tiny_bert(tmp_path / "base")
    model = RewardModel.from_backbone_path(base, "mean").eval()
    folder = tmp_path / "old"
    model.backbone.save_pretrained(folder)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(base)
    tok.save_pretrained(folder)
    weight = torch.full((1, model.backbone.config.hidden_size), 0.05)
    save_file({"head.weight": weight, "head.bias": torch.tensor([0.25]), "bias": torch.tensor([-0.75])},
              str(folder / HEAD_FILE), metadata={"pooling": "mean"})
    (folder / LEGACY_CONFIG_FILE).write_text(json.dumps({"base_model": str(base), "pooling": "mean", "max_length": 64,
                                                  "retired_option": 1}))

    loaded, tok2, config = load_reward_model(folder)
    assert config.pooling == "mean" and config.max_length == 64
    assert float(loaded.bias) == -0.75 and float(loaded.head.bias.detach()) == 0.25
    # By hand: reward = 0.05 * sum(mean-pooled hidden) + 0.25 - 0.75.
    batch = collate(PairEncoder(tok2, 64, add_eos=False).encode(["q"], ["a"]), pad_id_of(tok2), torch.device("cpu"))
    with torch.no_grad():
        hidden = loaded.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 token_type_ids=batch["token_type_ids"]).last_hidden_state
    expected = 0.05 * float(hidden[0].mean(0).sum()) + 0.25 - 0.75
    assert score(loaded, tok2, ["q"], ["a"], max_length=64)[0] == pytest.approx(expected, abs=1e-5)


def test_a_folder_saved_under_the_old_config_name_still_loads(tmp_path):
    """Versions saved before every artifact's config was named CONFIG_FILE have LEGACY_CONFIG_FILE beside
    the sequence-classification checkpoint: they load with the same config and the same scores."""
    base = tiny_bert(tmp_path / "base")
    config = RewardConfig(base_model=str(base), max_length=64, batch_size=8, lr=3e-3, epochs=1,
                          precision="fp32", val_fraction=0.0, seed=0)
    train_reward_model(groups(8), config, tmp_path / "rm")
    folder = tmp_path / "rm"
    assert reward_config_path(folder) == folder / CONFIG_FILE and not (folder / LEGACY_CONFIG_FILE).exists()
    model, tok, saved = load_reward_model(folder)
    before = score(model, tok, PROMPTS, RESPONSES, max_length=saved.max_length)

    (folder / CONFIG_FILE).rename(folder / LEGACY_CONFIG_FILE)
    assert reward_config_path(folder) == folder / LEGACY_CONFIG_FILE
    again, tok2, saved2 = load_reward_model(folder)
    assert saved2 == saved
    assert score(again, tok2, PROMPTS, RESPONSES, max_length=saved2.max_length) == pytest.approx(before, abs=1e-6)


def test_only_a_reward_folder_has_a_reward_config(tmp_path):
    policy = tmp_path / "policy"  # a policy's folder holds CONFIG_FILE too, but no modeling file
    policy.mkdir()
    (policy / CONFIG_FILE).write_text("{}")
    assert reward_config_path(policy) is None and reward_config_path(tmp_path / "gone") is None
    (policy / MODELING_FILE).write_text("")
    assert reward_config_path(policy) == policy / CONFIG_FILE


def test_the_web_side_knows_the_same_files():
    """The selectors tell a trained reward model's folder apart without importing torch, by these names."""
    from training.selectors.versions import REWARD_FOLDER_FILES

    assert REWARD_FOLDER_FILES == ((CONFIG_FILE, MODELING_FILE), (LEGACY_CONFIG_FILE,))
