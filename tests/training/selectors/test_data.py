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

