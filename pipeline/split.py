"""Stage 4, split: deterministic train/val/test assignment of the kept images.

Each image's split comes from a hash of (split.salt, its duplicate group), mapped to
[0, 1) and cut at split.train and split.train + split.val. So:
- the same data always gives the same split, on any machine;
- adding images never moves an existing one (no global shuffle, no counts involved);
- members of one duplicate group always land together, so a near copy of a test
  image can never leak into training.

Output: `data/split/manifest.parquet` (the kept rows plus a `split` column) and
`reports/split.json` (counts per split).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.curate import MANIFEST as CURATED
from pipeline.errors import UserError, run_main
from pipeline.params import load_params

OUT_DIR = Path("data/split")
MANIFEST = OUT_DIR / "manifest.parquet"
REPORT = Path("reports/split.json")
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


def main() -> None:
    params = load_params()
    if not CURATED.exists():
        raise UserError(f"{CURATED} not found: run the curate stage first (dvc repro curate)")
    df = split(pd.read_parquet(CURATED), params)
    counts = {s: int((df["split"] == s).sum()) for s in SPLITS}
    for s in ("train", "test"):
        if counts[s] == 0:
            raise UserError(f"split: the {s} split is empty ({counts}); add images or change split.train/split.val")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    df.to_parquet(MANIFEST, index=False)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps({"total": len(df), **counts}, indent=2) + "\n")
    print(f"split: {counts}")


if __name__ == "__main__":
    run_main(main)
