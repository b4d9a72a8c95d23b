"""A line chart drawn with braille characters, for metric histories in a terminal.

Each character cell holds a 2 x 4 grid of dots, so a chart ``width`` characters wide and
``height`` lines high has ``2*width`` by ``4*height`` dots. Consecutive points are joined by
straight lines; NaN and ±Inf cannot be placed on the axis, so they break the line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

__all__ = ["render_chart"]

_BRAILLE_BASE: Final = 0x2800
# Bit of each dot, indexed [column][row] within a cell (Unicode braille dot numbering).
_DOTS: Final = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


def _scale(value: float, low: float, high: float, size: int) -> int:
    if high == low:
        return size // 2
    return min(size - 1, max(0, round((value - low) / (high - low) * (size - 1))))


def _line(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """The dots of a straight line (Bresenham), both ends included."""
    dots = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        dots.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return dots
        twice = 2 * err
        if twice >= dy:
            err += dy
            x0 += sx
        if twice <= dx:
            err += dx
            y0 += sy


def render_chart(
    points: Sequence[tuple[float, float]], width: int, height: int
) -> tuple[list[str], float, float]:
    """Lines of a braille chart of ``(x, y)`` points (ascending x), and the y range drawn.

    Returns ``(lines, y_min, y_max)``; lines are ``width`` characters each, the first line
    the top of the chart. Points with a non-finite y are left out and break the line.
    """
    width, height = max(1, width), max(1, height)
    finite = [(x, y) for x, y in points if math.isfinite(y) and math.isfinite(x)]
    if not finite:
        return [" " * width for _ in range(height)], math.nan, math.nan
    xs = [x for x, _ in finite]
    ys = [y for _, y in finite]
    x_low, x_high, y_low, y_high = min(xs), max(xs), min(ys), max(ys)
    cols, rows = 2 * width, 4 * height
    grid = [[0] * width for _ in range(height)]
    previous: tuple[int, int] | None = None
    for x, y in points:
        if not (math.isfinite(x) and math.isfinite(y)):
            previous = None
            continue
        dot = (_scale(x, x_low, x_high, cols), rows - 1 - _scale(y, y_low, y_high, rows))
        for cx, cy in _line(*previous, *dot) if previous else [dot]:
            grid[cy // 4][cx // 2] |= _DOTS[cx % 2][cy % 4]
        previous = dot
    lines = ["".join(chr(_BRAILLE_BASE + bits) if bits else " " for bits in row) for row in grid]
    return lines, y_low, y_high
