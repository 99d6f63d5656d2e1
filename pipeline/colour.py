"""All Lab colour work in one place: sRGB <-> CIE Lab (D65) in batched float32 torch,
and the constants that normalise L and ab for the networks.

The formulas are scikit-image's (`skimage.color.rgb2lab` / `lab2rgb`, D65, 2° observer),
so results agree with it to well under 1e-3 (tests check this), but they run on whole
batches at once, in float32, on whatever device the tensor lives on.

Layout: channels last, (..., 3). RGB is in [0, 1]; L in [0, 100], a and b roughly
in [-110, 110].
"""
from __future__ import annotations

import numpy as np
import torch

# Network normalisation, after richzhang/colorization: L is centred at 50, ab is / 110.
L_CENT = 50.0
L_NORM = 100.0
AB_NORM = 110.0

# sRGB primaries to XYZ, and the D65 reference white (the values scikit-image uses).
_XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)

_EPS = 0.008856  # (6/29)**3: where the cube root gives way to the linear segment
_KAPPA = 7.787  # slope of that linear segment


def _const(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(device=like.device, dtype=like.dtype)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (..., 3) -> Lab, same shape, same float dtype."""
    if not rgb.is_floating_point():
        raise TypeError("rgb_to_lab expects floats in [0, 1]; divide uint8 by 255 first")
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _const(_XYZ_FROM_RGB, rgb).T
    xyz = xyz / _const(_WHITE_D65, rgb)
    f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS) ** (1.0 / 3.0), _KAPPA * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-1)
    L = 116.0 * fy - 16.0
    return torch.stack([L, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab, shape (..., 3) -> sRGB in [0, 1]; out-of-gamut colours are clipped."""
    L, a, b = lab.unbind(-1)
    fy = (L + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp_min(0.0)  # as scikit-image: negative z is clipped to 0
    f = torch.stack([fx, fy, fz], dim=-1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / _KAPPA)
    xyz = xyz * _const(_WHITE_D65, lab)
    linear = xyz @ _const(_RGB_FROM_XYZ, lab).T
    rgb = torch.where(
        linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055, 12.92 * linear
    )
    return rgb.clamp(0.0, 1.0)


def uint8_to_lab(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (..., H, W, 3) -> float32 Lab, channels last."""
    t = torch.as_tensor(images)
    return rgb_to_lab(t.to(torch.float32) / 255.0)


def lab_to_uint8(lab: torch.Tensor) -> np.ndarray:
    """Lab (..., 3) -> uint8 sRGB, rounded the way an 8-bit file would store it."""
    rgb = lab_to_rgb(lab.to(torch.float32))
    return (rgb * 255.0).round().to(torch.uint8).cpu().numpy()


def normalise_l(L: torch.Tensor) -> torch.Tensor:
    return (L - L_CENT) / L_NORM


def normalise_ab(ab: torch.Tensor) -> torch.Tensor:
    return ab / AB_NORM


def denormalise_ab(ab: torch.Tensor) -> torch.Tensor:
    return ab * AB_NORM


def chroma(lab: torch.Tensor) -> torch.Tensor:
    """Lab chroma sqrt(a^2 + b^2): 0 for any gray, whatever the file's mode."""
    return torch.linalg.vector_norm(lab[..., 1:], dim=-1)


def compose(L: torch.Tensor, ab: torch.Tensor) -> np.ndarray:
    """Recombine L (n, H, W) with ab (n, H, W, 2) into uint8 sRGB (n, H, W, 3)."""
    return lab_to_uint8(torch.cat([L[..., None], ab], dim=-1))
