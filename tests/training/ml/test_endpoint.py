"""training.ml.endpoint against a real OpenAI-compatible server on loopback (tests/endpoint_server.py
serving the tiny test policy): real HTTP, real sampling, faults asked for by path."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.endpoint_server import key_digest, start_server
from training.ml.endpoint import EndpointConfig, EndpointError, EndpointPolicy, endpoint_generate, unique_responses
from training.ml.netguard import AllowList

# The test server is on loopback, which only an operator's allow-list opens (the default refuses it).
LOOPBACK = EndpointPolicy(allowed=AllowList.parse("127.0.0.1/32"), key_env_prefix="PW_TEST_")


def generate(*args, **kwargs):
    return endpoint_generate(*args, policy=LOOPBACK, **kwargs)


@pytest.fixture(scope="session")
def endpoint_server(tiny_policy):
    server = start_server(tiny_policy)
    yield server
    server.stop()


def config(server, prefix: str = "", **overrides) -> EndpointConfig:
    values = {"base_url": server.base(prefix), "model": "tiny", "temperature": 1.0, "max_tokens": 6, "concurrency": 2,
              "timeout_s": 20, "retries": 3, "backoff_s": 0.01}
    return EndpointConfig(**{**values, **overrides})


def fault(status: int, count: int) -> str:
    return f"/fail/{status}/{count}/{uuid.uuid4().hex[:8]}"


def test_real_generation_asks_for_k_samples_per_prompt_in_prompt_order(endpoint_server):
    seen_progress = []
    prompts = ["question number 1?", [{"role": "user", "content": "question number 2?"}], "question number 3?"]
    prefix = ""  # no fault, no key
    out = generate(config(endpoint_server, prefix), prompts, k=3, system_prompt="Be brief.",
                            progress=lambda f, m: seen_progress.append((f, m)), seed=7)

    assert len(out) == 3
    for texts in out:
        assert 1 <= len(texts) <= 3 and all(t.strip() == t and t for t in texts) and len(set(texts)) == len(texts)
    assert seen_progress[-1] == (1.0, {"prompts_done": 3})
    bodies = [r["body"] for r in endpoint_server.requests() if r["body"]["messages"][-1]["content"] == "question number 2?"]
    assert bodies and bodies[0]["n"] == 3 and bodies[0]["max_tokens"] == 6 and bodies[0]["model"] == "tiny"
    assert bodies[0]["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_after_429_and_5xx_then_succeeds(endpoint_server, status):
    prefix = fault(status, 2)
    out = generate(config(endpoint_server, prefix, concurrency=1), ["hello?"], k=2)
    assert len(out) == 1 and out[0]
    assert len(endpoint_server.requests(prefix)) == 3  # two refused, the third served


def test_backoff_doubles_between_retries(endpoint_server):
    waits = []
    prefix = fault(500, 3)
    generate(config(endpoint_server, prefix, backoff_s=0.5), ["hi?"], k=1, sleep=waits.append)
    assert len(waits) == 3 and 0.5 <= waits[0] < 0.6 and 1.0 <= waits[1] < 1.2 and 2.0 <= waits[2] < 2.4


def test_an_endpoint_that_keeps_failing_raises_its_status_and_message(endpoint_server):
    prefix = fault(502, 99)
    with pytest.raises(EndpointError) as info:
        generate(config(endpoint_server, prefix, retries=2), ["a?", "b?"], k=2)
    # a fixed message for the status: the server's body ("injected 502 ...") is never recorded
    assert info.value.status == 502 and info.value.attempts == 3 and info.value.message == "Bad Gateway"
    assert "answered 502 after 3 attempts: Bad Gateway" in str(info.value) and "injected" not in str(info.value)


def test_a_client_error_is_not_retried(endpoint_server):
    prefix = fault(400, 99)
    with pytest.raises(EndpointError) as info:
        generate(config(endpoint_server, prefix, concurrency=1), ["a?"], k=1)
    assert info.value.status == 400 and len(endpoint_server.requests(prefix)) == 1


def test_a_slow_endpoint_times_out_and_fails_after_its_retries(endpoint_server):
    start = time.monotonic()
    with pytest.raises(EndpointError) as info:
        generate(config(endpoint_server, "/slow/3", timeout_s=0.5, retries=1), ["slow?"], k=1)
    assert info.value.status is None and "timeout" in info.value.message and info.value.attempts == 2
    assert time.monotonic() - start < 2.5  # two 0.5 s attempts, not the server's 3 s answers


def test_the_api_key_is_read_from_the_named_variable_and_sent_as_bearer(endpoint_server, monkeypatch):
    secret = f"sk-test-{uuid.uuid4().hex[:8]}"
    prefix = f"/key/{key_digest(secret)}"
    monkeypatch.delenv("PW_TEST_ENDPOINT_KEY", raising=False)
    with pytest.raises(EndpointError, match="PW_TEST_ENDPOINT_KEY"):  # unset: fails before any request
        generate(config(endpoint_server, prefix, api_key_env="PW_TEST_ENDPOINT_KEY"), ["a?"], k=1)
    assert endpoint_server.requests(prefix) == []

    monkeypatch.setenv("PW_TEST_ENDPOINT_KEY", "sk-wrong")
    with pytest.raises(EndpointError) as info:  # a wrong key: 401, not retried
        generate(config(endpoint_server, prefix, api_key_env="PW_TEST_ENDPOINT_KEY"), ["a?"], k=1)
    assert info.value.status == 401 and len(endpoint_server.requests(prefix)) == 1

    monkeypatch.setenv("PW_TEST_ENDPOINT_KEY", secret)
    out = generate(config(endpoint_server, prefix, api_key_env="PW_TEST_ENDPOINT_KEY"), ["a?"], k=2)
    assert out[0]
    assert endpoint_server.requests(prefix)[-1]["authorization"] == f"Bearer {secret}"


def test_config_checks_name_the_field():
    assert EndpointConfig.check({"base_url": "ftp://x", "model": "", "api_key_env": "sk-abc", "temperature": 3}) == {
        "base_url": "must start with http:// or https://", "model": "required",
        "api_key_env": "must be an environment variable name (letters, digits, _), not the key",
        "temperature": "between 0 and 2",
    }
    with pytest.raises(ValueError, match="concurrency"):
        EndpointConfig(base_url="http://127.0.0.1:1/v1", model="m", concurrency=0)
    cfg = EndpointConfig.from_dict({"base_url": "http://h/v1/", "model": "m", "temperature": None, "extra": 1})
    assert cfg.url == "http://h/v1/chat/completions" and cfg.temperature == 1.0


def test_unique_responses_drops_duplicates_after_stripping() -> None:
    assert unique_responses([" a", "a ", "b", "", "c"], k=2) == ["a", "b"]
