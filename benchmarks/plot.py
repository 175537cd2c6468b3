"""A small line plot written with Pillow (no plotting library needed by the benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (720, 440),
) -> Path:
    """Draw each ``name: (xs, ys)`` as a coloured polyline with dots and write a PNG."""
    width, height = size
    left, right, top, bottom = 70, 20, 20, 60
    xs = [x for x_values, _ in series.values() for x in x_values]
    ys = [y for _, y_values in series.values() for y in y_values]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad = 0.05 * (y1 - y0 or 1.0)
    y0, y1 = y0 - pad, y1 + pad

    def point(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / ((x1 - x0) or 1.0) * (width - left - right)
        py = top + (y1 - y) / ((y1 - y0) or 1.0) * (height - top - bottom)
        return px, py

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(5):  # ticks: 5 on each axis
        x = x0 + i * (x1 - x0) / 4
        y = y0 + i * (y1 - y0) / 4
        px, _ = point(x, y0)
        _, py = point(x0, y)
        draw.text((px - 10, height - bottom + 5), f"{x:.2f}", fill="black")
        draw.text((5, py - 6), f"{y:.3f}", fill="black")
    draw.text((width // 2 - 60, height - 25), x_label, fill="black")
    draw.text((5, 2), y_label, fill="black")
    for (x_values, y_values), colour in zip(series.values(), COLOURS, strict=False):
        points = [point(x, y) for x, y in zip(x_values, y_values, strict=True)]
        draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
    for i, (name, colour) in enumerate(zip(series, COLOURS, strict=False)):  # legend
        y = top + 10 + 16 * i
        draw.line([left + 10, y + 6, left + 30, y + 6], fill=colour, width=3)
        draw.text((left + 36, y), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
