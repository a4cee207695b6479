"""Record formats an import understands besides the native shapes (listed in labeling.services.imports):
the product's own exports (trl, trl-chat, hh, ranked, judgments) and raw hh-rlhf transcripts. Label
Studio and Argilla exports are in labeling.services.import_external.

Each converter turns one row as read into native records (a row may hold several, e.g. one Label
Studio task with two annotations), or raises RowInvalid; labeling.services.import_parsing validates
what comes out exactly as it validates a native file, so every format ends in the same write path.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from labeling.selectors.imports import judgment_sources
from labeling.transcripts import ANSWER_MARK

Native = dict[str, Any]


class RowInvalid(Exception):
    """One row that cannot be imported: the field at fault and why."""

    def __init__(self, field_name: str, message: str, raw: str | None = None):
        super().__init__(f"{field_name}: {message}")
        self.field, self.message, self.raw = field_name, message, raw


def row_object(data: Any) -> dict[str, Any]:
    if isinstance(data, RowInvalid):
        raise data
    if not isinstance(data, dict):
        raise RowInvalid("record", "must be a JSON object")
    return data


def content_id(prefix: str, *parts: Any) -> str:
    """An id for a record that has none, from its content, so importing the same file twice skips it."""
    digest = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return f"{prefix}:{digest}"


def _with_source(record: Native, data: dict[str, Any]) -> Native:
    if data.get("source"):
        record["source"] = data["source"]
    return record


# --- hh-rlhf transcripts (raw hh-rlhf, and the product's hh export) ---------------------------------

def hh_split(transcript: Any, field_name: str) -> tuple[str, str]:
    """A whole HH dialogue -> (the dialogue up to and including the last "\\n\\nAssistant:", the answer)."""
    if not isinstance(transcript, str):
        raise RowInvalid(field_name, "must be an HH transcript string")
    at = transcript.rfind(ANSWER_MARK)
    if at < 0:
        raise RowInvalid(field_name, f"has no {ANSWER_MARK.strip()!r} turn to take the answer from")
    cut = at + len(ANSWER_MARK)
    return transcript[:cut], transcript[cut:]


def hh_record(data: dict[str, Any]) -> list[Native]:
    prompt, chosen = hh_split(data.get("chosen"), "chosen")
    rejected_prompt, rejected = hh_split(data.get("rejected"), "rejected")
    if rejected_prompt != prompt:
        raise RowInvalid("rejected", "does not continue the same dialogue as chosen before the last answer")
    record_id = data.get("id") or content_id("hh", data["chosen"], data["rejected"])
    return [_with_source({"id": record_id, "prompt": prompt, "chosen": chosen, "rejected": rejected}, data)]


# --- TRL conversational preference records ----------------------------------------------------------

def _last_answer(value: Any, field_name: str) -> tuple[list[Any], Any]:
    if not isinstance(value, list) or not value or not isinstance(value[-1], dict) or value[-1].get("role") != "assistant":
        raise RowInvalid(field_name, "must be a list of messages ending with the assistant's answer")
    return value[:-1], value[-1].get("content")


def trl_chat_record(data: dict[str, Any]) -> list[Native]:
    """Explicit prompt (prompt: messages, chosen/rejected: the answer turns) or implicit prompt
    (chosen/rejected: whole conversations sharing everything before the last answer)."""
    chosen_head, chosen = _last_answer(data.get("chosen"), "chosen")
    rejected_head, rejected = _last_answer(data.get("rejected"), "rejected")
    if chosen_head != rejected_head:
        raise RowInvalid("rejected", "does not share chosen's conversation before the last answer")
    prompt = data.get("prompt")
    record: Native = {"chosen": chosen, "rejected": rejected}
    if isinstance(prompt, list):
        record["messages"] = prompt + chosen_head
    elif chosen_head:
        record["messages"] = chosen_head  # the conversation itself carries the prompt
    elif prompt is not None:
        record["prompt"] = prompt
    record["id"] = data.get("id") or content_id("trl-chat", record)
    return [_with_source(record, data)]


# --- rankings: the ranked export and the judgments export -------------------------------------------

def _prompt_fields(text: Any, messages: Any) -> Native:
    return {"messages": messages} if messages else {"prompt": text}


def ranked_record(data: dict[str, Any]) -> list[Native]:
    """One K-way judgment, responses listed best first with their tie group (rank)."""
    responses = data.get("responses")
    if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
        raise RowInvalid("responses", "must be a list of {text, rank, source}")
    ranks = [r.get("rank") for r in responses]
    if not all(isinstance(rank, int) and not isinstance(rank, bool) for rank in ranks):
        raise RowInvalid("responses", "every response needs an integer rank")
    ranking = [[i for i, rank in enumerate(ranks) if rank == group] for group in sorted(set(ranks))]
    record = {
        "id": f"judgment:{data.get('id')}" if data.get("id") is not None else content_id("ranked", data),
        **_prompt_fields(data.get("prompt"), data.get("messages")),
        "responses": [{"text": r.get("text"), "source": r.get("source")} for r in responses], "ranking": ranking,
    }
    return [_judgment_source(record, data)]


def _judgment_source(record: Native, data: dict[str, Any]) -> Native:
    """Imported judgments have no annotator account here: the source names who judged."""
    source = data.get("source") or (f"annotator:{data['annotator']}" if data.get("annotator") else "")
    if source:
        record["source"] = source
    return record


def judgments_lookup(rows: list[tuple[int, Any]]) -> dict[str, dict[int, Any]]:
    """The judgments export names responses and prompts by database id: fetch them all at once."""
    wanted = [data for _, data in rows if isinstance(data, dict) and detect(data) == "judgments"]
    response_ids = {rid for d in wanted for rid in d.get("shown_order") or [] if isinstance(rid, int)}
    prompt_ids = {d["prompt_id"] for d in wanted if isinstance(d.get("prompt_id"), int)}
    return judgment_sources(response_ids=response_ids, prompt_ids=prompt_ids) if wanted else {}


def judgments_record(data: dict[str, Any], lookup: dict[str, dict[int, Any]]) -> list[Native]:
    shown, ranking = data.get("shown_order"), data.get("ranking")
    if not isinstance(shown, list) or not isinstance(ranking, list):
        raise RowInvalid("ranking", "a judgments record needs ranking and shown_order (response ids)")
    responses, prompts = lookup.get("responses", {}), lookup.get("prompts", {})
    if any(rid not in responses for rid in shown) or data.get("prompt_id") not in prompts:
        raise RowInvalid("shown_order", "names responses that are not in this database: a judgments export "
                                        "refers to responses by id; export 'ranked' to move judgments elsewhere")
    position = {rid: i for i, rid in enumerate(shown)}
    try:
        indices = [[position[rid] for rid in group] for group in ranking]
    except (KeyError, TypeError):
        raise RowInvalid("ranking", "must hold tie groups of the ids in shown_order") from None
    text, messages = prompts[data["prompt_id"]]
    record = {
        "id": f"judgment:{data.get('judgment_id')}", **_prompt_fields(text, messages),
        "responses": [{"text": responses[rid][0], "source": responses[rid][1]} for rid in shown], "ranking": indices,
    }
    return [_judgment_source(record, data)]


# --- choosing a converter -----------------------------------------------------------------------------

def detect(data: dict[str, Any]) -> str:
    """The format of one row, by the keys only that format has."""
    if isinstance(data.get("data"), dict):
        return "label-studio"
    if isinstance(data.get("fields"), dict):
        return "argilla"
    if "judgment_id" in data and "ranking" in data:
        return "judgments"
    responses = data.get("responses")
    if isinstance(responses, list) and responses and all(isinstance(r, dict) and "rank" in r for r in responses):
        return "ranked"
    if isinstance(data.get("chosen"), list):
        return "trl-chat"
    if isinstance(data.get("chosen"), str) and "prompt" not in data and "messages" not in data:
        return "hh"
    return "native"


Converter = Callable[[dict[str, Any]], list[Native]]
CONVERTERS: dict[str, Converter] = {
    "native": lambda data: [data], "trl": lambda data: [data], "trl-chat": trl_chat_record, "hh": hh_record,
    "ranked": ranked_record,
}
