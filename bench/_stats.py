"""How every benchmark summarises a comparison: the median of per-round ratios, min–max.

Each round runs both sides back to back, so the ratio of one round compares the two under
the same machine load; the median of those ratios is robust to a noisy round, and the
min–max shows how far the rounds disagreed. A ratio of two medians would pair rounds that
never ran side by side.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence


def spread(ratios: Sequence[float]) -> str:
    """Return ``median× (min–max×, N rounds)`` of per-round ratios."""
    if not ratios:
        raise ValueError("no rounds were measured")
    rounds = "round" if len(ratios) == 1 else "rounds"
    return (
        f"{statistics.median(ratios):.3f}× ({min(ratios):.3f}–{max(ratios):.3f}×,"
        f" {len(ratios)} {rounds})"
    )


def side_by_side(
    rounds: int, first: Callable[[], float], second: Callable[[], float]
) -> list[tuple[float, float]]:
    """Measure both sides ``rounds`` times, swapping which goes first every round.

    Return ``(first(), second())`` of each round.
    """
    results = []
    for number in range(rounds):
        if number % 2 == 0:
            a = first()
            b = second()
        else:
            b = second()
            a = first()
        results.append((a, b))
    return results
