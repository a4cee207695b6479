"""Candidates from any OpenAI-compatible model server (vLLM, TGI, llama.cpp's server, OpenAI itself):
a small chat-completions client. Pure: no Django, no torch; callers pass plain data.

Each prompt is one job on a thread pool of `concurrency`; a job asks for k samples with `n=k` and
tops up with further requests when the server returns fewer choices (llama.cpp's server ignores n).
A request that gets 429, a 5xx, a connection error or a timeout is retried with exponential
backoff (a Retry-After header, when sent, is honoured up to a cap); any other 4xx, or retries
running out, raises EndpointError with the endpoint's status and message. Progress is reported
from the calling thread only, so a progress callback may touch the database.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import requests

Messages = list[dict[str, str]]
ProgressFn = Callable[[float, dict[str, Any]], None]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
MAX_BACKOFF_S = 30.0
MAX_ERROR_CHARS = 500


@dataclass
class EndpointConfig:
    base_url: str = field(metadata={"help": "The server's OpenAI-compatible base URL, /v1 included "
                                            "(e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1)."})
    model: str = field(metadata={"help": "The model name the server expects in the request's `model` field."})
    api_key_env: str = field(default="", metadata={"help": "Name of the environment variable that holds the API key, "
                                                           "sent as `Authorization: Bearer`; empty for no key. The key "
                                                           "itself is never stored."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature; 0 is greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling: keep the smallest token set with this much probability."})
    max_tokens: int = field(default=128, metadata={"help": "Most tokens generated per response."})
    concurrency: int = field(default=4, metadata={"help": "Requests in flight at once (one prompt per request)."})
    timeout_s: float = field(default=60.0, metadata={"help": "Seconds to wait for a connection and for the answer of one request."})
    retries: int = field(default=4, metadata={"help": "Retries of a request after a 429, a 5xx, a connection error or a timeout."})
    backoff_s: float = field(default=1.0, metadata={"help": "Wait before the first retry; doubles on each next one (Retry-After wins, up to 30 s)."})

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in problems.items()))

    def problems(self) -> dict[str, str]:
        """Field name -> what is wrong with it (empty when the config is usable)."""
        out: dict[str, str] = {}
        if not (isinstance(self.base_url, str) and self.base_url.startswith(("http://", "https://"))):
            out["base_url"] = "must start with http:// or https://"
        if not (isinstance(self.model, str) and self.model.strip()):
            out["model"] = "required"
        if self.api_key_env and not (self.api_key_env.replace("_", "a").isalnum() and not self.api_key_env[0].isdigit()):
            out["api_key_env"] = "must be an environment variable name (letters, digits, _), not the key"
        if not 0 <= self.temperature <= 2:
            out["temperature"] = "between 0 and 2"
        if not 0 < self.top_p <= 1:
            out["top_p"] = "above 0 and at most 1"
        if not 1 <= self.max_tokens <= 32768:
            out["max_tokens"] = "between 1 and 32768"
        if not 1 <= self.concurrency <= 64:
            out["concurrency"] = "between 1 and 64"
        if not 0 < self.timeout_s <= 3600:
            out["timeout_s"] = "above 0 and at most 3600"
        if not 0 <= self.retries <= 20:
            out["retries"] = "between 0 and 20"
        if not 0 <= self.backoff_s <= 60:
            out["backoff_s"] = "between 0 and 60"
        return out

    @classmethod
    def check(cls, values: dict[str, Any]) -> dict[str, str]:
        """Field name -> problem for these values, without building a config."""
        probe = object.__new__(cls)
        for f in fields(cls):
            setattr(probe, f.name, values.get(f.name, f.default))
        try:
            return probe.problems()
        except TypeError as exc:
            return {"config": f"a setting has the wrong type: {exc}"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> EndpointConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in {**data, **overrides}.items() if k in known and v is not None}
        return cls(**values)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


class EndpointError(RuntimeError):
    """The endpoint failed for good: `status` is its last HTTP status (None for a connection error
    or a timeout), `message` what it said."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "", attempts: int = 1):
        self.status, self.message, self.url, self.attempts = status, message, url, attempts
        where = f"endpoint {url}" if url else "endpoint"
        said = f"answered {status}" if status is not None else "failed"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{where} {said}{tries}: {message}")


def endpoint_messages(prompt: str | Messages, system_prompt: str = "") -> Messages:
    """Chat messages for one prompt: a string becomes one user turn; a system message is put first
    when the prompt has none and system_prompt is given."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if system_prompt and (not messages or messages[0].get("role") != "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:MAX_ERROR_CHARS]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:MAX_ERROR_CHARS]
    if isinstance(error, str):
        return error[:MAX_ERROR_CHARS]
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])[:MAX_ERROR_CHARS]
    return json.dumps(body)[:MAX_ERROR_CHARS]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(MAX_BACKOFF_S, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


class EndpointClient:
    """One endpoint's requests (thread-safe: one requests.Session per thread)."""

    def __init__(self, config: EndpointConfig, *, sleep: Callable[[float], None] = time.sleep):
        self.config, self.sleep = config, sleep
        self._local = threading.local()
        self.headers = {"Content-Type": "application/json"}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env, "")
            if not key:
                raise EndpointError(f"environment variable {config.api_key_env} (the API key) is not set", url=config.url)
            self.headers["Authorization"] = f"Bearer {key}"
        self.sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            self.sessions.append(session)
        return session

    def close(self) -> None:
        for session in self.sessions:
            session.close()

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST to /chat/completions with retries; the decoded JSON answer."""
        cfg = self.config
        attempts = cfg.retries + 1
        for attempt in range(attempts):
            wait_s = min(MAX_BACKOFF_S, cfg.backoff_s * (2 ** attempt)) * (1 + 0.1 * random.random())
            try:
                response = self._session().post(cfg.url, json=body, headers=self.headers, timeout=cfg.timeout_s)
            except requests.Timeout:
                status, message = None, f"no answer within {cfg.timeout_s:g} s (timeout)"
            except requests.ConnectionError as exc:
                status, message = None, f"connection error: {exc}"[:MAX_ERROR_CHARS]
            else:
                if response.ok:
                    try:
                        return response.json()
                    except ValueError:
                        raise EndpointError(f"the answer is not JSON: {response.text[:200]!r}", status=response.status_code,
                                            url=cfg.url, attempts=attempt + 1) from None
                status, message = response.status_code, _error_message(response)
                if status not in RETRY_STATUSES:
                    raise EndpointError(message, status=status, url=cfg.url, attempts=attempt + 1)
                asked = _retry_after(response)
                wait_s = asked if asked is not None else wait_s
            if attempt + 1 < attempts:
                self.sleep(wait_s)
        raise EndpointError(message, status=status, url=cfg.url, attempts=attempts)

    def complete(self, messages: Messages, n: int, seed: int | None = None) -> list[str]:
        """n sampled responses (the texts of the choices; fewer when the server returns fewer)."""
        cfg = self.config
        body: dict[str, Any] = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
                                "top_p": cfg.top_p, "max_tokens": cfg.max_tokens, "n": n}
        if seed is not None:
            body["seed"] = seed
        answer = self.post(body)
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list):
            raise EndpointError(f"the answer has no choices: {json.dumps(answer)[:200]}", url=cfg.url)
        texts = []
        for choice in choices[:n]:
            message = choice.get("message") or {}
            texts.append(str(message.get("content") or choice.get("text") or ""))
        return texts

    def samples(self, messages: Messages, k: int, seed: int | None = None) -> list[str]:
        """k samples for one prompt: n=k first, then top-up requests for what the server left out
        (at most k requests in all)."""
        texts: list[str] = []
        for i in range(k):
            missing = k - len(texts)
            if missing <= 0:
                break
            got = self.complete(messages, missing, None if seed is None else seed + i)
            if not got:
                raise EndpointError("the answer has no choices", url=self.config.url)
            texts.extend(got)
        return texts


def unique_responses(responses: Sequence[str], k: int) -> list[str]:
    """First k distinct non-empty responses, compared after stripping whitespace: the one rule for
    samples from an endpoint and from local generation (training.ml.generate imports it from here,
    which needs no torch)."""
    seen: list[str] = []
    for r in responses:
        r = r.strip()
        if r and r not in seen:
            seen.append(r)
    return seen[:k]


def endpoint_generate(
    config: EndpointConfig, prompts: Sequence[str | Messages], k: int = 4, system_prompt: str = "",
    progress: ProgressFn | None = None, seed: int | None = None, sleep: Callable[[float], None] = time.sleep,
) -> list[list[str]]:
    """Up to k distinct responses per prompt (fewer when samples repeat), in prompt order, like
    training.ml.generate.generate_candidates. Raises EndpointError when a request fails for good;
    the requests still queued are dropped and those in flight end within their timeout."""
    if k < 1:
        raise ValueError("k must be at least 1")
    client = EndpointClient(config, sleep=sleep)
    results: list[list[str] | None] = [None] * len(prompts)
    pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="endpoint")
    try:
        pending: dict[Future, int] = {}
        for i, prompt in enumerate(prompts):
            messages = endpoint_messages(prompt, system_prompt)
            future = pool.submit(client.samples, messages, k, None if seed is None else seed + i * k)
            pending[future] = i
        done_count = 0
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                results[i] = unique_responses(future.result(), k)  # raises the job's EndpointError
                done_count += 1
            if progress is not None:
                progress(done_count / max(1, len(prompts)), {"prompts_done": done_count})
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        client.close()
    return [r or [] for r in results]
