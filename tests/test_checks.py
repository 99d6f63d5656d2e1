"""colorize.curation.checks on real pixels: images made here from garden photos, a generated garden
with planted defects (precision/recall against its truth), and real photos (realdata)."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFilter

from colorize.common.images import decode, fit_square
from colorize.common.params import load_params
from colorize.curation import checks
from colorize.curation.rules import thresholds
from colorize.sources import garden
from tests.conftest import ROOT

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZE = 64

# The thresholds the pipeline uses: params.yaml is their one home.
THRESHOLDS = thresholds(load_params(ROOT / "params.yaml")["curate"])
NEAR_DUPLICATE = {"threshold": THRESHOLDS["near_duplicate"], "colour_threshold": THRESHOLDS["near_duplicate_colour"]}


def _more_pixels(widths, heights) -> np.ndarray:
    """Which copy a group keeps, as curate's keep_rank ranks first: more original pixels."""
    return np.asarray(widths, dtype=np.float64) * np.asarray(heights, dtype=np.float64)


def _working(data: bytes) -> tuple[np.ndarray, int, int]:
    d = decode(data, max_pixels=10**8)
    assert d.status == "ok", d.error
    return fit_square(d.pixels, SIZE), d.width, d.height


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> pd.DataFrame:
    """A 300-file garden (seed 3, not used for calibration) with half of it defects, so
    it plants 16 sepia/tinted and 17 near-duplicate copies; usable files decoded to
    working resolution as ingest does."""
    out = tmp_path_factory.mktemp("garden")
    records = garden.generate(out, garden.GardenConfig(n_images=300, seed=3, defect_rate=0.5), progress=False)
    rows = []
    for r in records:
        data = (out / r["path"]).read_bytes()
        d = decode(data, max_pixels=10**8)
        if d.status != "ok":
            continue
        rows.append({**r, "pixels": fit_square(d.pixels, SIZE), "width": d.width, "height": d.height,
                     "sha256": hashlib.sha256(data).hexdigest(), "bytes": data})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def clean(planted) -> pd.DataFrame:
    """24 clean garden photos (colourful, varied species and backgrounds)."""
    return planted[planted["defect"] == "none"].head(24).reset_index(drop=True)


def _stack(frame: pd.DataFrame) -> np.ndarray:
    return np.stack(frame["pixels"].to_list())


# ------------------------------------------------------------------ per-check units

def _sepia(rgb: np.ndarray) -> np.ndarray:
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    return np.uint8(np.clip(rgb.astype(np.float64) @ m.T, 0, 255))


def _tint(rgb: np.ndarray, colour) -> np.ndarray:
    """Luminance times one colour (a photo filter), normalised to keep the brightness."""
    colour = np.asarray(colour, dtype=np.float64) / 255
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.uint8(np.clip(luma[..., None] * colour / (colour @ np.array([0.299, 0.587, 0.114])), 0, 255))


def test_sepia_and_tinted_copies_are_flagged_and_originals_are_not(clean):
    originals = _stack(clean)
    colours = [(255, 140, 60), (80, 140, 255), (120, 255, 120), (255, 90, 200)]
    sepia = np.stack([_sepia(x) for x in originals])
    tinted = np.stack([_tint(x, colours[k % len(colours)]) for k, x in enumerate(originals)])
    flagged = {name: checks.flags(checks.quality_scores(batch), THRESHOLDS)["tinted"].to_numpy()
               for name, batch in (("original", originals), ("sepia", sepia), ("tinted", tinted))}
    assert not flagged["original"].any()
    assert flagged["sepia"].all()
    assert flagged["tinted"].all()


def test_grayscale_images_are_left_to_the_grayscale_check(clean):
    gray = np.repeat(_stack(clean).mean(-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    scores = checks.quality_scores(gray)
    assert (scores["chroma_p95"] < THRESHOLDS["min_chroma"]).all()
    assert not checks.flags(scores, THRESHOLDS)["tinted"].any()


def test_dark_and_overexposed_copies_are_flagged(clean):
    originals = _stack(clean)
    dark = np.uint8(originals * 0.15 + 0.5)  # about -5.5 EV
    washed = np.uint8(255 - (255 - originals.astype(np.float64)) * 0.12)  # washed out
    f_orig = checks.flags(checks.quality_scores(originals), THRESHOLDS)
    f_dark = checks.flags(checks.quality_scores(dark), THRESHOLDS)
    f_washed = checks.flags(checks.quality_scores(washed), THRESHOLDS)
    assert not f_orig["dark"].any() and not f_orig["overexposed"].any()
    assert f_dark["dark"].all() and not f_dark["overexposed"].any()
    assert f_washed["overexposed"].all() and not f_washed["dark"].any()


def test_blurred_copies_are_flagged(clean):
    originals = _stack(clean)
    blurred = np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(2.5))) for x in originals])
    assert not checks.flags(checks.quality_scores(originals), THRESHOLDS)["blurry"].any()
    assert checks.flags(checks.quality_scores(blurred), THRESHOLDS)["blurry"].all()


def test_flat_images_are_low_information():
    rng = np.random.default_rng(0)
    flat = [np.uint8(np.clip(rng.integers(0, 256, 3) + rng.normal(0, sigma, (SIZE, SIZE, 3)), 0, 255))
            for sigma in (0.0, 1.0, 2.0, 3.0, 5.0) for _ in range(4)]
    two_tone = np.zeros((SIZE, SIZE, 3), np.uint8)
    two_tone[:, SIZE // 2:] = 255
    flags = checks.flags(checks.quality_scores(np.stack(flat + [two_tone])), THRESHOLDS)
    assert flags["low_information"].all()


def test_clean_images_are_not_low_information(clean):
    assert not checks.flags(checks.quality_scores(_stack(clean)), THRESHOLDS)["low_information"].any()


def test_odd_aspect_ratio_comes_from_the_original_size(clean):
    images = _stack(clean)[:4]
    scores = checks.quality_scores(images, widths=[400, 100, 120, 128], heights=[100, 400, 100, 128])
    np.testing.assert_allclose(scores["aspect_ratio"], [4.0, 4.0, 1.2, 1.0])
    assert checks.flags(scores, THRESHOLDS)["odd_aspect_ratio"].tolist() == [True, True, False, False]
    # without sizes there is no ratio, and no flag
    assert not checks.flags(checks.quality_scores(images), THRESHOLDS)["odd_aspect_ratio"].any()


def test_scores_do_not_depend_on_the_batch_size(clean):
    images = _stack(clean)
    pd.testing.assert_frame_equal(checks.quality_scores(images, batch=5), checks.quality_scores(images, batch=256),
                                  check_exact=False, rtol=1e-5, atol=1e-6)


def test_other_working_resolutions_are_accepted(clean):
    small = np.stack([np.asarray(Image.fromarray(x).resize((32, 32), Image.BICUBIC)) for x in _stack(clean)[:6]])
    scores = checks.quality_scores(small)
    assert list(scores.columns) == list(checks.SCORE_COLUMNS) and len(scores) == 6
    assert np.isfinite(scores.drop(columns="aspect_ratio").to_numpy()).all()
    group, kept = checks.near_duplicate_groups(small, **NEAR_DUPLICATE)
    assert kept.all()


def test_empty_batch():
    empty = np.zeros((0, SIZE, SIZE, 3), np.uint8)
    assert len(checks.quality_scores(empty)) == 0
    group, kept = checks.near_duplicate_groups(empty, **NEAR_DUPLICATE)
    assert len(group) == 0 and len(kept) == 0


def _copies(data: bytes, rng) -> dict[str, bytes]:
    """Resized, re-encoded and cropped copies of a JPEG, as garden makes them."""
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    factor = rng.uniform(0.6, 0.9)
    keep = rng.uniform(0.8, 0.95)
    cw, ch = round(image.width * keep), round(image.height * keep)
    left, top = int(rng.integers(0, image.width - cw + 1)), int(rng.integers(0, image.height - ch + 1))
    return {
        "resized": _jpeg(image.resize((round(image.width * factor), round(image.height * factor)), Image.BICUBIC)),
        "reencoded": _jpeg(image, int(rng.integers(30, 51))),
        "cropped": _jpeg(image.crop((left, top, left + cw, top + ch))),
    }


def test_copies_are_grouped_with_their_original_which_is_kept(clean):
    rng = np.random.default_rng(1)
    originals = clean.head(12)
    pixels, widths, heights, family, is_original = [], [], [], [], []
    for k, data in enumerate(originals["bytes"]):
        for name, blob in [("original", data), *_copies(data, rng).items()]:
            px, w, h = _working(blob)
            pixels.append(px)
            widths.append(w)
            heights.append(h)
            family.append(k)
            is_original.append(name == "original")
    pixels, widths, heights = np.stack(pixels), np.array(widths), np.array(heights)
    family, is_original = np.array(family), np.array(is_original)
    # more original pixels wins; the re-encoded copy ties with its original, and the
    # first in order (the original, as in the manifest) is kept
    quality = _more_pixels(widths, heights)
    group, kept = checks.near_duplicate_groups(pixels, quality=quality, **NEAR_DUPLICATE)
    for k in range(len(originals)):
        members = np.flatnonzero(family == k)
        assert len(set(group[members])) == 1, f"family {k} split: {group[members]}"
        assert kept[members].tolist() == is_original[members].tolist()
    assert len(set(group)) == len(originals)  # distinct photos stay apart


def test_distinct_photos_are_not_grouped(clean):
    group, kept = checks.near_duplicate_groups(_stack(clean), **NEAR_DUPLICATE)
    assert kept.all() and (group == np.arange(len(clean))).all()


def test_pairs_table_and_groups_from_it(clean):
    images = np.concatenate([_stack(clean)[:4], _stack(clean)[:1]])  # one exact copy
    pairs = checks.near_duplicate_pairs(images)
    assert {"i", "j", "query", "score", "colour_diff"} <= set(pairs.columns)
    assert (pairs["i"] < pairs["j"]).all()
    group, kept = checks.near_duplicate_groups(pairs=pairs, n=len(images), **NEAR_DUPLICATE)
    assert group.tolist() == [0, 1, 2, 3, 0] and kept.tolist() == [True, True, True, True, False]


# ------------------------------------------------------------- the planted garden

def _precision_recall(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = int((flagged & truth).sum())
    return tp / max(int(flagged.sum()), 1), tp / max(int(truth.sum()), 1)


def test_garden_tint_precision_and_recall(planted):
    scores = checks.quality_scores(_stack(planted), planted["width"], planted["height"])
    flags = checks.flags(scores, THRESHOLDS)
    coloured = (scores["chroma_p95"] >= THRESHOLDS["min_chroma"]).to_numpy()
    truth = planted["defect"].isin(["sepia", "tinted"]).to_numpy()
    # Irrelevant photos (scikit-image's) are left out: a crop of the retina, of the
    # coffee table or of the night sky behind the rocket really is one colour.
    irrelevant = (planted["defect"] == "irrelevant").to_numpy()
    judged = coloured & ~irrelevant
    precision, recall = _precision_recall(flags["tinted"].to_numpy()[judged], truth[judged])
    one_colour = planted.loc[irrelevant & flags["tinted"].to_numpy(), "defect_detail"].value_counts().to_dict()
    print(f"tint: {int(truth[judged].sum())} planted, precision {precision:.3f} recall {recall:.3f}; "
          f"irrelevant photos flagged (not counted): {one_colour}")
    assert truth[judged].sum() >= 10
    assert precision >= 0.95 and recall >= 0.95
    # the checks the garden does not plant do not fire on its clean photos
    clean = (planted["defect"] == "none").to_numpy()
    assert not flags[["dark", "overexposed", "blurry", "low_information", "odd_aspect_ratio"]][clean].any().any()


def test_garden_near_duplicate_precision_and_recall(planted):
    images = _stack(planted)
    scores = checks.quality_scores(images, planted["width"], planted["height"])
    # what curate hands over: too small, grayscale, exact duplicates and tinted are gone
    earlier = ((np.minimum(planted["width"], planted["height"]) < 48).to_numpy()
               | (scores["chroma_p95"] < 4.0).to_numpy()
               | planted["sha256"].duplicated().to_numpy()
               | checks.flags(scores, THRESHOLDS)["tinted"].to_numpy())
    rest = planted[~earlier].reset_index(drop=True)
    group, kept = checks.near_duplicate_groups(images[~earlier], quality=_more_pixels(rest["width"], rest["height"]), **NEAR_DUPLICATE)
    flagged = ~kept
    truth = (rest["defect"] == "near_duplicate").to_numpy()
    # Every file garden derives from a clean one records it in defect_of; the CMYK and
    # palette files are such copies too (same photo, other format): grouping them with
    # their original is right, whatever their planted label says.
    # Irrelevant files are random crops of a few scikit-image photos: overlapping crops
    # of one photo are near duplicates too.
    family = np.where(rest["defect_of"] != "", rest["defect_of"],
                      np.where(rest["defect"] == "irrelevant", "skimage:" + rest["defect_detail"], rest["path"]))
    same_family = pd.Series(family).groupby(group).transform(lambda f: f.map(f.value_counts()) > 1).to_numpy()
    precision, recall = _precision_recall(flagged, truth)
    strict_fp = rest.loc[flagged & ~truth, "defect"].value_counts().to_dict()
    print(f"near duplicates: {int(truth.sum())} planted, flagged {int(flagged.sum())}, recall {recall:.3f}, "
          f"precision {precision:.3f} against defect == near_duplicate alone (other flagged: {strict_fp})")
    assert truth.sum() >= 10
    assert recall >= 0.95
    # precision: a flagged file must share its group with a file of its own family
    print(rest.loc[flagged & ~same_family, ["path", "defect", "defect_detail"]].to_string())
    assert (flagged & same_family).sum() / max(flagged.sum(), 1) >= 0.95
    assert (rest.loc[flagged, "defect"] != "none").all()  # no clean original is dropped
    # the original of every planted near duplicate is the one kept
    kept_paths = set(rest.loc[kept, "path"])
    originals = rest.loc[truth, "defect_of"]
    assert all(o in kept_paths for o in originals if o in set(rest["path"]))


def test_near_dup_ann_search_finds_the_exact_search_pairs(planted):
    """The approximate index (used from checks.ANN_FROM images on) against all pairs, on
    the planted garden: every matched pair of the exact search, and each planted copy
    grouped with its original, also found through the index."""
    images = _stack(planted)
    exact = checks.near_duplicate_pairs(images, search="exact")
    ann = checks.near_duplicate_pairs(images, search="ann")

    def matched(pairs):
        m = pairs[(pairs["score"] >= NEAR_DUPLICATE["threshold"])
                  & (pairs["colour_diff"] <= NEAR_DUPLICATE["colour_threshold"])]
        return set(zip(m["i"], m["j"]))

    found, reference = matched(ann), matched(exact)
    assert len(reference) >= 20
    assert len(found & reference) / len(reference) >= 0.98
    assert found <= set(zip(exact["i"], exact["j"]))  # nothing the exact search did not propose
    group, _ = checks.near_duplicate_groups(pairs=ann, n=len(images), **NEAR_DUPLICATE)
    position = {path: k for k, path in enumerate(planted["path"])}
    copies = planted[(planted["defect"] == "near_duplicate") & planted["defect_of"].isin(position)]
    assert len(copies) >= 10
    assert all(group[position[c.path]] == group[position[c.defect_of]] for c in copies.itertuples())


def test_near_dup_ann_search_is_the_same_every_run(planted):
    """A fixed k-means seed and whole-list scans: the same candidates, bit for bit."""
    emb = checks._NearDupData(_stack(planted), 256).emb
    first, second = checks._candidates_ann(emb, 0.9, 6), checks._candidates_ann(emb, 0.9, 6)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert len(first[0]) > 0



def test_near_dup_ann_index_in_blocks_gives_the_candidates_of_one_index():
    """The index holds checks.ANN_BLOCK images at a time (curate's memory stays flat):
    searched block by block and merged, the candidates and similarities are those of one
    index over everything, exact copies (equal similarities) and near copies included."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((3000, len(checks.WINDOWS), 24)).astype(np.float32)
    emb[1500:1800] = emb[:300] + 0.05 * rng.standard_normal((300, len(checks.WINDOWS), 24)).astype(np.float32)
    emb[2000:2100] = emb[:100]  # exact copies: ties at the top_k-th place
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    emb = torch.from_numpy(emb)
    for min_sim in (0.5, 0.9):
        whole = checks._candidates_ann(emb, min_sim, 6, block=10 ** 9)
        blocks = checks._candidates_ann(emb, min_sim, 6, block=700)
        assert len(whole[0]) >= 1000
        assert all(np.array_equal(a, b) for a, b in zip(whole, blocks))


def test_near_dup_data_spilled_to_memory_mapped_files_gives_the_same_pairs(planted, monkeypatch):
    """From checks.SPILL_FROM images on the per-image near-duplicate data lives in
    memory-mapped files (curate's memory stays flat): the same pairs and scores."""
    images = _stack(planted)
    monkeypatch.setattr(checks, "SPILL_FROM", 10 ** 9)
    in_memory = checks.near_duplicate_pairs(images, search="exact")
    monkeypatch.setattr(checks, "SPILL_FROM", 0)
    spilled = checks.near_duplicate_pairs(images, search="exact")
    assert len(in_memory) >= 20
    pd.testing.assert_frame_equal(spilled, in_memory)

# ---------------------------------------------------------------- real photographs

@pytest.mark.realdata
def test_real_flower_photos_have_few_false_positives():
    root = SHARED_DATA / "flowers-128"
    if not root.is_dir():
        pytest.skip(f"reference photos not found at {root} (they live beside the project, not in it)")
    files = [p for cls in ("daisy", "dandelion", "rose", "sunflower", "tulip") for p in sorted((root / cls).glob("*.jpg"))[:100]]
    if len(files) < 100:
        pytest.skip(f"too few photos under {root}")
    decoded = [_working(p.read_bytes()) for p in files]
    images = np.stack([d[0] for d in decoded])
    scores = checks.quality_scores(images, [d[1] for d in decoded], [d[2] for d in decoded])
    flags = checks.flags(scores, THRESHOLDS)
    coloured = (scores["chroma_p95"] >= THRESHOLDS["min_chroma"]).to_numpy()
    rates = flags[coloured].mean()
    group, kept = checks.near_duplicate_groups(images, quality=_more_pixels([d[1] for d in decoded], [d[2] for d in decoded]), **NEAR_DUPLICATE)
    print(f"{len(files)} flower photos, {int(coloured.sum())} colourful; flagged among them: "
          + ", ".join(f"{k} {int(flags[k][coloured].sum())}" for k in flags.columns)
          + f"; near duplicates flagged {int((~kept).sum())}")
    assert rates["tinted"] < 0.05
    assert rates["dark"] < 0.01 and rates["overexposed"] < 0.01 and rates["low_information"] < 0.01
    assert rates["blurry"] < 0.06
    assert (~kept).mean() < 0.03
