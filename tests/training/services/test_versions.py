"""training.services.versions: the registry, promotion and the base models."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from training.models import ModelVersion
from training.services.versions import model_version_demote, model_version_promote, model_version_register


@pytest.mark.django_db
def test_register_refuses_missing_or_temp_folders_and_promotion_is_one_per_kind(project_factory, tmp_path):
    project = project_factory()
    with pytest.raises(ValidationError):
        model_version_register(project=project, kind="reward", name="x", base="b", artifact_path=tmp_path / "nope")
    half = tmp_path / ".tmp-reward-run1-xyz"
    half.mkdir()
    with pytest.raises(ValidationError):
        model_version_register(project=project, kind="reward", name="x", base="b", artifact_path=half)
    folders = [tmp_path / n for n in ("v1", "v2", "p1")]
    [f.mkdir() for f in folders]
    v1 = model_version_register(project=project, kind="reward", name="v1", base="b", artifact_path=folders[0], promoted=True)
    v2 = model_version_register(project=project, kind="reward", name="v2", base="b", artifact_path=folders[1])
    p1 = model_version_register(project=project, kind="policy", name="p1", base="b", artifact_path=folders[2], promoted=True)
    model_version_promote(version=v2)
    promoted = set(ModelVersion.objects.filter(promoted=True).values_list("name", flat=True))
    assert promoted == {"v2", "p1"}
    model_version_demote(version=v2)
    assert not ModelVersion.objects.filter(project=project, kind="reward", promoted=True).exists()
    v1.refresh_from_db()
    p1.refresh_from_db()
    assert not v1.promoted and p1.promoted


@pytest.mark.django_db
def test_install_base_models_is_idempotent(tiny_policy, tiny_reward_base):
    out = StringIO()
    call_command("install_base_models", "--policy", str(tiny_policy), "--reward-base", str(tiny_reward_base), stdout=out)
    call_command("install_base_models", "--policy", str(tiny_policy), "--reward-base", str(tiny_reward_base), stdout=out)
    assert ModelVersion.objects.count() == 2
    policy = ModelVersion.objects.get(kind="policy")
    assert policy.promoted and policy.project is None and policy.config == {"role": "policy-base"}
    reward = ModelVersion.objects.get(kind="reward")
    assert not reward.promoted and reward.config == {"role": "base"}
    assert "(promoted)" in out.getvalue()

