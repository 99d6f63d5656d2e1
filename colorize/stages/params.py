"""Stage params: validate the whole params.yaml on every `dvc repro` that sees it change.

Every stage validates the whole file when it runs, but DVC runs a stage only when a key
it depends on changes: a misspelt top-level key (`trian:`) would change no stage and go
unnoticed. This stage depends on the file itself, so any edit is checked at once.
"""
from __future__ import annotations

from colorize.common import paths
from colorize.common.errors import run_main
from colorize.common.params import load_params


def main() -> None:
    load_params()
    print(f"params: {paths.PARAMS} is valid")


if __name__ == "__main__":
    run_main(main)
