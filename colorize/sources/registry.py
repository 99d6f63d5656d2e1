"""The data sources by name (data.sources), and the download that runs them. Each turns its params into files on disk plus one listing row per file.

A source is a function `fetch(data_params, out_dir) -> Iterable[Row]`. It may write files
under `out_dir` (the garden generates them; Flowers-102 and Open Images download them
through the cache in fetch.py) or point at files where they already are (a local
folder). Either way it returns one row per file found (colorize/sources/listing.py), so
ingest sees every file and nothing is lost silently. A new source adds a function to
SOURCES and its name to `params.SOURCE_NAMES`.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd

from colorize.common.files import atomic_write
from colorize.common.images import NotRead, read_file
from colorize.sources import garden
from colorize.sources.flowers102 import fetch_flowers102
from colorize.sources.folder import fetch_folder
from colorize.sources.listing import COLUMNS, Row
from colorize.sources.openimages import fetch_openimages


def fetch_garden(data: dict, out_dir: Path) -> Iterator[Row]:
    """The bundled synthetic garden, generated from data.garden (same seed, same bytes)."""
    g = data["garden"]
    cfg = garden.GardenConfig(
        n_images=g["n_images"],
        seed=g["seed"],
        min_size=g["min_size"],
        max_size=g["max_size"],
        defect_rate=g["defect_rate"],
    )
    for r in garden.iter_generate(out_dir, cfg, progress=True):  # one record at a time
        yield Row(
            source="garden",
            path=(out_dir / r["path"]).as_posix(),
            relpath=r["path"],
            label=r["label"],
            attribution="synthetic (colorize/sources/garden.py)",
            defect=r["defect"],
            defect_detail=r["defect_detail"],
            defect_of=r["defect_of"],
        )


def download(params: dict, raw_dir: Path, listing_path: Path | None) -> int:
    """Every source in data.sources, in order, into raw_dir/<source>; the listing of
    every file found, each with the sha256 and size of the bytes left at its path,
    written to `listing_path` (whole or not at all; None: not written); returns the
    number of rows.

    Only the listing is DVC's output: raw_dir/<source> is a working copy, refilled from
    the download cache (or regenerated) whenever this runs, so `dvc status` hashes one
    file rather than walking every raw image (docs/scale.md). Each source's folder is
    emptied first, as DVC would empty an output: no file of an earlier run lingers.
    Each row is written as its source yields it, so memory does not grow with the
    number of files (the listing is the CSV pandas' to_csv wrote, byte for byte).
    """
    raw_dir.mkdir(parents=True, exist_ok=True)

    def fetch_all(write_row: Callable[[dict], object]) -> int:
        total = 0
        for name in params["data"]["sources"]:
            shutil.rmtree(raw_dir / name, ignore_errors=True)
            found, n = iter(SOURCES[name](params["data"], raw_dir / name)), 0
            while True:
                try:
                    row = next(found)
                except StopIteration:
                    break
                except OSError as e:  # the source's own failure, not the listing's write
                    raise _SourceFailed(e) from e
                write_row(_stamped(row.to_dict()))
                n += 1
            print(f"download: {name}: {n} files")
            total += n
        return total

    if listing_path is None:
        return fetch_all(lambda row: None)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            count = fetch_all(writer.writerow)

    try:
        atomic_write(listing_path, write)
    except _SourceFailed as failed:
        raise failed.error from None  # reported as the source's error, as before
    return count


class _SourceFailed(Exception):
    """An OSError of a source while the listing is being written: atomic_write would
    report it as a failure to write the listing."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _stamped(row: dict) -> dict:
    """The row with the sha256 and size of its file; left blank when the file cannot be
    read (ingest reads it again and records why)."""
    if not row["fetch_error"]:
        try:
            data = read_file(row["path"])
        except NotRead:
            return row
        row |= {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return row


def restore_missing(listing: pd.DataFrame, params: dict, raw_dir: Path) -> int:
    """Put back the listed files that are not on this machine (a fresh clone after
    `dvc pull` has the listing but not the raw working copy); return how many were
    missing. The download runs again with the same params, so it leaves the same bytes;
    ingest checks each file against the listing's sha256 and rejects any that differ."""
    read = listing["sha256"] != ""
    missing = int(sum(not os.path.lexists(p) for p in listing.loc[read, "path"]))
    if missing:
        print(f"ingest: {missing} listed files are not under {raw_dir} on this machine; downloading them again")
        download(params, raw_dir, None)
    return missing


SOURCES: dict[str, Callable[[dict, Path], Iterable[Row]]] = {
    "garden": fetch_garden,
    "folder": fetch_folder,
    "flowers102": fetch_flowers102,
    "openimages": fetch_openimages,
}
