"""Stage priors: the empirical distribution of quantised ab colours over the training
split, and Zhang et al.'s class-rebalancing weights (the maths: colorize/training/priors.py).

Outputs:
- `data/priors/priors.npz`: bins (Q, 2), counts (Q,), prior p (Q,), smoothed p~ (Q,),
  weights w (Q,), plus sigma and mix. The zhang model copies bins and weights into its
  checkpoint, so evaluate and colorize never need this file.
- `reports/priors.json` (DVC metrics): Q, pixels counted, entropy of p and p~ (bits),
  the share of the 10 most common bins, the top bins, the weight range.
- `reports/priors_prior.png`, `reports/priors_weights.png` (DVC image plots): the ab
  plane, a to the right and b up, each in-gamut bin coloured by log10 p~ and by w.
"""
# ruff: noqa: E402 (portable.pin() must run before numpy and torch are imported)
from __future__ import annotations

from colorize.common import portable

if __name__ == "__main__":
    portable.pin()  # before numpy and torch: the same bits on any x86-64 CPU (a data stage)

import time

import numpy as np

from colorize.common import paths
from colorize.common.colour import ab_bins
from colorize.common.errors import UserError, run_main
from colorize.common.files import atomic_write, read_columns, write_json
from colorize.common.malloc import return_freed_memory
from colorize.common.params import load_params
from colorize.training.priors import (
    ab_heatmap,
    count_split,
    rebalancing_weights,
    smooth,
    stats,
    training_rows,
)


def main() -> None:
    portable.configure_torch()
    return_freed_memory()  # flat peak memory as the split grows (see colorize/common/malloc.py)
    cfg = load_params()["priors"]
    if not paths.SPLIT_MANIFEST.exists():
        raise UserError(f"{paths.SPLIT_MANIFEST} not found: run the split stage first (dvc repro split)")
    rows, n_gray = training_rows(read_columns(paths.SPLIT_MANIFEST, ("split", "chroma_p95", "shard", "shard_index")),
                                 cfg["min_chroma"])
    if rows.empty:
        raise UserError("priors: the training split has no colour images; add images or lower priors.min_chroma")
    bins = ab_bins().numpy().astype(np.float64)
    t = time.perf_counter()
    counts = count_split(rows, paths.SHARDS, cfg["image_size"], len(bins))
    seconds = time.perf_counter() - t
    p = counts / counts.sum()
    p_smooth = smooth(p, bins, cfg["sigma"])
    w = rebalancing_weights(p_smooth, cfg["mix"])

    atomic_write(paths.PRIORS, lambda tmp: np.savez(tmp, bins=bins.astype(np.float32), counts=counts, prior=p,
                                                    smoothed=p_smooth, weights=w, sigma=cfg["sigma"], mix=cfg["mix"]))
    report = {"n_images": len(rows), "n_gray_skipped": n_gray, "image_size": cfg["image_size"],
              **stats(bins, counts, p, p_smooth, w)}
    write_json(paths.PRIORS_REPORT, report)
    ab_heatmap(bins, p_smooth, paths.PRIOR_PLOT, "log10 smoothed prior p~ over ab", log=True)
    ab_heatmap(bins, w, paths.WEIGHTS_PLOT, f"rebalancing weight w (mix {cfg['mix']})", log=False)
    print(f"priors: {report['n_pixels']:,} pixels of {len(rows)} images in {seconds:.2f} s; "
          f"{report['bins_seen']}/{len(bins)} bins seen, entropy {report['entropy_bits']:.2f} bits, "
          f"top-10 share {report['top10_share']:.2f}, weights {w.min():.2f}..{w.max():.2f}")


if __name__ == "__main__":
    run_main(main)
