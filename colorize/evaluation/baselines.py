"""The three trivial baselines every model is read against. None uses a network or
any spatial information, so a model is worth something only where it beats them all.

- gray: keep L, a = b = 0.
- const: the training split's median a and median b, everywhere.
- lookup: the training split's median ab per L bin (equal-width bins over [0, 100]);
  empty bins fall back to the constant. It knows that skies are bright and soil dark,
  and nothing else.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

BASELINES = ("gray", "const", "lookup")


@dataclass
class Baselines:
    median_ab: np.ndarray  # (2,)
    lookup_ab: np.ndarray  # (bins, 2)

    @classmethod
    def fit(cls, lab: torch.Tensor, bins: int) -> "Baselines":
        """Fit on training Lab images (n, H, W, 3) held in memory."""
        return cls.fit_streamed(lambda: [lab], bins)

    @classmethod
    def fit_streamed(cls, chunks: Callable[[], Iterable[torch.Tensor]], bins: int) -> "Baselines":
        """Fit on training Lab images given a chunk (k, H, W, 3) at a time: `chunks()` is
        called twice (see ExactMedians). The medians are np.median's on all the pixels
        at once, to the bit, in the memory of one chunk."""
        const, lookup = ExactMedians(groups=1), ExactMedians(groups=bins)
        for lab in chunks():
            pixels = lab.reshape(-1, 3).numpy()
            const.count(np.zeros(len(pixels), dtype=np.int64), pixels[:, 1:])
            lookup.count(_bin(pixels[:, 0], bins), pixels[:, 1:])
        for lab in chunks():
            pixels = lab.reshape(-1, 3).numpy()
            const.collect(np.zeros(len(pixels), dtype=np.int64), pixels[:, 1:])
            lookup.collect(_bin(pixels[:, 0], bins), pixels[:, 1:])
        median_ab = const.medians()[0]
        per_bin = lookup.medians()
        per_bin = np.where(np.isnan(per_bin), median_ab, per_bin)  # empty bins: the constant
        return cls(median_ab=median_ab.astype(np.float32), lookup_ab=per_bin.astype(np.float32))

    def predict(self, name: str, L: torch.Tensor) -> torch.Tensor:
        """ab (n, H, W, 2) for L (n, H, W), by the named baseline."""
        shape = L.shape + (2,)
        if name == "gray":
            return torch.zeros(shape)
        if name == "const":
            return torch.from_numpy(self.median_ab).expand(shape).clone()
        if name == "lookup":
            which = _bin(L.numpy(), len(self.lookup_ab))
            return torch.from_numpy(self.lookup_ab[which])
        raise ValueError(f"unknown baseline {name!r}")


def _bin(L: np.ndarray, bins: int) -> np.ndarray:
    return np.clip((L / 100.0 * bins).astype(np.int64), 0, bins - 1)


class ExactMedians:
    """Exact medians of float32 values per (group, column), seen a chunk at a time in two
    passes; what np.median gives on all of them at once, to the bit.

    Pass 1 (`count`) counts the values in fine buckets; that tells which bucket holds each
    middle order statistic. Pass 2 (`collect`) keeps only the distinct values in those
    buckets, with their counts: a few thousand at most, since 8-bit sRGB has at most
    2^24 colours however many pixels there are. Memory: the bucket counts
    (groups x columns x BUCKETS), whatever the number of values.
    """

    BUCKETS = 1 << 16
    LO, HI = -256.0, 256.0  # Lab a and b of sRGB lie within +-128; anything outside goes to an end bucket

    def __init__(self, groups: int, columns: int = 2):
        self.groups, self.columns = groups, columns
        self.counts = np.zeros((groups, columns, self.BUCKETS), dtype=np.int64)
        self._kept: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
        self._plan = None

    def _bucket(self, values: np.ndarray) -> np.ndarray:
        scaled = (values.astype(np.float64) - self.LO) * (self.BUCKETS / (self.HI - self.LO))
        return np.clip(scaled, 0, self.BUCKETS - 1).astype(np.int64)

    def count(self, group: np.ndarray, values: np.ndarray) -> None:
        """Pass 1: group (p,) ints in [0, groups), values (p, columns)."""
        flat = self.counts.reshape(-1)
        for c in range(self.columns):
            where = (group * self.columns + c) * self.BUCKETS + self._bucket(values[:, c])
            flat += np.bincount(where, minlength=flat.size)

    def _middle(self) -> tuple[np.ndarray, ...]:
        """Per (group, column): n, the two middle ranks, the buckets holding them, and how
        many values lie below the lower bucket."""
        if self._plan is None:
            n = self.counts.sum(-1)
            low_rank, high_rank = (n - 1) // 2, n // 2
            cum = self.counts.cumsum(-1)
            low = np.zeros_like(n)
            high = np.zeros_like(n)
            for g in range(self.groups):
                for c in range(self.columns):
                    if n[g, c]:
                        low[g, c] = np.searchsorted(cum[g, c], low_rank[g, c], side="right")
                        high[g, c] = np.searchsorted(cum[g, c], high_rank[g, c], side="right")
            below = np.where(low > 0, np.take_along_axis(cum, np.maximum(low - 1, 0)[..., None], -1)[..., 0], 0)
            self._plan = (n, low_rank, high_rank, low, high, below)
        return self._plan

    def collect(self, group: np.ndarray, values: np.ndarray) -> None:
        """Pass 2, on the same values as pass 1."""
        _, _, _, low, high, _ = self._middle()
        for c in range(self.columns):
            bucket = self._bucket(values[:, c])
            keep = (bucket >= low[group, c]) & (bucket <= high[group, c])
            for g in np.unique(group[keep]):
                v, k = np.unique(values[keep & (group == g), c], return_counts=True)
                self._kept.setdefault((int(g), c), []).append((v, k))

    def medians(self) -> np.ndarray:
        """(groups, columns) float32 medians; NaN for an empty group."""
        n, low_rank, high_rank, _, _, below = self._middle()
        out = np.full((self.groups, self.columns), np.nan, dtype=np.float32)
        for (g, c), parts in self._kept.items():
            values = np.concatenate([v for v, _ in parts])
            counts = np.concatenate([k for _, k in parts])
            order = np.argsort(values, kind="stable")
            values, ends = values[order], np.cumsum(counts[order])
            # the value at each middle rank, counted from the lower bucket's start
            pick = np.searchsorted(ends, [low_rank[g, c] - below[g, c], high_rank[g, c] - below[g, c]], side="right")
            out[g, c] = np.mean(values[pick].astype(np.float32))  # np.median's mean of the middle one or two
        return out
