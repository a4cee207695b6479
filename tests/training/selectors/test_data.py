"""training.selectors.data: what a training snapshot holds, as the trainers see it (training.dataset)."""
from __future__ import annotations

import pytest

from labeling.models import ComparisonTask, Demonstration, Prompt, Response, TaskResponse
from tests.training.conftest import judge, ranked_task
from training.dataset import reward_groups
from training.selectors.data import training_dataset_collect, training_filters
from training.services.snapshots import training_snapshot_create


@pytest.mark.django_db
def test_reward_data_groups_one_per_live_judgment_with_ties_and_supersession(project_factory):
    project = project_factory()
    task, (a, b, c, d) = ranked_task(project, "Q?", ["a", "b", "c", "d"])
    old = judge(project, task, [[a.pk], [b.pk], [c.pk], [d.pk]], "j-old")
    judge(project, task, [[c.pk], [a.pk, d.pk], [b.pk]], "j-new", supersedes=old)
    judge(project, task, [[a.pk, b.pk, c.pk, d.pk]], "j-all-tied")
    judge(project, task, [[d.pk], [a.pk], [b.pk], [c.pk]], "j-second-annotator")
    messages_prompt = Prompt.objects.create(project=project, external_id="chat", messages=[{"role": "user", "content": "hi"}])
    chat_task = ComparisonTask.objects.create(project=project, prompt=messages_prompt)
    x = Response.objects.create(prompt=messages_prompt, text="hello", source="t")
    y = Response.objects.create(prompt=messages_prompt, text="go away", source="t")
    TaskResponse.objects.create(task=chat_task, response=y, position=0)
    TaskResponse.objects.create(task=chat_task, response=x, position=1)
    last = judge(project, chat_task, [[x.pk], [y.pk]], "j-chat")

    dataset = training_dataset_collect(project=project, filters=training_filters(params={}))
    data = reward_groups(dataset)

    assert data.train == [
        {"prompt": "Q?", "responses": ["a", "b", "c", "d"], "ranking": [[2], [0, 3], [1]]},
        {"prompt": "Q?", "responses": ["a", "b", "c", "d"], "ranking": [[3], [0], [1], [2]]},
        {"prompt": "\n\nHuman: hi\n\nAssistant:", "responses": ["go away", "hello"], "ranking": [[1], [0]]},
    ]
    assert data.held_out == []  # "Q?" and "chat" are both on the train side of labeling.splits
    assert len(dataset.judgments) == 4 and data.skipped == 1  # the superseded one is not a live judgment at all
    assert max(j["id"] for j in dataset.judgments) == last.pk
    assert len(training_snapshot_create(project=project).sha256) == 64
    assert data.reference_texts is None
    Demonstration.objects.create(project=project, prompt=messages_prompt, text="hello there")
    again = training_dataset_collect(project=project, filters=training_filters(params={}))
    assert reward_groups(again).reference_texts == [("\n\nHuman: hi\n\nAssistant:", "hello there")]



@pytest.mark.django_db
def test_a_label_model_snapshot_holds_one_consensus_per_task_and_leaves_excluded_annotators_out(
        project_factory, member, settings, tmp_path):
    from labeling.services.annotators import annotator_exclude
    from training.ml.card import model_card
    from training.services.snapshots import snapshot_facts, snapshot_read

    settings.PAIRWISE_EXPORTS_DIR = tmp_path
    project = project_factory(mode="pairwise", responses_per_task=2)
    ann, bob, cid, dan = (member(project, "annotator") for _ in range(4))
    admin = member(project, "admin")
    tasks = [ranked_task(project, f"q{i}", ["right", "wrong"]) for i in range(4)]
    n = 0
    for i, (task, (right, wrong)) in enumerate(tasks):
        # ann and bob are right, cid is wrong; on q3 only ann and cid voted (a 1-1 split for majority).
        # dan clicks "wrong" everywhere and is excluded.
        for user in (ann, cid, dan) if i == 3 else (ann, bob, cid, dan):
            n += 1
            good = user in (ann, bob)
            judge(project, task, [[right.pk], [wrong.pk]] if good else [[wrong.pk], [right.pk]], f"k{n}",
                  annotator=user, shown_order=[right.pk, wrong.pk])
    annotator_exclude(project=project, user=dan, by=admin)

    plain = training_dataset_collect(project=project, filters=training_filters(params={}, project=project))
    assert len(plain.judgments) == 11 and plain.label_model is None  # dan's 4 left out

    filters = training_filters(params={"label_model": "dawid-skene"}, project=project)
    dataset = training_dataset_collect(project=project, filters=filters)
    assert [j["prompt_id"] for j in dataset.judgments] == ["q0", "q1", "q2", "q3"]
    assert all(j["ranking"] == [[0], [1]] and j["targets"][0][2] > 0.5 for j in dataset.judgments)
    assert dataset.label_model | {"model": "dawid-skene", "judgments": 11, "excluded_judgments": 4, "tasks": 4} == dataset.label_model
    hard = training_dataset_collect(project=project, filters=training_filters(
        params={"label_model": "majority", "label_targets": "hard"}, project=project))
    assert [j["ranking"] for j in hard.judgments] == [[[0], [1]]] * 3 + [[[0, 1]]] and "targets" not in hard.judgments[0]

    snapshot = training_snapshot_create(project=project, filters=filters)
    facts = snapshot_facts(snapshot=snapshot, dataset=snapshot_read(snapshot=snapshot))
    assert facts["judgments"] == 11 and facts["consensus_tasks"] == 4 and facts["filters"]["label_model"] == "dawid-skene"
    card = model_card({"name": "rm", "kind": "reward", "label_model": facts["label_model"]})
    assert "Labels: dawid-skene consensus (soft targets) of 11 judgments on 4 tasks; 4 judgments of excluded" in card
    assert "Labels: every judgment as its annotator gave it" in model_card({"name": "rm", "kind": "reward"})


@pytest.mark.django_db
def test_a_bad_label_model_is_a_field_error(project_factory):
    from django.core.exceptions import ValidationError

    project = project_factory()
    with pytest.raises(ValidationError) as bad:
        training_filters(params={"label_model": "glad", "label_targets": "fuzzy"}, project=project)
    assert set(bad.value.message_dict) == {"label_model", "label_targets"}
