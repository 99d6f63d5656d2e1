"""Google Open Images (V7 by default, V6 selectable): flower photos and negatives.

1. Class names from `data.openimages.classes` are resolved to MIDs through the
   class-descriptions CSV (any class, boxable or not: Tulip is not boxable).
2. Images are selected by their human-verified image-level labels (Confidence = 1) in
   the chosen splits; negatives are images verified to show a negative class (Person,
   Dog, Baby, Cat, ...) and none of the flower classes.
3. `max_images` flowers and `max_negatives` negatives are sampled with a seed.
4. Images come from the public bucket (`{images_url}/{split}/{ImageID}.jpg`) through the
   download cache; a failed image keeps its row with the error (never lost silently).
5. Attribution (Author, License, OriginalURL) and the verified labels go in the
   manifest: the images are CC BY 2.0 and users must credit them.

The large CSVs are read in chunks (pyarrow blocks for the labels, pandas chunks for the
metadata), so memory stays flat whatever the split's size.
"""
from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from colorize.common.errors import UserError
from colorize.common.fetch import Transfer, fetch_many
from colorize.sources.listing import Row

SPLITS = ("train", "validation", "test")

# Paths under data.openimages.annotations_url, per version.
CLASS_DESCRIPTIONS = {"v7": "v7/oidv7-class-descriptions.csv", "v6": "v6/oidv6-class-descriptions.csv"}
IMAGE_LABELS = {
    "v7": {
        "train": "v7/oidv7-train-annotations-human-imagelabels.csv",
        "validation": "v7/oidv7-val-annotations-human-imagelabels.csv",
        "test": "v7/oidv7-test-annotations-human-imagelabels.csv",
    },
    "v6": {
        "train": "v6/oidv6-train-annotations-human-imagelabels.csv",
        "validation": "v5/validation-annotations-human-imagelabels.csv",
        "test": "v5/test-annotations-human-imagelabels.csv",
    },
}
IMAGE_METADATA = {  # the same image metadata serves both versions
    "train": "v6/oidv6-train-images-with-labels-with-rotation.csv",
    "validation": "2018_04/validation/validation-images-with-rotation.csv",
    "test": "2018_04/test/test-images-with-rotation.csv",
}
CHUNK_ROWS = 1_000_000  # rows per pandas chunk of the metadata CSV
# Bytes per pyarrow block of the label CSVs, read on one thread: the peak grows with the
# block (16 MB blocks: 226 -> 537 MB from a 38 to a 381 MB CSV; 1 MB blocks stay flat,
# and are faster here). bench/openimages_scale.py measures it.
CSV_BLOCK_BYTES = 1 << 20


def resolve_classes(descriptions: pd.DataFrame, names: list[str], key: str) -> dict[str, str]:
    """Display names -> {MID: display name}; unknown names fail with close matches."""
    by_lower: dict[str, list[str]] = {}
    for mid, display in zip(descriptions["LabelName"], descriptions["DisplayName"]):
        by_lower.setdefault(str(display).lower(), []).append(mid)
    out = {}
    all_names = descriptions["DisplayName"].astype(str).tolist()
    for name in names:
        mids = by_lower.get(name.lower())
        if not mids:
            close = difflib.get_close_matches(name, all_names, n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise UserError(f"{key}: {name!r} is not an Open Images class{hint}")
        out.update({m: name for m in mids})
    return out


def select_images(labels_csv: Path, positive: dict[str, str], negative: dict[str, str]) -> tuple[dict, dict]:
    """Scan verified labels; return ({ImageID: [flower names]}, {ImageID: [negative names]}).

    The CSV is streamed in blocks of CSV_BLOCK_BYTES by pyarrow and filtered there (a
    verified label of a wanted class): memory is one block plus the rows kept, whatever
    the file's size (the train split's is several hundred MB; docs/scale.md)."""
    pos: dict[str, set] = {}
    neg: dict[str, set] = {}
    wanted = pa.array(sorted(set(positive) | set(negative)), pa.string())
    reader = pa_csv.open_csv(labels_csv, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
                             convert_options=pa_csv.ConvertOptions(
                                 include_columns=["ImageID", "LabelName", "Confidence"],
                                 column_types={"ImageID": pa.string(), "LabelName": pa.string(), "Confidence": pa.float64()}))
    for block in reader:
        keep = pc.and_(pc.equal(block.column("Confidence"), 1.0), pc.is_in(block.column("LabelName"), value_set=wanted))
        kept = block.filter(keep)
        for image_id, mid in zip(kept.column("ImageID").to_pylist(), kept.column("LabelName").to_pylist()):
            if mid in positive:
                pos.setdefault(image_id, set()).add(positive[mid])
            else:
                neg.setdefault(image_id, set()).add(negative[mid])
    neg = {i: v for i, v in neg.items() if i not in pos}  # a dog among roses is not a negative
    return {i: sorted(v) for i, v in pos.items()}, {i: sorted(v) for i, v in neg.items()}


def sample(ids: list[str], k: int, seed: int, stream: int) -> list[str]:
    ids = sorted(ids)
    if len(ids) <= k:
        return ids
    rng = np.random.default_rng([seed, stream])
    return sorted(np.asarray(ids)[rng.choice(len(ids), size=k, replace=False)].tolist())


def read_metadata(metadata_csv: Path, ids: set[str]) -> pd.DataFrame:
    cols = ["ImageID", "OriginalURL", "License", "Author"]
    parts = [c[c["ImageID"].isin(ids)] for c in pd.read_csv(metadata_csv, usecols=cols, chunksize=CHUNK_ROWS, dtype=str)]
    meta = pd.concat(parts) if parts else pd.DataFrame(columns=cols)
    return meta.fillna("").drop_duplicates("ImageID").set_index("ImageID")


def _place(src: Path, dest: Path) -> None:
    """Hard-link a cached file into the DVC output (a copy across file systems)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def fetch_openimages(data: dict, out_dir: Path) -> list[Row]:
    cfg = data["openimages"]
    transfer = Transfer.from_params(data["download"])
    ann = cfg["annotations_url"].rstrip("/")
    version = cfg["version"]
    [desc_path] = [r.path for r in fetch_many([{"url": f"{ann}/{CLASS_DESCRIPTIONS[version]}"}], transfer, desc="openimages classes")]
    descriptions = pd.read_csv(desc_path, dtype=str)
    if list(descriptions.columns[:2]) != ["LabelName", "DisplayName"]:  # older files have no header
        descriptions = pd.read_csv(desc_path, dtype=str, header=None, names=["LabelName", "DisplayName"])
    positive = resolve_classes(descriptions, cfg["classes"], "data.openimages.classes")
    negative = resolve_classes(descriptions, cfg["negative_classes"], "data.openimages.negative_classes") if cfg["negative_classes"] else {}

    label_files = fetch_many([{"url": f"{ann}/{IMAGE_LABELS[version][s]}"} for s in cfg["splits"]], transfer, desc="openimages labels")
    meta_files = fetch_many([{"url": f"{ann}/{IMAGE_METADATA[s]}"} for s in cfg["splits"]], transfer, desc="openimages metadata")
    pos_all, neg_all = {}, {}
    for split, res in zip(cfg["splits"], label_files):
        pos, neg = select_images(res.path, positive, negative)
        pos_all.update({(split, i): v for i, v in pos.items()})
        neg_all.update({(split, i): v for i, v in neg.items()})
    chosen_pos = sample([f"{s}/{i}" for s, i in pos_all], cfg["max_images"], cfg["seed"], 1)
    chosen_neg = sample([f"{s}/{i}" for s, i in neg_all], cfg["max_negatives"], cfg["seed"], 2)
    chosen = [(k, False) for k in chosen_pos] + [(k, True) for k in chosen_neg]

    meta = {}
    for split, res in zip(cfg["splits"], meta_files):
        ids = {k.split("/", 1)[1] for k, _ in chosen if k.startswith(split + "/")}
        meta[split] = read_metadata(res.path, ids)

    base = cfg["images_url"].rstrip("/")
    results = fetch_many([{"url": f"{base}/{k}.jpg"} for k, _ in chosen], transfer, desc="openimages images", fail_fast=False)
    rows = []
    for (key, is_negative), res in zip(chosen, results):
        split, image_id = key.split("/", 1)
        names = (neg_all if is_negative else pos_all)[(split, image_id)]
        info = meta[split].loc[image_id] if image_id in meta[split].index else None
        dest = out_dir / f"{key}.jpg"
        if res.path is not None:
            _place(res.path, dest)
        author = info["Author"] if info is not None else ""
        licence = info["License"] if info is not None else ""
        url = info["OriginalURL"] if info is not None else ""
        rows.append(Row(
            source="openimages",
            path=dest.as_posix(),
            relpath=f"{key}.jpg",
            label=names[0],
            labels=";".join(names),
            negative=is_negative,
            author=author,
            license=licence,
            original_url=url,
            attribution=f"{author} ({licence}) {url}".strip() if info is not None else "",
            official_split=split,
            fetch_error=res.error,
        ))
    return rows
