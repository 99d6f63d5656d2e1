"""Image-quality checks: per-image scores and flags, and near-duplicate groups.

Pure numpy/torch functions over a batch of working-resolution images, (n, S, S, 3)
uint8 sRGB as ingest stores them, plus the original width/height where a check needs
them. Every check yields a float SCORE per image (stored as a field, so thresholds can be
re-tuned without recomputing), and `flags()` turns scores + thresholds into booleans.
Everything runs in batches (`batch` images at a time): memory stays flat whatever n.

The issue types follow CleanVision's (dark, light, blurry, low_information,
odd_aspect_ratio, grayscale, exact/near duplicates, odd_size). Grayscale, exact
duplicates and too-small images are curate's own checks; added here: `tinted` (sepia,
colour filters) and near duplicates that survive crops.

API
---
quality_scores(images, widths=None, heights=None, batch=256) -> pd.DataFrame
    One row per image, columns SCORE_COLUMNS (below).
flags(scores, thresholds) -> pd.DataFrame
    Bool columns FLAG_COLUMNS: tinted, dark, overexposed, blurry, low_information,
    odd_aspect_ratio. `thresholds`: every key of THRESHOLD_KEYS (rules.thresholds builds
    it from params.yaml, the one home of the values).
near_duplicate_pairs(images, candidate_sim=0.94, top_k=6, block=1024, batch=256, search="auto")
    -> pd.DataFrame of verified candidate pairs and their match scores (all of them, also
    below threshold, for tuning). Candidates come from all pairs below ANN_FROM images and
    from a faiss IVF index from there on (search="exact" / "ann" forces one).
near_duplicate_groups(images=None, quality=None, *, threshold, colour_threshold,
                      pairs=None, n=None) -> (group, is_kept)
    group[k]: index of the image kept in k's group (k itself for a singleton);
    is_kept[k]: k is the one kept. Pass the images that survived the earlier checks
    (curate applies its checks in order), or precomputed `pairs` and `n`.

Scores (SCORE_COLUMNS)
----------------------
chroma_p95     95th percentile of Lab chroma (curate's grayscale score, recomputed).
hue_spread     chroma-weighted circular std of the Lab hue, degrees (informational: a clean
               orange tulip on brown soil has ~5 deg, sepia copies 2-10, so it cannot be
               the tint score on its own).
dominant_hue   chroma-weighted mean Lab hue angle, degrees in [0, 360).
tint_spread    how much the colour of the pixels varies relative to how coloured the image
               is: the 10-90% spread of the log channel ratios log(R/G), log(G/B),
               log(R/B) over unclipped (< 0.95) and lit (> 0.06) pixels, averaged over
               the three pairs, divided by the RMS of their medians (distance from gray).
               At 32x32 (2x2 means, less sensor/JPEG noise). A filter makes every pixel
               one colour times a brightness, so the ratios are constant.
tint_fit       mean per-pixel error of the best one-colour model, measured in Lab: the
               colour c is the top eigenvector of the RGB second moments of unclipped
               pixels, each pixel is modelled as clip(t * c) with t fitted on its
               unclipped channels, and |ab - ab_model| / (chroma + 10) is averaged
               (capped at 1). The clip keeps saturated tints on-model: a blue tint whose
               blue channel saturates turns cyan towards the highlights.
tint_score     sqrt(tint_spread * tint_fit); low = one colour = tinted. The two parts fail
               on different images (spread: dark low-chroma sepia, noise is large next to
               its weak colour; fit: heavily clipped blue tints), the geometric mean
               separates the garden's sepia/tinted copies from the rest with a margin.
dark_score     99th percentile of L: an underexposed image has no bright pixel.
light_score    5th percentile of L: in a washed-out image even the darkest pixels are
               bright (CleanVision's "light"; a white background scores high too).
clipped_light  share of pixels with L > 97 (blown highlights; informational).
sharpness      std of the Laplacian of L / (std of L + 2), at 64x64: high-frequency
               energy relative to contrast, so dark or soft-lit images are not "blurry".
laplacian_std  std of the Laplacian of L at 64x64 (CleanVision-like, informational).
entropy        Shannon entropy (bits) of the L histogram in 2-unit bins.
contrast       std of L.
aspect_ratio   max(w, h) / min(w, h) of the original file (NaN without width/height).

Flags: tinted = chroma_p95 >= min_chroma and tint_score < tint; dark = dark_score < dark;
overexposed = light_score > overexposed; blurry = sharpness < blurry; low_information =
entropy < low_information or contrast < low_contrast; odd_aspect_ratio = aspect_ratio >
odd_aspect_ratio. NaN never flags. Resolution-dependent measures (sharpness, tint_spread,
near duplicates) are taken on the image resized to 64x64, where they were calibrated.

Near duplicates
---------------
A hash compared by Hamming distance finds resized and re-encoded copies but not crops (a
0.8-0.95 crop is a 5-25% zoom plus a shift at working resolution; measured on the garden,
dHash of crops is no closer than that of unrelated images). Two stages:
1. Candidates. Each image is described by its full view and 29 sub-windows (0.95, 0.875
   and 0.8 of the side on 2x2, 3x3 and 4x4 position grids) as a zero-mean 4x4 L grid plus
   a 2x2 mean-ab grid, L2-normalised (24 numbers). The full view of every image is
   compared with every window of every image in blocks of `block` x `block` images
   (memory flat in n, time O(n^2): a 30,000 x 900,000 product of 24-vectors), keeping for
   each image its `top_k` best matches with a window similarity >= candidate_sim.
2. Verification of each candidate pair, both ways (the full view of i inside j, and of j
   inside i; the better is kept): normalised cross-correlation (NCC) of L over window
   sizes 0.75..1 of the reference and every position at 32x32 (FFT), refined at 64x64
   over +-2 px of size and position. At that alignment, on a 4x4 grid of tiles, the
   25th percentile of the per-tile NCC of L (`local_ncc`) and of high-passed L
   (L - 5x5 box mean; `local_detail`); score = their mean. Tiles are what tell two
   photos of the same species on the same background apart: the flower alone lines up,
   the rest does not. `colour_diff` compares the mean (a, b) and mean chroma of the
   aligned window, so a grayscale or sepia copy is usually not a near duplicate of its
   original (those have their own checks). ncc and detail_ncc (global) are kept too.
A pair is a near duplicate if score >= threshold (curate.near_duplicate) and colour_diff <=
colour_threshold (curate.near_duplicate_colour). Pairs are joined with union-find; in each group
the member with the highest `quality` is kept (ties: the lowest index). Exact duplicates
are identical images and are grouped too if they reach this check (curate removes them
before). Images that are not 64x64 are resized to 64x64 for this check.
"""
from __future__ import annotations

import math
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from colorize.common.colour import rgb_to_lab
from colorize.common.shards import ShardReader

# How each threshold was calibrated. The values live in params.yaml (curate.*, mapped to
# THRESHOLD_KEYS by rules.thresholds); these notes say where they came from. Data: the
# garden, seeds 0 and 1 (n=1000 each), plus copies made with garden's own recipes from every clean image of those seeds
# (1,700 sepia, 1,700 tinted, 3,400 resized/re-encoded/cropped) for the tails; seeds 2
# (n=1000) and 5 (n=4000) held out; degraded copies of 600 clean garden images (darkened,
# brightened, blurred) and flat/gradient images for the checks the garden does not
# plant; the real photos in ../shared/data (flowers-128, pets-160) for false positives.
# tint_score below -> tinted. Sepia/tinted copies: 99.9th pct 0.31, max 0.37 (a sepia
# daisy on dark leaves); clean and near-duplicate images: 0.1th pct 0.48, min 0.39
# (a daisy over white, png_alpha). Set between the two tails. 2.5% of colourful
# flowers-128 photos score below: close-ups of one red rose or one yellow dandelion
# filling the frame are one colour; so are retina/coffee/rocket crops in the garden.
#   => tint: 0.38 when calibrated
# the tint check is only asked of images with colour (curate's gray_chroma)
#   => min_chroma: 4.0 when calibrated
# dark_score (L p99) below -> dark. Clean garden min 38 (0.1th pct 40), flowers-128
# min 37; an sRGB x0.25 copy (about -4 EV) scores <= 27, x0.15 <= 15.
#   => dark: 25.0 when calibrated
# light_score (L p05) above -> overexposed (washed out). Clean garden max 74, flowers
# max 83, png_alpha (a flower over white) up to 87; 255 - (255 - x) * 0.12 scores
# >= 89. A +2..3 EV copy of a dark-background garden image keeps dark shadows (p05
# 25..50) and is indistinguishable from a bright clean scene: not flagged.
#   => overexposed: 85.0 when calibrated
# sharpness below -> blurry. Clean garden min 0.195; Gaussian blur at 64x64 of
# sigma 1.5 / 2 / 3 px: max 0.18 / 0.13 / 0.09. Flowers-128 below 0.13: 2.2%
# (dandelion clocks on bokeh, mostly soft indeed; 0.16 would flag 6%).
#   => blurry: 0.13 when calibrated
# entropy (bits) below -> low information ... Clean garden min 2.97 (png_alpha over
# white 2.05, hubble deep field crops 1.8); flat colour + noise sigma <= 5: <= 1.93.
#   => low_information: 1.75 when calibrated
# ... or contrast (L std) below. Clean garden min 4.5, flowers-128 min 4.8; flat
# colour + noise sigma <= 5: <= 1.75.
#   => low_contrast: 2.5 when calibrated
# aspect_ratio above -> odd aspect ratio (CleanVision's default is about 2; we are
# laxer: a 2:1 photo still centre-crops to a usable square). Garden max 1.18.
#   => odd_aspect_ratio: 3.0 when calibrated
# near_duplicate_pairs score at or above -> same image. True copies (3,474 pairs):
# 0.1th pct 0.76, 1st 0.86, min 0.54 (a crop of a fine-petalled daisy); unrelated
# pairs (8,446 candidates within the colour limit): 99.9th pct 0.51, max 0.70 (two
# large tulips on sky).
#   => near_duplicate: 0.72 when calibrated; params.yaml keeps 0.675, below the unrelated
#   max: a lookalike dropped costs one image, a copy kept leaks across the splits.
# ... and colour_diff at most this. True copies max 5.3; sepia/tinted copies of the
# image mostly 3-75.
#   => near_duplicate_colour: 8.0 when calibrated

THRESHOLD_KEYS = ("tint", "min_chroma", "dark", "overexposed", "blurry", "low_information",
                  "low_contrast", "odd_aspect_ratio", "near_duplicate", "near_duplicate_colour")

SCORE_COLUMNS = (
    "chroma_p95", "hue_spread", "dominant_hue", "tint_spread", "tint_fit", "tint_score",
    "dark_score", "light_score", "clipped_light", "sharpness", "laplacian_std", "entropy",
    "contrast", "aspect_ratio",
)
FLAG_COLUMNS = ("tinted", "dark", "overexposed", "blurry", "low_information", "odd_aspect_ratio")

CANONICAL = 64  # side at which the resolution-dependent measures are taken


# --------------------------------------------------------------------------- helpers

def _as_batch(images: np.ndarray | ShardReader) -> np.ndarray | ShardReader:
    """The images as given if they are an array or a ShardReader (streamed: every check
    reads them in slices), else as an array."""
    if not isinstance(images, ShardReader):
        images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (n, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    return images


def _float_rgb(chunk: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float32 (n, H, W, 3) in [0, 1]."""
    chunk = np.ascontiguousarray(chunk)
    if not chunk.flags.writeable:  # torch wants writable memory (a read-only memmap shard)
        chunk = chunk.copy()
    return torch.from_numpy(chunk).to(torch.float32) / 255.0


def _canonical(t: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) float -> (n, C, 64, 64), antialiased if it has to shrink."""
    if t.shape[-2:] == (CANONICAL, CANONICAL):
        return t
    return F.interpolate(t, size=(CANONICAL, CANONICAL), mode="bilinear", antialias=True, align_corners=False)


_PAIRS = ((0, 1), (1, 2), (0, 2))


def _percentiles(values: torch.Tensor, qs, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Nearest-rank percentiles along dim 1, (len(qs), n); over `mask` only if given
    (NaN where a row has no masked value). One sort, much faster than torch.quantile."""
    if mask is not None:
        values = torch.where(mask, values, torch.inf)
        count = mask.sum(1)
    else:
        count = torch.full((values.shape[0],), values.shape[1])
    ordered = values.sort(dim=1).values
    out = []
    for q in qs:
        k = (q * (count - 1).clamp_min(0).to(torch.float32)).round().to(torch.long)
        v = ordered.gather(1, k[:, None])[:, 0]
        out.append(torch.where(count > 0, v, torch.nan))
    return torch.stack(out)


def _tint_spread(x: torch.Tensor) -> torch.Tensor:
    """x: (n, P, 3) RGB in [0, 1] (at 32x32). Spread of the log channel ratios over
    their distance from gray."""
    spreads, centres = [], []
    for i, j in _PAIRS:
        xi, xj = x[..., i], x[..., j]
        ratio = torch.log(xi.clamp_min(1 / 255) / xj.clamp_min(1 / 255))
        lit = torch.minimum(xi, xj) > 0.06  # dark pixels: ratios are noise
        ok = lit & (xi < 0.95) & (xj < 0.95)  # clipped channels: ratios are lies
        q10, q90 = _percentiles(ratio, (0.10, 0.90), ok)
        enough = ok.float().mean(1) >= 0.05
        spreads.append(torch.where(enough, q90 - q10, torch.nan))
        centres.append(_percentiles(ratio, (0.5,), lit)[0])
    spread = torch.stack(spreads, 1).nanmean(1)
    colour = torch.stack(centres, 1).pow(2).nanmean(1).sqrt()
    return spread / colour.clamp_min(0.02)


def _tint_fit(x: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
    """x: (n, P, 3) RGB, lab its Lab. Mean relative ab error of the best clip(t * c) model."""
    hi = 0.97
    peak = x.max(-1).values
    usable = ((peak < hi) & (peak > 0.08)).to(x.dtype)
    moments = torch.einsum("np,npi,npj->nij", usable, x, x) + 1e-6 * torch.eye(3, dtype=x.dtype)
    c = torch.linalg.eigh(moments)[1][..., -1]
    c = (c * torch.sign(c.sum(-1, keepdim=True))).clamp_min(1e-4)  # (n, 3), the one colour
    unclipped = (x < hi).to(x.dtype)
    num = (unclipped * x * c[:, None, :]).sum(-1)
    den = (unclipped * c[:, None, :] ** 2).sum(-1)
    t = torch.where(den > 0, num / den.clamp_min(1e-9), torch.full_like(num, 1e3))
    model = rgb_to_lab((t[..., None] * c[:, None, :]).clamp(0, 1))
    chroma = lab[..., 1:].norm(dim=-1)
    err = (lab[..., 1:] - model[..., 1:]).norm(dim=-1) / (chroma + 10.0)
    return err.clamp_max(1.0).mean(1)


def _hue_stats(lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = lab[..., 1], lab[..., 2]
    c = torch.sqrt(a * a + b * b)
    w = c.sum(1).clamp_min(1e-6)
    # chroma-weighted mean of unit hue vectors = sum(a, b) / sum(c)
    ra, rb = a.sum(1) / w, b.sum(1) / w
    r = torch.sqrt(ra * ra + rb * rb).clamp(1e-6, 1.0)
    spread = torch.rad2deg(torch.sqrt(-2.0 * torch.log(r)))
    hue = torch.rad2deg(torch.atan2(rb, ra)) % 360.0
    return spread, hue


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def _sharpness(L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L: (n, 1, 64, 64) -> (Laplacian std / (L std + 2), Laplacian std)."""
    lap = F.conv2d(L, _LAPLACE).flatten(1).std(1)
    return lap / (L.flatten(1).std(1) + 2.0), lap


def _entropy(L: torch.Tensor, width: float = 2.0) -> torch.Tensor:
    """L: (n, P) in [0, 100] -> entropy (bits) of its histogram in `width`-unit bins."""
    n = L.shape[0]
    nb = int(math.ceil(100 / width))
    bins = (L / width).clamp(0, nb - 1e-3).long()
    idx = (torch.arange(n)[:, None] * nb + bins).flatten()
    counts = torch.bincount(idx, minlength=n * nb).view(n, nb).to(torch.float32)
    p = counts / counts.sum(1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(1)


# ------------------------------------------------------------------------- scores

def quality_scores(images: np.ndarray, widths=None, heights=None, batch: int = 256) -> pd.DataFrame:
    """Per-image scores (SCORE_COLUMNS) for (n, S, S, 3) uint8 images.

    `widths`/`heights` are the original file's size (for aspect_ratio); without them
    aspect_ratio is NaN and odd_aspect_ratio is never flagged.
    """
    images = _as_batch(images)
    n = len(images)
    cols: dict[str, list] = {c: [] for c in SCORE_COLUMNS if c != "aspect_ratio"}
    with torch.no_grad():
        for start in range(0, n, batch):
            rgb = _float_rgb(images[start:start + batch])
            lab = rgb_to_lab(rgb)
            x = rgb.flatten(1, 2)
            labf = lab.flatten(1, 2)
            L = labf[..., 0]
            chroma = labf[..., 1:].norm(dim=-1)
            cols["chroma_p95"].append(_percentiles(chroma, (0.95,))[0])
            spread, hue = _hue_stats(labf)
            cols["hue_spread"].append(spread)
            cols["dominant_hue"].append(hue)
            x32 = F.avg_pool2d(_canonical(rgb.permute(0, 3, 1, 2)), 2).flatten(2).transpose(1, 2)
            ts, tf = _tint_spread(x32), _tint_fit(x, labf)
            cols["tint_spread"].append(ts)
            cols["tint_fit"].append(tf)
            cols["tint_score"].append(torch.sqrt(ts * tf))
            light, dark = _percentiles(L, (0.05, 0.99))
            cols["dark_score"].append(dark)
            cols["light_score"].append(light)
            cols["clipped_light"].append((L > 97.0).float().mean(1))
            L64 = _canonical(lab[..., 0][:, None])
            sharp, lap = _sharpness(L64)
            cols["sharpness"].append(sharp)
            cols["laplacian_std"].append(lap)
            cols["entropy"].append(_entropy(L))
            cols["contrast"].append(L.std(1))
    out = pd.DataFrame({c: torch.cat(v).numpy().astype(np.float64) if v else np.zeros(0) for c, v in cols.items()})
    if widths is not None and heights is not None:
        w = np.asarray(widths, dtype=np.float64)
        h = np.asarray(heights, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["aspect_ratio"] = np.maximum(w, h) / np.minimum(w, h)
    else:
        out["aspect_ratio"] = np.nan
    return out[list(SCORE_COLUMNS)]


def flags(scores: pd.DataFrame, thresholds: dict) -> pd.DataFrame:
    """Bool columns FLAG_COLUMNS from quality_scores' columns; NaN scores never flag."""
    t = thresholds
    s = scores
    coloured = s["chroma_p95"].to_numpy() >= t["min_chroma"]
    out = pd.DataFrame(index=scores.index)
    out["tinted"] = coloured & (s["tint_score"].to_numpy() < t["tint"])
    out["dark"] = s["dark_score"].to_numpy() < t["dark"]
    out["overexposed"] = s["light_score"].to_numpy() > t["overexposed"]
    out["blurry"] = s["sharpness"].to_numpy() < t["blurry"]
    out["low_information"] = (s["entropy"].to_numpy() < t["low_information"]) | (
        s["contrast"].to_numpy() < t["low_contrast"])
    out["odd_aspect_ratio"] = s["aspect_ratio"].to_numpy() > t["odd_aspect_ratio"]
    return out


def _luminance64(chunk: np.ndarray) -> torch.Tensor:
    """uint8 (n, S, S, 3) -> Lab (n, 3, 64, 64) float32."""
    lab = rgb_to_lab(_float_rgb(chunk)).permute(0, 3, 1, 2).contiguous()
    return _canonical(lab)


# ---------------------------------------------------------------- near duplicates

# Window (side, x, y) in the 64x64 frame: the full view, then 0.95/0.875/0.8 crops.
def _windows() -> list[tuple[int, int, int]]:
    out = [(CANONICAL, 0, 0)]
    for side, steps in ((61, 2), (56, 3), (51, 4)):
        for y in np.linspace(0, CANONICAL - side, steps).round().astype(int):
            for x in np.linspace(0, CANONICAL - side, steps).round().astype(int):
                out.append((side, int(x), int(y)))
    return out


WINDOWS = _windows()
_EMB_GRID, _EMB_COLOUR_GRID, _EMB_COLOUR_WEIGHT = 4, 2, 0.5


def _cell_boxes() -> tuple[torch.Tensor, torch.Tensor]:
    """(y0, y1, x0, x1) of the L cells (4x4) and ab cells (2x2) of every window, using
    adaptive pooling's boundaries: floor(k * side / g) .. ceil((k + 1) * side / g)."""
    def boxes(grid: int) -> torch.Tensor:
        out = []
        for side, x, y in WINDOWS:
            for gy in range(grid):
                for gx in range(grid):
                    out.append((y + (gy * side) // grid, y + -(-(gy + 1) * side // grid),
                                x + (gx * side) // grid, x + -(-(gx + 1) * side // grid)))
        return torch.tensor(out, dtype=torch.long)
    return boxes(_EMB_GRID), boxes(_EMB_COLOUR_GRID)


def _cell_means(I: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Means over boxes (B, 4) from integral images I (n, C, H + 1, W + 1) -> (n, C, B)."""
    y0, y1, x0, x1 = boxes.unbind(1)
    total = I[:, :, y1, x1] - I[:, :, y0, x1] - I[:, :, y1, x0] + I[:, :, y0, x0]
    return total / ((y1 - y0) * (x1 - x0)).to(I.dtype)


_L_BOXES, _AB_BOXES = _cell_boxes()


def _window_embeddings(lab: torch.Tensor) -> torch.Tensor:
    """lab (n, 3, 64, 64) -> (n, W, D) unit vectors: zero-mean 4x4 L + weighted 2x2 ab."""
    n, W = len(lab), len(WINDOWS)
    I = F.pad(lab.to(torch.float64).cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    L = _cell_means(I[:, :1], _L_BOXES).view(n, W, _EMB_GRID ** 2)
    L = L - L.mean(-1, keepdim=True)
    ab = _cell_means(I[:, 1:], _AB_BOXES).view(n, 2, W, _EMB_COLOUR_GRID ** 2).permute(0, 2, 1, 3)
    ab = ab.reshape(n, W, -1) * (_EMB_COLOUR_WEIGHT * _EMB_GRID / _EMB_COLOUR_GRID)
    return F.normalize(torch.cat([L, ab], -1).to(torch.float32), dim=-1)


class _NearDupData:
    """What the near-duplicate check keeps per image: L at 64 (uint8, L*2.55), ab at 32
    (int8) and the window embeddings; ~9 kB per image. From SPILL_FROM images on they are
    kept in memory-mapped files under `spill_dir` (deleted with it): file pages, which the
    OS writes back and drops under pressure, not the process's own memory (0.9 GB at 100k)."""

    def __init__(self, images: np.ndarray, batch: int, spill_dir: Path | None = None):
        n = len(images)
        shapes = {"L": ((n, CANONICAL, CANONICAL), np.uint8), "ab": ((n, 2, CANONICAL // 2, CANONICAL // 2), np.int8),
                  "emb": ((n, len(WINDOWS), _EMB_GRID ** 2 + 2 * _EMB_COLOUR_GRID ** 2), np.float32)}
        for name, (shape, dtype) in shapes.items():
            array = np.memmap(spill_dir / f"{name}.bin", dtype=dtype, mode="w+", shape=shape) if spill_dir \
                else np.empty(shape, dtype=dtype)
            setattr(self, name, torch.from_numpy(array))
        for start in range(0, n, batch):
            lab = _luminance64(images[start:start + batch])
            stop = start + len(lab)
            self.L[start:stop] = (lab[:, 0] * 2.55).round().clamp(0, 255).to(torch.uint8)
            self.ab[start:stop] = F.avg_pool2d(lab[:, 1:], 2).round().clamp(-127, 127).to(torch.int8)
            self.emb[start:stop] = _window_embeddings(lab)

    def luminance(self, idx: torch.Tensor) -> torch.Tensor:
        return self.L[idx].to(torch.float32)[:, None] / 2.55

    def colour(self, idx: torch.Tensor) -> torch.Tensor:
        return self.ab[idx].to(torch.float32)


def _candidates(emb: torch.Tensor, min_sim: float, top_k: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (query, reference, sim): best window of the reference vs the query's full view."""
    n, W, D = emb.shape
    queries = emb[:, 0]
    best_sim = torch.full((n, top_k), -2.0)
    best_ref = torch.full((n, top_k), -1, dtype=torch.long)
    for r0 in range(0, n, block):
        keys = emb[r0:r0 + block].reshape(-1, D)  # (b*W, D)
        nb = keys.shape[0] // W
        for q0 in range(0, n, block):
            sim = (queries[q0:q0 + block] @ keys.T).view(-1, nb, W).amax(-1)  # (bq, b)
            if r0 == q0:
                sim.fill_diagonal_(-2.0)
            k = min(top_k, nb)
            s, i = sim.topk(k, dim=1)
            merged_s = torch.cat([best_sim[q0:q0 + block], s], 1)
            merged_i = torch.cat([best_ref[q0:q0 + block], i + r0], 1)
            top_s, pos = merged_s.topk(top_k, dim=1)
            best_sim[q0:q0 + block] = top_s
            best_ref[q0:q0 + block] = merged_i.gather(1, pos)
    q = torch.arange(n)[:, None].expand(n, top_k)
    keep = best_sim >= min_sim
    return q[keep].numpy(), best_ref[keep].numpy(), best_sim[keep].numpy()


# From this many images on, candidates come from an approximate index (faiss IVF) instead
# of all pairs: the exact search is O(n^2) (n queries x n*W windows; ~4 min at 100k),
# the index ~O(n^1.5). Below, the exact search is cheap and stays the reference.
ANN_FROM = 4096
SPILL_FROM = 4096  # from this many images on, _NearDupData lives in memory-mapped files
ANN_LISTS = 2.0  # IVF lists = ANN_LISTS * sqrt(windows) (faiss's guideline: 1-16 sqrt(N))
ANN_PROBE = 16  # lists searched per query: recall of the exact search's pairs, docs/scale.md
ANN_TRAIN_PER_LIST = 64  # k-means sample per list (faiss's default 256 costs 4x for nothing here)
ANN_BLOCK = 16384  # images whose windows the index holds at once (~50 MB): curate's memory stays flat


def _candidates_ann(emb: torch.Tensor, min_sim: float, top_k: int, chunk: int = 8192,
                    probe: int = ANN_PROBE, block: int = ANN_BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """_candidates through a faiss inverted-file index over every window (inner product).

    IVF rather than HNSW: its k-means uses a fixed seed and every search scans whole
    lists, so the result does not depend on thread timing (HNSW's parallel build does),
    and with colorize.common.portable's pinned BLAS kernels not on the CPU either. Each
    query asks for (top_k + 1) * W windows: enough that its own W windows and W of each
    of top_k others cannot crowd out a reference the exact search would keep.

    The index holds `block` images' windows at a time (~3 kB an image), all queries are
    searched in each block, and each query keeps its top_k references over the blocks.
    Every block shares the one trained quantizer, so a query probes the same lists in
    each and the union of the blocks' lists is the whole index's: the same candidates
    as one index over everything (tests/test_checks.py), in bounded memory. Of references
    with equal similarity at the top_k-th place (exact copies), the lower index is kept.
    """
    import faiss

    n, W, D = emb.shape
    keys = emb.reshape(-1, D)
    lists = max(1, min(int(ANN_LISTS * math.sqrt(len(keys))), len(keys) // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(D), D, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = ANN_TRAIN_PER_LIST
    index.train(np.ascontiguousarray(keys.numpy(), dtype=np.float32))  # k-means on a seeded sample
    index.nprobe = min(probe, lists)
    k = (top_k + 1) * W
    found = [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))]
    for b0 in range(0, n, block):
        index.reset()  # empties the lists, keeps the quantizer
        part = np.ascontiguousarray(keys[b0 * W:(b0 + block) * W].numpy(), dtype=np.float32)
        index.add_with_ids(part, np.arange(b0 * W, b0 * W + len(part), dtype=np.int64))
        for q0 in range(0, n, chunk):
            queries = np.ascontiguousarray(emb[q0:q0 + chunk, 0].numpy(), dtype=np.float32)
            sim, ids = index.search(queries, k)  # rows in descending similarity
            rows = np.arange(q0, q0 + len(queries))[:, None]
            ref = np.where(ids >= 0, ids // W, -1)
            # the first hit of each reference in a row is its best window (rows are sorted)
            order = np.argsort(ref, axis=1, kind="stable")
            sorted_ref = np.take_along_axis(ref, order, 1)
            first_sorted = np.ones_like(sorted_ref, dtype=bool)
            first_sorted[:, 1:] = sorted_ref[:, 1:] != sorted_ref[:, :-1]
            first = np.zeros_like(first_sorted)
            np.put_along_axis(first, order, first_sorted, 1)
            valid = first & (ref >= 0) & (ref != rows) & (sim >= min_sim)
            r, c = np.nonzero(valid)
            found.append(_top_per_query(r + q0, ref[r, c], sim[r, c], top_k))
        # each query's top_k so far (the blocks' candidates are merged as they come)
        found = [_top_per_query(*map(np.concatenate, zip(*found)), top_k)]
    return found[0]


def _top_per_query(q: np.ndarray, r: np.ndarray, s: np.ndarray, top_k: int):
    """Each query's top_k (reference, similarity) by similarity, ties to the lower reference."""
    order = np.lexsort((r, -s, q))
    q, r, s = q[order], r[order].astype(np.int64), s[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]]) if len(q) else np.zeros(0, dtype=np.int64)
    rank = np.arange(len(q)) - np.repeat(starts, np.diff(np.r_[starts, len(q)]))
    keep = rank < top_k
    return q[keep], r[keep], s[keep]


def _normalised(k: torch.Tensor) -> torch.Tensor:
    """(P, m) rows -> zero mean, unit norm."""
    k = k - k.mean(1, keepdim=True)
    return k / k.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _integrals(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integral images (float64) of A and A**2, A (P, H, W) -> (P, H + 1, W + 1) each."""
    A = A.to(torch.float64)
    return (F.pad(A.cumsum(-1).cumsum(-2), (1, 0, 1, 0)), F.pad((A * A).cumsum(-1).cumsum(-2), (1, 0, 1, 0)))


def _box(I: torch.Tensor, side: int) -> torch.Tensor:
    """Sums over every side x side window, from an integral image."""
    return I[:, side:, side:] - I[:, :-side, side:] - I[:, side:, :-side] + I[:, :-side, :-side]


def _ncc_maps(A_fft: torch.Tensor, integrals, kernels: torch.Tensor, side: int, shape) -> torch.Tensor:
    """NCC of each kernel at every position inside its image, via FFT.

    A_fft = rfft2(A) for A (P, H, W), integrals = _integrals(A), kernels (P, side, side)
    zero-mean unit-norm -> (P, H - side + 1, W - side + 1).
    """
    H, W = shape
    corr = torch.fft.irfft2(A_fft * torch.fft.rfft2(kernels, s=(H, W)).conj(), s=(H, W))
    s1, s2 = _box(integrals[0], side), _box(integrals[1], side)
    var = (s2 - s1 * s1 / (side * side)).to(torch.float32)
    return corr[:, :H - side + 1, :W - side + 1] / var.clamp_min(1e-4).sqrt()


def _resized(L: torch.Tensor, side: int) -> torch.Tensor:
    """(P, 1, 64, 64) -> (P, 1, side, side), antialiased."""
    if side == L.shape[-1]:
        return L
    return F.interpolate(L, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def _high_pass(L: torch.Tensor) -> torch.Tensor:
    return L - F.avg_pool2d(F.pad(L, (2, 2, 2, 2), mode="replicate"), 5, 1)


_COARSE_SIDES = range(24, 33)  # query windows of 0.75 .. 1.0 of the reference, at 32x32
_PAD, _FINE = 4, 2
# Pairs whose best coarse NCC is below this are not refined (score NaN): true copies
# score >= 0.875 there (3,400 garden copies, the better direction), while 89% of the
# unrelated candidates score below 0.8 and are spared the refinement.
_REFINE_MIN = 0.8


def _coarse_align(LA: torch.Tensor, LB: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Where does the full view of B sit inside A? LA, LB (P, 1, 64, 64) L. Exhaustive
    NCC at 32x32 over window sides 24..32 and all positions: (ncc, x, y, side) at 32x32."""
    P = len(LA)
    A32, B32 = F.avg_pool2d(LA, 2)[:, 0], F.avg_pool2d(LB, 2)
    A32_fft, A32_int = torch.fft.rfft2(A32), _integrals(A32)
    best = torch.full((P,), -2.0)
    bx, by, bs = (torch.zeros(P, dtype=torch.long) for _ in range(3))
    for side in _COARSE_SIDES:
        kb = B32 if side == 32 else F.interpolate(B32, size=(side, side), mode="area")
        ncc = _ncc_maps(A32_fft, A32_int, _normalised(kb.flatten(1)).view(P, side, side), side, A32.shape[-2:])
        v, pos = ncc.flatten(1).max(1)
        w = ncc.shape[-1]
        upd = v > best
        best = torch.where(upd, v, best)
        bx, by = torch.where(upd, pos % w, bx), torch.where(upd, pos // w, by)
        bs = torch.where(upd, torch.full_like(bs, side), bs)
    return best, bx, by, bs


def _fine_align(LA: torch.Tensor, LB: torch.Tensor, bx, by, bs) -> tuple[torch.Tensor, ...]:
    """Refine a coarse alignment at 64x64 over +-2 px of side and position (A padded by
    4 px, so a copy may reach a little past A's edge): (ncc, x, y, side) at 64x64."""
    P = len(LA)
    Ap = F.pad(LA, (_PAD,) * 4, mode="replicate")[:, 0]
    Ap_fft, Ap_int = torch.fft.rfft2(Ap), _integrals(Ap)
    fbest = torch.full((P,), -2.0)
    fx, fy, fs = 2 * bx, 2 * by, 2 * bs
    for ds in range(-_FINE, _FINE + 1):
        sides = (2 * bs + ds).clamp(16, CANONICAL)
        for sv in sides.unique().tolist():
            m = (sides == sv).nonzero().flatten()
            kernels = _normalised(_resized(LB[m], sv).flatten(1)).view(len(m), sv, sv)
            ncc = _ncc_maps(Ap_fft[m], (Ap_int[0][m], Ap_int[1][m]), kernels, sv, Ap.shape[-2:])  # padded coords
            w = ncc.shape[-1]
            grid = torch.arange(w)
            cx, cy = 2 * bx[m] + _PAD, 2 * by[m] + _PAD
            near = ((grid[None, :] - cx[:, None]).abs() <= _FINE)[:, None, :] & (
                (grid[None, :] - cy[:, None]).abs() <= _FINE)[:, :, None]
            v, pos = torch.where(near, ncc, -2.0).flatten(1).max(1)
            upd = v > fbest[m]
            fbest[m] = torch.where(upd, v, fbest[m])
            fx[m] = torch.where(upd, pos % w - _PAD, fx[m])
            fy[m] = torch.where(upd, pos // w - _PAD, fy[m])
            fs[m] = torch.where(upd, torch.full_like(fs[m], sv), fs[m])
    return fbest, fx, fy, fs


def _tile_ncc(a: torch.Tensor, b: torch.Tensor, fallback: torch.Tensor, tiles: int = 4) -> torch.Tensor:
    """25th percentile over tiles x tiles tiles of the per-tile NCC of a and b (P, 1, s, s).

    Tiles that are flat in either image (variance <= 1) are left out; with fewer than 4
    textured tiles, `fallback` (the global NCC) is used.
    """
    k = a.shape[-1] // tiles  # the last side % tiles rows/columns are left out
    a, b = a[..., :k * tiles, :k * tiles], b[..., :k * tiles, :k * tiles]
    mu_a, mu_b = F.avg_pool2d(a, k), F.avg_pool2d(b, k)
    va = F.avg_pool2d(a * a, k) - mu_a ** 2
    vb = F.avg_pool2d(b * b, k) - mu_b ** 2
    cov = F.avg_pool2d(a * b, k) - mu_a * mu_b
    ncc = (cov / (va.clamp_min(1e-6) * vb.clamp_min(1e-6)).sqrt()).flatten(1)
    textured = (torch.minimum(va, vb) > 1.0).flatten(1)
    q = _percentiles(ncc, (0.25,), textured)[0]
    return torch.where(textured.sum(1) >= 4, q, fallback)


def _verify_one_way(data: _NearDupData, q: torch.Tensor, r: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores of the full view of q found inside r."""
    P = len(q)
    nan = torch.full((P,), torch.nan)
    out = {k: nan.clone() for k in ("ncc", "detail_ncc", "local_ncc", "local_detail", "colour_diff", "scale", "score")}
    LA, LB = data.luminance(r), data.luminance(q)
    coarse, bx, by, bs = _coarse_align(LA, LB)
    out["ncc"], out["scale"] = coarse, bs.to(torch.float32) / (CANONICAL // 2)
    sel = (coarse >= _REFINE_MIN).nonzero().flatten()
    if len(sel) == 0:
        return out
    q, r, LA, LB = q[sel], r[sel], LA[sel], LB[sel]
    ncc, fx, fy, fs = _fine_align(LA, LB, bx[sel], by[sel], bs[sel])
    P = len(sel)
    Ap = F.pad(LA, (_PAD,) * 4, mode="replicate")
    Cq, Cr = data.colour(q), data.colour(r)
    res = {k: torch.zeros(P) for k in ("detail_ncc", "local_ncc", "local_detail", "colour_diff")}
    for sv in fs.unique().tolist():
        m = (fs == sv).nonzero().flatten()
        ar = torch.arange(sv)
        rows = (fy[m, None] + _PAD + ar)[:, :, None]
        cols = (fx[m, None] + _PAD + ar)[:, None, :]
        region = Ap[m, 0][torch.arange(len(m))[:, None, None], rows, cols][:, None]
        query = _resized(LB[m], sv)
        hr, hq = _high_pass(region), _high_pass(query)
        detail = (_normalised(hr.flatten(1)) * _normalised(hq.flatten(1))).sum(1)
        res["detail_ncc"][m] = detail
        res["local_ncc"][m] = _tile_ncc(region, query, ncc[m])
        res["local_detail"][m] = _tile_ncc(hr, hq, detail)
        # colour: the same window on the 32x32 ab grid; statistics, not pixels (robust to
        # the +-1 px of that grid): difference of the mean (a, b) + of the mean chroma
        s2 = max(1, sv // 2)
        ar2 = torch.arange(s2)
        x2 = (fx[m] // 2).clamp(0, CANONICAL // 2 - s2)
        y2 = (fy[m] // 2).clamp(0, CANONICAL // 2 - s2)
        reg_ab = Cr[m][torch.arange(len(m))[:, None, None], :, (y2[:, None] + ar2)[:, :, None],
                       (x2[:, None] + ar2)[:, None, :]].permute(0, 3, 1, 2)
        mean_r, mean_q = reg_ab.mean((2, 3)), Cq[m].mean((2, 3))
        chroma_r, chroma_q = reg_ab.norm(dim=1).mean((1, 2)), Cq[m].norm(dim=1).mean((1, 2))
        res["colour_diff"][m] = (mean_r - mean_q).norm(dim=1) + (chroma_r - chroma_q).abs()
    res["ncc"] = ncc
    res["scale"] = fs.to(torch.float32) / CANONICAL
    res["score"] = (res["local_ncc"] + res["local_detail"]) / 2
    for k, v in res.items():
        out[k][sel] = v
    return out


@contextmanager
def _one_thread():
    """Run torch single-threaded inside (restored after). The verification is thousands of
    small FFTs and gathers: a second thread gains nothing on an idle machine, and on a
    busy one the threads wait on each other (measured 25x slower at load 4 on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _verify(data: _NearDupData, i: np.ndarray, j: np.ndarray, chunk: int = 512) -> dict[str, np.ndarray]:
    """Both directions (i inside j, j inside i); keep the better-scoring one per pair."""
    keys = ("ncc", "detail_ncc", "local_ncc", "local_detail", "colour_diff", "scale", "score")
    out = {k: np.zeros(len(i), dtype=np.float64) for k in keys}
    out["query"] = np.zeros(len(i), dtype=np.int64)
    for c0 in range(0, len(i), chunk):
        a = torch.from_numpy(i[c0:c0 + chunk])
        b = torch.from_numpy(j[c0:c0 + chunk])
        ab, ba = _verify_one_way(data, a, b), _verify_one_way(data, b, a)
        first = torch.nan_to_num(ab["score"], nan=-9.0) >= torch.nan_to_num(ba["score"], nan=-9.0)
        sl = slice(c0, c0 + len(a))
        for k in keys:
            out[k][sl] = torch.where(first, ab[k], ba[k]).numpy()
        out["query"][sl] = torch.where(first, a, b).numpy()
    return out


def near_duplicate_pairs(images: np.ndarray, candidate_sim: float = 0.94, top_k: int = 6,
                         block: int = 1024, batch: int = 256, search: str = "auto") -> pd.DataFrame:
    """Candidate pairs and their verification scores, one row per unordered pair.

    Columns: i, j (i < j); query (the image whose full view was found inside the other,
    the better of the two directions); window_sim (stage 1); ncc (global NCC of L at the
    alignment); detail_ncc (same, high-passed L); local_ncc, local_detail (25th
    percentile over 4x4 tiles of the two); colour_diff; scale (side of the matched
    window / 64); score = (local_ncc + local_detail) / 2. Every candidate is returned,
    also those below any threshold, so thresholds can be tuned on the stored table;
    pairs too different to be worth refining (coarse NCC < 0.8 both ways) have NaN score.
    Candidates: all pairs (O(n^2)) below ANN_FROM images, else the faiss index
    (`_candidates_ann`); `search` = "exact" or "ann" forces one. Recall of the index
    against all pairs: docs/scale.md (bench/near_dup.py).
    Memory: ~9 kB per image, memory-mapped from SPILL_FROM images on (in the system's
    temporary folder: TMPDIR), plus one block x block*30 similarity matrix (exact) or
    the index over ANN_BLOCK images (~50 MB) and the candidates (ann).
    """
    images = _as_batch(images)
    cols = ["i", "j", "query", "window_sim", "ncc", "detail_ncc", "local_ncc", "local_detail", "colour_diff", "scale",
            "score"]
    if len(images) < 2:
        return pd.DataFrame({c: np.zeros(0, dtype=np.int64 if c in ("i", "j", "query") else np.float64) for c in cols})
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="colorize-near-dup-") as spill:
        data = _NearDupData(images, batch, Path(spill) if len(images) >= SPILL_FROM else None)
        if search not in ("auto", "exact", "ann"):
            raise ValueError(f"near_duplicate_pairs: search is auto, exact or ann, not {search!r}")
        if search == "ann" or (search == "auto" and len(images) >= ANN_FROM):
            q, r, sim = _candidates_ann(data.emb, candidate_sim, top_k)
        else:
            q, r, sim = _candidates(data.emb, candidate_sim, top_k, block)
        lo, hi = np.minimum(q, r), np.maximum(q, r)
        # one row per unordered pair, with the higher window similarity of the two
        order = np.lexsort((-sim, hi, lo))
        lo, hi, sim = lo[order], hi[order], sim[order]
        first = np.ones(len(lo), dtype=bool)
        first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
        lo, hi, sim = lo[first], hi[first], sim[first]
        with _one_thread():
            scores = _verify(data, lo, hi)
    # copy=False: pandas would copy the columns into one block (~90 bytes a candidate pair)
    df = pd.DataFrame({"i": lo, "j": hi, "window_sim": sim.astype(np.float64), **scores}, copy=False)
    return df[cols].reset_index(drop=True)


def near_duplicate_groups(images: np.ndarray | None = None, quality=None, *, threshold: float,
                          colour_threshold: float, pairs: pd.DataFrame | None = None,
                          n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Group near duplicates; return (group, is_kept).

    Give `images` (pairs are computed) or `pairs` from near_duplicate_pairs with `n`.
    `quality`: higher is better (curate passes rules.keep_rank); default: keep the lowest index.
    group[k] is the index of the image kept in k's group (k itself for a singleton).
    """
    if pairs is None:
        if images is None:
            raise ValueError("near_duplicate_groups: give images or pairs")
        pairs = near_duplicate_pairs(images)
        n = len(images)
    elif n is None:
        n = len(images) if images is not None else (int(pairs[["i", "j"]].max().max()) + 1 if len(pairs) else 0)
    quality = np.zeros(n) if quality is None else np.asarray(quality, dtype=np.float64)
    match = pairs[(pairs["score"] >= threshold) & (pairs["colour_diff"] <= colour_threshold)]

    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(match["i"].to_numpy(), match["j"].to_numpy()):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(k) for k in range(n)], dtype=np.int64)
    # best member per root: highest quality, then lowest index
    order = np.lexsort((np.arange(n), -quality, roots))
    first = np.ones(n, dtype=bool)
    first[1:] = roots[order][1:] != roots[order][:-1]
    keeper = np.empty(n, dtype=np.int64)
    keeper[roots[order][first]] = order[first]
    group = keeper[roots]
    is_kept = group == np.arange(n)
    return group, is_kept
