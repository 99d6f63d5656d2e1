"""A split from the working-resolution store, as a model sees it.

Training reads its splits streamed (`open_split`): the shards stay memory-mapped and Lab
is computed per batch, so memory is a few batches plus the shard pages the OS keeps,
whatever the split's size. Lab of a batch is bit-identical to Lab of the whole split
(elementwise, checked in tests/test_train_engine.py), so batches are the same as when
the split was converted up front. `load_split` still loads a whole split (evaluate).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from colorize.common import paths
from colorize.common.colour import normalise_ab, normalise_l, uint8_to_lab
from colorize.common.errors import UserError
from colorize.common.files import read_columns
from colorize.common.shards import ShardReader, load_images


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


class StreamedSplit:
    """A split read from the shards a batch at a time."""

    def __init__(self, rows: pd.DataFrame, shards: Path):
        self.rows = rows
        self._reader = ShardReader(rows, shards)

    def __len__(self) -> int:
        return len(self.rows)

    def rgb(self, idx) -> np.ndarray:
        """The truth, (k, S, S, 3) uint8, of the images at positions idx."""
        return self._reader.read(np.asarray(idx))

    def lab(self, idx) -> torch.Tensor:
        return uint8_to_lab(self.rgb(idx))

    def rgb_and_lab(self, idx) -> tuple[np.ndarray, torch.Tensor]:
        """The truth and its Lab, from one read of the shards."""
        rgb = self.rgb(idx)
        return rgb, uint8_to_lab(rgb)

    def model_inputs(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised L (k, 1, S, S) and ab (k, 2, S, S) of the images at positions idx."""
        return model_inputs(self.rgb(idx))

    def chunks(self, size: int):
        """Positions 0..n-1 in consecutive chunks of `size` (the last may be shorter)."""
        for start in range(0, len(self), size):
            yield np.arange(start, min(start + size, len(self)))


# What training and evaluation use of a split's rows (the manifest has 64 columns).
SPLIT_COLUMNS = ("id", "source", "relpath", "label", "split", "shard", "shard_index", "hard")


def model_inputs(rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (k, S, S, 3) -> the networks' normalised L (k, 1, S, S) and ab (k, 2, S, S)."""
    lab = uint8_to_lab(rgb)
    return normalise_l(lab[..., 0])[:, None], normalise_ab(lab[..., 1:]).permute(0, 3, 1, 2).contiguous()


def _rows(name: str, manifest: Path) -> pd.DataFrame:
    if not Path(manifest).exists():
        raise UserError(f"{manifest} not found: run the split stage first (dvc repro split)")
    df = read_columns(manifest, SPLIT_COLUMNS)
    rows = df[df["split"] == name].reset_index(drop=True)
    if rows.empty:
        raise UserError(f"the {name} split is empty; add images or change split.train/split.val")
    return rows


def open_split(name: str, manifest: Path = paths.SPLIT_MANIFEST, shards: Path = paths.SHARDS) -> StreamedSplit:
    return StreamedSplit(_rows(name, manifest), shards)


def load_split(name: str, manifest: Path = paths.SPLIT_MANIFEST, shards: Path = paths.SHARDS) -> Split:
    rows = _rows(name, manifest)
    rgb = load_images(rows, shards)
    return Split(rows=rows, rgb=rgb, lab=uint8_to_lab(rgb))
