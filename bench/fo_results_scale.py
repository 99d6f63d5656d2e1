"""What the FiftyOne side of curate and evaluate costs as the dataset grows: the mirror
(review.sync_dataset), the embeddings map (t-SNE of up to review.MAP_POINTS images,
review.embeddings_map) and the evaluation's write-back (fo_results.publish), on a real
mongod in a temporary folder, with generated rows (no image is read: FiftyOne stores
paths) and clustered 128-d features. Not a test; docs/curation.md quotes its lines.

    .venv/bin/python -m bench.fo_results_scale 3000 10000 30000 > reports/fo_results_scale.json
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _anon_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    return 0


def one_size(n: int, folder: Path) -> dict:
    from colorize.curation import review
    from colorize.evaluation import fo_results

    rng = np.random.default_rng(n)
    ids = [f"{i:016x}" for i in range(n)]
    labels = np.array(["daisy", "rose", "tulip", "sunflower", "irrelevant"])[rng.integers(0, 5, n)]
    curated = pd.DataFrame({
        "id": ids, "path": [str(folder / f"img_{i:06d}.jpg") for i in range(n)], "source": "garden",
        "relpath": [f"img_{i:06d}.jpg" for i in range(n)], "label": labels, "status": "ok", "keep": True,
        "reason": "", "detail": "", "relevance": np.where(labels == "irrelevant", 0.1, 0.9),
    })
    centres = rng.normal(0, 3, (5, 128))
    features = (centres[rng.integers(0, 5, n)] + rng.normal(0, 1, (n, 128))).astype(np.float16)
    np.save(folder / "features.npy", features)
    curated[["id", "relevance"]].to_parquet(folder / "scores.parquet")
    out = {"images": n}
    t = time.perf_counter()
    ds = review.sync_dataset(curated, pd.DataFrame(columns=["id", "decision", "reason", "time"]),
                             name=f"scale-{n}")
    out["mirror_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    out["map_points"] = review.embeddings_map(ds, folder / "features.npy", folder / "scores.parquet")
    out["map_s"] = round(time.perf_counter() - t, 1)
    test = ids[: n * 15 // 100]
    psnr = rng.normal(22, 3, len(test))
    per_image = pd.DataFrame({"id": test, "psnr_model": psnr, "ssim_model": 0.9, "delta_e_model": 5.0,
                              "colourfulness_model": 30.0, "colourfulness_truth": 40.0, "psnr_lookup": psnr - 1})
    split = pd.DataFrame({"id": ids, "split": ["test"] * len(test) + ["train"] * (n - len(test))})
    losses = pd.DataFrame({"id": ids[len(test):], "loss": rng.random(n - len(test))})
    t = time.perf_counter()
    fo_results.publish(per_image, split, losses, {c: str(folder / f"{c}.png") for c in test}, "unet",
                       "0123456789abcdef", "lookup", f"scale-{n}")
    out["publish_s"] = round(time.perf_counter() - t, 1)
    out["anon_mb_after"] = _anon_mb()
    return out


def main(sizes: list[int]) -> None:
    from colorize.curation import fodb

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FIFTYONE_DATABASE_DIR"] = str(Path(tmp) / "db")
        os.environ.pop("FIFTYONE_DATABASE_URI", None)
        with fodb.database():
            rows = []
            for n in sizes:
                folder = Path(tmp) / str(n)
                folder.mkdir()
                rows.append(one_size(n, folder))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"command": "python -m bench.fo_results_scale " + " ".join(map(str, sizes)), "rows": rows},
                     indent=1))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [3000, 10000])
