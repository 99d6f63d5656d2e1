"""Where every stage reads and writes, relative to the project root (DVC runs each stage
there). One home for each path: stages never import another stage for a constant.
dvc.yaml names the same files as each stage's deps and outs.
"""
from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
REPORTS = Path("reports")

# download: every source's files, and one listing row per file found
RAW = Path("data/raw")
LISTING = RAW / "listing.csv"

# ingest: the manifest of every file and the working-resolution images
INGEST = Path("data/ingest")
INGEST_MANIFEST = INGEST / "manifest.parquet"
SHARDS = INGEST / "shards"
INGEST_REPORT = REPORTS / "ingest.json"

# relevance: the flower-vs-not classifier and its score for every usable image
RELEVANCE_SCORES = Path("data/relevance/scores.parquet")
RELEVANCE_FEATURES = Path("data/relevance/features.npy")  # float16 (n, 128), rows as in RELEVANCE_SCORES
RELEVANCE_MODEL = Path("models/relevance.pt")
RELEVANCE_REPORT = REPORTS / "relevance.json"

# curate: keep/drop with a reason; people's decisions (in git)
DECISIONS = Path("data/curation/decisions.csv")
CURATED = Path("data/curated")
CURATED_MANIFEST = CURATED / "manifest.parquet"
CURATE_REPORT = REPORTS / "curate.json"
CURATE_EXAMPLES = REPORTS / "curate_examples.png"

# split
SPLIT = Path("data/split")
SPLIT_MANIFEST = SPLIT / "manifest.parquet"
SPLIT_REPORT = REPORTS / "split.json"

# priors: the ab colour prior and the class-rebalancing weights
PRIORS = Path("data/priors/priors.npz")
PRIORS_REPORT = REPORTS / "priors.json"
PRIOR_PLOT = REPORTS / "priors_prior.png"
WEIGHTS_PLOT = REPORTS / "priors_weights.png"

# train: the checkpoint (and the resume file, not a DVC output: DVC must not delete it)
MODEL = Path("models/model.pt")
RESUME = Path("models/checkpoints/last.pt")
TRAIN_REPORT = REPORTS / "train.json"
TRAIN_HISTORY = REPORTS / "train_history.csv"
TRAIN_GRID = REPORTS / "train_grid.png"
LOSS_TABLE = REPORTS / "train_loss_table.csv"

# evaluate
METRICS = REPORTS / "metrics.json"
PER_IMAGE = REPORTS / "eval_per_image.csv"
PER_CLASS = REPORTS / "eval_per_class.csv"
EVAL_GRID = REPORTS / "eval_grid.png"
EXTREMES = REPORTS / "eval_best_median_worst.png"
HISTOGRAM = REPORTS / "psnr_hist.png"
SWEEP = REPORTS / "temperature_sweep.csv"

# report
REPORT_HTML = REPORTS / "report.html"
