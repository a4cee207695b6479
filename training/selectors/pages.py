"""Reads that shape the training tab's pages into plain values the templates show (as
labeling/selectors/console.py does for the project console): the runs page, a version's page, its
model card and a run's page. The views parse input, call one of these and render; the curves come
back as points, and the views draw them (training/charts.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from labeling.models import Project
from labeling.selectors.queue import markdown_render
from training.models import ModelVersion, TrainingRun
from training.selectors.ab import ab_evaluation_list, ab_leaderboard
from training.selectors.runs import pipeline_list, run_as_dict, run_list, run_timing
from training.selectors.suggestions import suggestion_accuracy
from training.selectors.versions import (
    model_card_text, model_version_list, policy_win_rate_series, reward_accuracy_series, version_flag_rates,
    version_is_adapter, version_lineage, version_run_get,
)

RUNS_SHOWN = 30
PIPELINES_SHOWN = 5
RUNS_PAGE_CURVES = ("loss", "accuracy", "score", "kl")  # the runs page charts the first three its newest run has
FIRST_CURVES = ("loss", "accuracy", "reward", "score", "kl", "val_accuracy")  # a run's page: these first, then the rest
CURVE_KEYS_MAX = 8


@dataclass(frozen=True)
class Curve:
    """One line chart: metric `key` over `step` in `points`."""

    points: list[dict[str, Any]]
    key: str
    title: str


@dataclass(frozen=True)
class VersionRow:
    """A version in the runs page's table, with what the table shows beside its own fields: its
    evaluation against its parent, whether it is a LoRA adapter, and its human flag rates."""

    version: ModelVersion
    evaluation: dict[str, Any]
    adapter: bool
    flags: dict[str, Any]


def _run_points(run: TrainingRun) -> tuple[str, list[dict[str, Any]]]:
    """The run's recorded points with `step` set to its x axis (PPO counts iterations, not steps)."""
    x = "iteration" if run.kind == TrainingRun.Kind.PPO else "step"
    return x, [{**p, "step": p.get(x)} for p in run.metrics_history or [] if x in p]


def _version_rows(versions: list[ModelVersion]) -> list[VersionRow]:
    policies = [v.pk for v in versions if v.kind == ModelVersion.Kind.POLICY]
    flags = version_flag_rates(version_ids=policies)
    return [VersionRow(version=v, evaluation=(v.metrics or {}).get("evaluation") or {},
                       adapter=v.kind == ModelVersion.Kind.POLICY and version_is_adapter(version=v),
                       flags=flags.get(v.pk) or {})
            for v in versions]


def _online_rows(*, project: Project, rewards: list[ModelVersion]) -> list[dict[str, Any]]:
    online = suggestion_accuracy(project=project)
    return [{"version": v, **online[v.pk]} for v in rewards if v.pk in online]


def runs_page_get(*, project: Project) -> dict[str, Any]:
    """The runs page: rounds, runs, the newest charted run's curves, the versions table, the reward
    and win-rate series, and the blind A/B evaluations with their leaderboard."""
    runs = list(run_list(project=project)[:RUNS_SHOWN])
    charted = next((r for r in runs if r.metrics_history), None)
    curves = []
    if charted is not None:
        keys = [k for k in RUNS_PAGE_CURVES if any(k in p for p in charted.metrics_history)]
        _, points = _run_points(charted)
        curves = [Curve(points, key, f"run {charted.pk} {key}") for key in keys[:3]]
    versions = list(model_version_list(project=project))
    trained_rewards = [v for v in versions if v.kind == ModelVersion.Kind.REWARD and v.project_id]
    win_rates, rewards = policy_win_rate_series(project=project), reward_accuracy_series(project=project)
    return {
        "runs": runs, "charted": charted, "curves": curves,
        "versions": _version_rows(versions),
        "policies": [v for v in versions if v.kind == ModelVersion.Kind.POLICY],
        # The promoted reward model (else the newest candidate, with why it is one), named on the page
        # even when no held-out accuracy puts it on the chart.
        "promoted_reward": next((v for v in trained_rewards if v.promoted), None),
        "reward_trained": next(iter(trained_rewards), None),
        "win_rates": win_rates, "win_curve": Curve(win_rates, "win_rate", "win rate against the first policy, by version"),
        "reward_series": rewards,
        # Each reward version's agreement with people on the judgments made while it was deployed.
        "online_accuracy": _online_rows(project=project, rewards=trained_rewards),
        "reward_curve": Curve(rewards, "val_accuracy", "reward model held-out accuracy, by version"),
        "pipelines": pipeline_list(project=project, limit=PIPELINES_SHOWN),
        "ab_evaluations": ab_evaluation_list(project=project),
        "leaderboard": ab_leaderboard(project=project, rounds=100),
    }


def runs_live_get(*, project: Project) -> dict[str, Any]:
    """What the runs page polls (static/training/runs.js): its runs and rounds as JSON-ready dicts."""
    return {"runs": [run_as_dict(r) for r in run_list(project=project)[:RUNS_SHOWN]],
            "pipelines": pipeline_list(project=project, limit=PIPELINES_SHOWN)}


def run_page_get(*, run: TrainingRun) -> dict[str, Any]:
    """A run's page: its params, timing, whether it is live, and one curve per metric it recorded at
    two points or more, the usual ones first."""
    x, points = _run_points(run)
    seen: dict[str, int] = {}
    for point in points:
        for key, value in point.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in (x, "step"):
                seen[key] = seen.get(key, 0) + 1
    keys = sorted((k for k, n in seen.items() if n >= 2),
                  key=lambda k: (FIRST_CURVES.index(k) if k in FIRST_CURVES else len(FIRST_CURVES), k))
    return {
        "run": run, "curves": [Curve(points, key, f"run {run.pk} {key}") for key in keys[:CURVE_KEYS_MAX]],
        "params": json.dumps(run.params, indent=2, sort_keys=True)[:20_000], "timing": run_timing(run=run),
        "active": run.status in TrainingRun.ACTIVE_STATUSES,
    }


def version_card_get(*, version: ModelVersion) -> dict[str, Any]:
    """A version's model card: its YAML metadata as text, its markdown body rendered and sanitised."""
    text = model_card_text(version=version)
    _, front, body = text.split("---\n", 2) if text.startswith("---\n") else ("", "", text)
    return {"version": version, "front_matter": front, "body_html": markdown_render(body)}


# Human names of the metrics a version's page shows; a key not named here is shown from its own name.
METRIC_LABELS = {
    "val_accuracy": "Held-out accuracy", "val_log_loss": "Held-out log loss", "val_groups": "Held-out groups",
    "val_comparisons": "Held-out comparisons", "val_length_baseline": "Length-only baseline on them",
    "val_length_margin_corr": "Margin's correlation with the length difference",
    "val_accuracy_shorter_chosen": "Held-out accuracy, chosen answer shorter", "val_pairs_shorter_chosen": "Held-out pairs, chosen answer shorter",
    "val_accuracy_longer_chosen": "Held-out accuracy, chosen answer longer", "val_pairs_longer_chosen": "Held-out pairs, chosen answer longer",
    "train_loss": "Training loss (mean)", "final_train_loss": "Training loss (last tenth)",
    "comparisons": "Training comparisons", "groups": "Training groups", "groups_without_comparisons": "Groups without comparisons",
    "sequences": "Sequences", "truncated": "Truncated sequences", "reference_size": "Reference responses",
    "bias": "Score offset", "precision": "Precision", "device": "Device", "train_seconds": "Training time",
    "seconds": "Total time", "comparisons_per_s": "Comparisons per second", "processes": "Processes",
    "win_rate_vs_parent": "Win rate vs parent", "win_rate_vs_parent_ci95": "Win rate vs parent, 95% interval",
    "pref_accuracy_policy": "Preference accuracy on held-out human pairs",
    "pref_accuracy_parent": "Parent's preference accuracy on them",
    "pref_accuracy_delta": "Preference-accuracy gain over the parent", "pref_accuracy_delta_ci95": "Gain, 95% interval (paired)",
    "implicit_reward_accuracy": "Implicit reward accuracy (DPO's)", "implicit_reward_accuracy_ci95": "Implicit reward accuracy, 95% interval",
    "implicit_margin_mean": "Mean implicit reward margin", "eval_pairs": "Held-out human pairs",
    "win_rate_vs_base": "Win rate vs first policy", "win_rate_vs_base_ci95": "Win rate vs first policy, 95% interval",
    "reward_mean": "Mean reward", "parent_reward_mean": "Parent's mean reward", "kl_per_token": "KL per token",
    "kl_per_response": "KL per response", "perplexity": "Perplexity", "bleu": "BLEU", "rouge_l": "ROUGE-L",
    "prompts": "Prompts", "demonstrations": "Demonstrations", "judgments": "Judgments", "annotators": "Annotators",
    "agreement": "Agreement", "snapshot": "Snapshot", "sha256": "sha256", "merged_from": "Merged from version",
}
METRIC_SECTIONS = {"evaluation": "Evaluation against its parent", "data": "Training data", "adaptation": "Adaptation"}
METRICS_LEFT_OUT = {"evaluations", "promotion", "history", "samples"}  # shown elsewhere on the page or too long


def _metric_value(key: str, value: Any) -> str | None:
    """One metric as text: numbers rounded, times in seconds, intervals as ranges; None leaves it out
    of the table (long lists stay in the raw JSON)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if key.endswith("seconds"):
            return f"{value:,.1f} s"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{value[0]:.3f} to {value[1]:.3f}"
    if isinstance(value, str):
        return value[:16] + "…" if key == "sha256" and len(value) > 16 else value[:200]
    return None


def metric_sections(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """A version's metrics as titled tables of {label, key, value} rows: the run's own first, then
    one table per nested dict (its evaluation, its data, its adapters)."""
    order = {key: i for i, key in enumerate(METRIC_LABELS)}  # the named ones in their order (results first), then the rest

    def rows(values: dict[str, Any], prefix: str = "") -> list[dict[str, str]]:
        out = []
        for key, value in sorted(values.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
            text = _metric_value(key, value)
            if text is not None and key not in METRICS_LEFT_OUT:
                out.append({"label": METRIC_LABELS.get(key, key.replace("_", " ").capitalize()), "key": prefix + key,
                            "value": text})
        return out

    metrics = metrics or {}
    top = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    sections = [{"title": "", "rows": rows(top)}]
    for key, value in metrics.items():
        if isinstance(value, dict) and key not in METRICS_LEFT_OUT:
            sections.append({"title": METRIC_SECTIONS.get(key, key.replace("_", " ").capitalize()),
                             "rows": rows(value, f"{key}.")})
    return [s for s in sections if s["rows"]]


def version_page_get(*, version: ModelVersion) -> dict[str, Any]:
    """A version's page: lineage, the run that made it, its metrics as tables and as JSON, its
    promotion decision, its evaluations on other data, and its training config."""
    metrics = version.metrics or {}
    return {
        "version": version, "lineage": version_lineage(version=version), "run": version_run_get(version=version),
        "adapter": version_is_adapter(version=version), "metric_sections": metric_sections(metrics),
        "metrics_json": json.dumps(metrics, indent=2, sort_keys=True)[:200_000], "promotion": metrics.get("promotion"),
        "evaluations": [{"name": name, **e} for name, e in sorted((metrics.get("evaluations") or {}).items())],
        "config": json.dumps(version.config, indent=2, sort_keys=True)[:20_000],
    }
