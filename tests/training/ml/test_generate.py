from __future__ import annotations

from pathlib import Path

import torch

from tests.tiny_models import tiny_llama
from training.ml.generate import generate_candidates, sample
from training.ml.text import load_policy, prompt_text, to_messages

torch.set_num_threads(1)


def test_prompts_always_carry_an_explicit_system_message(tmp_path: Path) -> None:
    _, tok = load_policy(tiny_llama(tmp_path / "m"))
    text = prompt_text(tok, "hello", system_prompt="Be brief.")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert to_messages([{"role": "system", "content": "mine"}, {"role": "user", "content": "x"}])[0]["content"] == "mine"
    turns = to_messages("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant:")
    assert [m["role"] for m in turns] == ["system", "user", "assistant", "user"]


def test_left_padded_batch_matches_one_prompt_at_a_time(tmp_path: Path) -> None:
    model, tok = load_policy(tiny_llama(tmp_path / "m"))
    prompts = ["a much longer prompt than the other", "hi"]
    batched, _, mask = sample(model, tok, prompts, 1, 0.0, 1.0, 6)
    alone, _, mask_alone = sample(model, tok, prompts[1:], 1, 0.0, 1.0, 6)
    assert tok.decode(batched[1][mask[1].bool()]) == tok.decode(alone[0][mask_alone[0].bool()])


def test_generate_candidates_returns_up_to_k_distinct_per_prompt(tmp_path: Path) -> None:
    path = tiny_llama(tmp_path / "m")
    progress = []
    prompts = ["one", [{"role": "user", "content": "two"}], "three"]
    out = generate_candidates(path, prompts, k=3, temperature=1.0, top_p=1.0, max_new_tokens=8, batch_size=6, seed=1,
                              progress=lambda f, m: progress.append(f))
    assert len(out) == 3 and all(1 <= len(c) <= 3 for c in out)
    assert all(len(set(c)) == len(c) for c in out)
    assert sum(len(c) for c in out) > 3  # random tiny model: samples differ
    assert progress[-1] == 1.0
    again = generate_candidates(path, prompts, k=3, temperature=1.0, top_p=1.0, max_new_tokens=8, batch_size=6, seed=1)
    assert again == out  # seeded
    greedy = generate_candidates(path, ["one"], k=3, temperature=0.0, top_p=1.0, max_new_tokens=8, batch_size=6)
    assert len(greedy[0]) <= 1  # greedy repeats itself; duplicates (and empty answers) are dropped
