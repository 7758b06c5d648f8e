"""Sample grids: rows of images with labels, written as one PNG (used by ``flowturbo generate`` and the benchmark)."""

from __future__ import annotations

from PIL import Image, ImageDraw


def image_grid(
    rows: list[list[Image.Image]],
    row_labels: list[str] | None = None,
    column_labels: list[str] | None = None,
    scale: int = 1,
) -> Image.Image:
    """Lay ``rows`` of equally sized images out in a grid, upscaled ``scale`` times (nearest neighbour, so small
    images stay crisp), with optional labels left of each row and above each column."""
    width, height = rows[0][0].size
    cell_w, cell_h = width * scale, height * scale
    label_w = 8 + 6 * max((len(label) for label in row_labels or []), default=0)
    label_h = 16 if column_labels else 0
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (label_w + columns * (cell_w + 2), label_h + len(rows) * (cell_h + 2)), "white")
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(column_labels or []):
        draw.text((label_w + c * (cell_w + 2) + 2, 2), label[: max(1, cell_w // 6)], fill="black")
    for r, row in enumerate(rows):
        top = label_h + r * (cell_h + 2)
        if row_labels:
            draw.text((4, top + cell_h // 2 - 6), row_labels[r], fill="black")
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB").resize((cell_w, cell_h), Image.NEAREST), (label_w + c * (cell_w + 2), top))
    return grid
