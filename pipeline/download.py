"""Stage 1, download: materialise every source named in data.sources.

Output: `data/raw/<source>/...` for sources that write files, and `data/raw/listing.csv`
with one row per file found (see `sources.Row`), which is ingest's only input.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import run_main
from pipeline.params import load_params
from pipeline.sources import COLUMNS, SOURCES

RAW_DIR = Path("data/raw")
LISTING = RAW_DIR / "listing.csv"


def download(params: dict, raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    raw_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in params["data"]["sources"]:
        found = SOURCES[name](params["data"], raw_dir / name)
        print(f"download: {name}: {len(found)} files")
        rows.extend(r.to_dict() for r in found)
    listing = pd.DataFrame(rows, columns=list(COLUMNS))
    listing.to_csv(raw_dir / "listing.csv", index=False)
    return listing


def read_listing(path: Path = LISTING) -> pd.DataFrame:
    """The listing with its column types restored (CSV keeps only text)."""
    listing = pd.read_csv(path, dtype=str, keep_default_na=False)
    listing["class_id"] = listing["class_id"].replace("", "0").astype("int64")
    listing["negative"] = listing["negative"] == "True"
    return listing


def main() -> None:
    listing = download(load_params())
    print(f"download: {len(listing)} files listed in {LISTING}")


if __name__ == "__main__":
    run_main(main)
