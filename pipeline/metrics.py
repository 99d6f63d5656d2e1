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
