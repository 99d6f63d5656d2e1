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


# SSIM as scikit-image computes it by default (Wang et al. 2004 with a 7x7 uniform
# window, sample covariance, K1 = 0.01, K2 = 0.03, data range 255), per channel, then
# averaged over R, G, B. The window never leaves the image: skimage crops the 3-pixel
# border where its filter would pad, and an unpadded 7x7 mean gives exactly that region.
_SSIM_WIN = 7


def ssim_uint8(pred: np.ndarray, truth: np.ndarray, batch: int = 256) -> np.ndarray:
    """Per-image SSIM of (n, H, W, 3) uint8 sRGB arrays, in [-1, 1] (1 = identical)."""
    import torch
    import torch.nn.functional as F

    if pred.shape != truth.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {truth.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    np_ = _SSIM_WIN**2
    cov_norm = np_ / (np_ - 1)
    out = []
    for s in range(0, len(pred), batch):
        x = torch.from_numpy(pred[s : s + batch]).double().permute(0, 3, 1, 2)
        y = torch.from_numpy(truth[s : s + batch]).double().permute(0, 3, 1, 2)
        mean = lambda t: F.avg_pool2d(t, _SSIM_WIN, stride=1)  # noqa: E731
        ux, uy = mean(x), mean(y)
        vx = cov_norm * (mean(x * x) - ux * ux)
        vy = cov_norm * (mean(y * y) - uy * uy)
        vxy = cov_norm * (mean(x * y) - ux * uy)
        s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        out.append(s_map.mean((2, 3)).mean(1).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def delta_e2000(lab1, lab2):
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005) of Lab tensors (..., 3),
    elementwise, as scikit-image's `deltaE_ciede2000` (kL = kC = kH = 1)."""
    import torch

    L1, a1, b1 = lab1.unbind(-1)
    L2, a2, b2 = lab2.unbind(-1)
    c_bar = 0.5 * (torch.hypot(a1, b1) + torch.hypot(a2, b2))
    c7 = c_bar**7
    g = 0.5 * (1 - torch.sqrt(c7 / (c7 + 25.0**7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p = torch.rad2deg(torch.atan2(b1, a1p)) % 360
    h2p = torch.rad2deg(torch.atan2(b2, a2p)) % 360
    dL = L2 - L1
    dC = c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh))
    dh = torch.where(c1p * c2p == 0, torch.zeros_like(dh), dh)
    dH = 2 * torch.sqrt(c1p * c2p) * torch.sin(torch.deg2rad(dh / 2))
    L_bar = 0.5 * (L1 + L2)
    C_bar = 0.5 * (c1p + c2p)
    h_sum = h1p + h2p
    h_bar = torch.where((h1p - h2p).abs() > 180, (h_sum + 360) / 2, h_sum / 2)
    h_bar = torch.where(h_bar >= 360, h_bar - 360, h_bar)
    h_bar = torch.where(c1p * c2p == 0, h_sum, h_bar)
    t = (1 - 0.17 * torch.cos(torch.deg2rad(h_bar - 30)) + 0.24 * torch.cos(torch.deg2rad(2 * h_bar))
         + 0.32 * torch.cos(torch.deg2rad(3 * h_bar + 6)) - 0.20 * torch.cos(torch.deg2rad(4 * h_bar - 63)))
    d_theta = 30 * torch.exp(-(((h_bar - 275) / 25) ** 2))
    c7 = C_bar**7
    r_c = 2 * torch.sqrt(c7 / (c7 + 25.0**7))
    s_l = 1 + 0.015 * (L_bar - 50) ** 2 / torch.sqrt(20 + (L_bar - 50) ** 2)
    s_c = 1 + 0.045 * C_bar
    s_h = 1 + 0.015 * C_bar * t
    r_t = -torch.sin(torch.deg2rad(2 * d_theta)) * r_c
    return torch.sqrt((dL / s_l) ** 2 + (dC / s_c) ** 2 + (dH / s_h) ** 2 + r_t * (dC / s_c) * (dH / s_h))


def delta_e_uint8(pred: np.ndarray, truth: np.ndarray, batch: int = 256) -> np.ndarray:
    """Per-image mean CIEDE2000 between (n, H, W, 3) uint8 sRGB images (0 = identical)."""
    from colorize.common.colour import uint8_to_lab

    out = []
    for s in range(0, len(pred), batch):
        a = uint8_to_lab(pred[s : s + batch]).double()
        b = uint8_to_lab(truth[s : s + batch]).double()
        out.append(delta_e2000(a, b).flatten(1).mean(1).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def bootstrap_ci(values: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (seeded: same data, same CI)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_resamples, len(values)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
