"""Near-duplicate search at scale: the approximate index (faiss IVF) against the exact
all-pairs search, on gardens of N images with their planted near-duplicate families.

For each N: a garden (seed 0, the default 15% defects) is generated once into
`.bench-cache/garden-N` (reused by later runs), decoded to 64 px as ingest does, and
both searches run on every decodable image. Reported per N: seconds of each candidate
search (the ratio in the same run) and of the whole pairs table (verification included), candidate and matched pairs of each, the ANN's recall and
precision of the exact search's matched pairs, and of the planted families (a planted
copy counts as found when it is matched to its original, directly or through its
family), for both searches.

    .venv/bin/python -m bench.near_dup 1000 10000 > reports/near_dup.json

Not a test: it asserts nothing (tests/test_checks.py checks recall at a small size).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from colorize.common.images import decode, fit_square
from colorize.common.params import load_params
from colorize.curation import checks
from colorize.curation.rules import thresholds
from colorize.sources import garden

CACHE = Path(__file__).resolve().parents[1] / ".bench-cache"
SIZE = 64  # ingest.image_size of the default params


def garden_images(n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The truth rows of the decodable files of an n-image garden, and their pixels."""
    out = CACHE / f"garden-{n}"
    truth = out / garden.TRUTH_FILE
    if not truth.exists():
        garden.generate(out, garden.GardenConfig(n_images=n, seed=0), progress=False)
    rows, pixels = [], []
    for r in pd.read_csv(truth, keep_default_na=False).itertuples(index=False):
        d = decode((out / r.path).read_bytes(), max_pixels=10**8)
        if d.status == "ok":
            rows.append(r._asdict())
            pixels.append(fit_square(d.pixels, SIZE))
    return pd.DataFrame(rows), np.stack(pixels)


def matched(pairs: pd.DataFrame, t: dict) -> set[tuple[int, int]]:
    m = pairs[(pairs["score"] >= t["near_duplicate"]) & (pairs["colour_diff"] <= t["near_duplicate_colour"])]
    return set(zip(m["i"].tolist(), m["j"].tolist()))


def planted_recall(rows: pd.DataFrame, group: np.ndarray) -> float:
    """Share of planted near-duplicate copies grouped with their original."""
    position = {p: k for k, p in enumerate(rows["path"])}
    copies = rows[rows["defect"] == "near_duplicate"]
    found = [group[position[c.path]] == group[position[c.defect_of]] for c in copies.itertuples()
             if c.defect_of in position]
    return float(np.mean(found)) if found else float("nan")


def search_seconds(images: np.ndarray) -> dict:
    """Seconds of the candidate search alone, all pairs and the index, on the same embeddings."""
    with torch.no_grad():
        emb = checks._NearDupData(images, 256).emb
    out = {}
    for search in ("exact", "ann"):
        start = time.perf_counter()
        if search == "exact":
            checks._candidates(emb, 0.94, 6, 1024)
        else:
            checks._candidates_ann(emb, 0.94, 6)
        out[f"{search}_search_seconds"] = round(time.perf_counter() - start, 2)
    return out


def measure(n: int, t: dict) -> dict:
    rows, images = garden_images(n)
    result: dict = {"n_images": n, "decodable": len(images)}
    result |= search_seconds(images)
    found = {}
    for search in ("exact", "ann"):
        start = time.perf_counter()
        pairs = checks.near_duplicate_pairs(images, search=search)
        result[f"{search}_total_seconds"] = round(time.perf_counter() - start, 2)
        found[search] = matched(pairs, t)
        group, _ = checks.near_duplicate_groups(pairs=pairs, n=len(images), threshold=t["near_duplicate"],
                                                colour_threshold=t["near_duplicate_colour"])
        result[f"{search}_candidates"] = len(pairs)
        result[f"{search}_matched_pairs"] = len(found[search])
        result[f"{search}_planted_recall"] = round(planted_recall(rows, group), 4)
    both = found["exact"] & found["ann"]
    result["ann_recall_of_exact"] = round(len(both) / max(len(found["exact"]), 1), 4)
    result["ann_precision_of_exact"] = round(len(both) / max(len(found["ann"]), 1), 4)
    result["search_speedup"] = round(result["exact_search_seconds"] / max(result["ann_search_seconds"], 1e-9), 2)
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    t = thresholds(load_params()["curate"])
    ann = {"from": checks.ANN_FROM, "lists_per_sqrt": checks.ANN_LISTS, "probe": checks.ANN_PROBE,
           "block": checks.ANN_BLOCK}
    print(json.dumps({"ann": ann, "results": [measure(n, t) for n in sizes]}, indent=2))


if __name__ == "__main__":
    main()
