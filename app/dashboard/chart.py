"""The deliveries-per-job chart as plain geometry, drawn as inline SVG by the template.

No JavaScript and nothing fetched: the page works offline and under a strict CSP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 14, 30
#: Distinguishable on white, and for the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#999933", "#000000")
FAILURE_COLOR = "#d00000"


@dataclass(frozen=True)
class Series:
    """One line of the chart."""

    label: str
    color: str
    points: str  # the SVG polyline's "x,y x,y …"
    total: int
    dashed: bool = False


@dataclass(frozen=True)
class Tick:
    """One axis label at a position."""

    position: float
    label: str
    anchor: str = "middle"  # SVG text-anchor: the edge labels stay inside the chart


@dataclass(frozen=True)
class Chart:
    """Everything the template needs to draw the chart."""

    width: int
    height: int
    plot: tuple[int, int, int, int]  # left, top, right, bottom
    series: list[Series]
    y_ticks: list[Tick]
    x_ticks: list[Tick]


def nice_ceiling(value: int) -> int:
    """Return the smallest 1/2/5 × 10^n at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # unreachable: the loop ends at 10 × power


def build(
    counts: dict[str, list[int]],
    failures: list[int],
    *,
    since_ms: int,
    bucket_ms: int,
    buckets: int,
) -> Chart:
    """Lay out one line per job plus the failures line over ``buckets`` time buckets."""
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    top_value = nice_ceiling(max([max(c, default=0) for c in counts.values()] + failures + [0]))

    def x(index: int) -> float:
        return LEFT + (right - LEFT) * (index / max(1, buckets - 1))

    def y(value: int) -> float:
        return bottom - (bottom - TOP) * value / top_value

    def points(values: list[int]) -> str:
        return " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))

    series = [
        Series(job, PALETTE[i % len(PALETTE)], points(values), sum(values))
        for i, (job, values) in enumerate(counts.items())
    ]
    if any(failures):
        series.append(Series("failures", FAILURE_COLOR, points(failures), sum(failures), True))
    y_ticks = [Tick(y(v), str(v)) for v in sorted({0, top_value // 2, top_value})]
    edges = {0: "start", buckets - 1: "end"}
    x_ticks = [
        Tick(x(i), _time_label(since_ms + i * bucket_ms, bucket_ms), edges.get(i, "middle"))
        for i in sorted({0, (buckets - 1) // 2, buckets - 1})
    ]
    return Chart(WIDTH, HEIGHT, (LEFT, TOP, right, bottom), series, y_ticks, x_ticks)


def _time_label(at_ms: int, bucket_ms: int) -> str:
    moment = datetime.fromtimestamp(at_ms / 1000, UTC)
    return moment.strftime("%d %b %H:%M" if bucket_ms >= 3_600_000 else "%H:%M")
