"""Charts drawn on the server as SVG: no script, no library, readable when printed.

Colours come from the page's style sheet (classes ``c-<outcome>``), so the
charts follow the dark mode; every mark has a ``<title>`` (a tooltip, and
text for screen readers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from bcfg2.reportdb import CATEGORIES

WIDTH, HEIGHT = 720, 200
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 44, 24, 8


def _svg(body: list[str], label: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
            f'viewBox="0 0 {width} {height}" aria-label={quoteattr(label)}>'
            f"<title>{escape(label)}</title>{''.join(body)}</svg>")


def _axis(top: float, height: int = HEIGHT, width: int = WIDTH) -> list[str]:
    """The y axis from 0 to ``top`` (three ticks) and the baseline."""
    base = height - PAD_BOTTOM
    out = [f'<line class="axis" x1="{PAD_LEFT}" y1="{base}" x2="{width}" y2="{base}"/>']
    for n in range(4):
        value = top * n / 3
        y = base - (base - PAD_TOP) * n / 3
        label = f"{value:.0f}" if top >= 3 or value == 0 else f"{value:.1f}"
        out.append(f'<text class="tick" x="{PAD_LEFT - 4}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{label}</text>')
        if n:
            out.append(f'<line class="grid" x1="{PAD_LEFT}" y1="{y:.1f}" x2="{width}" '
                       f'y2="{y:.1f}"/>')
    return out


def daily_outcomes(days: Sequence[dict[str, Any]]) -> str:
    """Stacked bars: each day's runs by outcome, worst on top."""
    top = max((sum(day["runs"].values()) for day in days), default=0) or 1
    base = HEIGHT - PAD_BOTTOM
    slot = (WIDTH - PAD_LEFT) / max(len(days), 1)
    body = _axis(top)
    for n, day in enumerate(days):
        x = PAD_LEFT + n * slot + 1
        y = float(base)
        for outcome in reversed(CATEGORIES):  # clean at the bottom
            runs = day["runs"].get(outcome, 0)
            if not runs:
                continue
            height = (base - PAD_TOP) * runs / top
            y -= height
            body.append(f'<rect class="c-{outcome}" x="{x:.1f}" y="{y:.1f}" '
                        f'width="{max(slot - 2, 1):.1f}" height="{height:.1f}">'
                        f"<title>{escape(day['date'])}: {runs} {outcome}</title></rect>")
        if n % 5 == 0 or n == len(days) - 1:
            body.append(f'<text class="tick" x="{x + slot / 2:.1f}" y="{HEIGHT - 6}" '
                        f'text-anchor="middle">{escape(day["date"][5:])}</text>')
    return _svg(body, f"Runs per day by outcome, {len(days)} days")


def histogram(durations: Sequence[float], bins: int = 12) -> str:
    """How long runs took: counts per duration bin (seconds)."""
    body: list[str]
    if not durations:
        body = [f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
                f"no run times in this interval</text>"]
        return _svg(body, "Run times: none")
    high = max(durations)
    width = max(high / bins, 0.001)
    counts = [0] * bins
    for value in durations:
        counts[min(int(value / width), bins - 1)] += 1
    top = max(counts)
    base = HEIGHT - PAD_BOTTOM
    slot = (WIDTH - PAD_LEFT) / bins
    body = _axis(top)
    for n, count in enumerate(counts):
        height = (base - PAD_TOP) * count / top
        x = PAD_LEFT + n * slot + 1
        low, up = n * width, (n + 1) * width
        body.append(f'<rect class="c-bar" x="{x:.1f}" y="{base - height:.1f}" '
                    f'width="{slot - 2:.1f}" height="{height:.1f}">'
                    f"<title>{low:.1f}-{up:.1f} s: {count} runs</title></rect>")
        body.append(f'<text class="tick" x="{x + slot / 2:.1f}" y="{HEIGHT - 6}" '
                    f'text-anchor="middle">{up:.{0 if width >= 2 else 1}f}s</text>')
    return _svg(body, f"Run times of {len(durations)} runs, up to {high:.1f} s")


def client_history(history: Sequence[tuple[float, str, float]], since: float,
                   until: float) -> str:
    """One client's runs over time: a bar per run, as tall as it took, coloured by outcome."""
    height = 140
    base = height - PAD_BOTTOM
    top = max((duration for _, _, duration in history), default=0) or 1
    span = max(until - since, 1)
    body = _axis(math.ceil(top), height)
    for when, outcome, duration in history:
        x = PAD_LEFT + (WIDTH - PAD_LEFT - 3) * (when - since) / span
        bar = max((base - PAD_TOP) * duration / top, 3)
        body.append(f'<rect class="c-{outcome}" x="{x:.1f}" y="{base - bar:.1f}" width="3" '
                    f'height="{bar:.1f}"><title>{outcome}, {duration:.1f} s</title></rect>')
    return _svg(body, f"{len(history)} runs, by time, as tall as they took", height=height)


__all__ = ["client_history", "daily_outcomes", "histogram"]
