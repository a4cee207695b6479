"""A reward run that mixes other projects' frozen training data into its own (params["mix_snapshots"]):
who may mix what, what the run trains on, and what the version then knows about its data."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from labeling.models import Membership, Prompt
from labeling.services.projects import project_soft_delete
from labeling.splits import prompt_is_held_out
from tests.training.conftest import REWARD, fast_params, import_preferences, separable_records
from training.models import TrainingRun
from training.selectors.versions import model_card_facts
from training.services.reward import reward_model_evaluate, reward_model_train
from training.services.runs import run_create, run_request
from training.services.snapshots import training_snapshot_create


def _public(project_factory, n: int = 20):
    """Another project: public preference pairs on prompts of its own, frozen."""
    public = project_factory()
    records = [{**r, "id": f"pub{i}", "prompt": f"a public question {i}?"} for i, r in enumerate(separable_records(n))]
    import_preferences(public, records)
    return public, records, training_snapshot_create(project=public)


@pytest.mark.django_db
def test_a_mixed_run_trains_on_the_other_projects_training_side_and_the_version_knows_it(project_factory, tiny_reward_base, models_dir,
                                                                                        member, client):
    own = project_factory()
    import_preferences(own, separable_records(24))
    public, records, snapshot = _public(project_factory, n=40)
    run = run_create(project=own, kind=REWARD, params={**fast_params(tiny_reward_base, epochs=4), "mix_snapshots": [snapshot.pk]})
    version = reward_model_train(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error

    public_train = sum(not prompt_is_held_out(p.external_id) for p in Prompt.objects.filter(project=public))
    own_train = sum(not prompt_is_held_out(p.external_id) for p in Prompt.objects.filter(project=own))
    assert 0 < public_train < 40 and 0 < own_train < 24
    mixed = version.metrics["data"]["mixed"]
    assert mixed == [{"snapshot": snapshot.pk, "project": public.slug, "sha256": snapshot.sha256, "groups": public_train}]
    assert run.params["groups"] == 24 + public_train and run.params["held_out_groups"] == 24 - own_train
    assert version.snapshot_id == run.snapshot_id != snapshot.pk  # its own data is still its snapshot
    # "Data it never saw" counts the mixed prompts as seen.
    assert reward_model_evaluate(version=version, records=records)["trained_prompts"] == public_train
    assert model_card_facts(version=version).datasets == [f"pairwise-snapshot-{run.snapshot_id}", f"pairwise-snapshot-{snapshot.pk}"]
    assert f"from {public.slug}'s snapshot {snapshot.pk}" in run.log_tail
    client.force_login(member(own, Membership.Role.VIEWER))
    from django.urls import reverse

    page = client.get(reverse("training-version-detail", kwargs={"slug": own.slug, "version_id": version.pk})).content.decode()
    assert f"snapshot {snapshot.pk} of <bdi>{public.slug}</bdi> ({public_train} groups" in page


@pytest.mark.django_db
def test_a_mixed_snapshot_must_be_another_live_project_the_requester_oversees(project_factory, member, make_user):
    own = project_factory()
    admin = member(own, Membership.Role.ADMIN)
    public, _, snapshot = _public(project_factory, n=4)

    def ask(user, ids):
        return run_request(project=own, kind=REWARD, trigger="test", requested_by=user, mix_snapshots=ids, send=False)

    def refused(user, ids, message):
        with pytest.raises(ValidationError) as caught:
            ask(user, ids)
        assert message in caught.value.message_dict["mix_snapshots"][0]

    refused(admin, [snapshot.pk], f"No training snapshot {snapshot.pk} of a project you oversee")  # not a member there
    from labeling.services.projects import membership_set

    membership_set(project=public, user=admin, role=Membership.Role.ANNOTATOR)
    refused(admin, [snapshot.pk], "of a project you oversee")  # annotators do not see others' judgments
    membership_set(project=public, user=admin, role=Membership.Role.VIEWER)
    run = ask(admin, [snapshot.pk, snapshot.pk])
    assert run.params["mix_snapshots"] == [snapshot.pk]  # once is enough
    run.delete()
    refused(admin, [999999], "No training snapshot 999999")
    refused(admin, [training_snapshot_create(project=own).pk], "is this project's own data")
    assert ask(None, [snapshot.pk]).params["mix_snapshots"] == [snapshot.pk]  # a command has no user to check
    TrainingRun.objects.filter(project=own).delete()
    project_soft_delete(project=public)
    refused(None, [snapshot.pk], "No training snapshot")
    with pytest.raises(ValidationError) as caught:
        run_request(project=own, kind="dpo", trigger="test", mix_snapshots=[snapshot.pk], send=False)
    assert "Only reward runs" in caught.value.message_dict["mix_snapshots"][0]
    with pytest.raises(ValidationError, match="Up to 16"):
        ask(None, list(range(1, 18)))
    assert not TrainingRun.objects.filter(project=own).exists()  # nothing refused was created


@pytest.mark.django_db
def test_a_mixed_snapshot_changed_on_disk_fails_the_run_with_the_reason(project_factory, tiny_reward_base, models_dir):
    from pathlib import Path

    own = project_factory()
    import_preferences(own, separable_records(8))
    _, _, snapshot = _public(project_factory, n=4)
    Path(snapshot.path).write_text("{}\n")
    run = run_create(project=own, kind=REWARD, params={**fast_params(tiny_reward_base), "mix_snapshots": [snapshot.pk]})
    assert reward_model_train(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and f"snapshot {snapshot.pk} is missing or changed" in run.error


@pytest.mark.django_db
def test_a_round_mixes_only_what_its_requester_oversees(project_factory, member, api_client, no_broker):
    from django.urls import reverse

    from labeling.services.projects import membership_set

    own = project_factory()
    admin = member(own, Membership.Role.ADMIN)
    public, _, snapshot = _public(project_factory, n=4)
    pipes = reverse("api-training-pipelines", kwargs={"slug": own.slug})

    def start(mix):
        return api_client(admin).post(pipes, {"step_params": {"reward": {"mix_snapshots": mix}}}, format="json")

    refused = start([snapshot.pk])
    # A round's errors name the step: step_params "reward.mix_snapshots: ...".
    assert refused.status_code == 400 and "reward.mix_snapshots: No training snapshot" in refused.json()["step_params"][0]
    assert "of a project you oversee" in refused.json()["step_params"][0]
    for bad in ("7", [0], [True], list(range(1, 18))):
        assert "reward.mix_snapshots" in start(bad).json()["step_params"][0], bad
    assert not TrainingRun.objects.filter(project=own).exists()
    membership_set(project=public, user=admin, role=Membership.Role.VIEWER)
    started = start([snapshot.pk])
    assert started.status_code == 201
    run = TrainingRun.objects.get(project=own, kind=REWARD)
    assert run.params["mix_snapshots"] == [snapshot.pk] and run.requested_by == admin


@pytest.mark.django_db
def test_a_run_checks_the_mix_again_against_who_asked_for_it(project_factory, member, tiny_reward_base, models_dir):
    """A round's params come from its spec, not run_request: the run itself refuses a snapshot its
    requester does not oversee (lost access since, or params written around the API)."""
    own = project_factory()
    import_preferences(own, separable_records(8))
    admin = member(own, Membership.Role.ADMIN)
    _, _, snapshot = _public(project_factory, n=4)
    run = run_create(project=own, kind=REWARD, requested_by=admin,
                     params={**fast_params(tiny_reward_base), "mix_snapshots": [snapshot.pk]})
    assert reward_model_train(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and f"No training snapshot {snapshot.pk} of a project you oversee" in run.error


@pytest.mark.django_db
def test_a_schedule_may_mix_a_snapshot_although_its_own_project_cannot(project_factory):
    from django_celery_beat.models import PeriodicTask

    from training.services.schedules import schedules_setup

    own = project_factory()
    public, _, snapshot = _public(project_factory, n=4)
    options = {"step_params": {"reward": {"mix_snapshots": [snapshot.pk]}}}
    schedules_setup(pipeline_options=options)  # the public project itself is not checked against its own data
    check = PeriodicTask.objects.get(name__contains=own.slug, task="training.tasks.reward_retrain_check")
    assert f'"mix_snapshots": [{snapshot.pk}]' in check.kwargs
