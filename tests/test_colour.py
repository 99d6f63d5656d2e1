"""The colour module against scikit-image, the reference implementation, and its ab
quantisation against Zhang et al.'s released bins (bench/bins_reference.py)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage import color

from bench.bins_reference import zhang_bins
from colorize.common.colour import (
    AB_GRID,
    ab_bin_lut,
    ab_bins,
    compose,
    decode_annealed,
    lab_to_rgb,
    lab_to_uint8,
    rgb_to_lab,
    soft_encode,
    uint8_to_lab,
)
from tests.colour_reference import (
    decode_mean,
    decode_mode,
    nearest_bin,
    rgb_uint8_to_bins,
)

rgb_arrays = arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(3)), elements=st.floats(0, 1))


@settings(max_examples=200, deadline=None)
@given(rgb_arrays)
def test_rgb_to_lab_matches_skimage(rgb):
    ours = rgb_to_lab(torch.from_numpy(rgb).float()).double().numpy()
    np.testing.assert_allclose(ours, color.rgb2lab(rgb), atol=1e-3)


@settings(max_examples=200, deadline=None)
@given(rgb_arrays)
def test_round_trip(rgb):
    back = lab_to_rgb(rgb_to_lab(torch.from_numpy(rgb).float())).double().numpy()
    np.testing.assert_allclose(back, rgb, atol=1e-4)  # float32 gets ~1e-5


lab_arrays = arrays(
    np.float64,
    st.tuples(st.integers(1, 5), st.just(3)),
    elements=st.floats(-128, 128),
).map(lambda a: np.concatenate([np.abs(a[:, :1]) % 100, a[:, 1:]], axis=1))


@settings(max_examples=200, deadline=None)
@given(lab_arrays)
def test_lab_to_rgb_clips_out_of_gamut_like_skimage(lab):
    ours = lab_to_rgb(torch.from_numpy(lab).float()).double().numpy()
    assert ours.min() >= 0 and ours.max() <= 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about negative Z values it clips
        ref = color.lab2rgb(lab[None])[0]
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_full_uint8_cube_agrees():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(uint8_to_lab(rgb).double().numpy(), color.rgb2lab(rgb), atol=1e-3)
    # uint8 -> Lab -> uint8 is lossless up to rounding
    assert np.abs(lab_to_uint8(uint8_to_lab(rgb)).astype(int) - rgb).max() <= 1


def test_uint8_lookup_gives_the_bits_of_the_float_formula_for_every_8bit_colour():
    """uint8_to_lab looks up sRGB linearisation per 8-bit value; the ab bins and every
    stored Lab were defined by rgb_to_lab(x / 255), so the bits must not move."""
    codes = torch.arange(256**3, dtype=torch.int32)
    for start in range(0, 256**3, 1 << 22):
        c = codes[start : start + (1 << 22)]
        rgb = torch.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], dim=-1).to(torch.uint8)
        assert torch.equal(uint8_to_lab(rgb), rgb_to_lab(rgb.to(torch.float32) / 255.0))


def test_compose_with_zero_ab_is_gray():
    rng = np.random.default_rng(1)
    lab = uint8_to_lab(rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    gray = compose(lab[..., 0], torch.zeros(2, 8, 8, 2))
    assert np.abs(gray[..., 0].astype(int) - gray[..., 2]).max() <= 1


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 8), st.just(3)), elements=st.floats(-1000, 1000)))
def test_lab_to_rgb_clips_far_out_of_gamut(lab):
    lab[:, 0] = np.abs(lab[:, 0]) % 100
    rgb = lab_to_rgb(torch.from_numpy(lab).float())
    assert torch.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1


# --- quantised ab (Zhang et al. 2016) --------------------------------------------------

uint8_colours = arrays(np.uint8, st.tuples(st.integers(1, 64), st.just(3)))


def test_ab_bins_are_the_in_gamut_grid_cells():
    bins = ab_bins().numpy()
    assert bins.dtype == np.float32 and bins.ndim == 2 and bins.shape[1] == 2
    # 261, not the paper's 313: the cells that 8-bit sRGB colours actually reach (module docstring)
    assert len(bins) == 261
    assert np.all(bins % AB_GRID == 0)
    assert len({tuple(x) for x in bins.tolist()}) == len(bins)
    assert np.all(np.lexsort((bins[:, 1], bins[:, 0])) == np.arange(len(bins)))  # by a, then b
    assert (bins[:, 0].min(), bins[:, 0].max()) == (-90, 100)  # the reference's a range exactly
    assert (bins[:, 1].min(), bins[:, 1].max()) == (-110, 90)  # the reference's b reaches 100


def test_ab_bins_against_zhang_reference():
    ours, ref = {tuple(x) for x in ab_bins().tolist()}, {tuple(x) for x in zhang_bins().tolist()}
    assert len(ref) == 313
    assert ours <= ref  # every one of our bins is one of the paper's
    extra = ref - ours  # 52: a one-cell rim round the 8-bit gamut, each next to one of ours
    assert len(extra) == 52
    steps = [(AB_GRID, 0), (-AB_GRID, 0), (0, AB_GRID), (0, -AB_GRID)]
    assert all(any((a + da, b + db) in ours for da, db in steps) for a, b in extra)


def test_lut_covers_every_colour_with_a_valid_bin():
    lut, q = ab_bin_lut(), len(ab_bins())
    assert lut.shape == (256**3,) and lut.dtype == torch.int16
    assert lut.min() == 0 and lut.max() == q - 1
    assert (torch.bincount(lut.long(), minlength=q) > 0).all()  # every bin is some colour's


@settings(max_examples=50, deadline=None)
@given(uint8_colours)
def test_lut_bin_is_nearest_bin_and_rounded_cell(rgb):
    bins = ab_bins()
    from_lut = rgb_uint8_to_bins(rgb)
    ab = uint8_to_lab(rgb)[..., 1:]
    assert torch.equal(from_lut, nearest_bin(ab, bins))
    assert torch.equal(bins[from_lut], torch.round(ab / AB_GRID) * AB_GRID)


def test_lut_agrees_on_many_colours_and_corners():
    rng = np.random.default_rng(2)
    corners = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], np.uint8)
    rgb = np.concatenate([corners, rng.integers(0, 256, (20000, 3), dtype=np.uint8)])
    assert torch.equal(rgb_uint8_to_bins(rgb), nearest_bin(uint8_to_lab(rgb)[..., 1:], ab_bins()))


def test_rgb_uint8_to_bins_shapes_and_types():
    rgb = np.random.default_rng(3).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    out = rgb_uint8_to_bins(rgb)
    assert out.shape == (2, 4, 5) and out.dtype == torch.int64
    assert torch.equal(rgb_uint8_to_bins(torch.from_numpy(rgb)), out)
    assert torch.equal(out[1, 2, 3], rgb_uint8_to_bins(rgb[1, 2, 3][None])[0])
    with pytest.raises(TypeError):
        rgb_uint8_to_bins(rgb.astype(np.float32))


def test_nearest_bin_is_nearest_for_any_ab():
    bins = ab_bins()
    ab = (torch.rand(3, 20000, 2) - 0.5) * 300  # > one distance chunk, much of it out of gamut
    idx = nearest_bin(ab, bins)
    assert idx.shape == (3, 20000) and idx.dtype == torch.int64
    d2 = ((ab[..., None, :] - bins) ** 2).sum(-1)
    assert torch.equal(d2.gather(-1, idx[..., None])[..., 0], d2.min(-1).values)


ab_points = arrays(np.float32, st.tuples(st.integers(1, 32), st.just(2)), elements=st.floats(-120, 120, width=32))


@settings(max_examples=50, deadline=None)
@given(ab_points, st.integers(1, 8))
def test_soft_encode_weights(ab, k):
    bins, ab = ab_bins(), torch.from_numpy(ab)
    w = soft_encode(ab, bins, k=k)
    assert w.shape == (len(ab), len(bins))
    torch.testing.assert_close(w.sum(-1), torch.ones(len(ab)))
    assert ((w > 0).sum(-1) == k).all()
    nearest = nearest_bin(ab, bins)
    assert torch.equal(w.gather(-1, nearest[:, None])[:, 0], w.max(-1).values)  # ties: equal weight
    # on the k nearest bins the weights are exp(-d^2 / 2 sigma^2), normalised (sigma = 5)
    d2 = ((ab[:, None, :].double() - bins.double()) ** 2).sum(-1)
    d2k, idx = d2.topk(k, dim=-1, largest=False)
    gauss = torch.exp(-d2k / 50.0) / torch.exp(-d2k / 50.0).sum(-1, keepdim=True)
    untied = ~torch.isclose(d2k[:, -1], d2.sort(-1).values[:, k])  # else the k-th bin is a free pick
    # float32 weights against a float64 reference: a few ulps of exp() on values near 1
    torch.testing.assert_close(w.gather(-1, idx)[untied].double(), gauss[untied], atol=1e-5, rtol=1e-4)


def test_soft_encode_channels_at_dim_1():
    bins = ab_bins()
    ab = uint8_to_lab(np.random.default_rng(4).integers(0, 256, (2, 6, 7, 3), dtype=np.uint8))[..., 1:]
    last = soft_encode(ab, bins)  # (2, 6, 7, Q)
    first = soft_encode(ab.permute(0, 3, 1, 2), bins, dim=1)  # (2, Q, 6, 7), as the network uses it
    assert last.shape == (2, 6, 7, len(bins)) and first.shape == (2, len(bins), 6, 7)
    torch.testing.assert_close(first, last.permute(0, 3, 1, 2))
    with pytest.raises(ValueError):
        soft_encode(ab, bins, dim=1)  # 6 channels at dim 1, not 2


@settings(max_examples=50, deadline=None)
@given(uint8_colours)
def test_soft_encode_then_annealed_decode_recovers_ab(rgb):
    bins = ab_bins()
    ab = uint8_to_lab(rgb)[..., 1:].T[None, :, :, None]  # (1, 2, n, 1): in gamut by construction
    logits = torch.log(soft_encode(ab, bins, dim=1) + 1e-12)
    back = decode_annealed(logits, bins, 0.01, dim=1)
    assert back.shape == ab.shape
    assert (back - ab).abs().max() <= AB_GRID / 2 + 1e-3


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_annealed_mean_between_mean_and_mode(seed):
    g = torch.Generator().manual_seed(seed)
    bins = ab_bins()
    logits = torch.randn(2, len(bins), 3, 4, generator=g) * 4
    torch.testing.assert_close(decode_annealed(logits, bins, 1.0), decode_mean(logits, bins))
    mode = decode_mode(logits, bins)
    assert mode.shape == (2, 2, 3, 4)
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1] > 0.005)[:, None].expand_as(mode)  # no near-tie at the top
    cold = decode_annealed(logits, bins, 1e-4)
    torch.testing.assert_close(cold[clear], mode[clear], atol=1e-3, rtol=0)


def test_decoders_channels_last_and_values():
    bins = ab_bins()
    logits = torch.full((3, len(bins)), -5.0)
    logits[0, 7] = logits[1, 100] = logits[2, 200] = 5.0
    assert torch.equal(decode_mode(logits, bins, dim=-1), bins[[7, 100, 200]])
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(decode_mean(logits, bins, dim=-1), p @ bins)


def test_decode_annealed_is_safe_and_validates_T():
    bins = ab_bins()
    logits = torch.randn(1, len(bins), 2, 2) * 1e4  # huge logits, tiny T: no inf - inf
    out = decode_annealed(logits, bins, 1e-8)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, decode_mode(logits, bins))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            decode_annealed(logits, bins, bad)
