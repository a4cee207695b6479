"""The product's one train/test split of prompts. Pure Python: no Django, so the trainers in
`training.ml` and the bench scripts use the very same rule as exports and evaluation.

A prompt is held out when the first 8 hex digits of md5(f"{seed}:{prompt_id}") fall under
`fraction * 16**8`, where prompt_id is the prompt's stable id (its external id in a project, the
record id in a dataset file). Keyed by the id, not the text, so a prompt stays on its side as data
grows and when its text is edited. The export SQL (`labeling.selectors.exports`) computes the same
bucket in the database; a test holds the two to each other.

The held-out side is what policy evaluation answers, what the reward model validates on, and what an
export with `split=test` contains; no trainer ever trains on it.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable, TypeVar

HELD_OUT_FRACTION = 0.1
DEFAULT_SEED = ""
TRAIN, TEST = "train", "test"
BUCKET_DIGITS = 8

T = TypeVar("T")


def split_threshold(fraction: float = HELD_OUT_FRACTION) -> str:
    """The bucket (fixed-width lowercase hex, so text order is number order) under which a prompt is held out."""
    return format(int(fraction * 16 ** BUCKET_DIGITS), f"0{BUCKET_DIGITS}x")


def split_key(prompt_id: str, seed: str = DEFAULT_SEED) -> str:
    """What is hashed; the export SQL concatenates the same two parts."""
    return f"{seed}:{prompt_id}"


def prompt_split(prompt_id: str, *, fraction: float = HELD_OUT_FRACTION, seed: str = DEFAULT_SEED) -> str:
    """"test" (held out) or "train"."""
    bucket = hashlib.md5(split_key(prompt_id, seed).encode("utf-8")).hexdigest()[:BUCKET_DIGITS]
    return TEST if bucket < split_threshold(fraction) else TRAIN


def prompt_is_held_out(prompt_id: str, *, fraction: float = HELD_OUT_FRACTION, seed: str = DEFAULT_SEED) -> bool:
    return prompt_split(prompt_id, fraction=fraction, seed=seed) == TEST


def split_items(
    items: Iterable[T], key: Callable[[T], str], *, fraction: float = HELD_OUT_FRACTION, seed: str = DEFAULT_SEED,
) -> tuple[list[T], list[T]]:
    """(train, held_out) by each item's prompt id. Never moves an item across: with every prompt held
    out the train side is empty, and the caller says so rather than training on evaluation data."""
    train: list[T] = []
    held: list[T] = []
    for item in items:
        (held if prompt_is_held_out(key(item), fraction=fraction, seed=seed) else train).append(item)
    return train, held
