"""Downloads against a real loopback HTTP server (tests/mirror.py), no mocks: resume,
404, checksum mismatch, no network, disk full, warm cache, safe extraction, and the
Flowers-102 and Open Images sources end to end, on data built here in their formats."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy.io import savemat

from colorize.common import fetch
from colorize.common.archive import ArchiveError, extract_tar
from colorize.common.errors import UserError
from colorize.common.fetch import DownloadError, Transfer
from colorize.common.params import validate
from tests.conftest import ROOT, TINY, bin_path, make_project, run
from tests.mirror import Mirror

FAST = Transfer(workers=4, connect_timeout=2, read_timeout=5, retries=2, backoff=0.0)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def jpeg(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, 1, 3)) + rng.integers(-30, 30, (size[1], size[0], 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ----------------------------------------------------------------------------- fetch


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(300_000))
    with Mirror(root) as m:
        yield m


def test_fetch_and_warm_cache(mirror):
    data = (mirror.root / "big.bin").read_bytes()
    path = fetch.fetch(f"{mirror.url}/big.bin", md5=md5(data), transfer=FAST)
    assert path.read_bytes() == data
    assert fetch.fetch(f"{mirror.url}/big.bin", md5=md5(data), transfer=FAST) == path
    assert mirror.requests["big.bin"] == 1  # the second call asked for nothing


def test_dropped_connection_resumes_with_range(mirror):
    data = (mirror.root / "big.bin").read_bytes()
    mirror.drop_after["big.bin"] = 100_000
    path = fetch.fetch(f"{mirror.url}/big.bin", sha256=hashlib.sha256(data).hexdigest(), transfer=FAST)
    assert path.read_bytes() == data
    assert mirror.requests["big.bin"] == 2
    # The resume asks for the rest from what reached the disk (whole chunks before the drop).
    [(path_seen, header)] = mirror.ranges_seen
    start = int(header.removeprefix("bytes=").rstrip("-"))
    assert path_seen == "big.bin" and 0 < start <= 100_000


def test_404_is_one_clear_line(mirror):
    with pytest.raises(DownloadError) as err:
        fetch.fetch(f"{mirror.url}/missing.tgz", transfer=FAST)
    msg = str(err.value)
    assert f"{mirror.url}/missing.tgz" in msg and "HTTP 404" in msg and "\n" not in msg
    assert mirror.requests["missing.tgz"] == 1  # a 404 is not retried


def test_checksum_mismatch_leaves_nothing(mirror, cache):
    url = f"{mirror.url}/big.bin"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch.fetch(url, md5="0" * 32, transfer=FAST)
    assert not fetch.cached_path(url).exists()
    assert not list(cache.rglob("*.part"))


def test_no_network(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(DownloadError) as err:
        fetch.fetch(f"http://127.0.0.1:{port}/x.tgz", transfer=FAST)
    msg = str(err.value)
    assert "cannot connect" in msg and f"127.0.0.1:{port}/x.tgz" in msg and "3 attempts" in msg


def test_disk_full(mirror):
    url = f"{mirror.url}/big.bin"
    part = fetch.cached_path(url).with_name("big.bin.part")
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(DownloadError, match="disk full"):
        fetch.fetch(url, transfer=FAST)


def test_fetch_many_records_failures_when_asked(mirror):
    results = fetch.fetch_many(
        [{"url": f"{mirror.url}/big.bin"}, {"url": f"{mirror.url}/nope.jpg"}], FAST, fail_fast=False, progress=False
    )
    assert results[0].path is not None and results[1].path is None and "HTTP 404" in results[1].error


# ----------------------------------------------------------------------------- archives


def make_tar(path, members: dict[str, bytes], links: dict[str, str] | None = None, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)


@pytest.mark.parametrize("evil", ["../x", "/etc/x", "a/../../x"])
def test_tar_members_outside_target_refused(tmp_path, evil):
    make_tar(tmp_path / "a.tgz", {"ok.txt": b"fine", evil: b"pwned"})
    with pytest.raises(ArchiveError, match="refusing member"):
        extract_tar(tmp_path / "a.tgz", tmp_path / "out" / "t", max_bytes=10**6)
    assert not (tmp_path / "x").exists() and not (tmp_path / "out" / "x").exists()
    assert not (tmp_path / "out" / "t").exists()  # nothing half-extracted is left


def test_tar_links_pointing_out_refused(tmp_path):
    make_tar(tmp_path / "a.tgz", {"ok.txt": b"fine"}, links={"passwd": "/etc/passwd"})
    with pytest.raises(ArchiveError, match="refusing link"):
        extract_tar(tmp_path / "a.tgz", tmp_path / "t", max_bytes=10**6)
    make_tar(tmp_path / "b.tgz", {"ok.txt": b"fine"}, links={"up": "../../secret"})
    with pytest.raises(ArchiveError, match="refusing link"):
        extract_tar(tmp_path / "b.tgz", tmp_path / "t", max_bytes=10**6)


def test_tar_size_limit_and_truncation(tmp_path):
    make_tar(tmp_path / "a.tgz", {"a.bin": os.urandom(5000), "b.bin": os.urandom(5000)})
    with pytest.raises(ArchiveError, match="more than 8000 bytes"):
        extract_tar(tmp_path / "a.tgz", tmp_path / "t", max_bytes=8000)
    data = (tmp_path / "a.tgz").read_bytes()
    (tmp_path / "cut.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        extract_tar(tmp_path / "cut.tgz", tmp_path / "t", max_bytes=10**6)
    names = extract_tar(tmp_path / "a.tgz", tmp_path / "t", max_bytes=10**6)
    assert names == ["a.bin", "b.bin"] and (tmp_path / "t" / "a.bin").stat().st_size == 5000


# ----------------------------------------------------------------------------- flowers102


def flower_photos(n: int, workdir) -> list[bytes]:
    """n clean flower JPEGs (the garden's), which pass curation like real photos would."""
    from colorize.sources.garden import GardenConfig, generate

    records = generate(workdir, GardenConfig(n_images=2 * n + 10, seed=7), progress=False)
    clean = [r["path"] for r in records if r["defect"] == "none"][:n]
    assert len(clean) == n
    return [(workdir / p).read_bytes() for p in clean]


def build_flowers102(root, n=30):
    """Files in the official format: jpg/image_%05d.jpg in a .tgz, and the two .mat files."""
    root.mkdir(parents=True, exist_ok=True)
    photos = flower_photos(n, root.parent / "garden-src")
    images = {f"jpg/image_{i:05d}.jpg": photos[i - 1] for i in range(1, n + 1)}
    make_tar(root / "102flowers.tgz", images)
    labels = np.array([[1 + (i * 7) % 102 for i in range(n)]], dtype=np.uint8)
    savemat(root / "imagelabels.mat", {"labels": labels})
    idx = np.arange(1, n + 1)
    savemat(root / "setid.mat", {"trnid": idx[:10][None], "valid": idx[10:20][None], "tstid": idx[20:][None]})
    return {
        "images": md5((root / "102flowers.tgz").read_bytes()),
        "labels": md5((root / "imagelabels.mat").read_bytes()),
        "setid": md5((root / "setid.mat").read_bytes()),
    }, labels.ravel()


def flowers_data(mirror_url, checksums):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["sources"] = ["flowers102"]
    p["data"]["flowers102"] = {"base_url": f"{mirror_url}/vgg", "md5": checksums}
    p["data"]["download"].update({"retries": 1, "backoff": 0.0})
    return validate(p)["data"]


def test_flowers102_source(tmp_path):
    from colorize.sources.flowers102 import CLASS_NAMES, fetch_flowers102

    checksums, labels = build_flowers102(tmp_path / "www" / "vgg")
    with Mirror(tmp_path / "www") as m:
        rows = fetch_flowers102(flowers_data(m.url, checksums), tmp_path / "raw")
        assert len(rows) == 30
        by = {r.relpath: r for r in rows}
        r = by["jpg/image_00003.jpg"]
        assert r.class_id == labels[2] and r.label == CLASS_NAMES[labels[2] - 1]
        assert [by[f"jpg/image_{i:05d}.jpg"].official_split for i in (1, 11, 21)] == ["train", "val", "test"]
        assert (tmp_path / "raw" / "jpg" / "image_00030.jpg").exists()
        first = m.total_requests()
        fetch_flowers102(flowers_data(m.url, checksums), tmp_path / "raw2")
        assert m.total_requests() == first == 3  # warm cache: not one request more


def test_flowers102_bad_checksum_and_truncated_archive(tmp_path):
    from colorize.sources.flowers102 import fetch_flowers102

    checksums, _ = build_flowers102(tmp_path / "www" / "vgg")
    with Mirror(tmp_path / "www") as m:
        with pytest.raises(DownloadError, match="102flowers.tgz: checksum mismatch"):
            fetch_flowers102(flowers_data(m.url, {**checksums, "images": "f" * 32}), tmp_path / "raw")
        tgz = tmp_path / "www" / "vgg" / "102flowers.tgz"
        cut = tgz.read_bytes()[: tgz.stat().st_size // 2]
        tgz.write_bytes(cut)
        with pytest.raises(ArchiveError, match="truncated or corrupt"):
            fetch_flowers102(flowers_data(m.url, {**checksums, "images": md5(cut)}), tmp_path / "raw")


# ----------------------------------------------------------------------------- openimages

OI_CLASSES = [
    ("/m/0c9ph5", "Flower"), ("/m/06m11", "Rose"), ("/m/0ftb8", "Sunflower"), ("/m/09f20", "Tulip"),
    ("/m/0jqgx", "Lily"), ("/m/04gth", "Lavender"), ("/m/01g317", "Person"), ("/m/0bt9lr", "Dog"),
    ("/m/0k2xz", "Baby"), ("/m/01yrx", "Cat"), ("/m/0dj6p", "Sunflower seed"),
]


def build_openimages(root, version="v7"):
    """Open Images-format CSVs and JPEGs for the validation split."""
    ann, img = root / "oi", root / "oi-img" / "validation"
    img.mkdir(parents=True)
    desc = {"v7": "v7/oidv7-class-descriptions.csv", "v6": "v6/oidv6-class-descriptions.csv"}[version]
    (ann / desc).parent.mkdir(parents=True)
    pd.DataFrame(OI_CLASSES, columns=["LabelName", "DisplayName"]).to_csv(ann / desc, index=False)
    rows, meta = [], []
    mids = dict((name, mid) for mid, name in OI_CLASSES)
    plan = {
        **{f"f{i:03d}": [("Rose", 1)] for i in range(12)},
        "tul001": [("Tulip", 1)],
        "unsure": [("Rose", 0)],  # verified as NOT a rose: must not be selected
        "dogrose": [("Dog", 1), ("Rose", 1)],  # a flower image, not a negative
        **{f"dog{i:02d}": [("Dog", 1)] for i in range(5)},
        "other": [("Sunflower seed", 1)],
    }
    for image_id, labels in plan.items():
        for name, conf in labels:
            rows.append({"ImageID": image_id, "Source": "verification", "LabelName": mids[name], "Confidence": conf})
        meta.append({"ImageID": image_id, "Subset": "validation", "OriginalURL": f"https://flickr.example/{image_id}",
                     "OriginalLandingURL": "", "License": "https://creativecommons.org/licenses/by/2.0/",
                     "AuthorProfileURL": "", "Author": f"Author {image_id}", "Title": "", "OriginalSize": 0,
                     "OriginalMD5": "", "Thumbnail300KURL": "", "Rotation": 0})
        if image_id != "f011":  # one image missing from the bucket
            (img / f"{image_id}.jpg").write_bytes(jpeg(hash(image_id) % 1000))
    labels_path = {"v7": "v7/oidv7-val-annotations-human-imagelabels.csv", "v6": "v5/validation-annotations-human-imagelabels.csv"}[version]
    (ann / labels_path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(ann / labels_path, index=False)
    (ann / "2018_04/validation").mkdir(parents=True)
    pd.DataFrame(meta).to_csv(ann / "2018_04/validation/validation-images-with-rotation.csv", index=False)


def oi_data(url, **over):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["sources"] = ["openimages"]
    p["data"]["openimages"].update({"annotations_url": f"{url}/oi", "images_url": f"{url}/oi-img",
                                    "splits": ["validation"], "max_images": 10, "max_negatives": 3, **over})
    p["data"]["download"].update({"retries": 1, "backoff": 0.0})
    return validate(p)["data"]


@pytest.mark.parametrize("version", ["v7", "v6"])
def test_openimages_source(tmp_path, version):
    from colorize.sources.openimages import fetch_openimages

    build_openimages(tmp_path / "www", version)
    with Mirror(tmp_path / "www") as m:
        rows = fetch_openimages(oi_data(m.url, version=version), tmp_path / "raw")
        flowers = [r for r in rows if not r.negative]
        negatives = [r for r in rows if r.negative]
        assert len(flowers) == 10 and len(negatives) == 3
        ids = {r.relpath.split("/")[1][:-4] for r in rows}
        assert "unsure" not in ids and "other" not in ids  # Confidence 0 and other classes
        assert all(r.relpath.split("/")[1].startswith("dog") and r.label == "Dog" for r in negatives)
        assert "dogrose" not in {r.relpath.split("/")[1][:-4] for r in negatives}
        r = next(r for r in flowers if r.fetch_error == "")
        assert r.author.startswith("Author ") and r.license.endswith("/by/2.0/") and r.original_url.startswith("https://")
        assert (tmp_path / "raw" / r.relpath).exists()
        again = fetch_openimages(oi_data(m.url, version=version), tmp_path / "raw2")
        assert [x.relpath for x in again] == [x.relpath for x in rows]  # seeded sampling
        other_seed = fetch_openimages(oi_data(m.url, version=version, seed=1), tmp_path / "raw3")
        assert {x.relpath for x in other_seed if not x.negative} != {x.relpath for x in flowers}


def test_openimages_missing_image_recorded_not_lost(tmp_path):
    from colorize.sources.openimages import fetch_openimages

    build_openimages(tmp_path / "www")
    with Mirror(tmp_path / "www") as m:
        rows = fetch_openimages(oi_data(m.url, max_images=100), tmp_path / "raw")
    missing = [r for r in rows if r.relpath == "validation/f011.jpg"]
    assert len(missing) == 1 and "HTTP 404" in missing[0].fetch_error


def test_openimages_unknown_class_lists_close_matches(tmp_path):
    from colorize.sources.openimages import fetch_openimages

    build_openimages(tmp_path / "www")
    with Mirror(tmp_path / "www") as m:
        with pytest.raises(UserError) as err:
            fetch_openimages(oi_data(m.url, classes=["Sunflowr"]), tmp_path / "raw")
    msg = str(err.value)
    assert msg.startswith("data.openimages.classes: 'Sunflowr' is not an Open Images class")
    assert "Sunflower" in msg and "\n" not in msg


# ----------------------------------------------------------------------------- dvc repro


@pytest.mark.slow
def test_dvc_repro_flowers102_from_mirror_then_warm_cache(tmp_path):
    checksums, _ = build_flowers102(tmp_path / "www" / "vgg", n=40)
    with Mirror(tmp_path / "www") as m:
        proj = make_project(tmp_path / "proj", {
            **TINY,
            "data.sources": ["flowers102"],
            "data.flowers102.base_url": f"{m.url}/vgg",
            "data.flowers102.md5": checksums,
        })
        env = {fetch.CACHE_ENV: str(tmp_path / "dvc-cache-downloads")}
        run([bin_path("dvc"), "repro"], proj, env=env)
        metrics = json.loads((proj / "reports" / "metrics.json").read_text())
        assert metrics["n_test"] > 0 and "psnr_lookup" in metrics
        manifest = pd.read_parquet(proj / "data" / "ingest" / "manifest.parquet")
        assert len(manifest) == 40 and set(manifest["official_split"]) == {"train", "val", "test"}
        assert (manifest["class_id"] > 0).all()
        requests_after_first = m.total_requests()
        run([bin_path("dvc"), "repro", "--force", "download"], proj, env=env)
        assert m.total_requests() == requests_after_first  # zero requests with a warm cache


@pytest.mark.slow
def test_dvc_repro_garden_plus_folder(tmp_path):
    folder = tmp_path / "photos" / "roses"
    folder.mkdir(parents=True)
    for i in range(6):
        (folder / f"r{i}.jpg").write_bytes(jpeg(100 + i, (64, 48)))
    proj = make_project(tmp_path / "proj", {**TINY, "data.sources": ["garden", "folder"],
                                            "data.folder.path": str(tmp_path / "photos")})
    run([bin_path("dvc"), "repro"], proj)
    ingest = json.loads((proj / "reports" / "ingest.json").read_text())
    assert ingest["by_source"] == {"folder": 6, "garden": TINY["data.garden.n_images"]}
    # A new photo in the folder reruns the pipeline from download.
    (folder / "r9.jpg").write_bytes(jpeg(999, (64, 48)))
    out = run([bin_path("dvc"), "repro"], proj)
    assert "Running stage 'download'" in out.stdout


@pytest.mark.slow
def test_dvc_repro_tracks_the_listing_not_every_raw_file(tmp_path):
    """DVC's output of download is the listing alone (one file to hash at any size); the
    raw files are a working copy. Gone (a fresh clone after `dvc pull`), ingest downloads
    them again and gets the same manifest; changed since the download, a file is rejected
    with its reason, not decoded as if it were the one listed."""
    proj = make_project(tmp_path / "proj", TINY)
    run([bin_path("dvc"), "repro", "ingest"], proj)
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    assert [o["path"] for o in lock["stages"]["download"]["outs"]] == ["data/raw/listing.csv"]
    listing = pd.read_csv(proj / "data" / "raw" / "listing.csv", dtype=str, keep_default_na=False)
    readable = listing["sha256"] != ""
    assert readable.sum() >= 100
    assert [int(b) for b in listing.loc[readable, "bytes"]] == [(proj / p).stat().st_size for p in listing.loc[readable, "path"]]
    before = pd.read_parquet(proj / "data" / "ingest" / "manifest.parquet")

    shutil.rmtree(proj / "data" / "raw" / "garden")
    out = run([bin_path("dvc"), "repro", "--force", "--single-item", "ingest"], proj)
    assert "downloading them again" in out.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(proj / "data" / "ingest" / "manifest.parquet"), before)

    victim = before[before["status"] == "ok"].iloc[0]
    Path(proj / victim["path"]).write_bytes(jpeg(7, (50, 40)))  # replaced since the download
    run([bin_path("dvc"), "repro", "--force", "--single-item", "ingest"], proj)
    after = pd.read_parquet(proj / "data" / "ingest" / "manifest.parquet").set_index("path")
    assert len(after) == len(before)  # counts reconcile: the file keeps its row
    row = after.loc[victim["path"]]
    assert row["status"] == "changed_since_download" and "dvc repro -f download" in row["error"]
    report = json.loads((proj / "reports" / "ingest.json").read_text())
    assert report["by_status"]["changed_since_download"] == 1
