"""How fast the priors stage counts ab bins, on one core, against the straightforward way.

ours:      packed 8-bit RGB -> bin index by a 2^24-entry lookup table, then bincount
           (pipeline.priors.count_bins on colour.rgb_uint8_to_bins).
baseline:  what one would write first: scikit-image rgb2lab in float64, then the nearest
           of the Q bin centres by argmin over all of them (chunked), then bincount.
Both see the same pixels (real photos from ../shared/data/flowers-128 at 64x64 when
present, else random colours); the counts must agree, and the rate is pixels/s.

    .venv/bin/python bench/priors_speed.py
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import priors  # noqa: E402
from pipeline.colour import ab_bin_lut, ab_bins, rgb_uint8_to_bins  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "flowers-128"


def pixels(n_images: int = 2000, size: int = 64) -> tuple[np.ndarray, str]:
    files = sorted(SHARED.glob("*/*.jpg"))[:n_images] if SHARED.is_dir() else []
    if files:
        from PIL import Image

        out = np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files])
        return out, f"{len(files)} flowers-128 photos at {size}x{size}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n_images, size, size, 3), dtype=np.uint8), f"{n_images} random images at {size}x{size}"


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def baseline_counts(images: np.ndarray, bins: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    counts = np.zeros(len(bins), dtype=np.int64)
    for im in images:
        ab = rgb2lab(im)[..., 1:].reshape(-1, 2)
        nearest = ((ab[:, None, :] - bins[None]) ** 2).sum(-1).argmin(1)
        counts += np.bincount(nearest, minlength=len(bins))
    return counts


def main() -> None:
    torch.set_num_threads(1)
    images, what = pixels()
    n_px = images.shape[0] * images.shape[1] * images.shape[2]
    t = time.perf_counter()
    bins = ab_bins().numpy().astype(np.float64)  # builds the bins and the LUT once per process (cached)
    lut_seconds = time.perf_counter() - t
    assert len(ab_bin_lut()) == 256**3
    ours = best_of(lambda: priors.count_bins(rgb_uint8_to_bins(images), len(bins)))
    sub = images[:100]
    base = best_of(lambda: baseline_counts(sub, bins), repeat=1) * len(images) / len(sub)
    a = priors.count_bins(rgb_uint8_to_bins(sub), len(bins))
    b = baseline_counts(sub, bins)
    agree = float((a == b).all()) if (a == b).all() else float(1 - np.abs(a - b).sum() / (2 * a.sum()))
    result = {
        "data": what,
        "threads": 1,
        "pixels": int(n_px),
        "ours_pixels_per_second": n_px / ours,
        "baseline_pixels_per_second": n_px / base,
        "speedup": base / ours,
        "lut_build_seconds": lut_seconds,
        "counts_agreement": agree,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
