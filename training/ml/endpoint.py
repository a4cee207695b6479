"""Candidates from any OpenAI-compatible model server (vLLM, TGI, llama.cpp's server, OpenAI itself):
a small chat-completions client. Pure: no Django, no torch; callers pass plain data.

Each prompt is one job on a thread pool of `concurrency`; a job asks for k samples with `n=k` and
tops up with further requests when the server returns fewer choices (llama.cpp's server ignores n).
A request that gets 429, a 5xx, a connection error or a timeout is retried with exponential
backoff (a Retry-After header, when sent, is honoured up to a cap); any other 4xx, or retries
running out, raises EndpointError with the endpoint's status and a fixed message (never the
server's body). Progress is reported from the calling thread only, so a progress callback may touch
the database.

The operator's EndpointPolicy bounds what a registered endpoint can reach and read: hosts are checked
by training.ml.netguard at every request and the connection goes to the checked address; the key's
variable must carry the operator's prefix (so no request can send SECRET_KEY or DATABASE_URL away);
no redirect is followed; answers are read up to a byte cap and response texts cut at a length cap.
"""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3

from .netguard import AllowList, BlockedHost, Resolver, Target, system_resolver, url_check, url_problem, url_target

Messages = list[dict[str, str]]
ProgressFn = Callable[[float, dict[str, Any]], None]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
MAX_BACKOFF_S = 30.0
DEFAULT_KEY_ENV_PREFIX = "PAIRWISE_ENDPOINT_KEY_"
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_RESPONSE_CHARS = 1_000_000


@dataclass
class EndpointConfig:
    base_url: str = field(metadata={"help": "The server's OpenAI-compatible base URL, /v1 included "
                                            "(e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1)."})
    model: str = field(metadata={"help": "The model name the server expects in the request's `model` field."})
    api_key_env: str = field(default="", metadata={"help": "Name of the environment variable that holds the API key, "
                                                           "sent as `Authorization: Bearer`; empty for no key. It must "
                                                           "start with the operator's prefix (EndpointPolicy). The key "
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
        url = url_problem(self.base_url)
        if url:
            out["base_url"] = url
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


@dataclass(frozen=True)
class EndpointPolicy:
    """The operator's limits on every endpoint (settings, never request fields). The defaults are the
    strict ones: public hosts only, keys only from variables named with the default prefix."""
    allowed: AllowList = AllowList()
    key_env_prefix: str = DEFAULT_KEY_ENV_PREFIX
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_response_chars: int = DEFAULT_MAX_RESPONSE_CHARS
    resolver: Resolver = system_resolver

    def key_env_problem(self, name: str) -> str | None:
        """Why the variable may not be read for a key (None: it may, or there is no key)."""
        if not name:
            return None
        if not self.key_env_prefix:
            return "is not allowed: the operator allows no API keys for endpoints (PAIRWISE_ENDPOINT_KEY_ENV_PREFIX is empty)"
        if not name.startswith(self.key_env_prefix) or name == self.key_env_prefix:
            return (f"must start with {self.key_env_prefix} (the operator's PAIRWISE_ENDPOINT_KEY_ENV_PREFIX): "
                    f"only such variables may hold endpoint keys")
        return None

    def problems(self, values: dict[str, Any]) -> dict[str, str]:
        """The policy's field errors for an endpoint's settings (base_url, api_key_env), at registration."""
        out: dict[str, str] = {}
        key = self.key_env_problem(values.get("api_key_env") or "")
        if key:
            out["api_key_env"] = key
        url = url_check(values.get("base_url") or "", allow=self.allowed, resolver=self.resolver)
        if url:
            out["base_url"] = url
        return out


class EndpointError(RuntimeError):
    """The endpoint failed for good: `status` is its last HTTP status (None for a connection error,
    a timeout or a refused address), `message` a fixed description (never the server's body)."""

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


def _retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(MAX_BACKOFF_S, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


def _status_message(status: int) -> str:
    """A fixed message for an HTTP status: never the server's body or its reason phrase, which an
    internal server could fill with what it holds."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "HTTP error"
    return f"{phrase} (redirects are not followed)" if 300 <= status < 400 else phrase


def _connection_message(exc: BaseException) -> str:
    """A connection failure in fixed words: the exception's class and the system's reason (its text
    may quote what the server sent, e.g. a bad status line)."""
    name, seen, cause = type(exc).__name__, set(), exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return f"connection error ({name}): {cause.strerror}"
        cause = getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
    return f"connection error ({name})"


class _TooLarge(Exception):
    pass


def _read_capped(response: urllib3.BaseHTTPResponse, cap: int) -> bytes:
    """The body, streamed; _TooLarge (the connection dropped) as soon as it passes cap bytes."""
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > cap:
        raise _TooLarge
    chunks, size = [], 0
    for chunk in response.stream(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class EndpointClient:
    """One endpoint's requests (thread-safe). Each request resolves the host and checks it with the
    policy (training.ml.netguard), then connects to that checked address with the URL's host name in
    the Host header and for TLS (SNI and the certificate), so DNS cannot move it afterwards; it
    follows no redirect and reads at most policy.max_response_bytes."""

    def __init__(self, config: EndpointConfig, *, policy: EndpointPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.config, self.sleep = config, sleep
        self.policy = policy or EndpointPolicy()
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        problem = self.policy.key_env_problem(config.api_key_env)
        if problem:  # checked again here: an endpoint stored before the rule, or under another prefix
            raise EndpointError(f"api_key_env {problem}", url=config.url)
        if config.api_key_env:
            key = os.environ.get(config.api_key_env, "")
            if not key:
                raise EndpointError(f"environment variable {config.api_key_env} (the API key) is not set", url=config.url)
            self.headers["Authorization"] = f"Bearer {key}"
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def _pool(self, target: Target) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.address, target.port, target.host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                common = {"maxsize": self.config.concurrency, "block": False, "retries": False}
                if target.scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        target.address, target.port, server_hostname=target.host, assert_hostname=target.host,
                        cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where(),
                        **common)
                else:
                    pool = urllib3.HTTPConnectionPool(target.address, target.port, **common)
                self._pools[key] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    def _send(self, data: bytes) -> tuple[int, bytes | None, urllib3.BaseHTTPResponse]:
        """One POST to the checked address: (status, body or None when it is not a success, response)."""
        cfg, policy = self.config, self.policy
        target = url_target(cfg.url, allow=policy.allowed, resolver=policy.resolver)  # at every connection
        response = self._pool(target).urlopen(
            "POST", target.path, body=data, headers={**self.headers, "Host": target.netloc}, redirect=False,
            retries=False, preload_content=False, assert_same_host=False,
            timeout=urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s))
        ok, done = 200 <= response.status < 300, False
        try:
            content = _read_capped(response, policy.max_response_bytes) if ok else None  # an error's body: never read
            done = ok
            return response.status, content, response
        finally:
            if not done:
                response.close()  # drop the connection rather than read a body we do not want
            response.release_conn()

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST to /chat/completions with retries; the decoded JSON answer."""
        cfg = self.config
        data = json.dumps(body).encode()
        attempts = cfg.retries + 1
        for attempt in range(attempts):
            wait_s = min(MAX_BACKOFF_S, cfg.backoff_s * (2 ** attempt)) * (1 + 0.1 * random.random())
            try:
                status, content, response = self._send(data)
            except BlockedHost as exc:  # not retried: the address is refused, not down
                raise EndpointError(str(exc), url=cfg.url, attempts=attempt + 1) from None
            except _TooLarge:
                raise EndpointError(f"the answer is larger than {self.policy.max_response_bytes} bytes",
                                    status=200, url=cfg.url, attempts=attempt + 1) from None
            except urllib3.exceptions.NewConnectionError as exc:  # a subclass of the timeout error: first
                status, message = None, _connection_message(exc)
            except urllib3.exceptions.TimeoutError:
                status, message = None, f"no answer within {cfg.timeout_s:g} s (timeout)"
            except socket.gaierror:
                status, message = None, f"the host {urlsplit(cfg.url).hostname} does not resolve"
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                status, message = None, _connection_message(exc)
            else:
                if content is not None:
                    try:
                        return json.loads(content)
                    except (ValueError, RecursionError):
                        raise EndpointError("the answer is not JSON", status=status, url=cfg.url,
                                            attempts=attempt + 1) from None
                message = _status_message(status)
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
            raise EndpointError("the answer has no choices", url=cfg.url)
        texts, cap = [], self.policy.max_response_chars
        for choice in choices[:n]:
            if not isinstance(choice, dict):
                raise EndpointError("the answer's choices are not objects", url=cfg.url)
            message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
            texts.append(str(message.get("content") or choice.get("text") or "")[:cap])
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
    policy: EndpointPolicy | None = None,
) -> list[list[str]]:
    """Up to k distinct responses per prompt (fewer when samples repeat), in prompt order, like
    training.ml.generate.generate_candidates. Raises EndpointError when a request fails for good;
    the requests still queued are dropped and those in flight end within their timeout. policy: the
    operator's limits (None: the strict defaults)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    client = EndpointClient(config, policy=policy, sleep=sleep)
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
