"""bench/import_memory.py on a tiny file, through the product's import service into the test database."""
from __future__ import annotations

import pytest

from bench import import_memory
from labeling.models import Judgment, Project


@pytest.mark.django_db
def test_it_imports_a_generated_file_and_reports_its_memory():
    result = import_memory.main(["--mb", "0.5"])
    assert set(result) == {"file_mb", "records", "judgments", "baseline_rss_mb", "peak_rss_mb", "ratio", "seconds"}
    assert 0.5 <= result["file_mb"] < 0.52 and result["records"] > 400
    project = Project.objects.get(slug__startswith="import-memory-")
    assert result["judgments"] == result["records"] == Judgment.objects.filter(project=project).count()
    assert 0 < result["baseline_rss_mb"] <= result["peak_rss_mb"] and result["seconds"] > 0
    growth = (result["peak_rss_mb"] - result["baseline_rss_mb"]) / result["file_mb"]
    assert result["ratio"] == pytest.approx(growth, abs=0.25)  # both MB figures are rounded to 0.1


def test_it_refuses_a_size_that_is_not_positive(capsys):
    with pytest.raises(SystemExit):
        import_memory.main(["--mb", "0"])
    assert "--mb must be positive" in capsys.readouterr().err
