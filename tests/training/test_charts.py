"""training.charts: server-drawn SVG curves; a share's axis stays within [0, 1]."""
from __future__ import annotations

import re

from training.charts import curve_svg


def _ticks(svg: str) -> list[float]:
    return [float(t) for t in re.findall(r'class="tick">([-0-9.e]+)</text>', svg)]


def test_a_flat_accuracy_does_not_run_the_axis_past_one():
    svg = curve_svg([{"step": 1, "val_accuracy": 0.56}, {"step": 2, "val_accuracy": 0.56}], "val_accuracy", "acc")
    assert _ticks(svg) == [1.0, 0.06]  # it was 1.06 to 0.06
    svg = curve_svg([{"step": 1, "win_rate": 0.2}, {"step": 2, "win_rate": 0.2}], "win_rate", "win")
    assert _ticks(svg) == [0.7, 0.0]


def test_other_metrics_keep_their_own_range():
    svg = curve_svg([{"step": 1, "loss": 0.56}, {"step": 2, "loss": 0.56}], "loss", "loss")
    assert _ticks(svg) == [1.06, 0.06]
