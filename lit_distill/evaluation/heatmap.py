"""A PNG heat map of a results table (rows x architectures), drawn with Pillow only."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CELL_W, CELL_H, NAME_W, PAD = 150, 34, 230, 6


def _colour(fraction: float) -> tuple[int, int, int]:
    """Low accuracy light yellow, high dark blue (a sequential scale readable in grey too)."""
    low, high = (255, 247, 188), (8, 48, 107)
    return tuple(round(a + (b - a) * fraction) for a, b in zip(low, high, strict=True))


def heatmap_png(path: Path, lines: list[list[str]], title: str) -> Path:
    """Draw ``lines`` (a header, then ``name, ipc, "mean ± std" ...``) as a coloured grid."""
    header, *rows = lines
    means = [[_mean(cell) for cell in row[2:]] for row in rows]
    known = [m for row in means for m in row if m is not None]
    low, high = (min(known), max(known)) if known else (0.0, 1.0)
    width = NAME_W + CELL_W * (len(header) - 2) + PAD
    height = CELL_H * (len(rows) + 2) + PAD
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((PAD, PAD), title, fill="black", font=font)
    for j, arch in enumerate(header[2:]):
        draw.text((NAME_W + j * CELL_W + PAD, CELL_H + PAD), arch, fill="black", font=font)
    for i, (row, values) in enumerate(zip(rows, means, strict=True)):
        top = CELL_H * (i + 2)
        label = row[0] if "IPC" in row[0] or row[1] == "all" else f"{row[0]} (IPC {row[1]})"
        draw.text((PAD, top + PAD), label, fill="black", font=font)
        for j, (text, value) in enumerate(zip(row[2:], values, strict=True)):
            left = NAME_W + j * CELL_W
            fraction = 0.0 if value is None or high == low else (value - low) / (high - low)
            fill = (235, 235, 235) if value is None else _colour(fraction)
            draw.rectangle([left, top, left + CELL_W - 2, top + CELL_H - 2], fill=fill)
            ink = "white" if fraction > 0.55 else "black"
            draw.text((left + PAD, top + PAD), text, fill=ink, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _mean(cell: str) -> float | None:
    try:
        return float(cell.split("±")[0])
    except ValueError:
        return None
