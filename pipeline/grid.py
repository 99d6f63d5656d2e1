"""Sample grids: one row per image, gray | prediction | truth, as one PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_grid(rows: list[tuple[np.ndarray, ...]], path: Path, gap: int = 2) -> Image.Image:
    """Each row is a tuple of equally sized (H, W, 3) uint8 images, placed left to right."""
    h, w = rows[0][0].shape[:2]
    cols = len(rows[0])
    canvas = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    im = Image.fromarray(canvas)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return im

