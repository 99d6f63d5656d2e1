"""Image-quality metrics shared by training's validation and the evaluate stage, so the
numbers mean the same thing in both.

PSNR is computed per image on 8-bit sRGB, the way the picture would be saved and seen.

The perfect-image rule: an image with zero error (say, a grayscale photo scored
against the gray baseline) has infinite PSNR, which would make any mean infinite.
We floor the MSE at the smallest error 8-bit storage can express, one value off by
one level: mse >= 1 / (H * W * 3). The PSNR of a perfect 64x64 image is then 88.9 dB,
a finite ceiling above every imperfect image of that size. `is_perfect` reports
how many images hit it.
"""
from __future__ import annotations

import numpy as np


def mse_uint8(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image mean squared error of (n, H, W, 3) uint8 arrays, in 8-bit levels²."""
    if pred.shape != truth.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {truth.shape}")
    diff = pred.astype(np.float64) - truth.astype(np.float64)
    return (diff**2).reshape(len(diff), -1).mean(axis=1)


def psnr_uint8(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB, with the perfect-image rule above."""
    mse = mse_uint8(pred, truth)
    floor = 1.0 / np.prod(truth.shape[1:])
    return 10.0 * np.log10(255.0**2 / np.maximum(mse, floor))


def is_perfect(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return mse_uint8(pred, truth) == 0


def colourfulness(rgb: np.ndarray) -> np.ndarray:
    """Per-image colourfulness of (n, H, W, 3) uint8 sRGB (Hasler & Süsstrunk 2003):
    sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2), rg = R - G,
    yb = (R + G) / 2 - B. 0 for any gray image; about 15 is "slightly colourful", 60+
    "highly colourful" on their scale. It tells a vivid colourisation from a sepia one,
    which PSNR does not."""
    x = rgb.astype(np.float64).reshape(len(rgb), -1, 3)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    std = np.sqrt(rg.std(1) ** 2 + yb.std(1) ** 2)
    mean = np.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return std + 0.3 * mean
