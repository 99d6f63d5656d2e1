"""Zhang et al.'s released ab bins, as text, and how colour.ab_bins compares with them.

The reference is richzhang/colorization's `pts_in_hull.npy` (313 centres on the 10-unit
grid). It was read as text from the `hull_pts` array that OpenCV's C++ colorization
sample (samples/dnn/colorization.cpp) inlines, "the 313 ab cluster centers from
pts_in_hull.npy (already transposed)": 313 a values, then 313 b values, sorted by a
then b. Two independent copies of that array were compared and agree exactly. In each
a column the b values form one unbroken run, so the whole set is this table of runs.

    .venv/bin/python bench/bins_reference.py

prints our bin count, the overlap, and the reference bins we do not have.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# a -> (lowest b, highest b) of the reference bins in that column, both inclusive, step 10.
ZHANG_B_RUNS = {
    -90: (50, 90), -80: (20, 90), -70: (0, 90), -60: (-20, 90), -50: (-30, 100),
    -40: (-40, 100), -30: (-50, 100), -20: (-50, 100), -10: (-60, 100), 0: (-70, 100),
    10: (-80, 90), 20: (-80, 90), 30: (-90, 90), 40: (-100, 90), 50: (-100, 80),
    60: (-110, 80), 70: (-110, 80), 80: (-110, 70), 90: (-110, 70), 100: (-90, 0),
}


def zhang_bins() -> np.ndarray:
    """The 313 reference centres, float32 (313, 2), columns (a, b), sorted by a then b."""
    rows = [(a, b) for a, (lo, hi) in sorted(ZHANG_B_RUNS.items()) for b in range(lo, hi + 1, 10)]
    return np.array(rows, dtype=np.float32)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from colorize.common.colour import ab_bins

    ours = {tuple(x) for x in ab_bins().numpy().tolist()}
    ref = {tuple(x) for x in zhang_bins().tolist()}
    a, b = zip(*ours)
    print(f"ours: {len(ours)} bins, a in [{min(a):g}, {max(a):g}], b in [{min(b):g}, {max(b):g}]")
    print(f"reference: {len(ref)} bins; in both: {len(ours & ref)}; only ours: {sorted(ours - ref)}")
    print(f"only in the reference ({len(ref - ours)}): {sorted(ref - ours)}")


if __name__ == "__main__":
    main()
