"""Stage split: deterministic train/val/test assignment of the kept images, by a salted
hash of each image's duplicate group (colorize/curation/split.py).

Output: `data/split/manifest.parquet` (the kept rows plus a `split` column, written a
block of rows at a time: memory does not grow with the number of images) and
`reports/split.json` (counts per split).
"""
# ruff: noqa: E402 (portable.pin() must run before numpy and torch are imported)
from __future__ import annotations

from colorize.common import portable

if __name__ == "__main__":
    portable.pin()  # before numpy and torch: the same bits on any x86-64 CPU (a data stage)

from colorize.common import malloc, paths
from colorize.common.errors import UserError, run_main
from colorize.common.files import atomic_write, write_json
from colorize.common.params import load_params
from colorize.curation.split import SPLITS, split_file


def main() -> None:
    malloc.arrow_on_system_malloc()  # flat memory as the manifest grows (colorize/common/malloc.py)
    params = load_params()
    if not paths.CURATED_MANIFEST.exists():
        raise UserError(f"{paths.CURATED_MANIFEST} not found: run the curate stage first (dvc repro curate)")
    counts = {}

    def write(tmp):
        counts.update(split_file(paths.CURATED_MANIFEST, tmp, params))
        for s in ("train", "test"):
            if counts[s] == 0:
                raise UserError(f"split: the {s} split is empty ({counts}); add images or change split.train/split.val")

    atomic_write(paths.SPLIT_MANIFEST, write)
    write_json(paths.SPLIT_REPORT, {"total": sum(counts[s] for s in SPLITS), **counts})
    print(f"split: {counts}")


if __name__ == "__main__":
    run_main(main)
