"""Judgments and the preference pairs derived from them (same transaction, always)."""
from __future__ import annotations

from labeling.models import Judgment, PreferencePair
from labeling.ranking import ranking_pairs


def preference_pairs_build(*, judgment: Judgment, prompt_id: int | None = None) -> list[PreferencePair]:
    """Unsaved pairs for a judgment whose ranking is already validated; the caller bulk-creates them.

    prompt_id saves loading judgment.task when the caller already knows it (the submit path)."""
    prompt_id = prompt_id if prompt_id is not None else judgment.task.prompt_id
    return [
        PreferencePair(
            project_id=judgment.project_id,
            judgment=judgment,
            prompt_id=prompt_id,
            chosen_id=chosen,
            rejected_id=rejected,
        )
        for chosen, rejected in ranking_pairs(judgment.ranking)
    ]
