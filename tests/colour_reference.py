"""Reference implementations the tests check the fast or fused code against: plain,
slow, obviously right. Not part of the package: nothing in the pipeline needs them."""
from __future__ import annotations

import numpy as np
import torch

from colorize.common.colour import (
    _DIST_CHUNK,
    AB_GRID,
    _expect_centres,
    _sq_dists,
    ab_bin_lut,
    pack_rgb8,
)


def count_bins(bin_images: torch.Tensor, q: int) -> np.ndarray:
    """Pixel count per bin of a batch of bin-index images (any shape), int64 (q,)."""
    return torch.bincount(bin_images.reshape(-1), minlength=q).numpy().astype(np.int64)


def rgb_uint8_to_bins(images: np.ndarray | torch.Tensor, grid: float = AB_GRID) -> torch.Tensor:
    """uint8 RGB images (..., H, W, 3) -> int64 bin indices (..., H, W), via ab_bin_lut.

    No Lab conversion: a pack and a gather, ~100 M pixels/s on one core for photos
    (random noise, which defeats the cache, ~55 M/s). Follow with torch.bincount for counts.
    """
    array = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.dtype != np.uint8 or array.shape[-1:] != (3,):
        raise TypeError(f"rgb_uint8_to_bins expects uint8 (..., 3), got {array.dtype} {array.shape}")
    lut = ab_bin_lut(grid).numpy()
    return torch.from_numpy(np.take(lut, pack_rgb8(array)).astype(np.int64))


def nearest_bin(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Index of the nearest bin centre for any float ab, (..., 2) -> (...,) int64.

    Chunked so big images never hold the full (N, Q) distance matrix. Ties go to the
    lower index (torch.argmin). For ab of an 8-bit colour this is its LUT bin.
    """
    flat = ab.reshape(-1, 2)
    centres = bins.to(device=ab.device, dtype=ab.dtype)
    out = torch.empty(len(flat), dtype=torch.int64, device=ab.device)
    for start in range(0, len(flat), _DIST_CHUNK):
        out[start : start + _DIST_CHUNK] = _sq_dists(flat[start : start + _DIST_CHUNK], centres).argmin(1)
    return out.reshape(ab.shape[:-1])


def decode_mode(logits: torch.Tensor, bins: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """ab of the most likely bin: (n, Q, H, W) -> (n, 2, H, W) for dim=1. Vivid, but
    patchy where two bins are nearly tied."""
    centres = bins.to(device=logits.device, dtype=logits.dtype if logits.is_floating_point() else torch.float32)
    return centres[logits.argmax(dim)].movedim(-1, dim)


def decode_mean(logits: torch.Tensor, bins: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Expected ab under softmax(logits): smooth, but washed out when the distribution
    is multimodal (the mean of red and green is gray)."""
    return _expect_centres(torch.softmax(logits, dim=dim), bins, dim)
