"""Stage download: materialise every source named in data.sources.

Output: `data/raw/<source>/...` for sources that write files, and `data/raw/listing.csv`
with one row per file found (see `colorize.sources.Row`), which is ingest's only input.
"""
# ruff: noqa: E402 (portable.pin() must run before numpy and torch are imported)
from __future__ import annotations

from colorize.common import portable

if __name__ == "__main__":
    portable.pin()  # before numpy and torch: the same bits on any x86-64 CPU (a data stage)

from colorize.common import paths
from colorize.common.errors import run_main
from colorize.common.params import load_params
from colorize.sources.registry import download


def main() -> None:
    n = download(load_params(), paths.RAW, paths.LISTING)
    print(f"download: {n} files listed in {paths.LISTING}")


if __name__ == "__main__":
    run_main(main)
