"""SVG line charts drawn on the server (no JS, no CDN): the training pages' loss, accuracy and win-rate curves."""
from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


FRACTION_KEYS = ("accuracy", "win_rate")


def is_fraction(key: str) -> bool:
    """Metrics that are shares in [0, 1] (accuracies, win rates), by name."""
    return any(part in key for part in FRACTION_KEYS)


def curve_svg(points: list[dict], key: str, title: str, width: int = 360, height: int = 140) -> SafeString:
    """A polyline of metric `key` over `step`. Numbers only go into the markup; the title is escaped."""
    series = [(p["step"], float(p[key])) for p in points if isinstance(p.get(key), (int, float)) and "step" in p]
    pad = 28
    head = (f'<svg class="curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>')
    if len(series) < 2:
        return mark_safe(head + f'<text x="{pad}" y="{height // 2}">{escape(title)}: not enough points</text></svg>')
    xs, ys = [s for s, _ in series], [v for _, v in series]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if is_fraction(key) and 0 <= min(ys) and max(ys) <= 1:  # a share cannot leave [0, 1]: nor can its axis
        y0, y1 = max(y0, 0.0), min(y1, 1.0)
    sx = lambda x: pad + (x - x0) / max(x1 - x0, 1e-12) * (width - 2 * pad)  # noqa: E731
    sy = lambda y: height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)  # noqa: E731
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series)
    return mark_safe(
        head
        + f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" class="frame"/>'
        + f'<polyline points="{coords}" class="line"/>'
        + f'<text x="{pad}" y="{pad - 8}">{escape(title)}</text>'
        + f'<text x="2" y="{pad + 4}" class="tick">{y1:.3g}</text>'
        + f'<text x="2" y="{height - pad}" class="tick">{y0:.3g}</text>'
        + f'<text x="{width - pad}" y="{height - 8}" class="tick" text-anchor="end">step {x1}</text>'
        + "</svg>"
    )
