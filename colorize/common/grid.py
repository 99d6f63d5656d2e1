"""Sample grids: one row per image, gray | prediction | truth, as one PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from colorize.common.colour import compose
from colorize.common.files import atomic_write


def comparison_rows(L: torch.Tensor, ab: torch.Tensor, truth: np.ndarray) -> list[tuple]:
    """(gray, prediction, truth) per image, from L (n, H, W) and predicted ab (n, H, W, 2)."""
    gray = compose(L, torch.zeros_like(ab))
    pred = compose(L, ab)
    return [(gray[i], pred[i], truth[i]) for i in range(len(L))]


def save_grid(rows: list[tuple[np.ndarray, ...]], path: Path, gap: int = 2) -> Image.Image:
    """Each row is a tuple of equally sized (H, W, 3) uint8 images, placed left to right."""
    h, w = rows[0][0].shape[:2]
    cols = len(rows[0])
    canvas = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    im = Image.fromarray(canvas)
    atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))
    return im

