"""The export's SQL split is the product's one split (labeling.splits), not a look-alike."""
import io
import json

import pytest

from labeling import splits
from labeling.models import Prompt
from labeling.selectors.exports import ExportFilters
from labeling.services.exports import preferences_export
from tests.labeling.judging import import_rows

pytestmark = pytest.mark.django_db


def _exported_prompt_ids(project, **filters) -> set[str]:
    out = io.BytesIO()
    preferences_export(project=project, fmt="trl", filters=ExportFilters.from_dict(filters), out=out)
    texts = {json.loads(line)["prompt"] for line in out.getvalue().decode().splitlines()}
    return set(Prompt.objects.filter(project=project, text__in=texts).values_list("external_id", flat=True))


@pytest.mark.postgres_only
def test_sql_split_holds_out_exactly_the_prompts_splits_holds_out(project_factory):
    project = project_factory(mode="pairwise")
    import_rows(project, *({"id": f"pref-{i}", "prompt": f"question {i}", "chosen": "yes", "rejected": "no"}
                           for i in range(200)))
    every = set(Prompt.objects.filter(project=project).values_list("external_id", flat=True))
    held_out = {pid for pid in every if splits.prompt_is_held_out(pid)}
    assert len(every) == 200 and held_out and every - held_out  # both sides non-empty

    assert _exported_prompt_ids(project, split=splits.TEST) == held_out
    assert _exported_prompt_ids(project, split=splits.TRAIN) == every - held_out
