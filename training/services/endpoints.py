"""Model-server generators: an OpenAI-compatible endpoint (vLLM, TGI, llama.cpp's server, OpenAI)
registered as a policy version, so it is a response source and can be picked for candidate
generation and blind A/B evaluations like any trained policy.

The version's config is {"endpoint": {...}} (training.ml.endpoint.EndpointConfig's fields, the
sampling ones None = the project's generation settings); its artifact folder holds endpoint.json
with the same, so the registry's folder check holds and the version describes itself. The API key
is never stored: only the name of the environment variable that holds it, which must carry the
operator's prefix (PAIRWISE_ENDPOINT_KEY_ENV_PREFIX), so a request cannot make the workers send
SECRET_KEY or DATABASE_URL away. The host must be public unless the operator's allow-list
(PAIRWISE_ENDPOINT_ALLOWED_NETWORKS) names it: both are checked at registration and again by the
client on the worker at every request (training.ml.endpoint.EndpointPolicy)."""
from __future__ import annotations

import json
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from labeling.models import Project, Prompt
from training.models import ModelVersion
from training.selectors.data import prompt_input
from training.services.versions import model_version_register

ENDPOINT_FILE = "endpoint.json"
SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens")  # None: the project's generation settings


def _policy():
    """The operator's limits on endpoints, from the settings (read at each use, so tests and a
    changed setting apply to endpoints registered before)."""
    from training.ml.endpoint import EndpointPolicy
    from training.ml.netguard import AllowList

    return EndpointPolicy(
        allowed=AllowList.parse(settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS),
        key_env_prefix=settings.PAIRWISE_ENDPOINT_KEY_ENV_PREFIX,
        max_response_bytes=settings.PAIRWISE_ENDPOINT_MAX_RESPONSE_BYTES,
        max_response_chars=settings.PAIRWISE_MAX_TEXT_CHARS,
    )


def is_endpoint_version(version: ModelVersion | None) -> bool:
    return version is not None and isinstance(version.config, dict) and isinstance(version.config.get("endpoint"), dict)


def endpoint_config_of(*, version: ModelVersion, temperature: float, top_p: float, max_tokens: int):
    """The EndpointConfig a generation run uses: the version's settings, the sampling ones that the
    version leaves open taken from the caller (the project's generation settings)."""
    from training.ml.endpoint import EndpointConfig

    stored = dict(version.config["endpoint"])
    defaults = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
    for name, value in defaults.items():
        if stored.get(name) is None:
            stored[name] = value
    return EndpointConfig.from_dict(stored)


def endpoint_samples(config, prompts: list[Prompt], *, k: int, system_prompt: str, seed: int | None,
                     progress) -> list[list[str]]:
    """Up to k distinct responses per prompt from the endpoint, in prompt order (the prompts' chat
    messages with the project's system prompt, as the local policies see them)."""
    from training.ml.endpoint import endpoint_generate
    from training.ml.text import to_messages

    messages = [to_messages(prompt_input(p), system_prompt) for p in prompts]
    return endpoint_generate(config, messages, k=k, system_prompt=system_prompt, progress=progress, seed=seed,
                             policy=_policy())


def endpoint_version_register(
    *, project: Project | None, name: str, base_url: str, model: str, api_key_env: str = "",
    temperature: float | None = None, top_p: float | None = None, max_tokens: int | None = None,
    concurrency: int = 4, timeout_s: float = 60.0, retries: int = 4, backoff_s: float = 1.0, promoted: bool = False,
) -> ModelVersion:
    """Register an OpenAI-compatible endpoint as a ready policy version of the project (None: shared).
    Raises ValidationError keyed by field name for a bad setting."""
    from training.ml.endpoint import EndpointConfig

    name = (name or "").strip()
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "required"
    elif len(name) > 200:
        errors["name"] = "at most 200 characters"
    endpoint: dict[str, Any] = {
        "base_url": (base_url or "").strip(), "model": (model or "").strip(), "api_key_env": (api_key_env or "").strip(),
        "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "concurrency": concurrency,
        "timeout_s": timeout_s, "retries": retries, "backoff_s": backoff_s,
    }
    defaults = {f.name: f.default for f in fields(EndpointConfig)}
    errors.update(EndpointConfig.check({k: (v if v is not None else defaults[k]) for k, v in endpoint.items()}))
    errors.update({k: v for k, v in _policy().problems(endpoint).items() if k not in errors})
    if errors:
        raise ValidationError(errors)
    if project is not None and ModelVersion.objects.filter(project=project, name=name).exists():
        raise ValidationError({"name": f"the project already has a version named {name!r}"})
    root = Path(settings.PAIRWISE_MODELS_DIR) / "endpoints"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{project.slug if project else 'shared'}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    (folder / ENDPOINT_FILE).write_text(json.dumps({"name": name, "endpoint": endpoint}, indent=2) + "\n")
    return model_version_register(
        project=project, kind=ModelVersion.Kind.POLICY, name=name, base=f"{endpoint['base_url']} · {endpoint['model']}",
        artifact_path=folder, config={"endpoint": endpoint}, promoted=promoted,
    )


def endpoint_judge_replies(*, version: ModelVersion, prompts: list, system_prompt: str = "",
                           seed: int | None = 0) -> list[str]:
    """One judge's reply per prompt (a text, sent as one user turn, or chat messages), in order: greedy
    whatever sampling the version was registered with (a verdict, not a sample), at most
    training.ml.judge.JUDGE_MAX_TOKENS. Raises training.ml.endpoint.EndpointError when a request fails
    for good (after the client's retries of 429s, 5xx and timeouts)."""
    from training.ml.judge import JUDGE_MAX_TOKENS

    return _greedy_replies(version=version, prompts=prompts, system_prompt=system_prompt, seed=seed,
                           max_tokens=JUDGE_MAX_TOKENS)


def endpoint_rating_replies(*, version: ModelVersion, prompts: list, seed: int | None = 0) -> list[str]:
    """endpoint_judge_replies for rating questions (training.ml.judge.rating_text): a one-line JSON
    reply needs more than a letter's tokens, up to training.ml.judge.RATING_MAX_TOKENS."""
    from training.ml.judge import RATING_MAX_TOKENS

    return _greedy_replies(version=version, prompts=prompts, system_prompt="", seed=seed, max_tokens=RATING_MAX_TOKENS)


def _greedy_replies(*, version: ModelVersion, prompts: list, system_prompt: str, seed: int | None,
                    max_tokens: int) -> list[str]:
    from training.ml.endpoint import endpoint_generate

    config = replace(endpoint_config_of(version=version, temperature=0.0, top_p=1.0, max_tokens=max_tokens),
                     temperature=0.0)
    replies = endpoint_generate(config, prompts, k=1, system_prompt=system_prompt, progress=None, seed=seed,
                                policy=_policy())
    return [texts[0] if texts else "" for texts in replies]
