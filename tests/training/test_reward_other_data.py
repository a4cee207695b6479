"""A reward version scored on other data and the result kept: reward_model_evaluate(record_as=...),
`evaluate_reward_model --record`, how many of the file's prompts the version trained on, the
training page, the version page and the model card."""
from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from labeling.models import Membership, Prompt
from labeling.splits import prompt_is_held_out
from tests.training.conftest import REWARD, fast_params, import_preferences, separable_records, write_pairs_gz
from training.ml.card import CARD_FILE
from training.models import ModelVersion
from training.services.reward import reward_model_evaluate, reward_model_train
from training.services.runs import run_create


def _transcripts(n: int) -> list[dict[str, str]]:
    """HH-RLHF-shaped prompts: another file of the same conversations may break lines or pad them
    differently, and they are still the prompts the version trained on."""
    return [{"id": f"t{i}", "prompt": f"\n\nHuman: tell me about {i}\n\nAssistant: sure.\n\nHuman: and more?\n\nAssistant:",
             "chosen": f"yes, happy to help with {i}!", "rejected": f"no. {i}"} for i in range(n)]


@pytest.fixture
def trained(project_factory, tiny_reward_base, models_dir):
    project = project_factory()
    records = separable_records(30) + _transcripts(10)
    import_preferences(project, records)
    version = reward_model_train(run_id=run_create(project=project, kind=REWARD,
                                                   params=fast_params(tiny_reward_base, epochs=8)).pk)
    on_train_side = sum(not prompt_is_held_out(p.external_id) for p in Prompt.objects.filter(project=project))
    assert 0 < on_train_side < 40
    return project, version, records, on_train_side


@pytest.mark.django_db
def test_an_evaluation_counts_the_prompts_the_version_trained_on_and_is_kept_by_name(trained):
    project, version, records, on_train_side = trained
    unseen = [{**r, "prompt": f"a prompt it never saw {r['id']}"} for r in records[:5]]
    reflowed = [{**r, "prompt": r["prompt"].strip().replace("\n\n", "\r\n ")} for r in records]
    assert reflowed[-1]["prompt"].startswith("Human: tell me about 9\r\n Assistant:")
    result = reward_model_evaluate(version=version, records=reflowed + unseen, record_as=" everything ", source="all.jsonl")
    assert result["pairs"] == 45 and result["trained_prompts"] == on_train_side
    low, high = result["ci95"]
    assert 0 <= low <= result["accuracy"] <= high <= 1
    assert reward_model_evaluate(version=version, records=unseen)["trained_prompts"] == 0

    reward_model_evaluate(version=version, records=unseen[:3], record_as="unseen", source="u.jsonl")
    version.refresh_from_db()
    kept = version.metrics["evaluations"]
    assert set(kept) == {"everything", "unseen"} and "margins" not in kept["everything"]
    assert kept["everything"]["pairs"] == 45 and kept["everything"]["source"] == "all.jsonl"
    assert kept["unseen"]["trained_prompts"] == 0 and len(kept["unseen"]["records_sha256"]) == 64
    assert version.metrics["val_accuracy"] is not None  # the training metrics are untouched
    # The same name again replaces that one only; other data gives another digest.
    reward_model_evaluate(version=version, records=unseen, record_as="unseen", with_margins=True)
    version.refresh_from_db()
    assert version.metrics["evaluations"]["unseen"]["pairs"] == 5 and version.metrics["evaluations"]["everything"]["pairs"] == 45
    assert version.metrics["evaluations"]["unseen"]["records_sha256"] != kept["unseen"]["records_sha256"]
    assert "margins" not in version.metrics["evaluations"]["unseen"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["   ", "x" * 65])
def test_a_bad_evaluation_name_is_refused_before_anything_runs(trained, name):
    _, version, records, _ = trained
    with pytest.raises(ValidationError, match="1 to 64 characters"):
        reward_model_evaluate(version=version, records=records, record_as=name)
    version.refresh_from_db()
    assert "evaluations" not in version.metrics


@pytest.mark.django_db
def test_a_version_without_its_snapshot_file_says_it_cannot_tell(trained):
    from pathlib import Path

    _, version, records, _ = trained
    Path(version.snapshot.path).unlink()
    assert reward_model_evaluate(version=version, records=records[:4])["trained_prompts"] is None


@pytest.mark.django_db
def test_the_command_records_and_the_pages_and_card_show_it(trained, tmp_path, member, client):
    project, version, records, on_train_side = trained
    data = write_pairs_gz(tmp_path / "other.jsonl.gz", records[:8] + [{**records[0], "prompt": "<b>new</b> prompt"}])
    out = json.loads(_call("evaluate_reward_model", "--version", str(version.pk), "--data", str(data), "--record", "hh <test>"))
    assert out["pairs"] == 9 and set(out) >= {"ci95", "trained_prompts", "length_baseline"}
    version.refresh_from_db()
    assert version.metrics["evaluations"]["hh <test>"]["source"] == "other.jsonl.gz"

    card = (version.artifact_path and open(f"{version.artifact_path}/{CARD_FILE}", encoding="utf-8").read())
    assert "### On other data" in card and "hh \\<test\\>" in card and "other.jsonl.gz" in card
    assert '"dataset": {"name": "hh <test>", "type": "preference-pairs"}' in card  # the YAML model-index

    client.force_login(member(project, Membership.Role.VIEWER))
    runs = client.get(reverse("training-runs", kwargs={"slug": project.slug})).content.decode()
    assert '<td class="other-data"><details><summary>1 set</summary>' in runs and "<bdi>hh &lt;test&gt;</bdi>" in runs
    page = client.get(reverse("training-version-detail", kwargs={"slug": project.slug, "version_id": version.pk})).content.decode()
    row = page[page.index('id="other-data"'):page.index("</table>", page.index('id="other-data"'))]
    accuracy = version.metrics["evaluations"]["hh <test>"]["accuracy"]
    assert "<bdi>hh &lt;test&gt;</bdi>" in row and f"<td>{accuracy:.3f}</td>" in row and "<b>" not in page
    kept = version.metrics["evaluations"]["hh <test>"]
    assert f"({kept['pairs_shorter_chosen']}) / " in row and f"({kept['pairs_longer_chosen']}), r = " in row
    assert kept["pairs_shorter_chosen"] + kept["pairs_longer_chosen"] == 9  # every pair differs in length
    assert "evaluations." not in page  # not flattened into the metrics table as well


@pytest.mark.django_db
def test_a_bad_line_is_named_and_nothing_is_recorded(trained, tmp_path):
    _, version, records, _ = trained
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(records[0]) + "\n\n" + json.dumps({"prompt": "p", "chosen": 3}) + "\n")
    with pytest.raises(CommandError, match=r"bad.jsonl:3: missing or non-string chosen, rejected"):
        _call("evaluate_reward_model", "--version", str(version.pk), "--data", str(bad), "--record", "x")
    bad.write_text(json.dumps(records[0]) + "\n{oops\n")
    with pytest.raises(CommandError, match=r"bad.jsonl:2: not JSON"):
        _call("evaluate_reward_model", "--version", str(version.pk), "--data", str(bad), "--record", "x")
    assert "evaluations" not in ModelVersion.objects.get(pk=version.pk).metrics


@pytest.mark.django_db
def test_a_reward_version_without_evaluations_says_how_to_add_one(trained, member, client):
    project, version, _, _ = trained
    client.force_login(member(project, Membership.Role.VIEWER))
    page = client.get(reverse("training-version-detail", kwargs={"slug": project.slug, "version_id": version.pk})).content.decode()
    assert f"evaluate_reward_model --version {version.pk} --data FILE --record NAME" in page


def _call(*args) -> str:
    import io

    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _upload(name: str, body: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, body, content_type="application/octet-stream")


@pytest.mark.django_db
def test_an_admin_scores_a_file_from_the_version_page_and_a_viewer_cannot(trained, member, client):
    import gzip

    project, version, records, _ = trained
    url = reverse("training-version-score-file", kwargs={"slug": project.slug, "version_id": version.pk})
    page_url = reverse("training-version-detail", kwargs={"slug": project.slug, "version_id": version.pk})
    # A string may hold U+2028 unescaped: it is inside the line, not a line break.
    odd = {**records[0], "prompt": "line\u2028separator <script>alert(1)</script>"}
    body = gzip.compress("\n".join(json.dumps(r, ensure_ascii=False) for r in records[:5] + [odd]).encode())

    client.force_login(member(project, Membership.Role.VIEWER))
    assert f'action="{url}"' not in client.get(page_url).content.decode()
    assert client.post(url, {"file": _upload("x.jsonl.gz", body), "name": "n"}).status_code in (403, 404)
    assert "evaluations" not in ModelVersion.objects.get(pk=version.pk).metrics

    client.force_login(member(project, Membership.Role.ADMIN))
    assert f'action="{url}"' in client.get(page_url).content.decode()
    response = client.post(url, {"file": _upload("mine.jsonl.gz", body), "name": "mine <b>"}, follow=True)
    assert response.redirect_chain[-1][0] == page_url
    kept = ModelVersion.objects.get(pk=version.pk).metrics["evaluations"]["mine <b>"]
    assert kept["pairs"] == 6 and kept["source"] == "mine.jsonl.gz"
    html = response.content.decode()
    assert "Kept \u201cmine &lt;b&gt;\u201d: accuracy" in html and "on 6 pairs" in html and "<script>alert" not in html

    broken = b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a", "rejected": \n'
    response = client.post(url, {"file": _upload("broken.jsonl", broken), "name": "broken"}, follow=True)
    assert "broken.jsonl:2: not JSON" in response.content.decode()
    response = client.post(url, {"name": "no file"}, follow=True)
    assert "Choose a file" in response.content.decode()
    response = client.post(url, {"file": _upload("empty.jsonl", b"\n\n"), "name": "empty"}, follow=True)
    assert "The file has 0 pairs" in response.content.decode()
    response = client.post(url, {"file": _upload("ok.jsonl", body), "name": ""}, follow=True)
    assert "1 to 64 characters" in response.content.decode()
    assert set(ModelVersion.objects.get(pk=version.pk).metrics["evaluations"]) == {"mine <b>"}
