"""Open Images at scale, against a loopback mirror (docs/scale.md).

Generates an Open Images V7 train split in the real file layout: a human-verified
image-labels CSV of about `--csv-mb` MB (the real train CSV is several hundred MB), the
image metadata CSV, and one small distinct JPEG per labelled flower and negative. Then,
in a fresh git+DVC project, `dvc repro download` with data.openimages.max_images = N
against the mirror, and:

- the label CSVs' parse alone (select_images): seconds and peak anonymous memory, at
  the full size and at a tenth of it (flat memory: the CSV is read in chunks);
- the download stage: seconds, images/s, peak RSS and peak anonymous memory;
- `dvc status` and no-op `dvc repro` with N raw files in data/raw (median of 5).

    .venv/bin/python -m bench.openimages_scale [--csv-mb 400] 100000 > reports/openimages_scale.json

Not a test: it asserts only that every image arrived.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.scale import run_measured, timed  # noqa: E402
from tests.conftest import bin_path, make_project  # noqa: E402
from tests.mirror import Mirror  # noqa: E402

FLOWERS = {"/m/0c9ph5": "Flower", "/m/06m11": "Rose", "/m/0ftb8": "Sunflower", "/m/09f20": "Tulip",
           "/m/0jqgx": "Lily", "/m/04gth": "Lavender"}
NEGATIVES = {"/m/01g317": "Person", "/m/0bt9lr": "Dog", "/m/0k2xz": "Baby", "/m/01yrx": "Cat"}
OTHER = [f"/m/0x{k:04x}" for k in range(500)]  # the thousands of other classes the real CSV holds
LABELS = "v7/oidv7-train-annotations-human-imagelabels.csv"
METADATA = "v6/oidv6-train-images-with-labels-with-rotation.csv"
BYTES_PER_ROW = 44  # "0123456789abcdef,verification,/m/0x01f3,1\n"


def tiny_jpeg(k: int) -> bytes:
    """A distinct 24x24 JPEG per k (colour from k's bits): different bytes, ~700 B."""
    import io

    from PIL import Image

    rng = np.random.default_rng(k)
    pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=70)
    return out.getvalue()


def build_mirror(www: Path, n_flowers: int, n_negatives: int, csv_mb: int) -> dict:
    """The annotation CSVs and JPEGs; returns the numbers it made."""
    rng = np.random.default_rng(0)
    ann, img = www / "oi", www / "oi-img" / "train"
    img.mkdir(parents=True)
    (ann / "v7").mkdir(parents=True)
    pd.DataFrame(list({**FLOWERS, **NEGATIVES}.items()) + [(m, f"Other {m}") for m in OTHER],
                 columns=["LabelName", "DisplayName"]).to_csv(ann / "v7/oidv7-class-descriptions.csv", index=False)
    ids = np.array([f"{k:016x}" for k in rng.choice(2**60, n_flowers + n_negatives, replace=False)])
    flower_ids, negative_ids = ids[:n_flowers], ids[n_flowers:]
    # the rows that matter: a verified flower label per flower, a negative label per negative
    wanted = pd.DataFrame({
        "ImageID": np.concatenate([flower_ids, negative_ids]),
        "Source": "verification",
        "LabelName": np.concatenate([rng.choice(list(FLOWERS), n_flowers), rng.choice(list(NEGATIVES), n_negatives)]),
        "Confidence": 1,
    })
    # filler up to the size: other classes, and flower labels verified absent (Confidence 0)
    n_filler = max(csv_mb * 2**20 // BYTES_PER_ROW - len(wanted), 0)
    path = ann / LABELS
    wanted.to_csv(path, index=False)
    block = 1_000_000
    for start in range(0, n_filler, block):
        k = min(block, n_filler - start)
        pd.DataFrame({
            "ImageID": np.char.mod("%016x", rng.integers(0, 2**60, k)),
            "Source": "verification",
            "LabelName": rng.choice(OTHER + list(FLOWERS), k, p=[0.9 / len(OTHER)] * len(OTHER) + [0.1 / len(FLOWERS)] * len(FLOWERS)),
            "Confidence": np.where(rng.random(k) < 0.5, 1, 0),
        }).assign(Confidence=lambda d: np.where(d["LabelName"].isin(list(FLOWERS)), 0, d["Confidence"])
                  ).to_csv(path, mode="a", header=False, index=False)
    (ann / METADATA).parent.mkdir(parents=True)
    pd.DataFrame({"ImageID": ids, "Subset": "train", "OriginalURL": [f"https://flickr.example/{i}" for i in ids],
                  "OriginalLandingURL": "", "License": "https://creativecommons.org/licenses/by/2.0/",
                  "AuthorProfileURL": "", "Author": [f"Author {i[:6]}" for i in ids], "Title": "", "OriginalSize": 0,
                  "OriginalMD5": "", "Thumbnail300KURL": "", "Rotation": 0}).to_csv(ann / METADATA, index=False)
    for k, image_id in enumerate(ids):
        (img / f"{image_id}.jpg").write_bytes(tiny_jpeg(k))
    return {"label_rows": len(wanted) + n_filler, "label_csv_mb": round(path.stat().st_size / 2**20, 1),
            "flowers_labelled": n_flowers, "negatives_labelled": n_negatives}


PARSE = """
import sys
from colorize.sources.openimages import select_images
flowers = {m: m for m in sys.argv[2].split(",")}
negatives = {m: m for m in sys.argv[3].split(",")}
pos, neg = select_images(sys.argv[1], flowers, negatives)
print(len(pos), len(neg))
"""


def parse_cost(csv: Path, rows: int | None) -> dict:
    """select_images alone on the CSV (or on its first `rows` rows): seconds, peak anon MB."""
    if rows is not None:
        part = csv.with_name("part.csv")
        with open(csv) as src, open(part, "w") as dst:
            for _, line in zip(range(rows + 1), src):
                dst.write(line)
        csv = part
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seconds, rss, anon = run_measured([sys.executable, "-c", PARSE, str(csv), ",".join(FLOWERS), ",".join(NEGATIVES)],
                                      ROOT, env)
    return {"csv_mb": round(csv.stat().st_size / 2**20, 1), "seconds": round(seconds, 2),
            "peak_rss_mb": round(rss, 1), "peak_anon_mb": round(anon, 1)}


def main() -> None:
    args = sys.argv[1:]
    csv_mb = 400
    if args[:1] == ["--csv-mb"]:
        csv_mb, args = int(args[1]), args[2:]
    n = int(args[0]) if args else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        made = build_mirror(tmp / "www", n_flowers=n + n // 10, n_negatives=max(n // 50, 10), csv_mb=csv_mb)
        made["build_seconds"] = round(time.perf_counter() - t, 1)
        print(f"openimages_scale: mirror built {made}", file=sys.stderr, flush=True)
        csv = tmp / "www" / "oi" / LABELS
        parse = {"full": parse_cost(csv, None), "tenth": parse_cost(csv, made["label_rows"] // 10)}
        print(f"openimages_scale: parse {parse}", file=sys.stderr, flush=True)
        with Mirror(tmp / "www") as mirror:
            proj = make_project(tmp / "proj", {
                "data.sources": ["openimages"], "data.openimages.splits": ["train"],
                "data.openimages.max_images": n, "data.openimages.max_negatives": max(n // 50, 10),
                "data.openimages.annotations_url": f"{mirror.url}/oi",
                "data.openimages.images_url": f"{mirror.url}/oi-img",
            })
            env = {**os.environ, "COLORIZE_CACHE_DIR": str(tmp / "cache"),
                   "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
            # params first (download depends on its output), as dvc repro would run them
            run_measured([sys.executable, "-m", "colorize.stages.params"], proj, env)
            seconds, rss, anon = run_measured([sys.executable, "-m", "colorize.stages.download"], proj, env)
        listing = pd.read_csv(proj / "data" / "raw" / "listing.csv", dtype=str, keep_default_na=False)
        arrived = int((listing["fetch_error"] == "").sum())
        assert arrived == len(listing) == n + max(n // 50, 10), (arrived, len(listing))
        download = {"seconds": round(seconds, 1), "images_per_s": round(len(listing) / seconds, 1),
                    "peak_rss_mb": round(rss, 1), "peak_anon_mb": round(anon, 1), "files": len(listing)}
        print(f"openimages_scale: download {download}", file=sys.stderr, flush=True)
        committed = subprocess.run([bin_path("dvc"), "commit", "-f", "-q", "params", "download"], cwd=proj, capture_output=True,
                                   text=True, env=env)
        if committed.returncode:
            raise SystemExit(f"openimages_scale: dvc commit failed: {committed.stderr.strip()[-2000:]}")
        status = timed([bin_path("dvc"), "status", "download"], proj)
        noop = timed([bin_path("dvc"), "repro", "download"], proj)
    print(json.dumps({"cpus": os.cpu_count(), "n_images": n, "mirror": made, "parse": parse, "download": download,
                      "raw_files": len(listing),
                      "dvc_status_seconds_median": round(statistics.median(status), 3),
                      "dvc_status_seconds_spread": [round(min(status), 3), round(max(status), 3)],
                      "noop_repro_seconds_median": round(statistics.median(noop), 3),
                      "noop_repro_seconds_spread": [round(min(noop), 3), round(max(noop), 3)]}, indent=2))


if __name__ == "__main__":
    main()
