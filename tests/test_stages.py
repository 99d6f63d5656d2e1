"""Stage logic on a real (small) garden plus a folder source: reconciliation, planted
defects and their reasons, split stability. Runs the stage functions in a temp dir."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from colorize.common.params import validate
from colorize.common.shards import load_images
from colorize.curation import checks, split
from colorize.curation import rules as curate
from colorize.sources import ingest
from colorize.sources.listing import read_listing
from colorize.sources.registry import download
from tests.conftest import ROOT

# The reason each planted garden defect must end with, from the checks that need no
# trained model. Irrelevant photos need the relevance classifier: see test_curation.py.
EXPECTED = {
    "none": ("", ""),
    "zero_byte": ("unreadable", "empty"),
    "not_image": ("unreadable", "not_image"),
    "truncated": ("unreadable", "truncated"),
    "corrupt": ("unreadable", "corrupt"),
    "bomb": ("unreadable", "too_large"),
    "tiny": ("too_small", None),
    "grayscale": ("grayscale", None),
    "png16_gray": ("grayscale", None),
    "sepia": ("tinted", None),
    "tinted": ("tinted", None),
    "png_alpha": ("", ""),
}
# Copies of one picture: exactly one member of each family is kept (see garden_accuracy).
FAMILY_KINDS = {"near_duplicate", "cmyk", "palette"}
LATER_CHECKS = {"irrelevant"}


@pytest.fixture(scope="module")
def params():
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["garden"]["n_images"] = 200
    p["ingest"]["image_size"] = 64  # the checks are calibrated at 64 px
    return validate(p)


@pytest.fixture(scope="module")
def staged(tmp_path_factory, params):
    """download -> ingest -> curate -> split on 200 garden files, plus a user folder."""
    work = tmp_path_factory.mktemp("stages")
    folder = work / "my_photos"
    (folder / "roses").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(folder / "roses" / f"r{i}.jpg")
    (folder / "notes.txt").write_text("not a photo")
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden: not a user file
    p = {**params, "data": {**params["data"], "sources": ["garden", "folder"], "folder": {"path": str(folder)}}}
    n = download(p, work / "raw", work / "raw" / "listing.csv")
    listing = read_listing(work / "raw" / "listing.csv")
    assert n == len(listing) > 200
    ingest.ingest(listing, p, work / "ingest")
    manifest = pd.read_parquet(work / "ingest" / "manifest.parquet")
    ok = manifest[manifest["status"] == "ok"]
    images = load_images(ok, work / "ingest" / "shards")
    curated = curate.curate(manifest, images, p)
    return {"listing": listing, "manifest": manifest, "curated": curated, "images": images, "params": p, "work": work}


def test_listing_written_row_by_row_is_the_csv_of_the_whole_table(staged, tmp_path):
    # download writes each row as its source yields it (memory does not grow with the
    # number of files); the file must be the one pandas wrote of the whole table before.
    written = (tmp_path / "listing.csv")
    staged["listing"].to_csv(written, index=False)
    assert written.read_bytes() == (staged["work"] / "raw" / "listing.csv").read_bytes()
    assert set(staged["listing"]["source"]) == {"garden", "folder"}


def test_ingest_written_in_row_groups_from_listing_blocks_gives_the_same_manifest(staged, tmp_path, monkeypatch):
    """The stage reads the listing a block at a time and writes the manifest a row group
    at a time (so memory does not grow with the files): the result must not depend on
    either size."""
    from colorize.sources.listing import iter_listing

    monkeypatch.setattr(ingest, "ROW_GROUP", 16)
    csv = tmp_path / "listing.csv"
    staged["listing"].to_csv(csv, index=False)  # as the download stage writes it
    report = ingest.ingest(iter_listing(csv, 50), staged["params"], tmp_path / "ingest", total=len(staged["listing"]))
    blocked = pd.read_parquet(tmp_path / "ingest" / "manifest.parquet")
    assert report == ingest.summarise(staged["manifest"])
    pd.testing.assert_frame_equal(blocked, staged["manifest"])
    ok = blocked[blocked["status"] == "ok"]
    assert np.array_equal(load_images(ok, tmp_path / "ingest" / "shards"), staged["images"])


def test_every_file_found_is_accounted_for(staged):
    listing, manifest = staged["listing"], staged["manifest"]
    garden_files = [p for p in (staged["listing"]["path"]) if "/garden/" in p]
    assert len(manifest) == len(listing) == len(garden_files) + 4  # 3 roses + notes.txt
    report = ingest.summarise(manifest)
    assert report["found"] == report["usable"] + report["rejected"] == len(listing)
    assert manifest["id"].is_unique
    c = curate.summarise(staged["curated"])
    assert c["kept"] + sum(c["by_reason"].values()) == c["found"] == len(listing)


def test_folder_rows(staged):
    m = staged["curated"].set_index("relpath")
    assert set(m.loc[m["source"] == "folder"].index) == {"roses/r0.jpg", "roses/r1.jpg", "roses/r2.jpg", "notes.txt"}
    assert (m.loc[["roses/r0.jpg"], "label"] == "roses").all()
    assert m.loc["notes.txt", "reason"] == "unreadable" and m.loc["notes.txt", "detail"] == "not_image"


def test_planted_defects_end_with_the_right_reason(staged):
    garden = staged["curated"][staged["curated"]["source"] == "garden"]
    assert set(garden["defect"]) <= set(EXPECTED) | LATER_CHECKS | FAMILY_KINDS | {"exact_duplicate"}
    for defect, (reason, detail) in EXPECTED.items():
        rows = garden[garden["defect"] == defect]
        assert len(rows), f"no planted {defect} at n=200"
        assert (rows["reason"] == reason).all(), (defect, rows[["relpath", "reason", "detail"]])
        if detail is not None:
            assert (rows["detail"] == detail).all(), (defect, rows["detail"].tolist())


def test_near_duplicate_families_keep_exactly_one(staged):
    acc = curate.garden_accuracy(staged["curated"])["near_duplicate"]
    assert acc["families"] >= 3
    assert acc["resolved"] == acc["families"], acc
    assert acc["dropped_outside_families"] == 0, acc


def test_exact_duplicates_keep_one_copy(staged):
    c = staged["curated"]
    dups = c[c["defect"] == "exact_duplicate"]
    assert len(dups)
    by_relpath = c.set_index("relpath")
    for _, row in dups.iterrows():
        original = by_relpath.loc[row["defect_of"]]
        pair = [row, original]
        assert sum(r["keep"] for r in pair) == 1
        dropped = next(r for r in pair if not r["keep"])
        assert dropped["reason"] == "duplicate"
        assert dropped["duplicate_of"] == next(r for r in pair if r["keep"])["id"]


def test_no_false_drops_among_clean_images(staged):
    c = staged["curated"]
    clean = c[(c["defect"] == "none") & (c["near_dup_group"] < 0)]  # family originals may yield to a copy
    assert clean["keep"].all(), clean.loc[~clean["keep"], ["relpath", "reason", "detail"]]


def test_grayscale_judged_by_chroma_not_mode(params):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    gray = np.repeat(colour[..., :1], 3, axis=-1)
    scores = checks.quality_scores(np.concatenate([colour, gray]))["chroma_p95"]  # what curate's grayscale check reads
    assert scores[0] > params["curate"]["gray_chroma"] > scores[1]


def test_split_is_stable_when_images_are_added():
    groups = pd.Series([f"g{i}" for i in range(2000)])
    full = split.assign(groups, 0.7, 0.15, "salt")
    part = split.assign(groups[:1000], 0.7, 0.15, "salt")
    assert (full[:1000] == part).all()
    shares = full.value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.04 and abs(shares["test"] - 0.15) < 0.04
    assert (split.assign(groups, 0.7, 0.15, "other") != full).any()  # the salt matters


def test_duplicate_groups_stay_in_one_split(staged):
    c = staged["curated"].copy()
    # Force every kept row into a few groups, as near-duplicate grouping will.
    c["group"] = [f"g{i % 7}" for i in range(len(c))]
    s = split.split(c, staged["params"])
    assert (s.groupby("group")["split"].nunique() == 1).all()
    assert len(s) == int(c["keep"].sum())


def test_split_streamed_in_blocks_of_rows_gives_the_table_of_the_whole_manifest(staged, tmp_path):
    # The stage reads and writes the curated manifest a block of rows at a time, so its
    # memory does not grow with the number of images (docs/scale.md); the table must be
    # the one split() makes of the whole manifest, in the same order, with the same types.
    curated = tmp_path / "curated.parquet"
    staged["curated"].to_parquet(curated, index=False)
    out = tmp_path / "split.parquet"
    counts = split.split_file(curated, out, staged["params"], rows=7)
    whole = split.split(pd.read_parquet(curated), staged["params"])
    pd.testing.assert_frame_equal(pd.read_parquet(out), whole)
    assert counts == {s: int((whole["split"] == s).sum()) for s in split.SPLITS}
    assert sum(counts.values()) == len(whole) > 7


def test_curated_manifest_written_a_row_group_at_a_time_is_the_table_of_the_whole(staged, tmp_path):
    # Curate converts its manifest to Arrow a row group at a time (docs/scale.md): the file
    # must read back as the one to_parquet writes of the whole table, types and all.
    import pyarrow.parquet as pq

    from colorize.common.files import write_parquet_in_groups

    curated = staged["curated"]
    whole, groups = tmp_path / "whole.parquet", tmp_path / "groups.parquet"
    curated.to_parquet(whole, index=False)
    write_parquet_in_groups(curated, groups, rows=7)
    assert pq.ParquetFile(groups).metadata.num_row_groups == -(-len(curated) // 7) > 1
    assert pq.read_table(groups).equals(pq.read_table(whole))
    pd.testing.assert_frame_equal(pd.read_parquet(groups), pd.read_parquet(whole))


def test_missing_folder_is_a_one_line_error(params, tmp_path):
    from colorize.common.errors import UserError

    p = {**params, "data": {**params["data"], "sources": ["folder"], "folder": {"path": str(tmp_path / "nope")}}}
    with pytest.raises(UserError, match=r"data.folder.path: .* is not a directory"):
        download(p, tmp_path / "raw", tmp_path / "raw" / "listing.csv")
