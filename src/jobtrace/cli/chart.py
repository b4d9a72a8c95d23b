"""A line chart drawn with braille characters, for metric histories in a terminal.

Each character cell holds a 2 x 4 grid of dots, so a chart ``width`` characters wide and
``height`` lines high has ``2*width`` by ``4*height`` dots. Consecutive points are joined by
straight lines; NaN and ±Inf cannot be placed on the axis, so they break the line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

__all__ = ["Bounds", "render_chart", "render_overlay"]

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


#: Axis bounds of a chart: (x low, x high, y low, y high).
Bounds = tuple[float, float, float, float]


def _bounds(series: Sequence[Sequence[tuple[float, float]]]) -> Bounds | None:
    """The range of every finite point of all the series, or None if there is none."""
    xs = [x for points in series for x, y in points if math.isfinite(x) and math.isfinite(y)]
    ys = [y for points in series for x, y in points if math.isfinite(x) and math.isfinite(y)]
    return (min(xs), max(xs), min(ys), max(ys)) if xs else None


def _plot(
    points: Sequence[tuple[float, float]], bounds: Bounds, width: int, height: int
) -> list[list[int]]:
    """The braille dot bits of each cell for one series drawn within ``bounds``."""
    x_low, x_high, y_low, y_high = bounds
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
    return grid


def _char(bits: int) -> str:
    return chr(_BRAILLE_BASE + bits) if bits else " "


def render_chart(
    points: Sequence[tuple[float, float]], width: int, height: int
) -> tuple[list[str], float, float]:
    """Lines of a braille chart of ``(x, y)`` points (ascending x), and the y range drawn.

    Returns ``(lines, y_min, y_max)``; lines are ``width`` characters each, the first line
    the top of the chart. Points with a non-finite y are left out and break the line.
    """
    width, height = max(1, width), max(1, height)
    bounds = _bounds([points])
    if bounds is None:
        return [" " * width for _ in range(height)], math.nan, math.nan
    grid = _plot(points, bounds, width, height)
    return ["".join(map(_char, row)) for row in grid], bounds[2], bounds[3]


def render_overlay(
    series: Sequence[Sequence[tuple[float, float]]], width: int, height: int
) -> tuple[list[list[tuple[str, int | None]]], Bounds | None]:
    """Several series on one chart with shared axes, to tell apart by colour.

    Returns rows of ``(character, owner)`` cells, top row first, and the bounds drawn
    (None when no series has a finite point). ``owner`` is the index of the only series
    with dots in the cell, or None where several share it (or none has any): a braille
    character has one colour.
    """
    width, height = max(1, width), max(1, height)
    bounds = _bounds(series)
    if bounds is None:
        return [[(" ", None)] * width for _ in range(height)], None
    grids = [_plot(points, bounds, width, height) for points in series]
    rows: list[list[tuple[str, int | None]]] = []
    for r in range(height):
        row: list[tuple[str, int | None]] = []
        for c in range(width):
            owners = [k for k, grid in enumerate(grids) if grid[r][c]]
            bits = 0
            for k in owners:
                bits |= grids[k][r][c]
            row.append((_char(bits), owners[0] if len(owners) == 1 else None))
        rows.append(row)
    return rows, bounds
