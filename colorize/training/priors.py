"""Priors: the empirical distribution of quantised ab colours over the training
split, and the class-rebalancing weights of Zhang et al. (2016), section 2.2.

Regression and plain cross-entropy both drift to the common, desaturated colours (the
seeds' "brown is the safest colour"). Zhang et al. reweight each pixel's loss by the
rarity of its colour:

    p       empirical distribution of the Q in-gamut ab bins (colour.ab_bins) over the
            pixels of the training split's kept, non-gray images, counted at
            priors.image_size;
    p~      p smoothed with a Gaussian in ab (sigma = priors.sigma ab units), so that
            a bin is not "rare" only because its neighbours took its pixels;
    w       ∝ ((1 - lambda) * p~ + lambda / Q)^-1: mixing with the uniform
            distribution (lambda = priors.mix) bounds the weights of rare colours;
            normalised so that sum(p~ * w) = 1, i.e. the expected weight of a
            training pixel is 1 and the loss keeps its scale.

Counting is a lookup: every 8-bit sRGB colour has its bin precomputed
(colour.ab_bin_lut), so the stage costs one gather and one bincount per pixel
(`python -m bench.suite --only priors` measures the rate on one core). Images are read shard by shard,
so memory stays flat in the number of images.

The priors stage (colorize/stages/priors.py) writes them; the zhang model reads bins
and weights (`load_priors`) and keeps them in its checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from colorize.common.colour import AB_GRID, ab_bin_lut, pack_rgb8
from colorize.common.errors import UserError

# ------------------------------------------------------------------------- the maths

COUNT_CHUNK = 1 << 16  # pixels per pack -> lookup -> bincount pass: its temporaries stay in cache


def image_bin_counts(images: np.ndarray | torch.Tensor, q: int) -> np.ndarray:
    """Pixel count per ab bin of uint8 RGB images (..., 3), int64 (q,).

    The same counts as binning every pixel at once (tests/colour_reference.py), a cache-sized chunk at a
    time: the whole-array way writes and rereads 14 bytes of temporaries per pixel (the
    packed colours, the int64 bin image) and ran at ~36 M px/s on one core; chunked,
    bench/suite.py (section priors) measures the rate.
    """
    array = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.dtype != np.uint8 or array.shape[-1:] != (3,):
        raise TypeError(f"image_bin_counts expects uint8 (..., 3), got {array.dtype} {array.shape}")
    pixels = array.reshape(-1, 3)
    lut = ab_bin_lut().numpy()
    counts = np.zeros(q, dtype=np.int64)
    for start in range(0, len(pixels), COUNT_CHUNK):
        counts += np.bincount(np.take(lut, pack_rgb8(pixels[start : start + COUNT_CHUNK])), minlength=q)
    return counts


def smooth(p: np.ndarray, bins: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a distribution over the bins, in ab units.

    Each bin's mass is spread over the in-gamut bins with weights exp(-d^2 / 2 sigma^2)
    normalised per source bin, so no mass leaks out of the gamut and the result still
    sums to 1.
    """
    if sigma <= 0:
        return p / p.sum()
    d2 = ((bins[:, None, :] - bins[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2.0 * sigma**2))
    kernel /= kernel.sum(axis=0, keepdims=True)  # column r: where bin r's mass goes
    out = kernel @ p
    return out / out.sum()


def rebalancing_weights(p_smooth: np.ndarray, mix: float) -> np.ndarray:
    """w ∝ ((1 - mix) p~ + mix / Q)^-1, normalised so that sum(p~ w) = 1."""
    q = len(p_smooth)
    w = 1.0 / ((1.0 - mix) * p_smooth + mix / q)
    return w / (p_smooth * w).sum()


def entropy_bits(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log2(nz)).sum())


# ------------------------------------------------------------------------- the data

def _resize(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (n, S, S, 3) -> uint8 (n, size, size, 3), area-averaged when shrinking."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.shape[1] == size:
        return t
    x = t.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area" if size < t.shape[1] else "bilinear",
                                        align_corners=None if size < t.shape[1] else False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def training_rows(manifest: pd.DataFrame, min_chroma: float) -> tuple[pd.DataFrame, int]:
    """The training split's images with colour (chroma_p95 >= min_chroma), and how many
    gray ones were left out (curate drops grayscale photos; a lower priors threshold
    can still leave near-gray ones here, and they would only inflate the gray bins)."""
    train = manifest[manifest["split"] == "train"]
    colourful = train["chroma_p95"].astype(float) >= min_chroma
    return train[colourful], int((~colourful).sum())


def count_split(rows: pd.DataFrame, shards: Path, image_size: int, q: int, progress: bool = True) -> np.ndarray:
    """Bin counts over the rows' images, shard by shard (one shard in memory at a time)."""
    counts = np.zeros(q, dtype=np.int64)
    groups = rows.groupby(rows["shard"].astype(int))
    for shard, part in tqdm(groups, total=groups.ngroups, desc="priors", unit="shard", disable=not progress):
        pixels = np.load(Path(shards) / f"shard-{shard:05d}.npy", mmap_mode="r")
        index = np.sort(part["shard_index"].astype(int).to_numpy())
        counts += image_bin_counts(_resize(pixels[index], image_size), q)
    return counts


# ------------------------------------------------------------------------- reports

def ab_heatmap(bins: np.ndarray, values: np.ndarray, path: Path, title: str, log: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a_cells = np.arange(-110, 111, AB_GRID)
    grid = np.full((len(a_cells), len(a_cells)), np.nan)
    ia = np.round((bins[:, 0] + 110) / AB_GRID).astype(int)
    ib = np.round((bins[:, 1] + 110) / AB_GRID).astype(int)
    shown = np.log10(np.maximum(values, 1e-12)) if log else values
    grid[ib, ia] = shown
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=100)
    half = AB_GRID / 2
    im = ax.imshow(grid, origin="lower", cmap="viridis",
                   extent=(a_cells[0] - half, a_cells[-1] + half, a_cells[0] - half, a_cells[-1] + half))
    ax.set_xlabel("a")
    ax.set_ylabel("b")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.85)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Fixed metadata: the same priors give the same PNG bytes.
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def stats(bins: np.ndarray, counts: np.ndarray, p: np.ndarray, p_smooth: np.ndarray, w: np.ndarray, top: int = 10) -> dict:
    order = np.argsort(-p, kind="stable")
    return {
        "n_bins": int(len(bins)),
        "n_pixels": int(counts.sum()),
        "bins_seen": int((counts > 0).sum()),
        "entropy_bits": entropy_bits(p),
        "entropy_smoothed_bits": entropy_bits(p_smooth),
        "entropy_uniform_bits": float(np.log2(len(bins))),
        "top10_share": float(p[order[:10]].sum()),
        "top_bins": [{"a": float(bins[i, 0]), "b": float(bins[i, 1]), "share": float(p[i])} for i in order[:top]],
        "weight_min": float(w.min()),
        "weight_max": float(w.max()),
        "weight_expected": float((p_smooth * w).sum()),
    }


def load_priors(path: Path) -> dict[str, torch.Tensor]:
    """bins (Q, 2) and weights (Q,) as float32 tensors, for the zhang model."""
    if not Path(path).exists():
        raise UserError(f"{path} not found: run the priors stage first (dvc repro priors)")
    with np.load(path) as z:
        return {"bins": torch.from_numpy(z["bins"]).float(), "weights": torch.from_numpy(z["weights"]).float()}
