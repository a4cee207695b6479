"""The verdict: what an annotator answers about one task (ranking, ratings, flags, rationale), as one
value. The API's serializer and the services' callers build it as given; `verdict_validate` checks it
against the responses shown and the project's settings, with every message in this one place."""
from __future__ import annotations

from dataclasses import dataclass, replace

from django.core.exceptions import ValidationError

from labeling.models import Project
from labeling.ranking import RankingError, ranking_validate

MAX_RATIONALE_CHARS = 20_000
MAX_TIME_SPENT_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Verdict:
    """ranking: tie groups of response ids, best first; likert: {response id: 1..7}; flags:
    {response id: [flag key]}; both_bad: every response is bad (one tie group). Fields are typed
    `object` on purpose: a body holds anything until verdict_validate has looked at it."""

    ranking: object
    likert: object = None
    flags: object = None
    rationale: object = ""
    time_spent_ms: object = 0
    both_bad: bool = False


def verdict_validate(*, verdict: Verdict, idempotency_key: object, project: Project, response_ids: list[int]) -> Verdict:
    """The verdict cleaned (ranking normalised, ratings and flags keyed by str(response id), the time
    capped), or a ValidationError naming every bad field at once, the idempotency key's included."""
    errors: dict[str, str] = {}
    try:
        ranking = ranking_validate(verdict.ranking, response_ids)
    except RankingError as exc:
        errors["ranking"] = str(exc)
    if verdict.both_bad and "ranking" not in errors and len(ranking) != 1:
        errors["both_bad"] = "a both-bad verdict ranks every response as tied"
    likert = _likert_clean(verdict.likert, response_ids, project, errors)
    if project.mode == Project.Mode.RANK and not errors:
        contradiction = ranking_likert_contradiction(ranking, likert)
        if contradiction:
            errors["ranking"] = contradiction
    flags = _flags_clean(verdict.flags, response_ids, project, errors)
    rationale, time_spent_ms = verdict.rationale, verdict.time_spent_ms
    if not isinstance(rationale, str) or len(rationale) > MAX_RATIONALE_CHARS or "\x00" in rationale:
        errors["rationale"] = f"must be text of at most {MAX_RATIONALE_CHARS} characters"
    if isinstance(time_spent_ms, bool) or not isinstance(time_spent_ms, int) or time_spent_ms < 0:
        errors["time_spent_ms"] = "must be a non-negative integer"
    if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 128:
        errors["idempotency_key"] = "must be 1 to 128 characters"
    if errors:
        raise ValidationError(errors)
    return replace(verdict, ranking=ranking, likert=likert, flags=flags,
                   time_spent_ms=min(time_spent_ms, MAX_TIME_SPENT_MS))


def _response_key(key, response_ids: list[int]) -> int | None:
    try:
        value = int(key)
    except (TypeError, ValueError):
        return None
    return value if value in response_ids else None


def _per_response(field_name: str, mapping, response_ids, errors: dict, *, enabled: bool, disabled: str,
                  shape: str, clean_one) -> dict:
    """{response id: cleaned value} from an optional per-response map (likert, flags); clean_one(rid,
    value) gives (error, value), a value of None leaves the response out. Problems go to
    errors[field_name], the last one wins."""
    if not mapping:
        return {}
    if not enabled:
        errors[field_name] = disabled
        return {}
    if not isinstance(mapping, dict):
        errors[field_name] = f"must map response ids to {shape}"
        return {}
    clean = {}
    for key, value in mapping.items():
        rid = _response_key(key, response_ids)
        problem, cleaned = (f"unknown response {key!r}", None) if rid is None else clean_one(rid, value)
        if problem:
            errors[field_name] = problem
        elif cleaned is not None:
            clean[str(rid)] = cleaned
    return clean


def _likert_clean(likert, response_ids, project: Project, errors: dict) -> dict:
    def rating(rid: int, value):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
            return f"rating for response {rid} must be an integer from 1 to 7, got {value!r}", None
        return None, value

    return _per_response("likert", likert, response_ids, errors, enabled=project.likert_enabled,
                         disabled="Likert ratings are disabled in this project", shape="ratings 1..7", clean_one=rating)


def ranking_likert_contradiction(ranking: list[list[int]], likert: dict) -> str | None:
    """K-way: why a ranking contradicts the ratings given in the same judgment (a response put below one
    rated strictly lower; ties are no contradiction), or None. likert is keyed by str(response id).
    verdict_validate refuses such a verdict; a machine annotator, whose ratings are asked apart from its
    ranking, drops its ratings instead."""
    placed: list[tuple[int, int]] = []  # (response, rating) of the groups above
    for group in ranking:
        for below in group:
            rating = likert.get(str(below))
            worse = next(((rid, r) for rid, r in placed if rating is not None and r < rating), None)
            if worse is not None:
                return (f"response {worse[0]} (rated {worse[1]}) is ranked above response {below} "
                        f"(rated {rating}): the ranking contradicts the ratings")
        placed.extend((rid, likert[str(rid)]) for rid in group if str(rid) in likert)
    return None


def _flags_clean(flags, response_ids, project: Project, errors: dict) -> dict:
    def flag_keys(rid: int, values):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return f"flags for response {rid} must be a list of flag keys", None
        unknown = set(values) - {key for key, _ in project.flag_choices}
        if unknown:
            return f"unknown flags {sorted(unknown)}", None
        return None, sorted(set(values)) or None  # no flags: nothing to store

    return _per_response("flags", flags, response_ids, errors, enabled=project.flags_enabled,
                         disabled="flags are disabled in this project", shape="lists of flag keys", clean_one=flag_keys)
