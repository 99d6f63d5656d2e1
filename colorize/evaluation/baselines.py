"""The three trivial baselines every model is read against. None uses a network or
any spatial information, so a model is worth something only where it beats them all.

- gray: keep L, a = b = 0.
- const: the training split's median a and median b, everywhere.
- lookup: the training split's median ab per L bin (equal-width bins over [0, 100]);
  empty bins fall back to the constant. It knows that skies are bright and soil dark,
  and nothing else.
"""
from __future__ import annotations

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
        """Fit on training Lab images (n, H, W, 3)."""
        pixels = lab.reshape(-1, 3).numpy()
        median_ab = np.median(pixels[:, 1:], axis=0)
        which = _bin(pixels[:, 0], bins)
        lookup = np.tile(median_ab, (bins, 1))
        order = np.argsort(which, kind="stable")
        sorted_bins = which[order]
        starts = np.searchsorted(sorted_bins, np.arange(bins))
        ends = np.searchsorted(sorted_bins, np.arange(bins), side="right")
        for b in range(bins):
            if ends[b] > starts[b]:
                lookup[b] = np.median(pixels[order[starts[b] : ends[b]], 1:], axis=0)
        return cls(median_ab=median_ab.astype(np.float32), lookup_ab=lookup.astype(np.float32))

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
