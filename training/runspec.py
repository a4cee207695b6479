"""One parser for every request to start work (no Django, no torch): a run of each kind, a training
round and its per-step params, a blind A/B evaluation, a beat schedule's kwargs. The APIs, the
training page's forms, the management commands and beat all call it (through
training.services.runspec, which adds the checks that need the database: ids belong to the project).

It refuses what it does not know: an unknown key, a key another kind uses, a bad type or a value
out of range, inside a trainer's `config` too (the field lists below are the trainer config
dataclasses' fields; tests/training/test_runspec.py proves they match, so the web process need not
import torch to read them). Operator knobs are settings, never request fields (OPERATOR_ONLY).
Errors are a SpecError of {request field: message}; a nested key is named at the start of its
message ("epoch: unknown key; allowed: ...").
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from labeling.label_models import LABEL_MODEL_CHOICES, LABEL_TARGETS
from training import plan
from training.dataset import BOTH_SOURCES, DATA_SOURCES, HUMAN_SOURCES, MACHINE_SOURCES
from training.plan import CANDIDATES, DPO, EVALUATE, PPO, REWARD, SFT


class SpecError(ValueError):
    """A refused request: errors maps each request field to its message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


# Keys only the operator sets, as settings of the worker (README, Security model, Run options).
OPERATOR_ONLY = {
    "output_dir": "PAIRWISE_MODELS_DIR", "accelerate_config": "PAIRWISE_ACCELERATE_CONFIG",
    "device": "PAIRWISE_DEVICE", "threads": "PAIRWISE_TRAIN_THREADS", "backend": "PAIRWISE_GENERATOR",
}

# ----------------------------------------------------------------------------- trainer configs

# The fields of training.ml's RewardConfig, SFTConfig, DPOConfig and PPOConfig with their annotated
# types (test_runspec compares them with dataclasses.fields).
_LORA = {"lora_r": "int", "lora_alpha": "int", "lora_dropout": "float", "lora_target_modules": "str",
         "gradient_checkpointing": "bool", "quantize_base": "str", "precision": "str", "device": "str", "seed": "int"}
_SUPERVISED = {**_LORA, "system_prompt": "str", "max_grad_norm": "float", "weight_decay": "float"}
CONFIG_FIELDS: dict[str, dict[str, str]] = {
    REWARD: {**_LORA, "base_model": "str", "max_length": "int", "batch_size": "int", "grad_accum": "int",
             "lr": "float | None", "epochs": "int", "warmup_fraction": "float", "min_lr_ratio": "float",
             "weight_decay": "float", "max_grad_norm": "float", "dropout": "float | None", "val_fraction": "float",
             "pooling": "str", "group_by_length": "bool", "reference_limit": "int", "eval_batch_size": "int",
             "log_every": "int", "length_debias": "str"},
    SFT: {**_SUPERVISED, "epochs": "int", "lr": "float", "warmup_ratio": "float", "batch_size": "int",
          "micro_batch_size": "int", "max_length": "int"},
    DPO: {**_SUPERVISED, "beta": "float", "epochs": "int", "lr": "float", "warmup_ratio": "float", "batch_size": "int",
          "micro_batch_size": "int", "max_length": "int", "eval_every": "int"},
    PPO: {**_LORA, "system_prompt": "str", "max_grad_norm": "float", "iterations": "int", "rollout_batch_size": "int",
          "mini_batch_size": "int", "micro_batch_size": "int", "ppo_epochs": "int", "max_new_tokens": "int",
          "temperature": "float", "beta": "float", "gamma": "float", "lam": "float", "clip": "float",
          "target_kl": "float", "vf_coef": "float", "ptx_coef": "float", "lr": "float", "value_lr": "float",
          "value_init": "str", "rm_max_length": "int", "max_length": "int"},
}
# Config fields a request may not set: the device is the operator's, the product chooses the rest
# (the reward backbone is the run's `base`; the system prompt is the project's).
CONFIG_NOT_REQUESTED = {"device": "operator-only (settings.PAIRWISE_DEVICE)",
                        "base_model": "name the backbone with the run's `base`",
                        "system_prompt": "the project's system prompt is used"}
CONFIG_CHOICES = {"precision": ("auto", "bf16", "fp32"), "quantize_base": ("", "4bit", "8bit"),
                  "pooling": ("auto", "mean", "response", "last"), "value_init": ("auto", "reward", "policy"),
                  "length_debias": ("none", "odin")}
MAX_INT = 10**9
MAX_FLOAT = 1e9
MAX_STR = 200
_SAFE_STR = re.compile(r"^[\w.,\-]*$")


def config_allowed(kind: str) -> list[str]:
    return sorted(set(CONFIG_FIELDS[kind]) - set(CONFIG_NOT_REQUESTED))


def _config_value(kind_of: str, name: str, value: Any) -> Any:
    """One config value of the annotated type, or ValueError saying what it must be."""
    optional = kind_of.endswith("| None")
    base = kind_of.split("|")[0].strip()
    if value is None and optional:
        return None
    if base == "bool":
        if not isinstance(value, bool):
            raise ValueError("true or false")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
            raise ValueError(f"a whole number from 0 to {MAX_INT}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or abs(value) > MAX_FLOAT:
            raise ValueError("a number" + (" or null" if optional else ""))
        return float(value)
    if not isinstance(value, str) or len(value) > MAX_STR or not _SAFE_STR.match(value):
        raise ValueError(f"a short string of letters, digits, '_', '.', ',' or '-' (at most {MAX_STR})")
    if name in CONFIG_CHOICES and value not in CONFIG_CHOICES[name]:
        raise ValueError(f"one of {', '.join(repr(c) for c in CONFIG_CHOICES[name])}")
    return value


def config_parse(kind: str, config: Any, *, where: str = "") -> dict[str, Any]:
    """A trainer config override of a request, checked key by key against the kind's config fields."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}an object of {kind} trainer settings")
    out = {}
    for name, value in config.items():
        if name in CONFIG_NOT_REQUESTED and name in CONFIG_FIELDS[kind]:
            raise ValueError(f"{where}{name}: {CONFIG_NOT_REQUESTED[name]}")
        if name not in CONFIG_FIELDS[kind]:
            raise ValueError(f"{where}{name}: unknown key; allowed: {', '.join(config_allowed(kind))}")
        try:
            out[name] = _config_value(CONFIG_FIELDS[kind][name], name, value)
        except ValueError as exc:
            raise ValueError(f"{where}{name}: {exc}") from None
    return out


def trainer_config(cls: type, params: Mapping[str, Any], **fixed: Any) -> Any:
    """A trainer's config dataclass on the worker: `fixed` values (the product's and the operator's:
    backbone, system prompt, device), overridden by the run's params["config"]. A key that is not a
    field fails the run rather than being dropped (a stored spec was checked; this is the backstop)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    overrides = dict(params.get("config") or {})
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"config: unknown key {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    return cls(**{**fixed, **overrides})


# ----------------------------------------------------------------------------------- run fields


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _int(lo: int, hi: int):
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"a whole number from {lo} to {hi}")
        return value
    return parse


def _number(lo: float, hi: float, *, null: bool = False):
    def parse(value: Any) -> float | None:
        if value is None and null:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ValueError(f"a number from {lo:g} to {hi:g}" + (" or null" if null else ""))
        return float(value)
    return parse


def _choice(choices: tuple[str, ...]):
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return value
    return parse


def _ids(value: Any) -> list[int]:
    if not isinstance(value, list) or not value or len(value) > plan.MAX_MIXED_SNAPSHOTS or not all(
            isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in value):
        raise ValueError(f"Up to {plan.MAX_MIXED_SNAPSHOTS} snapshot ids, as a list of positive ids")
    return list(dict.fromkeys(value))


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("an object")
    return dict(value)


_BASE_NAME = re.compile(r"^[\w.\-]{1,200}$")


def _base(value: Any) -> int | str:
    """A reward backbone: a shared base model's version id, or the name it was installed under.
    A path or a hub id is the operator's to install (manage.py install_base_models --reward-base)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, str) and _BASE_NAME.match(value) and value not in (".", ".."):
        return value
    raise ValueError("a shared base model's version id or installed name (paths and hub ids are the operator's: "
                     "manage.py install_base_models --reward-base)")


_ID = _int(1, 2**63 - 1)
FIELD_PARSERS = {
    "config": None,  # per kind: config_parse
    "promote": _choice(plan.PROMOTE_CHOICES),
    "snapshot": _ID,
    "include_gold": _bool,
    "filters": _object,  # its keys and values: training.selectors.data.training_filters, in the service
    "min_gold_accuracy": _number(0, 1, null=True),
    "label_model": _choice(LABEL_MODEL_CHOICES),
    "label_targets": _choice(LABEL_TARGETS),
    "base": _base,
    "processes": None,  # capped by the worker's settings: max_processes
    "mix_snapshots": _ids,
    "include_chosen": _bool,
    "version": _ID,
    "auto_promote_margin": _number(-1, 1, null=True),
    "promote_metric": _choice(plan.PROMOTE_METRICS),
    "max_prompts": _int(1, 100000),
    "max_demonstrations": _int(1, 100000),
    "max_pairs": _int(1, 100000),
    "promote_requires_preference_gain": _bool,
    "max_new_tokens": _int(1, 4096),
    "batch_size": _int(1, 1024),
    "precision": _choice(CONFIG_CHOICES["precision"]),
    "sources": _choice(DATA_SOURCES),
    "machine_weight": _number(0, 1),
}
_TRAINING = ("config", "promote", "snapshot", "include_gold", "filters", "min_gold_accuracy", "label_model", "label_targets",
             "sources", "machine_weight")
# What a request may name, per kind. `version` is the parent of a policy run, the version an
# evaluation evaluates, the policy candidates sample from; a round picks those itself.
RUN_FIELDS: dict[str, tuple[str, ...]] = {
    REWARD: (*_TRAINING, "base", "processes", "mix_snapshots"),
    SFT: (*_TRAINING, "version", "processes", "include_chosen"),
    DPO: (*_TRAINING, "version", "processes"),
    PPO: (*_TRAINING, "version"),
    EVALUATE: ("version", "auto_promote_margin", "promote_metric", "promote_requires_preference_gain", "max_prompts",
               "max_demonstrations", "max_pairs", "max_new_tokens", "batch_size", "precision"),
    CANDIDATES: ("version", "max_prompts", "batch_size"),
}
ROUND_ONLY_ABSENT = ("version",)


def _unknown(key: str, kind: str, allowed: tuple[str, ...] | list[str]) -> str:
    if key in OPERATOR_ONLY:
        return f"operator-only (settings.{OPERATOR_ONLY[key]}); allowed: {', '.join(allowed)}"
    users = [k for k, fields in RUN_FIELDS.items() if key in fields]
    if users:
        return f"Only {', '.join(users)} runs take {key}; {kind} runs allow: {', '.join(allowed)}"
    return f"unknown key; allowed: {', '.join(allowed)}"


def run_spec(kind: str, data: Mapping[str, Any], *, max_processes: int, in_round: bool = False) -> dict[str, Any]:
    """A run request's normalised params, the per-kind defaults filled in (the promotion rule of
    training runs, SFT's include_chosen). `version` stays in it; the service resolves it. SpecError
    names every bad field."""
    if kind not in plan.RUN_KINDS:
        raise SpecError({"kind": f"One of {', '.join(plan.RUN_KINDS)}."})
    if not isinstance(data, Mapping):
        raise SpecError({"non_field_errors": f"an object of {kind} run options"})
    allowed = [f for f in RUN_FIELDS[kind] if not (in_round and f in ROUND_ONLY_ABSENT)]
    errors: dict[str, str] = {}
    params: dict[str, Any] = {}
    for key, value in data.items():
        if key not in allowed:
            errors[key] = _unknown(key, kind, allowed) if key not in ROUND_ONLY_ABSENT or not in_round else \
                "a round picks the versions itself"
            continue
        if value is None:  # null: the default, as when the key is left out
            continue
        try:
            if key == "config":
                params[key] = config_parse(kind, value)
            elif key == "processes":
                params[key] = _int(1, max(1, max_processes))(value)
            else:
                params[key] = FIELD_PARSERS[key](value)
        except ValueError as exc:
            errors[key] = str(exc)
    if kind in plan.TRAINING_KINDS:
        errors.update(data_sources_errors(params))
    if errors:
        raise SpecError(errors)
    return _defaults(kind, params)


def data_sources_errors(params: Mapping[str, Any]) -> dict[str, str]:
    """The rules between a training run's data options (what run_spec and training_filters both
    check, so the command and the API refuse the same): machine_weight weighs machine labels
    against people's, so it means something only with sources "both"; a label model fits the
    people's votes (training.consensus), so it needs human judgments to fit."""
    errors = {}
    sources = params.get("sources") or HUMAN_SOURCES
    if params.get("machine_weight") is not None and sources != BOTH_SOURCES:
        errors["machine_weight"] = f"only with sources {BOTH_SOURCES!r} (it weighs machine labels against human ones)"
    if sources == MACHINE_SOURCES and (params.get("label_model") or "none") != "none":
        errors["label_model"] = "a label model fits human judgments; sources 'machine' has none (use 'both')"
    return errors


def _defaults(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """What run_spec leaves out or fills in: empty values dropped, each kind's promotion default."""
    params = {k: v for k, v in params.items() if v not in (None, {}, []) and not (v is False and k == "include_gold")}
    if kind in plan.TRAINING_KINDS:
        params.setdefault("promote", plan.DEFAULT_PROMOTE[kind])
    if kind == SFT:
        params.setdefault("include_chosen", False)
    if kind == EVALUATE:
        if params.get("auto_promote_margin") is None:
            params.pop("promote_metric", None)
        else:
            params.setdefault("promote_metric", plan.DEFAULT_PROMOTE_METRIC)
    return params


# ---------------------------------------------------------------------------------------- rounds

ROUND_FIELDS = ("policy_kind", "auto_promote_margin", "promote_metric", "step_params")


def round_spec(data: Mapping[str, Any], *, max_processes: int, default_policy_kind: str = plan.DEFAULT_POLICY_KIND,
               default_margin: float | None = None) -> dict[str, Any]:
    """A training round's spec: its steps, promotion rule, and each step's params checked as that
    kind's run (run_spec, without `version`). Defaults are the deployment's, passed in."""
    if not isinstance(data, Mapping):
        raise SpecError({"non_field_errors": "an object of round options"})
    errors = {k: f"unknown key; allowed: {', '.join(ROUND_FIELDS)}" for k in data if k not in ROUND_FIELDS}
    policy_kind = data.get("policy_kind") or default_policy_kind
    if policy_kind not in plan.POLICY_KINDS:
        errors["policy_kind"] = f"one of {', '.join(plan.POLICY_KINDS)}"
    metric = data.get("promote_metric") or plan.DEFAULT_PROMOTE_METRIC
    if metric not in plan.PROMOTE_METRICS:
        errors["promote_metric"] = f"one of {', '.join(plan.PROMOTE_METRICS)}"
    margin = data.get("auto_promote_margin", None)
    try:
        margin = _number(-1, 1, null=True)(margin)
    except ValueError as exc:
        errors["auto_promote_margin"] = str(exc)
    if margin is None:
        margin = default_margin
    steps = [REWARD, policy_kind, EVALUATE, CANDIDATES]
    step_params = data.get("step_params") or {}
    checked: dict[str, Any] = {}
    step_errors: list[str] = []
    if not isinstance(step_params, Mapping):
        errors["step_params"] = "an object of step kind -> params"
        step_params = {}
    for step, given in step_params.items():
        if step not in steps:
            step_errors.append(f"{step}: not a step of this round; steps: {', '.join(steps)}")
            continue
        try:
            checked[step] = run_spec(step, given, max_processes=max_processes, in_round=True)
        except SpecError as exc:
            step_errors.extend(f"{step}.{k}: {v}" for k, v in exc.errors.items())
    if step_errors:  # every bad step named, not only the last
        errors["step_params"] = "; ".join(step_errors)
    if errors:
        raise SpecError(errors)
    return {"steps": steps, "auto_promote_margin": margin, "promote_metric": metric,
            "params": plan.jsonable({k: {f: v for f, v in p.items() if f in step_params[k]} for k, p in checked.items()})}


def round_step_spec(spec: Mapping[str, Any], kind: str, *, max_processes: int) -> dict[str, Any]:
    """A stored round's step params, checked again when the step is queued (a stored spec may have
    been edited since it was checked): plan.round_step_params through run_spec."""
    return run_spec(kind, plan.round_step_params(spec=dict(spec), kind=kind), max_processes=max_processes, in_round=True)


# ------------------------------------------------------------------------------ A/B, schedules

AB_FIELDS = ("version_a", "version_b", "prompts")


def ab_spec(data: Mapping[str, Any]) -> dict[str, int]:
    """A blind A/B evaluation: two policy version ids and how many prompts (20 by default)."""
    if not isinstance(data, Mapping):
        raise SpecError({"non_field_errors": "an object with version_a, version_b and prompts"})
    errors = {k: f"unknown key; allowed: {', '.join(AB_FIELDS)}" for k in data if k not in AB_FIELDS}
    out: dict[str, int] = {}
    for key, parse, default in (("version_a", _ID, None), ("version_b", _ID, None), ("prompts", _int(1, 1000), 20)):
        if key not in data and default is None:
            errors[key] = "required: a policy version id"
            continue
        try:
            out[key] = parse(data.get(key, default))
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise SpecError(errors)
    return out


SCHEDULE_FIELDS = ("project_id", *ROUND_FIELDS)


def schedule_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A beat schedule's kwargs for the training-round check: project_id and the round options
    (checked by round_spec when the check starts a round); anything else is refused."""
    if not isinstance(kwargs, Mapping):
        raise SpecError({"kwargs": "an object"})
    errors = {k: f"unknown key; allowed: {', '.join(SCHEDULE_FIELDS)}" for k in kwargs if k not in SCHEDULE_FIELDS}
    if errors:
        raise SpecError(errors)
    return {k: v for k, v in kwargs.items() if k != "project_id"}
