"""Exports of other labeling tools as native import records, so a team can move its history over:
Label Studio's JSON export (pairwise and ranker projects) and Argilla v2's records
(`rg.Dataset.to_disk` / `records.to_json`: a list of {id, fields, responses, suggestions, ...}).

A labeled item becomes one imported judgment per annotator (source names the tool and the
annotator); an unlabeled one becomes a prompt with responses, i.e. an open task. Imported with
preferences="open" (labeling.services.imports), a labeled item becomes one open task: its first
annotator's ranking is the hidden reference, the others' are counted as duplicates of it.
"""
from __future__ import annotations

import re
from typing import Any

from labeling.services.import_formats import Native, RowInvalid

PROMPT_KEYS = ("prompt", "instruction", "question", "input", "text", "query")
_RESPONSE_KEY = re.compile(r"^(answer|response|completion|generation|output|text)[_-]?(\d+)$")


def _prompt(fields: dict[str, Any], where: str) -> str:
    for key in PROMPT_KEYS:
        if isinstance(fields.get(key), str):
            return fields[key]
    raise RowInvalid(f"{where}.prompt", f"needs one of {', '.join(PROMPT_KEYS)} as the prompt")


def _numbered(fields: dict[str, Any]) -> list[str]:
    """answer1, answer2 ... (or response_1, ...) in number order: left before right."""
    keys = [(int(m.group(2)), key) for key in fields if (m := _RESPONSE_KEY.match(key))]
    return [key for _, key in sorted(keys)]


def _unlabeled(item_id: str, prompt: str, texts: list[str]) -> Native:
    return {"id": item_id, "prompt": prompt, "responses": texts} if texts else {"id": item_id, "prompt": prompt}


# --- Label Studio ---------------------------------------------------------------------------------------

def _ls_pairwise(value: dict[str, Any]) -> list[list[int]]:
    selected = value.get("selected")
    if selected not in ("left", "right"):
        raise RowInvalid("annotations.result.value.selected", "must be 'left' or 'right'")
    return [[0], [1]] if selected == "left" else [[1], [0]]


def _ls_ranker(value: dict[str, Any], item_ids: list[Any]) -> list[list[int]]:
    """{"ranker": {tag name: [ids in order]}} or, with buckets, {bucket: [ids], ...} read as tie
    groups best first in the order the export lists them ("_" holds items left unranked)."""
    ranker = value.get("ranker")
    if not isinstance(ranker, dict) or not ranker:
        raise RowInvalid("annotations.result.value.ranker", "must be an object of ranked item ids")
    position = {str(item): i for i, item in enumerate(item_ids)}
    groups = [ids for name, ids in ranker.items() if name != "_"]
    if len(groups) == 1:
        groups = [[item] for item in groups[0]]
    try:
        return [[position[str(item)] for item in group] for group in groups if group]
    except (KeyError, TypeError):
        raise RowInvalid("annotations.result.value.ranker", "names items that are not in data.items") from None


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    if not isinstance(parent.get(key), dict):
        raise RowInvalid(key, "must be an object")
    return parent[key]


def label_studio_records(task: dict[str, Any]) -> list[Native]:
    data = _object(task, "data")
    prompt = _prompt(data, "data")
    if isinstance(data.get("items"), list):  # a ranker project: <List value="$items"/> + <Ranker/>
        items = [item for item in data["items"] if isinstance(item, dict)]
        item_ids = [item.get("id") for item in items]
        texts = [item.get("body") or item.get("text") or item.get("title") for item in items]
    else:  # a pairwise project: <Pairwise toName="answer1,answer2"/>
        keys = [key for key in _numbered(data) if key not in PROMPT_KEYS]
        item_ids, texts = keys, [data[key] for key in keys]
    task_id = f"label-studio:{task.get('id')}"
    records = []
    for annotation in task.get("annotations") or []:
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result") or []:
            kind, value = result.get("type"), result.get("value") or {}
            if kind not in ("pairwise", "ranker"):
                continue  # other controls (a rating, a comment) say nothing about the order
            ranking = _ls_pairwise(value) if kind == "pairwise" else _ls_ranker(value, item_ids)
            who = annotation.get("completed_by")
            who = who.get("email") or who.get("id") if isinstance(who, dict) else who
            records.append({"id": f"{task_id}:{annotation.get('id')}", "prompt": prompt, "responses": texts,
                            "ranking": ranking, "source": f"label-studio:{who}"})
    return records or [_unlabeled(task_id, prompt, texts)]


# --- Argilla v2 ------------------------------------------------------------------------------------------

def _argilla_ranking(value: Any, keys: list[str]) -> list[list[int]] | None:
    """A RankingQuestion answer (option values best first, or [{value, rank}]) or a LabelQuestion
    naming the better response field; None for any other question."""
    position = {key: i for i, key in enumerate(keys)}
    if isinstance(value, str) and value in position and len(keys) == 2:
        best = position[value]
        return [[best], [1 - best]]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = [{"value": v, "rank": i} for i, v in enumerate(value)]
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) and v.get("value") in position for v in value):
        return None
    ranks = sorted({v.get("rank", i) for i, v in enumerate(value)})
    return [[position[v["value"]] for i, v in enumerate(value) if v.get("rank", i) == rank] for rank in ranks]


def argilla_records(record: dict[str, Any]) -> list[Native]:
    fields = _object(record, "fields")
    prompt = _prompt(fields, "fields")
    keys = [key for key in _numbered(fields) if key not in PROMPT_KEYS]
    texts = [fields[key] for key in keys]
    record_id = f"argilla:{record.get('id') or record.get('_server_id')}"
    out = []
    questions = record.get("responses") or {}
    if not isinstance(questions, dict):
        raise RowInvalid("responses", "must map each question to its answers")
    for question, answers in questions.items():
        for answer in answers if isinstance(answers, list) else []:
            if not isinstance(answer, dict) or answer.get("status", "submitted") != "submitted":
                continue  # drafts and discarded answers are not judgments
            ranking = _argilla_ranking(answer.get("value"), keys)
            if ranking is not None:
                who = answer.get("user_id")
                out.append({"id": f"{record_id}:{question}:{who}", "prompt": prompt, "responses": texts,
                            "ranking": ranking, "source": f"argilla:{who}"})
    return out or [_unlabeled(record_id, prompt, texts)]


CONVERTERS = {"label-studio": label_studio_records, "argilla": argilla_records}
