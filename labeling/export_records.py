"""Export formats and their records, pure (no Django): what one pair or judgment looks like in each
format, and the same pair records as Postgres SQL.

The SQL twins exist because JSON encoding in Python's loop was the export's bottleneck; a test
holds every SQL record to its Python twin, byte for byte after parsing.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

from labeling.transcripts import ANSWER_MARK, HUMAN_TURN, ROLE_TAGS, TRANSCRIPT_STARTS, hh_transcript, prompt_transcript

# Hugging Face dataset folders (a .zip when streamed or saved as one file), by record shape:
# TRL explicit (prompt/chosen/rejected), TRL conversational (messages) and InstructGPT ranked.
HF_FORMATS = {"hf": "trl", "hf-chat": "trl-chat", "hf-ranked": "ranked"}
FORMATS = ("trl", "trl-chat", "hh", "ranked", "judgments", "parquet", "csv", *HF_FORMATS)
PAIR_FORMATS = frozenset({"trl", "trl-chat", "hh", "parquet", "csv", "hf", "hf-chat"})
SQL_JSON_FORMATS = frozenset({"trl", "trl-chat", "hh"})
# Pair formats whose records can carry a label model's posterior P(chosen beats rejected) (`label_posterior`).
POSTERIOR_FORMATS = frozenset({"trl", "trl-chat", "hh", "parquet", "hf", "hf-chat"})
JUDGMENT_FORMATS = frozenset({"ranked", "judgments", "hf-ranked"})
FILE_FORMATS = frozenset({"parquet", *HF_FORMATS})  # written whole to a file, then sent; not streamed as lines
EXTENSIONS = {"parquet": "parquet", "csv": "csv"} | {fmt: "zip" for fmt in HF_FORMATS}
CONTENT_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv; charset=utf-8"} | {
    fmt: "application/zip" for fmt in HF_FORMATS}
HF_SPLITS = ("train", "test")  # labeling.splits.TRAIN, TEST: the product's one split of prompts
CSV_COLUMNS = ["id", "prompt", "chosen", "rejected", "chosen_source", "rejected_source", "annotator",
               "judgment_source", "created_at"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def extension(fmt: str) -> str:
    return EXTENSIONS.get(fmt, "jsonl")


def content_type(fmt: str) -> str:
    return CONTENT_TYPES.get(fmt, "application/x-ndjson; charset=utf-8")


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r, option=orjson.OPT_NAIVE_UTC) + b"\n" for r in records)


def csv_cell(text: str) -> str:
    """Model and annotator text as a spreadsheet cell that is never a formula (CSV injection):
    a cell starting with = + - @ tab or CR gets a leading apostrophe, as OWASP recommends."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


# --- records from rows (see PAIR_COLUMNS and JUDGMENT_COLUMNS in labeling.selectors.exports) --------

def pair_record(fmt: str, row: dict[str, Any]) -> dict[str, Any]:
    record = _pair_shape(fmt, row)
    if "label_posterior" in row:  # an export with a label model (labeling.selectors.exports.pair_rows)
        record["label_posterior"] = row["label_posterior"]
    return record


def _pair_shape(fmt: str, row: dict[str, Any]) -> dict[str, Any]:
    prompt = prompt_transcript(row["prompt_text"], row["prompt_messages"])
    if fmt == "trl-chat":
        messages = row["prompt_messages"] or [{"role": "user", "content": row["prompt_text"]}]
        return {"id": row["id"], "prompt": messages,
                "chosen": [{"role": "assistant", "content": row["chosen_text"]}],
                "rejected": [{"role": "assistant", "content": row["rejected_text"]}]}
    if fmt == "hh":
        return {"id": row["id"], "chosen": hh_transcript(prompt, row["chosen_text"]),
                "rejected": hh_transcript(prompt, row["rejected_text"])}
    return {"id": row["id"], "prompt": prompt, "chosen": row["chosen_text"], "rejected": row["rejected_text"]}


def csv_row(row: dict[str, Any], annotator: str | None) -> list[Any]:
    texts = [prompt_transcript(row["prompt_text"], row["prompt_messages"]), row["chosen_text"], row["rejected_text"],
             row["chosen_source"], row["rejected_source"], annotator or "", row["judgment_source"]]
    return [row["id"], *(csv_cell(t or "") for t in texts), row["judged_at"].isoformat()]


def judgment_record(row: dict[str, Any], annotator: str | None) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("annotator_id", "prompt_text", "prompt_messages")}
    out["annotator"] = annotator
    return out


def ranked_record(row: dict[str, Any], annotator: str | None, responses: dict[int, tuple[str, str]]) -> dict[str, Any]:
    """InstructGPT's K-way line: the responses best first with their tie group (rank), so a reward
    model scores each response once and takes every pair's loss from those K scores."""
    ordered = [
        {"id": rid, "rank": rank, "text": responses[rid][0], "source": responses[rid][1],
         "likert": row["likert"].get(str(rid)), "flags": row["flags"].get(str(rid), [])}
        for rank, group in enumerate(row["ranking"]) for rid in group
    ]
    return {
        "id": row["judgment_id"], "prompt": prompt_transcript(row["prompt_text"], row["prompt_messages"]),
        "messages": row["prompt_messages"], "responses": ordered, "ranking": row["ranking"],
        "both_bad": row["both_bad"], "annotator": annotator, "source": row["source"],
        "created_at": row["created_at"],
    }


# --- Hugging Face dataset folders ---------------------------------------------------------------

def hf_data_file(split: str) -> str:
    """The path `datasets` reads a split from, relative to the folder."""
    return f"data/{split}-00000-of-00001.parquet"


def hf_dataset_card(*, fmt: str, project: str, rows: dict[str, int], filters: dict[str, Any]) -> str:
    """README.md of a dataset folder: YAML front matter with `configs` (one data_files entry per
    written split) and a short card. Every free text goes through JSON quoting (valid YAML), so a
    project name with newlines, quotes or markdown cannot break the front matter."""
    shape = HF_FORMATS[fmt]
    files = [{"split": split, "path": hf_data_file(split)} for split in HF_SPLITS if split in rows]
    meta = {
        "pretty_name": project,
        "tags": ["rlhf", "preferences", "pairwise", {"trl": "trl", "trl-chat": "trl", "ranked": "ranking"}[shape]],
        "task_categories": ["text-generation"],
        "configs": [{"config_name": "default", "data_files": files}],
    }
    front = "\n".join(f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in meta.items())
    described = {"trl": "TRL explicit preference shape: `prompt`, `chosen`, `rejected` (strings).",
                 "trl-chat": "TRL conversational shape: `prompt` (messages), `chosen`, `rejected` (assistant messages).",
                 "ranked": "InstructGPT ranked shape: one row per judgment, `responses` best first with their `rank`."}[shape]
    counts = "\n".join(f"| {split} | {rows[split]} |" for split in HF_SPLITS if split in rows)
    return (f"---\n{front}\n---\n\n# Preference data\n\n{described}\n\n"
            "The train/test split is the product's held-out rule (labeling/splits.py): a prompt is in `test` "
            "when the md5 bucket of its external id falls in the held-out fraction, so no prompt is in both.\n\n"
            f"| split | rows |\n|---|---|\n{counts}\n\n"
            f"Export filters: `{json.dumps(filters, sort_keys=True, default=str)}`\n")


# --- the same pair records in Postgres SQL -----------------------------------------------------------
# Over a subquery t (prompt_text, prompt_messages) for the prompt and p (id, prompt, prompt_text,
# prompt_messages, chosen, rejected) for the records; labeling.selectors.exports supplies both.

def _sql_text(text: str) -> str:
    """A Python string as a Postgres E'' literal (only the characters the transcript marks hold)."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


_PG_ROLE_TAG = ("CASE m->>'role' " + " ".join(f"WHEN '{role}' THEN '{tag}'" for role, tag in ROLE_TAGS.items())
                + " ELSE 'Human' END")

# prompt_transcript(t.prompt_text, t.prompt_messages)
PG_PROMPT = (
    "CASE WHEN t.prompt_text <> '' OR t.prompt_messages IS NULL THEN t.prompt_text ELSE coalesce(("
    f"SELECT string_agg(E'\\n\\n' || {_PG_ROLE_TAG} || ': ' || coalesce(m->>'content', ''), '' ORDER BY n) || "
    f"{_sql_text(ANSWER_MARK)} FROM jsonb_array_elements(t.prompt_messages) WITH ORDINALITY AS x(m, n)), '') END"
)


def _pg_hh(answer: str) -> str:
    """hh_transcript(p.prompt, answer)."""
    starts = " OR ".join(f"left(p.prompt, {len(start)}) = {_sql_text(start)}" for start in TRANSCRIPT_STARTS)
    head = (f"(CASE WHEN {starts} THEN p.prompt "
            f"ELSE {_sql_text(HUMAN_TURN)} || p.prompt || {_sql_text(ANSWER_MARK)} END)")
    return f"{head} || CASE WHEN left({answer}, 1) = ' ' THEN {answer} ELSE ' ' || {answer} END"


def _pg_json(*fields: tuple[str, str]) -> str:
    """A JSON object by concatenation: to_json on each text is measurably cheaper than json_build_object."""
    parts = [f"'{{\"{key}\": ' || {expr}" if i == 0 else f"', \"{key}\": ' || {expr}" for i, (key, expr) in enumerate(fields)]
    return " || ".join(parts) + " || '}'"


# pair_record(fmt, row) per SQL_JSON_FORMATS, as JSON text.
PG_RECORDS = {
    "trl": _pg_json(("id", "p.id"), ("prompt", "to_json(p.prompt)"), ("chosen", "to_json(p.chosen)"),
                    ("rejected", "to_json(p.rejected)")),
    "trl-chat": (
        "json_build_object('id', p.id, 'prompt', coalesce(p.prompt_messages::json, json_build_array("
        "json_build_object('role', 'user', 'content', p.prompt_text))), 'chosen', json_build_array("
        "json_build_object('role', 'assistant', 'content', p.chosen)), 'rejected', json_build_array("
        "json_build_object('role', 'assistant', 'content', p.rejected)))::text"
    ),
    "hh": _pg_json(("id", "p.id"), ("chosen", f"to_json({_pg_hh('p.chosen')})"),
                   ("rejected", f"to_json({_pg_hh('p.rejected')})")),
}
