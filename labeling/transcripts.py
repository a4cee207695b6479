"""Chat prompts as Anthropic HH-RLHF transcripts: the one builder that exports, the reward model's
training data and its scoring all use. Pure Python, no Django.

System turns stay in the transcript as "\n\nSystem: ...". They are part of what the model was
asked: a reward model trained on transcripts without them would judge answers to another prompt
than the one the policy answered, and an export without them could not be turned back into the
conversation. Roles other than system and assistant are the human's turns.
"""
from __future__ import annotations

from typing import Sequence

Messages = Sequence[dict[str, str]]

ROLE_TAGS = {"user": "Human", "assistant": "Assistant", "system": "System"}
TRANSCRIPT_STARTS = ("\n\nHuman:", "\n\nSystem:")
ANSWER_MARK = "\n\nAssistant:"
HUMAN_TURN = "\n\nHuman: "  # what a plain-text prompt is wrapped in


def messages_transcript(messages: Messages) -> str:
    """The dialogue so far, ending where the assistant's answer goes."""
    turns = "".join(f"\n\n{ROLE_TAGS.get(m.get('role'), 'Human')}: {m.get('content', '')}" for m in messages)
    return turns + ANSWER_MARK


def prompt_transcript(text: str, messages: Messages | None) -> str:
    """A stored prompt (plain text, or chat messages when the text is empty) as the text a reward
    model or an HH export sees. Plain text passes through: it may already be a transcript."""
    return text if text or not messages else messages_transcript(messages)


def hh_transcript(prompt: str, answer: str) -> str:
    """HH-RLHF's shape: the whole dialogue, prompt included, as chosen and as rejected."""
    head = prompt if prompt.startswith(TRANSCRIPT_STARTS) else f"{HUMAN_TURN}{prompt}{ANSWER_MARK}"
    return head + (answer if answer.startswith(" ") else " " + answer)
