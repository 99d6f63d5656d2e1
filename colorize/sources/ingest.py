"""Ingest: decode every listed file safely into one manifest and a shard store.

- `<out_dir>/manifest.parquet`: one row per file found, usable or not; a file that
  cannot be used keeps its row with a status (MANIFEST_STATUSES) and the error.
- `<out_dir>/shards/`: the usable images at the working resolution (common/shards.py).
- `summarise`: counts; found == usable + rejected, always, or it fails loudly.
"""
from __future__ import annotations

import hashlib
import os
from multiprocessing import Pool
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from colorize.common.files import atomic_write
from colorize.common.images import (
    FILE_STATUSES,
    STATUSES,
    NotRead,
    decode,
    fit_square,
    read_file,
)
from colorize.common.shards import ShardWriter

# Every status a manifest row can have: decode's, read_file's, a failed download, and a
# file whose bytes are not those the download listed (changed or replaced since).
MANIFEST_STATUSES = STATUSES + FILE_STATUSES + ("download_failed", "changed_since_download")


def stable_id(source: str, relpath: str, sha256: str) -> str:
    """A content hash salted with where the file was found.

    Pure content hashes collide for exact duplicates (which curate must see as two
    files to drop one), so the id also covers source and path; it stays the same for
    as long as the file's bytes and place do.
    """
    return hashlib.sha256(f"{source}\0{relpath}\0{sha256}".encode()).hexdigest()[:16]


def _process(task: tuple[str, str, str, int, int]) -> dict:
    path, fetch_error, listed_sha256, image_size, max_pixels = task
    if fetch_error:
        return {"bytes": 0, "sha256": "", "status": "download_failed", "error": fetch_error}
    try:
        data = read_file(path)  # never opens a FIFO, socket or device: each would hang or fail
    except NotRead as e:
        return {"bytes": 0, "sha256": "", "status": e.status, "error": e.reason}
    sha256 = hashlib.sha256(data).hexdigest()
    if listed_sha256 and sha256 != listed_sha256:
        return {"bytes": len(data), "sha256": sha256, "status": "changed_since_download",
                "error": f"sha256 {sha256[:12]} is not the {listed_sha256[:12]} the download listed: "
                         "run the download again (dvc repro -f download)"}
    d = decode(data, max_pixels=max_pixels, draft_size=image_size)
    row = {
        "bytes": len(data),
        "sha256": sha256,
        "width": d.width,
        "height": d.height,
        "mode": d.mode,
        "format": d.format,
        "status": d.status,
        "error": d.error,
        "notes": d.notes,
    }
    if d.pixels is not None:
        row["_pixels"] = fit_square(d.pixels, image_size)
    return row


def ingest(listing: pd.DataFrame, params: dict, out_dir: Path, workers: int | None = None) -> pd.DataFrame:
    cfg = params["ingest"]
    size = cfg["image_size"]
    writer = ShardWriter(out_dir / "shards", cfg["shard_size"], size)
    listed = listing["sha256"] if "sha256" in listing else [""] * len(listing)  # blank: nothing to check against
    tasks = [(p, e, sha, size, cfg["max_pixels"]) for p, e, sha in zip(listing["path"], listing["fetch_error"], listed)]
    # What the download saw is checked here, not stored: ingest's own sha256 and size go in the manifest.
    listing = listing.drop(columns=["sha256", "bytes"], errors="ignore")
    workers = workers or min(4, os.cpu_count() or 1)
    rows = []
    # imap keeps listing order, so shards and manifest are the same on every run.
    with Pool(workers) as pool:
        results = pool.imap(_process, tasks, chunksize=8)
        for src, res in tqdm(zip(listing.to_dict("records"), results), total=len(tasks), desc="ingest", unit="img"):
            pixels = res.pop("_pixels", None)
            shard, index = writer.add(pixels) if pixels is not None else (-1, -1)
            rows.append({
                "id": stable_id(src["source"], src["relpath"], res["sha256"]),
                **src,
                **res,
                "shard": shard,
                "shard_index": index,
            })
    writer.close()
    manifest = pd.DataFrame(rows)
    for col in ("width", "height"):
        manifest[col] = manifest[col].fillna(0).astype("int64")
    for col in ("mode", "format", "notes"):
        manifest[col] = manifest[col].fillna("")
    manifest = manifest.fillna({"label": "", "attribution": "", "defect": "", "defect_detail": "", "defect_of": ""})
    atomic_write(out_dir / "manifest.parquet", lambda tmp: manifest.to_parquet(tmp, index=False))
    return manifest


def summarise(manifest: pd.DataFrame) -> dict:
    usable = int((manifest["status"] == "ok").sum())
    found = len(manifest)
    report = {
        "found": found,
        "usable": usable,
        "rejected": found - usable,
        "by_status": manifest["status"].value_counts().sort_index().to_dict(),
        "by_source": manifest["source"].value_counts().sort_index().to_dict(),
    }
    if report["usable"] + report["rejected"] != report["found"] or sum(report["by_status"].values()) != found \
            or not set(report["by_status"]) <= set(MANIFEST_STATUSES):
        raise RuntimeError(f"ingest counts do not reconcile: {report}")
    return report
