"""A training snapshot's sources (people's judgments, machine annotators', or both with a weight):
which records it holds, the weight the machine records carry, what a label model does with both, and
the Sources line of the model card a run trained on it writes."""
from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from labeling.models import DatasetSnapshot
from tests.labeling.judging import judge, tasks_with_responses
from tests.training.conftest import fast_params
from training.dataset import dataset_read
from training.models import TrainingRun
from training.selectors.data import training_dataset_collect, training_filters
from training.services.reward import reward_model_train
from training.services.runs import run_create
from training.services.snapshots import training_snapshot_create

pytestmark = pytest.mark.django_db

FIRST = [[0], [1]]  # slot 0 (the polite answer) wins


@pytest.fixture
def judged(project_factory, member):
    """12 tasks, each judged by two people and by one machine annotator."""
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=3, reward_promote_min_heldout_groups=0)
    tasks = tasks_with_responses(project, {f"question number {i}?": [f"yes, happy to help with {i}!", f"no. {i}"]
                                           for i in range(12)})
    people, bot = [member(project, "annotator") for _ in range(2)], member(project, "annotator")
    for task in tasks:
        for person in people:
            judge(task, person, FIRST)
        judge(task, bot, FIRST, source="machine:judge", counts_for_overlap=False, counts_for_retrain=False,
              machine={"consistent": True, "pairs": []})
    return project


def _collect(project, **params):
    return training_dataset_collect(project=project, filters=training_filters(params=params, project=project))


def test_human_is_today_s_data_machine_only_the_machine_s_and_both_weighs_the_machine_records(judged):
    human, machine = _collect(judged), _collect(judged, sources="machine")
    assert {j["source"] for j in human.judgments} == {"human"} and len(human.judgments) == 24
    assert {j["source"] for j in machine.judgments} == {"machine:judge"} and len(machine.judgments) == 12
    assert not any("weight" in j for j in human.judgments + machine.judgments)
    both = _collect(judged, sources="both", machine_weight=0.5)
    assert len(both.judgments) == 36
    assert {j.get("weight") for j in both.judgments if j["source"] == "human"} == {None}
    assert {j.get("weight") for j in both.judgments if j["source"] == "machine:judge"} == {0.5}
    assert both.counts()["sources"] == {"human": 24, "machine": 12, "machine_weight": 0.5}
    assert {j["weight"] for j in _collect(judged, sources="both").judgments if "weight" in j} == {1.0}


def test_a_label_model_with_both_is_the_people_s_consensus_then_the_machine_records_as_they_are(judged):
    data = _collect(judged, sources="both", machine_weight=0.25, label_model="majority", label_targets="hard")
    consensus = [j for j in data.judgments if j["source"] == "label-model"]
    machine = [j for j in data.judgments if j["source"] == "machine:judge"]
    assert len(consensus) == 12 and all(j["judgments"] == 2 for j in consensus)  # the machine did not vote
    assert len(machine) == 12 and {j["weight"] for j in machine} == {0.25}
    assert data.label_model["judgments"] == 24
    counts = data.counts()
    assert (counts["judgments"], counts["consensus_tasks"], counts["sources"]) == (
        36, 12, {"human": 24, "machine": 12, "machine_weight": 0.25})


def test_bad_source_options_are_refused_as_the_run_api_refuses_them(judged):
    with pytest.raises(ValidationError) as refused:
        training_filters(params={"machine_weight": 0.5}, project=judged)
    assert "machine_weight" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        training_filters(params={"sources": "machine", "label_model": "majority"}, project=judged)
    assert "label_model" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        training_filters(params={"sources": "machine", "filters": {"label_model": "majority"}}, project=judged)
    assert "label_model" in refused.value.message_dict


def test_the_freeze_command_takes_the_sources(judged):
    out = StringIO()
    call_command("freeze_training_data", project=judged.slug, sources="both", machine_weight=0.5, stdout=out)
    snapshot = DatasetSnapshot.objects.get(pk=int(out.getvalue().split()[-1]))
    assert (snapshot.filters["judgment_sources"], snapshot.filters["machine_weight"]) == ("both", 0.5)
    assert sum(j.get("weight") == 0.5 for j in dataset_read(snapshot.path).judgments) == 12


def test_a_snapshot_with_both_at_half_weight_and_the_card_of_the_model_it_trains(judged, tiny_reward_base, models_dir):
    snapshot = training_snapshot_create(project=judged, filters=training_filters(
        params={"sources": "both", "machine_weight": 0.5}, project=judged))
    assert snapshot.filters["judgment_sources"] == "both" and snapshot.filters["machine_weight"] == 0.5
    frozen = dataset_read(snapshot.path)
    assert sorted(j.get("weight", 1) for j in frozen.judgments) == [0.5] * 12 + [1] * 24

    run = run_create(project=judged, kind=TrainingRun.Kind.REWARD,
                     params={**fast_params(tiny_reward_base, epochs=1), "sources": "both", "machine_weight": 0.5})
    version = reward_model_train(run_id=run.pk)
    assert version is not None, TrainingRun.objects.get(pk=run.pk).error
    data = version.metrics["data"]
    assert data["sources"] == {"human": 24, "machine": 12, "machine_weight": 0.5}
    assert data["filters"]["judgment_sources"] == "both" and data["filters"]["machine_weight"] == 0.5
    card = (Path(version.artifact_path) / "README.md").read_text()
    assert "- Sources: human and machine (24 human, 12 machine judgments; machine weight 0.5)" in card


def test_a_human_only_run_s_card_says_so(judged, tiny_reward_base, models_dir):
    run = run_create(project=judged, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base, epochs=1))
    version = reward_model_train(run_id=run.pk)
    assert version is not None, TrainingRun.objects.get(pk=run.pk).error
    assert "judgment_sources" not in version.metrics["data"]["filters"]
    assert "- Sources: human (24 judgments)" in (Path(version.artifact_path) / "README.md").read_text()
