"""The garden writes what its truth file says: real files in tmp_path, checked by decoding."""
from __future__ import annotations

import csv
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from colorize.sources.garden import DEFECT_KINDS, SKIMAGE_PHOTOS, SPECIES, TRUTH_FILE, GardenConfig, generate

COLUMNS = ["path", "label", "defect", "defect_detail", "defect_of"]
BROKEN = ("truncated", "corrupt", "zero_byte", "not_image")


@pytest.fixture(scope="module")
def garden(tmp_path_factory):
    out = tmp_path_factory.mktemp("garden")
    records = generate(out, GardenConfig(n_images=200, seed=7), progress=False)
    return out, records


def of_kind(records, kind):
    found = [r for r in records if r["defect"] == kind]
    assert found, f"no {kind} in the garden"
    return found


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def hsv(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").convert("HSV")).astype(np.float64)


def hue_spread_degrees(path: Path) -> float:
    """Circular std of hue over clearly chromatic pixels."""
    pixels = hsv(path)
    chromatic = (pixels[..., 1] > 64) & (pixels[..., 2] > 40)
    angles = pixels[..., 0][chromatic] * 2 * np.pi / 256
    resultant = np.hypot(np.cos(angles).mean(), np.sin(angles).mean())
    return float(np.degrees(np.sqrt(-2 * np.log(resultant))))


def files_in(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir()}


def load(path: Path) -> None:
    with Image.open(path) as image:
        image.load()


# ----------------------------------------------------------------- determinism


def test_same_config_gives_byte_identical_files(tmp_path):
    cfg = GardenConfig(n_images=60, seed=1)
    first = generate(tmp_path / "a", cfg, progress=False)
    second = generate(tmp_path / "b", cfg, progress=False)
    assert first == second
    assert files_in(tmp_path / "a") == files_in(tmp_path / "b")


def test_more_images_only_append_files(tmp_path):
    short = generate(tmp_path / "short", GardenConfig(n_images=60, seed=2), progress=False)
    long = generate(tmp_path / "long", GardenConfig(n_images=120, seed=2), progress=False)
    assert long[: len(short)] == short
    short_files, long_files = files_in(tmp_path / "short"), files_in(tmp_path / "long")
    for record in short:
        assert short_files[record["path"]] == long_files[record["path"]], record


def test_different_seeds_differ(tmp_path):
    generate(tmp_path / "a", GardenConfig(n_images=10, seed=1), progress=False)
    generate(tmp_path / "b", GardenConfig(n_images=10, seed=2), progress=False)
    assert files_in(tmp_path / "a") != files_in(tmp_path / "b")


def test_rerun_into_same_dir_overwrites_and_drops_stale_files(tmp_path):
    generate(tmp_path, GardenConfig(n_images=120, seed=4), progress=False)
    records = generate(tmp_path, GardenConfig(n_images=60, seed=4), progress=False)
    on_disk = {p.name for p in tmp_path.iterdir()} - {TRUTH_FILE}
    assert on_disk == {r["path"] for r in records}


# ----------------------------------------------------------------- the listing


def test_every_kind_present_and_records_match_files(garden):
    out, records = garden
    assert {r["defect"] for r in records} == set(DEFECT_KINDS)
    assert all(list(r) == COLUMNS for r in records)
    assert [r["path"] for r in records] == sorted(r["path"] for r in records)
    on_disk = {p.name for p in out.iterdir()} - {TRUTH_FILE}
    assert on_disk == {r["path"] for r in records}
    assert len(records) == 200
    counts = Counter(r["defect"] for r in records)
    assert counts["none"] > 0.75 * len(records)


def test_truth_csv_holds_the_records(garden):
    out, records = garden
    with open(out / TRUTH_FILE, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        assert list(reader) == records


def test_file_names_do_not_reveal_the_defect(garden):
    _, records = garden
    for record in records:
        assert record["path"].startswith("img_"), record
        assert record["defect"] not in record["path"]


def test_labels_and_originals(garden):
    _, records = garden
    by_path = {r["path"]: r for r in records}
    for record in records:
        kind = record["defect"]
        if kind == "none":
            assert record["label"] in SPECIES and record["defect_of"] == ""
        elif kind == "irrelevant":
            assert record["label"] == "irrelevant" and record["defect_detail"] in SKIMAGE_PHOTOS
        elif kind in ("zero_byte", "not_image", "bomb"):
            assert record["label"] == "" and record["defect_of"] == ""
        else:  # a copy: points at a clean original and carries its species
            original = by_path[record["defect_of"]]
            assert original["defect"] == "none", record
            assert record["label"] == original["label"], record
            assert original["path"] < record["path"]  # originals come first: prefix stability


@pytest.mark.parametrize("n", [1, 10, 40])
def test_small_gardens_are_mostly_clean(tmp_path, n):
    records = generate(tmp_path, GardenConfig(n_images=n), progress=False)
    assert len(records) == n
    clean = sum(r["defect"] == "none" for r in records)
    assert clean >= 0.6 * n
    if n == 40:
        assert clean < n  # still a mix


def test_zero_defect_rate_gives_only_clean_images(tmp_path):
    records = generate(tmp_path, GardenConfig(n_images=30, defect_rate=0.0), progress=False)
    assert {r["defect"] for r in records} == {"none"}


def test_sizes_follow_the_config(tmp_path):
    records = generate(tmp_path, GardenConfig(n_images=20, min_size=40, max_size=64, defect_rate=0.0),
                       progress=False)
    for record in records:
        with Image.open(tmp_path / record["path"]) as image:
            assert all(40 <= side <= 64 for side in image.size)


@pytest.mark.parametrize("cfg", [GardenConfig(n_images=0), GardenConfig(seed=-1),
                                 GardenConfig(min_size=100, max_size=90), GardenConfig(defect_rate=1.5)])
def test_bad_config_is_refused(tmp_path, cfg):
    with pytest.raises(ValueError):
        generate(tmp_path, cfg, progress=False)


# ---------------------------------------------------------- each truth is real


def test_clean_images_decode_at_garden_sizes(garden):
    out, records = garden
    for record in of_kind(records, "none"):
        with Image.open(out / record["path"]) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert all(96 <= side <= 128 for side in image.size)


def test_grayscale_copies_have_equal_channels(garden):
    out, records = garden
    for record in of_kind(records, "grayscale"):
        pixels = rgb(out / record["path"])
        assert (pixels.max(axis=2) - pixels.min(axis=2)).max() <= 3, record
    clean = rgb(out / of_kind(records, "none")[0]["path"])
    assert (clean.max(axis=2) - clean.min(axis=2)).max() > 30


def test_sepia_and_tinted_concentrate_chroma_on_one_hue(garden):
    out, records = garden
    for record in of_kind(records, "sepia") + of_kind(records, "tinted"):
        assert hue_spread_degrees(out / record["path"]) < 10, record
    clean_spreads = [hue_spread_degrees(out / r["path"]) for r in of_kind(records, "none")]
    assert np.median(clean_spreads) > 20


def test_exact_duplicates_are_byte_identical(garden):
    out, records = garden
    for record in of_kind(records, "exact_duplicate"):
        assert (out / record["path"]).read_bytes() == (out / record["defect_of"]).read_bytes()


def test_near_duplicates_match_their_variant(garden):
    out, records = garden
    for record in of_kind(records, "near_duplicate"):
        variant = record["defect_detail"].split()[0]
        assert variant in ("resized", "reencoded", "cropped"), record
        with Image.open(out / record["path"]) as copy, Image.open(out / record["defect_of"]) as original:
            copy.load()
            ratio = copy.width / original.width
            if variant == "reencoded":
                assert copy.size == original.size
                assert (out / record["path"]).read_bytes() != (out / record["defect_of"]).read_bytes()
            elif variant == "resized":
                assert 0.55 <= ratio <= 0.92
            else:
                assert 0.78 <= ratio <= 0.97


def test_broken_files_fail_to_load(garden):
    out, records = garden
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for kind in BROKEN:
        for record in of_kind(records, kind):
            with pytest.raises(Exception):
                load(out / record["path"])


def test_truncated_is_a_prefix_of_its_original(garden):
    out, records = garden
    for record in of_kind(records, "truncated"):
        data, original = (out / record["path"]).read_bytes(), (out / record["defect_of"]).read_bytes()
        assert 0.35 * len(original) <= len(data) <= 0.75 * len(original)
        assert original.startswith(data)
        with pytest.raises(OSError, match="truncated"):
            load(out / record["path"])


def test_zero_byte_and_not_image_contents(garden):
    out, records = garden
    for record in of_kind(records, "zero_byte"):
        assert (out / record["path"]).stat().st_size == 0
    for record in of_kind(records, "not_image"):
        assert record["path"].endswith(".jpg")
        assert (out / record["path"]).read_bytes().lower().startswith(b"<!doctype html>")


def test_tiny_images_are_tiny(garden):
    out, records = garden
    for record in of_kind(records, "tiny"):
        with Image.open(out / record["path"]) as image:
            assert 16 <= max(image.size) <= 40, record


def test_bomb_declares_huge_size_and_is_refused(garden):
    out, records = garden
    for record in of_kind(records, "bomb"):
        data = (out / record["path"]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width * height > 2 * Image.MAX_IMAGE_PIXELS
        assert len(data) < 1_000_000  # small on disk, huge once decoded
        with pytest.raises(Image.DecompressionBombError):
            Image.open(out / record["path"])


def test_awkward_formats_decode(garden):
    out, records = garden
    expected_modes = {"cmyk": {"CMYK"}, "png_alpha": {"RGBA"}, "png16_gray": {"I;16", "I"}, "palette": {"P"}}
    for kind, modes in expected_modes.items():
        for record in of_kind(records, kind):
            with Image.open(out / record["path"]) as image:
                image.load()
                assert image.mode in modes, record
                pixels = np.asarray(image)
                if kind == "png_alpha":
                    alpha = pixels[..., 3]
                    assert (alpha == 255).any() and (alpha < 128).mean() > 0.1
                if kind == "png16_gray":
                    assert pixels.max() > 255  # really uses 16 bits


def test_irrelevant_photos_are_at_garden_sizes(garden):
    out, records = garden
    for record in of_kind(records, "irrelevant"):
        with Image.open(out / record["path"]) as image:
            image.load()
            assert image.mode == "RGB" and all(96 <= side <= 128 for side in image.size)


# ---------------------------------------------------------- learnable colour

# Hue bands (Pillow HSV hue, in degrees) where each species' petals sit, and a
# "white" test for daisies.
SIGNATURES = {
    "sunflower": (38, 60),
    "poppy": (-15, 12),
    "cornflower": (221, 250),
    "lavender": (255, 300),
    "tulip": (12, 35),
}


def signature_share(path: Path, species: str) -> float:
    pixels = hsv(path)
    if species == "daisy":
        return float(((pixels[..., 1] < 40) & (pixels[..., 2] > 200)).mean())
    hue = pixels[..., 0] * 360 / 256
    hue = np.where(hue > 345, hue - 360, hue)
    lo, hi = SIGNATURES[species]
    return float(((pixels[..., 1] > 100) & (pixels[..., 2] > 60) & (hue >= lo) & (hue < hi)).mean())


def test_species_have_distinct_colours(garden):
    """Each species' petal colour is far more common in its images than in any other's."""
    out, records = garden
    clean = of_kind(records, "none")
    for species in SPECIES:
        share = {
            other: np.mean([signature_share(out / r["path"], species) for r in clean if r["label"] == other])
            for other in SPECIES
        }
        runner_up = max(v for k, v in share.items() if k != species)
        assert share[species] > 1.5 * runner_up, (species, share)
