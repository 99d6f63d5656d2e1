"""Metric correctness against scikit-image: PSNR (with the perfect-image rule), SSIM,
CIEDE2000; colourfulness and the bootstrap intervals."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from colorize.evaluation.metrics import bootstrap_ci, colourfulness, delta_e_uint8, is_perfect, psnr_uint8, ssim_uint8


def _pairs(seed: int, n: int = 4, h: int = 24, w: int = 31, noise: int = 40):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, a.shape), 0, 255).astype(np.uint8)
    return a, b


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.integers(1, 120))
def test_psnr_ssim_delta_e_match_scikit_image(seed, noise):
    a, b = _pairs(seed, noise=noise)
    ours = psnr_uint8(a, b)
    ref = [peak_signal_noise_ratio(b[i], a[i], data_range=255) for i in range(len(a))]
    assert np.allclose(ours, ref, atol=1e-9)
    ref = [structural_similarity(a[i], b[i], channel_axis=2, data_range=255) for i in range(len(a))]
    assert np.allclose(ssim_uint8(a, b), ref, atol=1e-9)
    ref = [deltaE_ciede2000(rgb2lab(a[i]), rgb2lab(b[i])).mean() for i in range(len(a))]
    assert np.allclose(delta_e_uint8(a, b), ref, atol=1e-4)  # our Lab is float32 torch


def test_delta_e_on_sharma_reference_pairs():
    """Published test data of Sharma, Wu & Dalal (2005), pairs 1, 7, 17 and 25."""
    import torch

    from colorize.evaluation.metrics import delta_e2000

    lab1 = torch.tensor([[50.0, 2.6772, -79.7751], [50.0, 0.0, 0.0], [50.0, 2.5, 0.0], [60.2574, -34.0099, 36.2677]],
                        dtype=torch.float64)
    lab2 = torch.tensor([[50.0, 0.0, -82.7485], [50.0, -1.0, 2.0], [73.0, 25.0, -18.0], [60.4626, -34.1751, 39.4387]],
                        dtype=torch.float64)
    assert torch.allclose(delta_e2000(lab1, lab2), torch.tensor([2.0425, 2.3669, 27.1492, 1.2644], dtype=torch.float64),
                          atol=1e-4)


def test_the_perfect_image_case():
    a, _ = _pairs(1, h=64, w=64)
    assert np.isinf(peak_signal_noise_ratio(a[0], a[0], data_range=255))  # what scikit-image says
    ours = psnr_uint8(a, a)
    assert np.isfinite(ours).all() and np.allclose(ours, 10 * np.log10(255**2 * 64 * 64 * 3))  # 88.9 dB ceiling
    assert is_perfect(a, a).all()
    one_off = a.copy()
    one_off[0, 0, 0, 0] ^= 1  # one value off by one level: exactly the floor
    assert psnr_uint8(one_off[:1], a[:1])[0] == pytest.approx(ours[0])
    assert not is_perfect(one_off[:1], a[:1])[0]
    assert np.allclose(ssim_uint8(a, a), 1.0) and np.allclose(delta_e_uint8(a, a), 0.0, atol=1e-6)


def test_colourfulness():
    gray = np.repeat(np.random.default_rng(0).integers(0, 256, (2, 16, 16, 1), dtype=np.uint8), 3, axis=3)
    assert np.allclose(colourfulness(gray), 0.0)
    red = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    # a flat red: no spread, mean rg = 255, yb = 127.5 -> 0.3 * sqrt(255^2 + 127.5^2)
    assert colourfulness(red)[0] == pytest.approx(0.3 * np.hypot(255, 127.5))
    a, _ = _pairs(2)
    assert (colourfulness(a) > colourfulness(gray[:1]).max()).all()


def test_bootstrap_ci():
    values = np.random.default_rng(0).normal(20.0, 2.0, 400)
    lo, hi = bootstrap_ci(values, seed=0)
    assert lo < values.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(400), rel=0.2)  # the normal-theory width
    assert bootstrap_ci(values, seed=0) == (lo, hi)  # seeded
    assert bootstrap_ci(np.full(10, 3.0)) == (3.0, 3.0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9), chunk=st.integers(1, 4), gray=st.booleans())
def test_baselines_fitted_a_chunk_at_a_time_equal_numpy_medians(seed, n, chunk, gray):
    """Evaluate fits the const and lookup baselines on the training split streamed in
    chunks: the medians must be np.median's on all pixels at once, to the bit (odd and
    even counts, empty L bins, many equal values)."""
    import torch

    from colorize.common.colour import uint8_to_lab
    from colorize.evaluation.baselines import Baselines, _bin

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 7, 3), dtype=np.uint8)
    if gray:
        x[:, :3] = rng.integers(0, 256, (n, 3, 7, 1), dtype=np.uint8)  # many pixels with a = b = 0
    lab = uint8_to_lab(x)
    pixels = lab.reshape(-1, 3).numpy()
    median_ab = np.median(pixels[:, 1:], axis=0)
    which = _bin(pixels[:, 0], 20)
    lookup = np.tile(median_ab, (20, 1))
    for b in np.unique(which):
        lookup[b] = np.median(pixels[which == b, 1:], axis=0)
    got = Baselines.fit_streamed(lambda: [lab[i : i + chunk] for i in range(0, n, chunk)], 20)
    assert np.array_equal(got.median_ab, median_ab.astype(np.float32))
    assert np.array_equal(got.lookup_ab, lookup.astype(np.float32))
    assert torch.equal(torch.from_numpy(Baselines.fit(lab, 20).lookup_ab), torch.from_numpy(got.lookup_ab))
