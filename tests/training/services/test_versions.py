"""training.services.versions: the registry, promotion and the base models."""
from __future__ import annotations

from io import StringIO
from pathlib import Path

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



@pytest.mark.django_db
def test_lora_policy_versions_are_adapters_served_as_they_are_and_merged_on_request(setup, client, member):
    """A LoRA DPO run registers an adapter version on its parent; generation loads it as it is; merging
    makes a new plain version with the same outputs, once; plain versions refuse to merge (400)."""
    import torch

    from training.ml.generate import generate_candidates
    from training.ml.text import forward_logits, load_policy
    from training.selectors.versions import version_is_adapter
    from training.services.versions import model_version_merge
    from tests.training.conftest import DPO_FAST, policy_run

    project, base = setup
    run, version = policy_run(project, "dpo", {**DPO_FAST, "lora_r": 4, "lora_alpha": 8})
    assert version is not None, run.error
    assert version_is_adapter(version=version) and version.parent_id == base.pk
    assert not (Path(version.artifact_path) / "model.safetensors").exists()
    assert version.metrics["adaptation"]["trainable_parameters"] < version.metrics["adaptation"]["total_parameters"] / 5

    merged = model_version_merge(version=version)
    assert not version_is_adapter(version=merged) and merged.parent_id == base.pk and not merged.promoted
    assert merged.metrics["merged_from"] == version.pk and (Path(merged.artifact_path) / "model.safetensors").exists()
    assert len(generate_candidates(version.artifact_path, ["say hi"], k=1, max_new_tokens=4, device="cpu")[0]) == 1
    (adapted, tokenizer), (plain, _), (parent, _) = (load_policy(v.artifact_path) for v in (version, merged, base))
    ids = torch.tensor([tokenizer("say hi to the merged model")["input_ids"]])
    logits = [forward_logits(m.eval(), ids, torch.ones_like(ids)).detach() for m in (adapted, plain, parent)]
    assert torch.allclose(logits[0], logits[1], atol=1e-4) and not torch.allclose(logits[0], logits[2], atol=1e-4)
    with pytest.raises(ValidationError, match="merged already"):
        model_version_merge(version=version)

    client.force_login(member(project, "admin"))
    response = client.post(f"/api/training/projects/{project.slug}/versions/{merged.pk}/merge/")
    assert response.status_code == 400 and "not a LoRA adapter" in response.content.decode()
    page = client.get(f"/training/{project.slug}/versions/{version.pk}/").content.decode()
    assert 'id="version-adapter"' in page and f"/training/{project.slug}/versions/{version.pk}/merge/" in page
