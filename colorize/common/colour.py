"""All Lab colour work in one place: sRGB <-> CIE Lab (D65) in batched float32 torch,
and the constants that normalise L and ab for the networks.

The formulas are scikit-image's (`skimage.color.rgb2lab` / `lab2rgb`, D65, 2° observer),
so results agree with it to well under 1e-3 (tests check this), but they run on whole
batches at once, in float32, on whatever device the tensor lives on.

Layout: channels last, (..., 3). RGB is in [0, 1]; L in [0, 100], a and b roughly
in [-110, 110].

Quantised ab, after Zhang, Isola & Efros, "Colorful Image Colorization" (ECCV 2016):
the classification model predicts, per pixel, a distribution over Q ab bins.

* Bins (`ab_bins`). The ab plane is cut into square cells of side AB_GRID = 10, each named
  by its centre, a multiple of 10 (a pixel's cell is round(a / 10) * 10, round(b / 10) * 10).
  A cell is kept if at least one of the 256**3 8-bit sRGB colours falls in it, with its
  Lab computed exactly as `uint8_to_lab` computes it (float32), so every pixel of a
  uint8 image lands in a kept cell by construction. This is derived from the gamut, not
  copied from the paper's file. It gives Q = 261 bins, a in [-90, 100], b in [-110, 90].
  The released set (richzhang/colorization `pts_in_hull.npy`: 313 bins, a in [-90, 100],
  b in [-110, 100]; compared as text, the `hull_pts` array of OpenCV's colorization
  sample, two independent copies agreeing; see bench/bins_reference.py) contains all
  261 of ours, and 52 more: a one-cell rim round the gamut. Each of those 52 is an
  edge-neighbour of one of ours, and their centres lie 5.1 to 13.1 ab units (Chebyshev)
  from the nearest 8-bit sRGB colour, so no sRGB pixel ever quantises to them. (The
  reference is exactly 313 of the 323 cells in the 4-neighbour dilation of ours; how
  Zhang et al. drew their hull is not documented.) Sampling the continuous gamut instead
  (the six faces of the RGB cube, 2048 x 2048 each, float64) adds one sliver cell,
  (20, -80), also in the reference; no 8-bit colour reaches it, so it is left out.
* `ab_bin_lut` maps each packed 8-bit colour (r << 16 | g << 8 | b) to its bin, so
  binning a uint8 image (`pack_rgb8`, then a gather) needs no Lab at all.
* `soft_encode`: the training target, each ab spread over its k = 5 nearest bins with
  Gaussian weights (sigma = 5), as in the paper.
* `decode_annealed`: per-pixel logits back to ab. The paper's annealed mean (T = 0.38)
  sits between the mean (T = 1, desaturated) and the mode (T -> 0, vivid but blotchy).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

# Network normalisation, after richzhang/colorization: L is centred at 50, ab is / 110.
L_CENT = 50.0
L_NORM = 100.0
AB_NORM = 110.0

# sRGB primaries to XYZ, and the D65 reference white (the values scikit-image uses).
XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
RGB_FROM_XYZ = torch.linalg.inv(XYZ_FROM_RGB)
WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)

LAB_EPSILON = 0.008856  # (6/29)**3: where Lab's cube root gives way to the linear segment
LAB_KAPPA = 7.787  # slope of that linear segment
LAB_F_EPSILON = 0.2068966  # 6/29 = f(LAB_EPSILON): the same boundary on the inverse side


def _const(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(device=like.device, dtype=like.dtype)


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """sRGB's transfer function undone: encoded [0, 1] -> linear light."""
    return torch.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Linear light -> encoded sRGB, not clipped."""
    return torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055,
                       12.92 * linear)


def lab_f(t: torch.Tensor) -> torch.Tensor:
    """Lab's f: white-relative X, Y or Z -> the cube-root-like value L, a and b are made of."""
    return torch.where(t > LAB_EPSILON, t.clamp_min(LAB_EPSILON) ** (1.0 / 3.0), LAB_KAPPA * t + 16.0 / 116.0)


def lab_f_inv(f: torch.Tensor) -> torch.Tensor:
    """Lab's f^-1: f -> white-relative X, Y or Z."""
    return torch.where(f > LAB_F_EPSILON, f**3, (f - 16.0 / 116.0) / LAB_KAPPA)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (..., 3) -> Lab, same shape, same float dtype."""
    if not rgb.is_floating_point():
        raise TypeError("rgb_to_lab expects floats in [0, 1]; divide uint8 by 255 first")
    return linear_to_lab(srgb_to_linear(rgb))


def linear_to_lab(linear: torch.Tensor) -> torch.Tensor:
    """Linear sRGB (..., 3) -> Lab, same shape, same float dtype."""
    xyz = linear @ _const(XYZ_FROM_RGB, linear).T
    fx, fy, fz = lab_f(xyz / _const(WHITE_D65, linear)).unbind(-1)
    L = 116.0 * fy - 16.0
    return torch.stack([L, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-1)


def lab_to_linear(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """L (...), ab (..., 2) -> linear sRGB (..., 3), NOT clipped (so the gamut can be tested)."""
    fy = (L + 16.0) / 116.0
    fx = ab[..., 0] / 500.0 + fy
    fz = (fy - ab[..., 1] / 200.0).clamp_min(0.0)  # as scikit-image: negative z is clipped to 0
    xyz = lab_f_inv(torch.stack([fx, fy, fz], dim=-1)) * _const(WHITE_D65, L)
    return xyz @ _const(RGB_FROM_XYZ, L).T


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab, shape (..., 3) -> sRGB in [0, 1]; out-of-gamut colours are clipped."""
    return linear_to_srgb(lab_to_linear(lab[..., 0], lab[..., 1:])).clamp(0.0, 1.0)


def linear_to_uint8(linear: torch.Tensor) -> torch.Tensor:
    """Linear sRGB -> 8-bit sRGB, clipped and rounded as an 8-bit file stores it."""
    return (linear_to_srgb(linear).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


@functools.cache
def _linear_of_uint8() -> np.ndarray:
    """Linear light of each 8-bit sRGB value, float32 (256,): the very arithmetic of
    srgb_to_linear(code / 255), done once. Looking it up instead of taking a power per
    pixel makes training's per-batch Lab ~1.6x faster (bench/suite.py, train_step)."""
    return srgb_to_linear(torch.arange(256, dtype=torch.float32) / 255.0).numpy()


def uint8_to_lab(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (..., H, W, 3) -> float32 Lab, channels last; the same bits as
    rgb_to_lab(images / 255) (tests/test_colour.py checks every 8-bit colour)."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise TypeError(f"uint8_to_lab expects uint8 images, got {t.dtype}")
    if t.device.type == "cpu":
        linear = torch.from_numpy(np.take(_linear_of_uint8(), t.numpy()))
    else:
        linear = torch.from_numpy(_linear_of_uint8()).to(t.device)[t.long()]
    return linear_to_lab(linear)


def lab_to_uint8(lab: torch.Tensor) -> np.ndarray:
    """Lab (..., 3) -> uint8 sRGB, rounded the way an 8-bit file would store it."""
    lab = lab.to(torch.float32)
    return linear_to_uint8(lab_to_linear(lab[..., 0], lab[..., 1:])).cpu().numpy()


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


# ---------------------------------------------------------------------------------------
# Quantised ab (Zhang et al. 2016)

AB_GRID = 10.0  # side of the square ab cells, in ab units (the paper's grid size)
SOFT_K = 5  # soft encoding: each ab spreads over this many nearest bins (the paper's 5)
SOFT_SIGMA = 5.0  # soft encoding: Gaussian width in ab units (the paper's sigma = 5)

_AB_BOUND = 128.0  # |a|, |b| of any sRGB colour stay below this (the extremes: -86.2 .. 98.2, -107.9 .. 94.5)
_N_RGB8 = 256**3  # number of 8-bit sRGB colours
_GAMUT_CHUNK = 1 << 20  # colours per Lab conversion chunk: ~100 MB of temporaries
_DIST_CHUNK = 16384  # points per distance chunk: 16384 x Q=313 x 2 floats ~ 40 MB


def _unpack_rgb8(codes: torch.Tensor) -> torch.Tensor:
    """Packed r << 16 | g << 8 | b (int32) -> float32 RGB in [0, 1], (..., 3)."""
    channels = torch.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], dim=-1)
    return channels.to(torch.float32) / 255.0  # the same arithmetic as uint8_to_lab


@functools.lru_cache(maxsize=4)
def _quantised_gamut(grid: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(bins (Q, 2) float32, lut (256**3,) int) for one grid, from all 8-bit sRGB colours.

    Cells are addressed on a fixed (side x side) grid wide enough for any sRGB ab, so
    kept cells come from a bincount and their indices from a cumsum: no sort of 16 M keys.
    Takes ~2 s on one core; cached, so each process pays it once per grid.
    """
    offset = int(np.ceil(_AB_BOUND / grid)) + 1  # cell index of ab = 0, so indices are >= 0
    side = 2 * offset + 1
    keys = torch.empty(_N_RGB8, dtype=torch.int32)  # a-major cell key per colour
    for start in range(0, _N_RGB8, _GAMUT_CHUNK):
        codes = torch.arange(start, min(start + _GAMUT_CHUNK, _N_RGB8), dtype=torch.int32)
        ab = rgb_to_lab(_unpack_rgb8(codes))[:, 1:]
        cell = torch.round(ab / grid).to(torch.int32) + offset
        keys[start : start + len(codes)] = cell[:, 0] * side + cell[:, 1]
    hit = torch.bincount(keys, minlength=side * side) > 0
    cells = torch.nonzero(hit).squeeze(1)  # ascending key = sorted by a, then b
    bins = torch.stack([cells // side - offset, cells % side - offset], dim=-1).to(torch.float32) * grid
    index_of_cell = torch.cumsum(hit, 0) - 1  # bin index of each kept cell
    small = torch.int16 if len(bins) < 2**15 else torch.int32
    lut = index_of_cell.to(small)[keys.long()]
    return bins, lut


def ab_bins(grid: float = AB_GRID) -> torch.Tensor:
    """The in-gamut ab bin centres, float32 (Q, 2), columns (a, b), sorted by a then b.

    A cell is in gamut if some 8-bit sRGB colour quantises to it (module docstring):
    Q = 261 for the default grid. Cached; the returned tensor is a fresh copy.
    """
    return _quantised_gamut(float(grid))[0].clone()


def ab_bin_lut(grid: float = AB_GRID) -> torch.Tensor:
    """Bin index (into ab_bins(grid)) of every 8-bit colour, indexed by r << 16 | g << 8 | b.

    int16 (int32 for grids fine enough to need it), length 256**3 (32 MB). Every colour
    has a bin by construction. Cached and shared: treat it as read-only.
    """
    return _quantised_gamut(float(grid))[1]


def pack_rgb8(images: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> uint32 (...) r << 16 | g << 8 | b, via a 4-byte little-endian view
    (several times faster than shifting three widened copies)."""
    padded = np.empty(images.shape[:-1] + (4,), dtype=np.uint8)
    padded[..., 0], padded[..., 1], padded[..., 2], padded[..., 3] = images[..., 2], images[..., 1], images[..., 0], 0
    return padded.view("<u4")[..., 0]


def _sq_dists(points: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Squared distances (N, Q) from points (N, 2) to bins (Q, 2); as differences, not the
    |x|^2 - 2x.c + |c|^2 expansion, so near-ties are not decided by cancellation error."""
    return ((points[:, None, :] - bins[None, :, :]) ** 2).sum(-1)


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, k: int = SOFT_K, sigma: float = SOFT_SIGMA,
                dim: int = -1) -> torch.Tensor:
    """Soft-encode ab over the bins: the training target of the classification model.

    ab has its 2 channels (a, b) at `dim` ((..., 2), or (n, 2, H, W) with dim=1); the
    result has Q channels there instead. Each ab gets weights exp(-d^2 / 2 sigma^2) on
    its k nearest bins, normalised to sum 1, and 0 elsewhere (dense: Q is small).
    The weights are computed relative to the nearest bin (d^2 - d_min^2), which changes
    nothing after normalising but keeps far-off ab from underflowing to 0/0.
    """
    if not 1 <= k <= len(bins):
        raise ValueError(f"k must be in [1, {len(bins)}], got {k}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    moved = ab.movedim(dim, -1)
    if moved.shape[-1] != 2:
        raise ValueError(f"soft_encode expects 2 ab channels at dim {dim}, got shape {tuple(ab.shape)}")
    flat = moved.reshape(-1, 2)
    centres = bins.to(device=ab.device, dtype=ab.dtype)
    out = torch.zeros(len(flat), len(centres), dtype=ab.dtype, device=ab.device)
    for start in range(0, len(flat), _DIST_CHUNK):
        d2, idx = torch.topk(_sq_dists(flat[start : start + _DIST_CHUNK], centres), k, dim=1, largest=False)
        w = torch.exp(-(d2 - d2[:, :1]) / (2.0 * sigma**2))  # topk is sorted: column 0 is nearest
        out[start : start + _DIST_CHUNK].scatter_(1, idx, w / w.sum(1, keepdim=True))
    return out.reshape(*moved.shape[:-1], len(centres)).movedim(-1, dim).contiguous()


def _expect_centres(probs: torch.Tensor, bins: torch.Tensor, dim: int) -> torch.Tensor:
    """sum_q probs_q * centre_q, the Q axis at dim replaced by the 2 ab channels."""
    centres = bins.to(device=probs.device, dtype=probs.dtype)
    return (probs.movedim(dim, -1) @ centres).movedim(-1, dim)


def decode_annealed(logits: torch.Tensor, bins: torch.Tensor, T: float, dim: int = 1) -> torch.Tensor:
    """Annealed mean: the mean of p^(1/T) renormalised, i.e. of softmax(logits / T).

    T = 1 is the plain mean (washed out where the distribution is multimodal: the mean of
    red and green is gray); T -> 0 tends to the most likely bin (vivid, but patchy where
    two bins nearly tie); the paper uses T = 0.38.
    The max is subtracted before dividing by T, so a tiny T cannot overflow to inf - inf.
    """
    if not T > 0:
        raise ValueError(f"temperature T must be > 0, got {T}")
    shifted = logits - logits.amax(dim=dim, keepdim=True)
    return _expect_centres(torch.softmax(shifted / T, dim=dim), bins, dim)
