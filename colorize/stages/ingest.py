"""Stage ingest: decode every listed file safely into one manifest and a shard store.

Outputs: `data/ingest/manifest.parquet` (one row per file found, usable or not),
`data/ingest/shards/` (the usable images at the working resolution) and
`reports/ingest.json` (counts: found == usable + rejected, always).
"""
# ruff: noqa: E402 (portable.pin() must run before numpy and torch are imported)
from __future__ import annotations

from colorize.common import portable

if __name__ == "__main__":
    portable.pin()  # before numpy and torch: the same bits on any x86-64 CPU (a data stage)

from colorize.common import malloc, paths
from colorize.common.errors import UserError, run_main
from colorize.common.files import ROW_GROUP, write_json
from colorize.common.params import load_params
from colorize.sources.ingest import ingest
from colorize.sources.listing import iter_listing, read_listing
from colorize.sources.registry import restore_missing


def main() -> None:
    malloc.arrow_on_system_malloc()  # flat memory as the listing grows (colorize/common/malloc.py)
    params = load_params()
    if not paths.LISTING.exists():
        raise UserError(f"{paths.LISTING} not found: run the download stage first (dvc repro download)")
    where = read_listing(paths.LISTING, ("path", "sha256"))
    restore_missing(where, params, paths.RAW)  # data/raw is a working copy outside DVC
    report = ingest(iter_listing(paths.LISTING, ROW_GROUP), params, paths.INGEST, total=len(where))
    write_json(paths.INGEST_REPORT, report)
    print(f"ingest: found {report['found']} = usable {report['usable']} + rejected {report['rejected']} {report['by_status']}")


if __name__ == "__main__":
    run_main(main)
