"""The working-resolution image store: a few .npy shards instead of thousands of files.

Each shard is a uint8 array (n, S, S, 3) of sRGB pixels. The manifest row of an image
says which shard and index hold it. Thousands of small files as DVC outputs make
`dvc status` slow; a handful of shards keeps it instant, and `np.load(mmap_mode="r")`
reads only the images asked for.

Every file is written whole or not at all (`atomic_write`): a full disk or a kill leaves
no truncated shard that a later stage could half-read, and a full disk is one line
(colorize/common/files.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from colorize.common.files import atomic_write


class ShardWriter:
    """Append images; every `shard_size` of them become one `shard-NNNNN.npy`."""

    def __init__(self, out_dir: Path, shard_size: int, image_size: int):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.image_size = image_size
        # One preallocated shard, filled in place: memory stays at one shard's worth
        # however many images pass through (no list of arrays, no np.stack copy).
        self._buffer = np.empty((shard_size, image_size, image_size, 3), dtype=np.uint8)
        self._filled = 0
        self._shard = 0

    def add(self, pixels: np.ndarray) -> tuple[int, int]:
        """Store one (S, S, 3) uint8 image; return its (shard, index)."""
        assert pixels.shape == (self.image_size, self.image_size, 3) and pixels.dtype == np.uint8
        where = (self._shard, self._filled)
        self._buffer[self._filled] = pixels
        self._filled += 1
        if self._filled == len(self._buffer):
            self._flush()
        return where

    def _flush(self) -> None:
        if self._filled:
            images = self._buffer[: self._filled]
            atomic_write(self.out_dir / f"shard-{self._shard:05d}.npy", lambda tmp: np.save(tmp, images))
            self._filled = 0
            self._shard += 1

    def close(self) -> None:
        self._flush()


class ShardReader:
    """The images of manifest rows, read from the memory-mapped shards on demand: only the
    pages of the images asked for are read (the OS keeps or drops them like any file
    cache), so holding a reader costs nothing however large the split."""

    def __init__(self, rows: pd.DataFrame, shard_dir: Path):
        self.shard = rows["shard"].to_numpy(dtype=np.int64)
        self.index = rows["shard_index"].to_numpy(dtype=np.int64)
        self.shard_dir = Path(shard_dir)
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.shard)

    # Enough of numpy's array interface that code written for an (n, S, S, 3) uint8 array
    # of all the images (the curation checks, the relevance classifier) streams from the
    # shards instead: slices and index arrays read just those images.
    dtype, ndim = np.dtype(np.uint8), 4

    @property
    def shape(self) -> tuple[int, int, int, int]:
        side = self._map(int(self.shard[0])).shape[1] if len(self) else 0
        return (len(self), side, side, 3)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.read([range(len(self))[key]])[0]
        positions = np.arange(len(self))[key]  # a slice or an index array, checked as numpy would
        if len(positions) == 0:
            return np.empty((0,) + self.shape[1:], dtype=np.uint8)
        return self.read(positions)

    def take(self, positions) -> "ShardReader":
        """A reader of the rows at `positions` only; reads nothing yet."""
        positions = np.asarray(positions, dtype=np.int64)
        view = ShardReader.__new__(ShardReader)
        view.shard, view.index = self.shard[positions], self.index[positions]
        view.shard_dir, view._maps = self.shard_dir, self._maps
        return view

    def _map(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            self._maps[shard] = np.load(self.shard_dir / f"shard-{shard:05d}.npy", mmap_mode="r")
        return self._maps[shard]

    def read(self, positions) -> np.ndarray:
        """Pixels of the rows at `positions`, in that order: (k, S, S, 3) uint8."""
        positions = np.asarray(positions, dtype=np.int64)
        shards = self.shard[positions]
        out = None
        for shard in np.unique(shards):
            at = np.flatnonzero(shards == shard)
            block = self._map(int(shard))[self.index[positions[at]]]
            if out is None:
                out = np.empty((len(positions),) + block.shape[1:], dtype=np.uint8)
            out[at] = block
        if out is None:
            raise ValueError("ShardReader.read: no positions")
        return out


def load_images(rows: pd.DataFrame, shard_dir: Path) -> np.ndarray:
    """Pixels of the given manifest rows, in row order, as one (n, S, S, 3) uint8 array."""
    if len(rows) == 0:
        raise ValueError("load_images: no rows")
    return ShardReader(rows, shard_dir).read(np.arange(len(rows)))
