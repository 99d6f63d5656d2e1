"""Loading a split from the working-resolution store as Lab tensors, ready for a model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from colorize.common import paths
from colorize.common.colour import uint8_to_lab
from colorize.common.errors import UserError
from colorize.common.shards import load_images


@dataclass
class Split:
    rows: pd.DataFrame  # manifest rows, in the order of the arrays below
    rgb: np.ndarray  # (n, S, S, 3) uint8, the truth
    lab: torch.Tensor  # (n, S, S, 3) float32

    @property
    def L(self) -> torch.Tensor:
        return self.lab[..., 0]

    @property
    def ab(self) -> torch.Tensor:
        return self.lab[..., 1:]


def load_split(name: str, manifest: Path = paths.SPLIT_MANIFEST, shards: Path = paths.SHARDS) -> Split:
    if not Path(manifest).exists():
        raise UserError(f"{manifest} not found: run the split stage first (dvc repro split)")
    df = pd.read_parquet(manifest)
    rows = df[df["split"] == name].reset_index(drop=True)
    if rows.empty:
        raise UserError(f"the {name} split is empty; add images or change split.train/split.val")
    rgb = load_images(rows, shards)
    return Split(rows=rows, rgb=rgb, lab=uint8_to_lab(rgb))
