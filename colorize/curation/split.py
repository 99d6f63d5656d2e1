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

import numpy as np
import pandas as pd

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
