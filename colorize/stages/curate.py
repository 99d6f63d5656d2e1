"""Stage curate: keep or drop every file ingest found, with a reason (the checks and their
order are in colorize/curation/rules.py), then people's decisions from
`data/curation/decisions.csv` override the automatic ones. Dropped files are never
deleted; only the curated manifest leaves them out.

Outputs: `data/curated/manifest.parquet` (every ingest row plus keep/reason/detail,
scores and flags), `reports/curate.json` (counts per reason, which add up to the files
found, and per-check precision/recall against the garden's planted truth),
`reports/curate_examples.png` (a row of examples per reason), the FiftyOne dataset with
saved views for review, and an MLflow run with the same numbers.
"""
# ruff: noqa: E402 (portable.pin() must run before numpy and torch are imported)
from __future__ import annotations

from colorize.common import portable

if __name__ == "__main__":
    portable.pin()  # before numpy and torch: the same bits on any x86-64 CPU (a data stage)

import pandas as pd

from colorize.common import paths, tracking
from colorize.common.errors import UserError, run_main
from colorize.common.files import atomic_write, write_json, write_parquet_in_groups
from colorize.common.malloc import arrow_on_system_malloc, return_freed_memory
from colorize.common.params import load_params
from colorize.common.shards import ShardReader
from colorize.curation import fodb, review
from colorize.curation.decisions import apply_decisions, read_decisions
from colorize.curation.rules import (
    curate,
    examples_grid,
    garden_accuracy,
    log_to_mlflow,
    summarise,
)


def relevance_scores() -> pd.Series | None:
    """The relevance stage's scores by id, if it scored anything (it skips without labels)."""
    if not paths.RELEVANCE_SCORES.exists():
        return None
    scores = pd.read_parquet(paths.RELEVANCE_SCORES)
    return scores.set_index("id")["relevance"] if scores["relevance"].notna().any() else None


def main() -> None:
    portable.configure_torch()
    return_freed_memory()  # flat peak memory as the dataset grows (see colorize/common/malloc.py)
    arrow_on_system_malloc()
    params = load_params()
    tracking.check_store()  # before any work: an unusable MLflow store fails now, in one line
    if not paths.INGEST_MANIFEST.exists():
        raise UserError(f"{paths.INGEST_MANIFEST} not found: run the ingest stage first (dvc repro ingest)")
    manifest = pd.read_parquet(paths.INGEST_MANIFEST)
    # The shard columns of the usable rows, not a copy of every column (0.4 kB a row).
    ok = manifest.loc[manifest["status"] == "ok", ["shard", "shard_index"]]
    images = ShardReader(ok, paths.SHARDS) if len(ok) else None  # streamed: the checks read slices
    auto = curate(manifest, images, params, relevance_scores())
    del manifest, ok  # curate's table holds every column (shared with it, copy-on-write)
    decisions = read_decisions(paths.DECISIONS)
    df, messages = apply_decisions(auto, decisions)
    del auto  # the columns the decisions changed were copied: let the old ones go
    for m in messages:
        print(f"curate: warning: {m}")
    # In row groups (split reads it a group at a time), converted a group at a time.
    atomic_write(paths.CURATED_MANIFEST, lambda tmp: write_parquet_in_groups(df, tmp))
    report = summarise(df)
    report["garden_accuracy"] = garden_accuracy(df)
    report["human_decisions"] = int((df["human"] != "").sum())
    if images is not None:
        examples_grid(df, images, paths.CURATE_EXAMPLES)
    write_json(paths.CURATE_REPORT, report)
    with fodb.database():
        review.mirror_curated(df, decisions)
    log_to_mlflow(report, params, paths.CURATE_EXAMPLES)
    print(f"curate: kept {report['kept']} of {report['found']}; dropped "
          f"{ {k: v for k, v in report['by_reason'].items() if v} }")


if __name__ == "__main__":
    run_main(main)
