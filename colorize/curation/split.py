"""Split: deterministic train/val/test assignment of the kept images.

Each image's split comes from a hash of (split.salt, its duplicate group), mapped to
[0, 1) and cut at split.train and split.train + split.val. So:
- the same data always gives the same split, on any machine;
- adding images never moves an existing one (no global shuffle, no counts involved);
- members of one duplicate group always land together, so a near copy of a test
  image can never leak into training.

"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from colorize.common.files import ROW_GROUP

SPLITS = ("train", "val", "test")


def unit_hash(salt: str, key: str) -> float:
    """A uniform number in [0, 1) that depends only on salt and key."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(groups: pd.Series, train: float, val: float, salt: str) -> pd.Series:
    u = np.array([unit_hash(salt, g) for g in groups])
    split = np.where(u < train, "train", np.where(u < train + val, "val", "test"))
    return pd.Series(split, index=groups.index, name="split")


def split(curated: pd.DataFrame, params: dict) -> pd.DataFrame:
    cfg = params["split"]
    kept = curated[curated["keep"]].copy()
    kept["split"] = assign(kept["group"], cfg["train"], cfg["val"], cfg["salt"])
    return kept.reset_index(drop=True)


def split_file(curated: Path, out: Path, params: dict, rows: int = ROW_GROUP) -> dict[str, int]:
    """split() of the curated manifest at `curated`, written to `out` (a path the caller
    renames into place) `rows` at a time: one block of its ~0.7 kB rows is held, not the
    whole table (curate writes it in row groups of as many). Returns the count per split.
    The same table as split() of the whole manifest: each row's split depends on its own
    group alone, and the blocks keep the file's order."""
    source = pq.ParquetFile(curated)
    schema = source.schema_arrow.remove_metadata().append(pa.field("split", pa.large_string()))
    counts = dict.fromkeys(SPLITS, 0)
    with pq.ParquetWriter(out, schema) as writer:
        for batch in source.iter_batches(batch_size=rows):
            part = split(batch.to_pandas(), params)
            for name, n in part["split"].value_counts().items():
                counts[name] += int(n)
            writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
    return counts
