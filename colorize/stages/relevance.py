"""Stage relevance: a small CNN learns flower vs not-flower from the weak labels the data
already has (colorize/curation/relevance.py), and scores every usable image.

Outputs: `data/relevance/scores.parquet` (id, weak_label, relevance), which curate
thresholds; `data/relevance/features.npy` (the CNN's 128 features per scored image,
float16, rows as in the scores: the embeddings map in the FiftyOne App); `models/relevance.pt`; `reports/relevance.json` (held-out ROC AUC,
precision and recall at relevance.threshold); an MLflow run. Nothing written holds a
timing: the same data gives the same bytes (the seconds go to MLflow only).
"""
# ruff: noqa: E402 (portable.pin() must run before numpy and torch are imported)
from __future__ import annotations

from colorize.common import portable

if __name__ == "__main__":
    portable.pin()  # before numpy and torch: the same bits on any x86-64 CPU (a data stage)

import math

import numpy as np
import pandas as pd

from colorize.common import malloc, paths, tracking
from colorize.common.errors import run_main
from colorize.common.files import atomic_write, read_columns, write_json
from colorize.common.params import load_params
from colorize.common.shards import ShardReader
from colorize.curation.decisions import read_decisions
from colorize.curation.relevance import fit, save, score_and_embed, weak_labels

MANIFEST_COLUMNS = ("id", "status", "source", "label", "negative", "defect_detail", "shard", "shard_index")


def main() -> None:
    portable.configure_torch()
    # Batches of 64 images stay on the heap and are reused step after step; the scoring
    # batches above 4 MB go back to the OS when freed. With glibc's moving threshold the
    # heap ratcheted up with the number of batches (colorize/common/malloc.py).
    malloc.return_freed_memory(malloc.BATCHED_THRESHOLD)
    malloc.arrow_on_system_malloc()
    params = load_params()
    tracking.check_store()  # before any work: an unusable MLflow store fails now, in one line
    cfg = params["relevance"]
    manifest = read_columns(paths.INGEST_MANIFEST, MANIFEST_COLUMNS)
    usable = manifest[manifest["status"] == "ok"].reset_index(drop=True)
    y = weak_labels(usable, read_decisions(paths.DECISIONS), params["data"]["folder"]["negative_labels"])
    images = ShardReader(usable, paths.SHARDS)  # streamed: read per batch, never held whole
    out = pd.DataFrame({"id": usable["id"], "weak_label": y})
    try:
        model, report = fit(usable, images, y, cfg)
    except ValueError as e:
        print(f"relevance: skipped ({e})")
        out["relevance"] = np.nan
        report = {"skipped": str(e), "n_relevant": int((y == 1).sum()), "n_irrelevant": int((y == 0).sum())}
        atomic_write(paths.RELEVANCE_MODEL, lambda tmp: tmp.write_bytes(b""))
        paths.RELEVANCE_FEATURES.unlink(missing_ok=True)
    else:
        out["relevance"], features = score_and_embed(model, images)
        atomic_write(paths.RELEVANCE_FEATURES, lambda tmp: np.save(tmp, features))
        seconds = report.pop("train_seconds")
        save(model, paths.RELEVANCE_MODEL, meta=report)
        print(f"relevance: held-out AUC {report.get('auc', float('nan')):.3f}, precision "
              f"{report.get('precision', float('nan')):.3f}, recall {report.get('recall', float('nan')):.3f} "
              f"at threshold {cfg['threshold']} ({seconds:.1f} s)")
        mlflow = tracking.setup()
        with mlflow.start_run(run_name="relevance", tags=tracking.run_tags({"stage": "relevance"})):
            mlflow.log_params({f"relevance.{k}": v for k, v in cfg.items()})
            numbers = {k: float(v) for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            mlflow.log_metrics({k: v for k, v in {**numbers, "train_seconds": seconds}.items() if math.isfinite(v)})
    atomic_write(paths.RELEVANCE_SCORES, lambda tmp: out.to_parquet(tmp, index=False))
    write_json(paths.RELEVANCE_REPORT, report, default=float)


if __name__ == "__main__":
    run_main(main)
