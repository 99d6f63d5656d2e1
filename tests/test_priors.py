"""The priors stage's maths on images with a known colour distribution, the stage itself on
a store written here, and the zhang model's shapes and loss."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from colorize.common import paths
from colorize.common.colour import ab_bins, rgb_to_lab
from colorize.common.shards import ShardWriter
from colorize.stages import priors as stage
from colorize.training import priors
from tests.colour_reference import count_bins, nearest_bin, rgb_uint8_to_bins
from tests.conftest import ROOT

RED, BLUE, GRAY = (200, 30, 40), (30, 60, 200), (128, 128, 128)


def _bin_of(rgb: tuple[int, int, int]) -> int:
    return int(rgb_uint8_to_bins(np.array([[rgb]], dtype=np.uint8))[0, 0])


def _two_colour_images(n: int = 4, size: int = 10, red_rows: int = 6) -> np.ndarray:
    """n images, the top `red_rows` rows red and the rest blue: p(red) = red_rows/size."""
    img = np.empty((n, size, size, 3), dtype=np.uint8)
    img[:, :red_rows] = RED
    img[:, red_rows:] = BLUE
    return img


@pytest.fixture(scope="module")
def bins() -> np.ndarray:
    return ab_bins().numpy().astype(np.float64)


def test_chunked_counts_equal_the_whole_array_way(bins, monkeypatch):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 37, 29, 3), dtype=np.uint8)
    whole = count_bins(rgb_uint8_to_bins(images), len(bins))
    monkeypatch.setattr(priors, "COUNT_CHUNK", 1000)  # many chunks, the last one partial
    assert np.array_equal(priors.image_bin_counts(images, len(bins)), whole)
    assert np.array_equal(priors.image_bin_counts(torch.from_numpy(images), len(bins)), whole)
    assert priors.image_bin_counts(images, len(bins)).sum() == 5 * 37 * 29
    with pytest.raises(TypeError):
        priors.image_bin_counts(images.astype(np.float32), len(bins))


def test_the_prior_of_a_known_mixture(bins):
    counts = count_bins(rgb_uint8_to_bins(_two_colour_images()), len(bins))
    p = counts / counts.sum()
    red, blue = _bin_of(RED), _bin_of(BLUE)
    assert red != blue
    assert p[red] == pytest.approx(0.6) and p[blue] == pytest.approx(0.4)
    assert (counts > 0).sum() == 2
    # the bin is the one nearest the colour's ab
    ab = rgb_to_lab(torch.tensor([[c / 255 for c in RED]]))[:, 1:]
    assert int(nearest_bin(ab, torch.from_numpy(bins).float())[0]) == red


def test_smoothing_spreads_mass_by_a_gaussian_and_keeps_it(bins):
    p = np.zeros(len(bins))
    centre = int(np.argmin(((bins - [10.0, 10.0]) ** 2).sum(1)))  # a bin well inside the gamut
    p[centre] = 1.0
    s = priors.smooth(p, bins, sigma=5.0)
    assert s.sum() == pytest.approx(1.0)
    assert s.argmax() == centre
    d2 = ((bins - bins[centre]) ** 2).sum(1)
    neighbour = int(np.flatnonzero(d2 == 100.0)[0])  # one grid step away
    # exp(-d^2 / 2 sigma^2) with d = 10, sigma = 5: the neighbour gets e^-2 of the centre
    assert s[neighbour] / s[centre] == pytest.approx(np.exp(-2.0), rel=1e-6)
    assert np.allclose(priors.smooth(p, bins, sigma=0.0), p)


def test_rebalancing_weights(bins):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(len(bins), 0.3))
    w = priors.rebalancing_weights(p, mix=0.5)
    assert (p * w).sum() == pytest.approx(1.0)  # the expected weight of a pixel is 1
    expected = 1.0 / (0.5 * p + 0.5 / len(bins))
    assert np.allclose(w / w[0], expected / expected[0])
    assert w[p.argmin()] == w.max() and w[p.argmax()] == w.min()  # rare colours weigh more
    # mix 1: the uniform distribution alone, every weight 1 (plain cross-entropy)
    assert np.allclose(priors.rebalancing_weights(p, mix=1.0), 1.0)
    # the weights are bounded by the mixing: at most Q / mix times the uniform's
    assert w.max() <= len(bins) / 0.5 / (p * (1.0 / (0.5 * p + 0.5 / len(bins)))).sum() + 1e-9


def test_entropy():
    assert priors.entropy_bits(np.full(8, 1 / 8)) == pytest.approx(3.0)
    assert priors.entropy_bits(np.array([1.0, 0.0])) == 0.0


def run_stage(project, image_size: int = 10, min_chroma: float = 4.0) -> dict:
    """The priors stage's main in `project` (the cwd), with params.yaml's priors section
    set here; its report as written."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["priors"].update(image_size=image_size, min_chroma=min_chroma, sigma=5.0, mix=0.5)
    (project / paths.PARAMS).write_text(yaml.safe_dump(p))
    stage.main()
    return json.loads(paths.PRIORS_REPORT.read_text())


OUTPUTS = (paths.PRIORS, paths.PRIORS_REPORT, paths.PRIOR_PLOT, paths.WEIGHTS_PLOT)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A project dir (the cwd) whose split has 4 red/blue training images, 1 gray
    training image and 2 all-blue validation images, in a shard store."""
    monkeypatch.chdir(tmp_path)
    writer = ShardWriter(paths.SHARDS, shard_size=3, image_size=10)  # several shards
    images = list(_two_colour_images()) + [np.full((10, 10, 3), GRAY, np.uint8)] + [np.full((10, 10, 3), BLUE, np.uint8)] * 2
    where = [writer.add(im) for im in images]
    writer.close()
    manifest = pd.DataFrame({
        "id": [f"i{k}" for k in range(len(images))],
        "shard": [w[0] for w in where], "shard_index": [w[1] for w in where],
        "split": ["train"] * 5 + ["val"] * 2,
        "chroma_p95": [60.0] * 4 + [0.0] + [60.0] * 2,
    })
    paths.SPLIT_MANIFEST.parent.mkdir(parents=True)
    manifest.to_parquet(paths.SPLIT_MANIFEST)
    return tmp_path


def test_the_stage_counts_only_colourful_training_images(store):
    report = run_stage(store)
    assert report["n_images"] == 4 and report["n_gray_skipped"] == 1
    assert report["n_pixels"] == 4 * 100
    assert report["bins_seen"] == 2
    assert report["top10_share"] == pytest.approx(1.0)
    top = report["top_bins"][0]
    red = ab_bins().numpy()[_bin_of(RED)]
    assert (top["a"], top["b"], top["share"]) == (pytest.approx(red[0]), pytest.approx(red[1]), pytest.approx(0.6))
    assert report["weight_expected"] == pytest.approx(1.0)
    saved = np.load(paths.PRIORS)
    assert saved["bins"].shape == (report["n_bins"], 2) and saved["weights"].shape == (report["n_bins"],)
    for plot in (paths.PRIOR_PLOT, paths.WEIGHTS_PLOT):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = priors.load_priors(paths.PRIORS)
    assert loaded["bins"].dtype == torch.float32 and len(loaded["weights"]) == report["n_bins"]


def test_counting_at_a_lower_resolution_keeps_the_shares(store):
    report = run_stage(store, image_size=5)
    assert report["n_pixels"] == 4 * 25
    # area averaging mixes the red/blue boundary row into in-between colours; the two
    # colours still hold most of the mass
    assert report["top10_share"] == pytest.approx(1.0)
    assert report["top_bins"][0]["share"] >= 0.4


def test_the_stage_is_deterministic(store):
    run_stage(store)
    first = [p.read_bytes() for p in OUTPUTS]
    run_stage(store)
    assert first == [p.read_bytes() for p in OUTPUTS]


def test_no_colour_images_is_a_one_line_error(store):
    from colorize.common.errors import UserError

    with pytest.raises(UserError, match="no colour images"):
        run_stage(store, min_chroma=99.0)


# ---------------------------------------------------------------------- the zhang model

def _zhang(rebalance: bool = True, width: int = 4, depth: int = 3):
    from colorize.training.models import ZhangNet

    b = ab_bins()
    w = torch.linspace(0.5, 2.0, len(b))
    return ZhangNet(b, w, width=width, depth=depth, rebalance=rebalance)


def test_zhang_gives_q_logits_at_quarter_resolution():
    torch.manual_seed(0)
    net = _zhang()
    L = torch.randn(2, 1, 32, 32)
    assert net(L).shape == (2, len(ab_bins()), 8, 8)
    assert net.predict(L).shape == (2, 2, 32, 32)


def test_zhang_full_size_follows_the_paper():
    from colorize.training.models import count_parameters

    net = _zhang(width=64, depth=4)
    # conv1..conv8 of Zhang et al. with a 313-way 1x1 head: about 32 M parameters
    assert 28e6 < count_parameters(net) < 36e6


def test_zhang_loss_rebalancing_and_training_step():
    torch.manual_seed(0)
    L = torch.randn(2, 1, 32, 32)
    ab = torch.rand(2, 2, 32, 32) * 0.6 - 0.3
    plain, weighted = _zhang(rebalance=False), _zhang(rebalance=True)
    weighted.load_state_dict(plain.state_dict())
    l_plain, l_weighted = plain.loss(L, ab), weighted.loss(L, ab)
    assert torch.isfinite(l_plain) and torch.isfinite(l_weighted) and l_plain != l_weighted
    l_weighted.backward()
    assert all(p.grad is not None for p in weighted.parameters() if p.requires_grad)


def test_zhang_checkpoint_carries_its_bins_and_weights():
    from colorize.training.models import build_model, checkpoint_priors

    net = _zhang()
    state = net.state_dict()
    cfg = {"model": "zhang", "width": 4, "depth": 3, "zhang": {"temperature": 0.38, "rebalance": True}}
    again = build_model(cfg, checkpoint_priors(state))
    again.load_state_dict(state)
    assert torch.equal(again.bins, net.bins) and torch.equal(again.class_weights, net.class_weights)
