"""training.services.snapshots: every training run trains from a frozen snapshot, the run and its
version point at it, and training from the same snapshot with the same seed gives the same model."""
from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from labeling.models import ComparisonTask, Judgment, Prompt, Response, TaskResponse
from tests.training.conftest import fast_params, import_preferences, separable_records
from training.models import TrainingRun
from training.selectors.data import training_filters
from training.services.reward import reward_model_train
from training.services.runs import run_create
from training.services.snapshots import training_snapshot_create

pytestmark = pytest.mark.django_db


def _train(project, tiny_reward_base, **params):
    run = run_create(project=project, kind=TrainingRun.Kind.REWARD, params={**fast_params(tiny_reward_base), **params})
    version = reward_model_train(run_id=run.pk)
    run.refresh_from_db()
    return run, version


def _task(project, external_id: str, *, gold: bool = False) -> tuple[ComparisonTask, list[Response]]:
    prompt = Prompt.objects.create(project=project, external_id=external_id, text=f"{external_id} question?")
    task = ComparisonTask.objects.create(project=project, prompt=prompt, is_gold=gold, gold_ranking=[] if gold else None)
    rows = [Response.objects.create(prompt=prompt, text=t, source="t") for t in ("right", "wrong")]
    for i, r in enumerate(rows):
        TaskResponse.objects.create(task=task, response=r, position=i)
    if gold:
        task.gold_ranking = [[rows[0].pk], [rows[1].pk]]
        task.save(update_fields=["gold_ranking"])
    return task, rows


def _judge(project, task, ranking, annotator=None) -> Judgment:
    return Judgment.objects.create(project=project, task=task, ranking=ranking, annotator=annotator,
                                   idempotency_key=f"j{Judgment.objects.count()}")


def _gold_judgment(project) -> Judgment:
    task, (right, wrong) = _task(project, "gold-1", gold=True)
    return _judge(project, task, [[right.pk], [wrong.pk]])


def test_a_run_freezes_the_live_data_and_its_version_knows_the_snapshot(project_factory, tiny_reward_base, models_dir):
    project = project_factory()
    import_preferences(project, separable_records(24))

    run, version = _train(project, tiny_reward_base)

    assert version is not None, run.error
    snapshot = run.snapshot
    assert snapshot is not None and version.snapshot == snapshot and snapshot.format == "training"
    assert Path(snapshot.path).is_file() and Path(snapshot.path + ".manifest.json").is_file()
    data = version.metrics["data"]
    assert data["snapshot"] == snapshot.pk and data["sha256"] == snapshot.sha256 == version.config["data_sha256"]
    assert data["judgments"] == 24 and data["prompts"] == 24 and data["rows"] == snapshot.rows == 48
    assert data["filters"]["exclude_gold"] is True
    assert run.params["snapshot"] == snapshot.pk


def test_the_same_snapshot_and_seed_give_the_same_metrics_whatever_came_since(project_factory, tiny_reward_base, models_dir):
    project = project_factory()
    import_preferences(project, separable_records(24))
    snapshot = training_snapshot_create(project=project)
    first_run, first = _train(project, tiny_reward_base, snapshot=snapshot.pk)
    import_preferences(project, [dict(r, id=f"late-{i}") for i, r in enumerate(separable_records(30)[24:])])

    second_run, second = _train(project, tiny_reward_base, snapshot=snapshot.pk)

    assert first is not None and second is not None, (first_run.error, second_run.error)
    assert first_run.snapshot == second_run.snapshot == snapshot
    for key in ("train_loss", "final_train_loss", "val_accuracy", "val_log_loss", "comparisons", "bias"):
        assert first.metrics[key] == second.metrics[key], key
    assert [h["loss"] for h in first.metrics["history"]] == [h["loss"] for h in second.metrics["history"]]
    # A run without a snapshot freezes the data as it is now, the late pairs included.
    third_run, third = _train(project, tiny_reward_base)
    assert third.metrics["data"]["judgments"] == 30 and third_run.snapshot != snapshot


def test_gold_judgments_train_only_when_asked(project_factory):
    project = project_factory()
    import_preferences(project, separable_records(4))
    gold = _gold_judgment(project)

    plain = training_snapshot_create(project=project)
    with_gold = training_snapshot_create(project=project, filters=training_filters(params={"include_gold": True}))

    assert plain.rows + 1 == with_gold.rows
    assert f'"id": {gold.pk}' not in Path(plain.path).read_text()
    assert f'"id": {gold.pk}' in Path(with_gold.path).read_text()


def test_a_changed_or_foreign_snapshot_fails_the_run_before_training(project_factory, tiny_reward_base, models_dir):
    project, other = project_factory(), project_factory()
    import_preferences(project, separable_records(8))
    snapshot = training_snapshot_create(project=project)
    with open(snapshot.path, "a") as f:
        f.write("\n")

    changed, version = _train(project, tiny_reward_base, snapshot=snapshot.pk)
    foreign, _ = _train(other, tiny_reward_base, snapshot=snapshot.pk)

    assert version is None and changed.status == TrainingRun.Status.FAILED and "changed since it was frozen" in changed.error
    assert foreign.status == TrainingRun.Status.FAILED and f"no training snapshot {snapshot.pk}" in foreign.error


def test_filters_that_select_pairs_are_refused():
    with pytest.raises(ValidationError) as exc:
        training_filters(params={"filters": {"consensus": "majority"}})
    assert "filters" in exc.value.message_dict


def test_freeze_command_prints_the_snapshot_id_last(project_factory):
    project = project_factory()
    import_preferences(project, separable_records(3))
    out = StringIO()
    call_command("freeze_training_data", "--project", project.slug, stdout=out)
    snapshot_id = int(out.getvalue().strip().splitlines()[-1])
    assert project.snapshots.get(pk=snapshot_id).rows == 6


def test_annotators_under_the_project_s_gold_accuracy_are_left_out(project_factory, make_user):
    project = project_factory()
    careful, careless, new = make_user(), make_user(), make_user()
    gold, (right, wrong) = _task(project, "gold-2", gold=True)
    _judge(project, gold, [[right.pk], [wrong.pk]], careful)
    _judge(project, gold, [[wrong.pk], [right.pk]], careless)
    for who in (careful, careless, new):
        task, (a, b) = _task(project, f"work-{who.pk}")
        _judge(project, task, [[a.pk], [b.pk]], who)

    everyone = training_snapshot_create(project=project)
    project.training_min_gold_accuracy = 0.5
    project.save(update_fields=["training_min_gold_accuracy"])
    trusted = training_snapshot_create(project=project)
    stricter = training_filters(params={"min_gold_accuracy": 1.0}, project=project)

    assert everyone.filters["min_gold_accuracy"] is None and trusted.filters["min_gold_accuracy"] == 0.5
    assert everyone.rows - trusted.rows == 1  # the careless annotator's one non-gold judgment
    assert f'"id": {Judgment.objects.get(annotator=careless, task__is_gold=False).pk}' not in Path(trusted.path).read_text()
    assert stricter.min_gold_accuracy == 1.0  # a run's own threshold wins over the project's
    with pytest.raises(ValidationError):
        training_filters(params={"min_gold_accuracy": 2}, project=project)


def test_every_trained_version_carries_a_model_card_the_api_and_page_serve(
    project_factory, tiny_reward_base, models_dir, member, api_client, client,
):
    import yaml
    from django.urls import reverse

    project = project_factory(name="Card <b>project</b>")
    import_preferences(project, separable_records(24))
    run, version = _train(project, tiny_reward_base)

    text = (Path(version.artifact_path) / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    # base_model names the model (a backbone given as a folder: the folder's name), never a local path.
    assert meta["tags"][:3] == ["pairwise", "rlhf", "reward"] and meta["base_model"] == tiny_reward_base.name
    assert f"Data snapshot sha256: {run.snapshot.sha256}" in text and "- Judgments: 24" in text
    assert {m["name"] for m in meta["model-index"][0]["results"][0]["metrics"]} >= {"val_accuracy", "val_log_loss"}
    viewer = member(project, "viewer")
    served = api_client(viewer).get(reverse("api-training-version-card", args=[project.slug, version.pk]))
    assert served.status_code == 200 and served.json()["markdown"] == text
    client.force_login(viewer)
    page = client.get(reverse("training-version-card", args=[project.slug, version.pk]))
    assert page.status_code == 200 and b"Data snapshot sha256" in page.content and b"<b>project</b>" not in page.content
