"""Ingest: decode every listed file safely into one manifest and a shard store.

- `<out_dir>/manifest.parquet`: one row per file found, usable or not; a file that
  cannot be used keeps its row with a status (MANIFEST_STATUSES) and the error.
- `<out_dir>/shards/`: the usable images at the working resolution (common/shards.py).
- the manifest is written a row group at a time (ROW_GROUP rows) with a fixed schema,
  so memory does not grow with the number of files;
- counts (`summarise`): found == usable + rejected, always, or it fails loudly.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from multiprocessing import Pool
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from colorize.common.files import ROW_GROUP, atomic_write
from colorize.common.images import (
    FILE_STATUSES,
    STATUSES,
    NotRead,
    decode,
    fit_square,
    read_file,
)
from colorize.common.shards import ShardWriter
from colorize.sources.listing import COLUMNS

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


# Ingest holds one row group's rows (files.ROW_GROUP) as Python objects, not the whole
# manifest (at 100k files that was ~5 kB a row: 0.5 GB).

# Columns decode adds to a listing row, with the value a row that was never decoded
# (failed download, unreadable or changed file) gets.
DECODED_DEFAULTS = {"bytes": 0, "sha256": "", "width": 0, "height": 0, "mode": "", "format": "", "status": "",
                    "error": "", "notes": ""}
_TYPES = {"class_id": pa.int64(), "negative": pa.bool_(), "bytes": pa.int64(), "width": pa.int64(),
          "height": pa.int64(), "shard": pa.int64(), "shard_index": pa.int64()}


def manifest_schema(listing_columns) -> pa.Schema:
    """The manifest's fixed columns: id, the listing's (less what the download saw),
    what decode found, where the image is stored. Text unless _TYPES says otherwise."""
    names = ["id", *(c for c in listing_columns if c not in ("sha256", "bytes")), *DECODED_DEFAULTS,
             "shard", "shard_index"]
    return pa.schema([(n, _TYPES.get(n, pa.string())) for n in names])


def ingest(listing: pd.DataFrame | Iterable[pd.DataFrame], params: dict, out_dir: Path, workers: int | None = None,
           total: int | None = None) -> dict:
    """Decode every row of the listing (one DataFrame or blocks of it, in order); write
    `manifest.parquet` a row group at a time and the shards; return summarise's counts."""
    cfg = params["ingest"]
    size = cfg["image_size"]
    blocks = [listing] if isinstance(listing, pd.DataFrame) else listing
    total = len(listing) if isinstance(listing, pd.DataFrame) else total
    by_status: Counter = Counter()
    by_source: Counter = Counter()

    def rows_of(block: pd.DataFrame):
        # What the download saw is checked here, not stored: ingest's own sha256 and size go in the manifest.
        listed = block["sha256"] if "sha256" in block else [""] * len(block)  # blank: nothing to check against
        tasks = [(p, e, sha, size, cfg["max_pixels"]) for p, e, sha in zip(block["path"], block["fetch_error"], listed)]
        return tasks, block.drop(columns=["sha256", "bytes"], errors="ignore")

    def write(tmp: Path) -> None:
        writer = ShardWriter(out_dir / "shards", cfg["shard_size"], size)
        parquet, rows = None, []
        # `with`: the bar ends its line also when a write fails, so the error is a line of its own
        with tqdm(total=total, desc="ingest", unit="img") as progress, Pool(workers or min(4, os.cpu_count() or 1)) as pool:
            for block in blocks:
                for start in range(0, len(block), ROW_GROUP):
                    tasks, sources = rows_of(block.iloc[start:start + ROW_GROUP])
                    if parquet is None:
                        schema = manifest_schema(sources.columns)
                        parquet = pq.ParquetWriter(tmp, schema)
                    # imap keeps listing order, so shards and manifest are the same on every run.
                    for src, res in zip(sources.to_dict("records"), pool.imap(_process, tasks, chunksize=8)):
                        pixels = res.pop("_pixels", None)
                        shard, index = writer.add(pixels) if pixels is not None else (-1, -1)
                        rows.append({"id": stable_id(src["source"], src["relpath"], res["sha256"]), **src,
                                     **DECODED_DEFAULTS, **res, "shard": shard, "shard_index": index})
                        by_status[res["status"]] += 1
                        by_source[src["source"]] += 1
                    parquet.write_table(pa.Table.from_pylist(rows, schema=schema))
                    progress.update(len(rows))
                    rows = []
        writer.close()
        if parquet is None:  # an empty listing still gives a manifest, with no rows
            parquet = pq.ParquetWriter(tmp, manifest_schema(COLUMNS))
        parquet.close()

    atomic_write(out_dir / "manifest.parquet", write)
    return _report(by_status, by_source)


def summarise(manifest: pd.DataFrame) -> dict:
    """ingest's counts of a manifest already written."""
    return _report(Counter(manifest["status"]), Counter(manifest["source"]))


def _report(by_status: Counter, by_source: Counter) -> dict:
    found = sum(by_status.values())
    usable = by_status.get("ok", 0)
    report = {
        "found": found,
        "usable": usable,
        "rejected": found - usable,
        "by_status": dict(sorted(by_status.items())),
        "by_source": dict(sorted(by_source.items())),
    }
    if report["usable"] + report["rejected"] != report["found"] or sum(by_source.values()) != found \
            or not set(report["by_status"]) <= set(MANIFEST_STATUSES):
        raise RuntimeError(f"ingest counts do not reconcile: {report}")
    return report
