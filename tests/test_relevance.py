"""The relevance classifier: AUC maths, determinism, checkpoints, degenerate labels, and
that it really separates flowers from non-flowers (synthetic, and real photos if present)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from colorize.common.images import decode, fit_square
from colorize.common.params import ParamsError, validate
from colorize.curation import relevance
from colorize.sources import garden
from tests.conftest import ROOT

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def params_yaml() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


RELEVANCE = validate(params_yaml())["relevance"]  # the project's relevance params, as the stage gets them


def cfg(**overrides) -> dict:
    """params.yaml's relevance section with `overrides`."""
    return {**RELEVANCE, **overrides}


TINY = cfg(width=8, epochs=2, batch_size=32)  # seconds, not minutes; quality not checked


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these tests share 2 cores with whatever else runs, and a second
    thread fighting for a busy core makes each step several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def skimage_crops(n: int, size: int, seed: int) -> np.ndarray:
    """Random crops of scikit-image's bundled photos (astronaut, cat, coffee, ...): non-flowers."""
    import skimage.data

    photos = []
    for name in garden.SKIMAGE_PHOTOS:
        try:
            pixels = np.asarray(getattr(skimage.data, name)())
        except Exception:  # not in this install; the others suffice
            continue
        if pixels.ndim == 3:
            photos.append(np.ascontiguousarray(pixels[..., :3], dtype=np.uint8))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        side = int(min(photo.shape[:2]) * rng.uniform(0.3, 0.9))
        top = int(rng.integers(photo.shape[0] - side + 1))
        left = int(rng.integers(photo.shape[1] - side + 1))
        out.append(fit_square(photo[top : top + side, left : left + side], size))
    return np.stack(out)


@pytest.fixture(scope="module")
def garden_flowers(tmp_path_factory) -> np.ndarray:
    """240 clean synthetic flowers at 32 px."""
    out = tmp_path_factory.mktemp("garden")
    records = garden.generate(out, garden.GardenConfig(n_images=240, seed=3, defect_rate=0.0), progress=False)
    return np.stack([fit_square(decode((out / r["path"]).read_bytes(), max_pixels=10**8).pixels, 32) for r in records])


# ------------------------------------------------------------------------------ AUC

@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounding makes many ties
    assert relevance.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_edge_cases():
    assert relevance.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert relevance.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert relevance.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert np.isnan(relevance.roc_auc([1, 1], [0.1, 0.2]))


# ------------------------------------------------------------------- net and training

def test_shapes():
    model = relevance.RelevanceNet(width=8).eval()
    for size in (32, 64):
        x = relevance.to_input(random_images(5, size))
        assert x.shape == (5, 3, size, size)
        assert model(x).shape == (5,)
        assert model.features(x).shape == (5, relevance.FEATURE_DIM)
    images = random_images(7)
    p = relevance.score(model, images, batch_size=3)
    assert p.shape == (7,) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()


def test_same_seed_same_scores_and_checkpoint_round_trip(tmp_path):
    images = random_images(80)
    y = np.r_[np.ones(50, int), np.zeros(20, int), -np.ones(10, int)]
    rng_state = torch.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()

    model, report = relevance.train_relevance(images, y, TINY, seed=0, progress=False)
    again, report_again = relevance.train_relevance(images, y, TINY, seed=0, progress=False)
    other, _ = relevance.train_relevance(images, y, TINY, seed=1, progress=False)
    p = relevance.score(model, images)
    assert np.array_equal(p, relevance.score(again, images))
    assert not np.array_equal(p, relevance.score(other, images))
    assert report["n_unknown"] == 10 and report["n_holdout_irrelevant"] == 4 and report["n_holdout_relevant"] == 10
    # the caller's global RNG and determinism setting are left as they were
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert torch.are_deterministic_algorithms_enabled() == deterministic

    path = tmp_path / "relevance.pt"
    relevance.save(model, path, meta={"report": report})
    torch.load(path, weights_only=True)  # plain tensors and values only
    loaded, meta = relevance.load(path)
    assert np.array_equal(relevance.score(loaded, images), p)
    x = relevance.to_input(images)
    with torch.no_grad():
        assert torch.equal(loaded.eval().features(x), model.eval().features(x))
    assert loaded.params == {**TINY, "seed": 0}
    assert meta["report"]["n_train_relevant"] == report["n_train_relevant"]


def test_holdout_is_stratified_and_keeps_groups_together():
    y = np.r_[np.ones(100, int), np.zeros(30, int)]
    held = relevance.holdout_mask(y, 0.2, seed=0)
    assert held[y == 1].sum() == 20 and held[y == 0].sum() == 6
    groups = np.r_[np.arange(100), np.repeat([1000, 1001, 1002], 10)]  # 3 source photos
    held = relevance.holdout_mask(y, 0.2, seed=0, groups=groups)
    for g in (1000, 1001, 1002):
        assert len(set(held[groups == g])) == 1
    assert held[y == 0].sum() == 10  # one whole photo
    assert np.array_equal(held, relevance.holdout_mask(y, 0.2, seed=0, groups=groups))


def test_separates_garden_flowers_from_photo_crops(garden_flowers):
    images = np.concatenate([garden_flowers, skimage_crops(120, 32, seed=0)])
    y = np.r_[np.ones(len(garden_flowers), int), np.zeros(120, int)]
    model, report = relevance.train_relevance(images, y, cfg(width=8, epochs=8), seed=0, progress=False)
    assert report["n_holdout_irrelevant"] == 24
    assert report["auc"] > 0.9, report
    assert report["recall"] > 0.7 and report["precision"] > 0.7, report
    # and unseen crops, drawn afresh
    fresh = relevance.score(model, skimage_crops(60, 32, seed=1))
    assert (fresh < report["threshold"]).mean() > 0.7


# ------------------------------------------------------------------ degenerate labels

@pytest.mark.parametrize(
    ("y", "words"),
    [
        (np.r_[np.ones(10, int), -np.ones(5, int)], "no labelled irrelevant"),
        (np.r_[np.zeros(10, int), -np.ones(5, int)], "no labelled relevant"),
        (-np.ones(15, int), "no labelled irrelevant"),
    ],
)
def test_degenerate_labels_raise_one_line(y, words):
    with pytest.raises(ValueError, match=words) as err:
        relevance.train_relevance(random_images(len(y)), y, TINY, seed=0, progress=False)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("widht", 8, r"^relevance\.widht: unknown key \(did you mean 'width'\?\)$"),
    ("holdout", 1.0, r"^relevance\.holdout: must be <= 0\.9, got 1\.0$"),
])
def test_bad_params_are_one_line_params_errors(key, value, message):
    """A typo or an out-of-range value in params.yaml's relevance section stops the
    params check, before anything trains."""
    p = params_yaml()
    p["relevance"][key] = value
    with pytest.raises(ParamsError, match=message):
        validate(p)


def test_a_holdout_of_everything_raises():
    y = np.r_[np.ones(10, int), np.zeros(5, int)]
    with pytest.raises(ValueError, match="holdout"):
        relevance.train_relevance(random_images(15), y, cfg(holdout=1.0), seed=0, progress=False)


@pytest.mark.parametrize(("n_irrelevant", "holdout"), [(1, 0.2), (5, 0.0)])
def test_no_irrelevant_held_out_reports_nan(n_irrelevant, holdout):
    y = np.r_[np.ones(20, int), np.zeros(n_irrelevant, int)]
    _, report = relevance.train_relevance(random_images(len(y)), y, {**TINY, "holdout": holdout}, seed=0, progress=False)
    assert np.isnan(report["auc"]) and report["n_holdout_irrelevant"] == 0
    assert "no irrelevant" in report["note"]
    assert report["n_train_irrelevant"] == n_irrelevant


# ----------------------------------------------------------------------- real photos

def load_photos(paths: list[Path], size: int) -> np.ndarray:
    return np.stack([fit_square(decode(p.read_bytes(), max_pixels=10**8).pixels, size) for p in paths])


@pytest.mark.realdata
def test_real_flowers_vs_pets():
    flowers_dir, pets_dir = SHARED_DATA / "flowers-128", SHARED_DATA / "pets-160"
    if not (flowers_dir.is_dir() and pets_dir.is_dir()):
        pytest.skip(f"reference photos not found in {SHARED_DATA} (flowers-128, pets-160)")
    rng = np.random.default_rng(0)
    flowers = rng.permutation(sorted(flowers_dir.glob("*/*.jpg")))[:900]
    pets = rng.permutation(sorted(pets_dir.glob("*/*.jpg")))[:500]
    if len(flowers) < 900 or len(pets) < 500:
        pytest.skip(f"expected >= 900 flower and 500 pet photos in {SHARED_DATA}, found {len(flowers)}, {len(pets)}")
    # train on 600 flowers + 300 pets, measure on the 300 + 200 it never saw
    train = load_photos([*flowers[:600], *pets[:300]], 64)
    y = np.r_[np.ones(600, int), np.zeros(300, int)]
    model, _ = relevance.train_relevance(train, y, cfg(holdout=0.0), seed=0, progress=False)
    test = load_photos([*flowers[600:], *pets[300:]], 64)
    p = relevance.score(model, test)
    auc = relevance.roc_auc(np.r_[np.ones(300), np.zeros(200)], p)
    assert auc >= 0.95, f"held-out AUC {auc:.3f}"
