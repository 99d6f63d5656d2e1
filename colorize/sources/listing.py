"""The listing: one row per file a source found (`data/raw/listing.csv`), ingest's only input.

Every source returns `Row`s; nothing it finds is left out, so ingest sees every file
and nothing is lost silently.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Row:
    source: str  # the data.sources name
    path: str  # where the file is, relative to the project root or absolute
    relpath: str  # its path inside the source: stable, used in ids
    label: str = ""  # class/species/subfolder where known
    attribution: str = ""  # author / licence / URL where known
    defect: str = ""  # planted-defect truth (garden only), "none" for clean
    defect_detail: str = ""
    defect_of: str = ""  # relpath of the original a planted copy was made from
    class_id: int = 0  # numeric class where the source has one (Flowers-102: 1-102)
    labels: str = ""  # every verified label, ";"-separated (Open Images)
    negative: bool = False  # a known non-flower, for the relevance classifier; not training data
    official_split: str = ""  # the source's own split, kept as information only
    author: str = ""  # attribution parts, where the licence asks for them
    license: str = ""
    original_url: str = ""
    fetch_error: str = ""  # why a listed file could not be downloaded ("" = fine)
    sha256: str = ""  # the bytes the download left at `path` ("" if it could not read them)
    bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


COLUMNS = tuple(Row.__dataclass_fields__)


def read_listing(path: Path, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The listing (or those of its columns asked for) with the column types restored."""
    return _typed(pd.read_csv(path, dtype=str, keep_default_na=False, usecols=list(columns) if columns else None))


def iter_listing(path: Path, rows: int):
    """The listing `rows` at a time, typed as read_listing: at 100k files ingest holds a
    block, not the whole table as Python strings."""
    with pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=rows) as blocks:
        for block in blocks:
            yield _typed(block)


def _typed(listing: pd.DataFrame) -> pd.DataFrame:
    """Restore the column types (CSV keeps only text)."""
    if "class_id" in listing:
        listing["class_id"] = listing["class_id"].replace("", "0").astype("int64")
    if "bytes" in listing:
        listing["bytes"] = listing["bytes"].replace("", "0").astype("int64")
    if "negative" in listing:
        listing["negative"] = listing["negative"] == "True"
    return listing
